"""Figures: each function takes a result object and returns a matplotlib ``Figure``.

Nothing here shows a window or touches pyplot's global state: figures are plain
``matplotlib.figure.Figure`` objects, which a notebook displays and :func:`cnnviz.output.save_figure`
writes. The conventions (DESIGN.md, principle 5): images are shown de-normalised, in RGB; signed
values use a diverging colour map centred on zero; every heat map has a colour bar in raw units;
the normalisation scope (per map, per layer, global) is a parameter, never hidden.
"""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import torch
from matplotlib import cm, colors
from matplotlib.figure import Figure

from cnnviz.errors import CnnvizError
from cnnviz.kernels import Kernels, _check_scope

DIVERGING = "RdBu_r"  # red positive, blue negative, white zero
SEQUENTIAL = "magma"
BACKGROUND = "#f0f0f0"


# --------------------------------------------------------------------------------------------
# kernels


def plot_kernels(kernels: Kernels, scope: str = "layer", columns: int = 8) -> Figure:
    """Draw the kernels of one convolution.

    Args:
        kernels: from :func:`cnnviz.kernels`.
        scope: ``"kernel"``, ``"layer"`` or ``"global"``: what the largest absolute weight is
            taken over when scaling (zero is always the middle of the scale).
        columns: kernels per row in the colour and outputs views.

    Returns:
        A figure. In the colour view each kernel is one axes showing ``w / (2 s) + 0.5`` as RGB
        (mid-grey is zero); the other views draw a diverging colour map with a colour bar in raw
        weight units.
    """
    _check_scope(scope)
    drawers = {
        "colour": _kernels_colour,
        "pairs": _kernels_pairs,
        "outputs": _kernels_outputs,
        "curves": _kernels_curves,
        "slices": _kernels_slices,
    }
    figure = drawers[kernels.view](kernels, scope, columns)
    scope_text = {"kernel": "each kernel on its own scale", "layer": "one scale for the layer",
                  "global": "one scale for the whole model"}[scope]
    shape = "x".join(str(s) for s in kernels.weight.shape[2:])
    figure.suptitle(
        f"{kernels.layer} ({kernels.module_type}, {kernels.out_channels} kernels of {shape}; "
        f"{scope_text})", fontsize=10,
    )
    return figure


def _grid(count: int, columns: int) -> tuple[int, int]:
    columns = max(1, min(columns, count))
    return math.ceil(count / columns), columns


def _kernels_colour(kernels: Kernels, scope: str, columns: int) -> Figure:
    images = kernels.colour_images(scope)
    scales = kernels.scales(scope)
    rows, columns = _grid(len(images), columns)
    figure = Figure(figsize=(1.0 * columns + 1.4, 1.05 * rows + 0.7), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index >= len(images):
            continue
        axis.imshow(images[index].permute(1, 2, 0).numpy(), interpolation="nearest", vmin=0, vmax=1)
        label = f"{kernels.outputs[index]}"
        if scope == "kernel":
            label += f" ±{float(scales[index]):.2g}"
        axis.set_title(label, fontsize=7, pad=2)
    if scope != "kernel":
        scale = float(scales[0])
        bar = figure.colorbar(
            cm.ScalarMappable(colors.Normalize(-scale, scale), "gray"), ax=axes, shrink=0.8, aspect=30
        )
        bar.set_label("weight (mid-grey = 0; per colour channel)", fontsize=8)
    return figure


def _mosaic(maps: list[list[np.ndarray]], pad: int = 1) -> np.ndarray:
    """Tile 2-D maps (rows of equal-size maps) into one array, NaN between them."""
    height, width = maps[0][0].shape
    rows, columns = len(maps), max(len(row) for row in maps)
    tiled = np.full((rows * (height + pad) - pad, columns * (width + pad) - pad), np.nan)
    for r, row in enumerate(maps):
        for c, value in enumerate(row):
            tiled[r * (height + pad):r * (height + pad) + height, c * (width + pad):c * (width + pad) + width] = value
    return tiled


def _diverging_image(axis, tiled: np.ndarray, limit: float):
    colour_map = matplotlib.colormaps[DIVERGING].with_extremes(bad=BACKGROUND)
    return axis.imshow(tiled, cmap=colour_map, vmin=-limit, vmax=limit, interpolation="nearest")


def _kernels_pairs(kernels: Kernels, scope: str, columns: int) -> Figure:
    weight = kernels.weight[:, kernels.inputs].numpy()
    scales = kernels.scales(scope).numpy()
    if scope == "kernel":  # each row on its own scale: shown as a fraction of its own max |w|
        weight = weight / scales[:, None, None, None]
    tiled = _mosaic([[weight[o, i] for i in range(weight.shape[1])] for o in range(weight.shape[0])])
    rows, cols = weight.shape[0], weight.shape[1]
    height, width = weight.shape[2:]
    figure = Figure(figsize=(min(2 + 0.45 * cols * max(1, width / 3), 16), min(1.2 + 0.45 * rows * max(1, height / 3), 24)),
                    layout="constrained")
    axis = figure.subplots()
    image = _diverging_image(axis, tiled, 1.0 if scope == "kernel" else float(scales[0]))
    axis.set_xticks([i * (width + 1) + (width - 1) / 2 for i in range(cols)], [str(i) for i in kernels.inputs], fontsize=6)
    row_labels = [
        f"{o} ±{s:.2g}" if scope == "kernel" else str(o) for o, s in zip(kernels.outputs, scales)
    ]
    axis.set_yticks([r * (height + 1) + (height - 1) / 2 for r in range(rows)], row_labels, fontsize=6)
    group_note = " (counted inside each group)" if kernels.groups > 1 else ""
    axis.set_xlabel(f"input channel{group_note}", fontsize=8)
    axis.set_ylabel("output channel", fontsize=8)
    bar = figure.colorbar(image, ax=axis, shrink=0.6)
    bar.set_label("weight / the row's max |w|" if scope == "kernel" else "weight", fontsize=8)
    return figure


def _kernels_outputs(kernels: Kernels, scope: str, columns: int) -> Figure:
    maps = kernels.maps().numpy()  # depthwise: the kernel itself
    scales = kernels.map_scales(scope).numpy()
    if scope == "kernel":
        maps = maps / scales[:, None, None]
    limit = 1.0 if scope == "kernel" else float(scales[0])
    rows, columns = _grid(len(maps), columns)
    grid = [[maps[r * columns + c] for c in range(columns) if r * columns + c < len(maps)] for r in range(rows)]
    tiled = _mosaic(grid)
    height, width = maps.shape[1:]
    figure = Figure(figsize=(2 + 0.6 * columns * max(1, width / 3), 1.2 + 0.6 * rows * max(1, height / 3)), layout="constrained")
    axis = figure.subplots()
    image = _diverging_image(axis, tiled, limit)
    axis.set_xticks([])
    axis.set_yticks([])
    for index, output in enumerate(kernels.outputs):
        r, c = divmod(index, columns)
        label = f"{output} ±{scales[index]:.2g}" if scope == "kernel" else str(output)
        axis.text(c * (width + 1) + width / 2 - 0.5, r * (height + 1) - 0.6, label, ha="center", va="bottom", fontsize=6)
    bar = figure.colorbar(image, ax=axis, shrink=0.6)
    what = "sum over inputs" if kernels.weight.shape[1] > 1 else "weight"
    bar.set_label(f"{what} / each map's max |value| (printed above it)" if scope == "kernel" else what, fontsize=8)
    return figure


def _kernels_curves(kernels: Kernels, scope: str, columns: int) -> Figure:
    weight = kernels.weight[:, kernels.inputs].numpy()
    scales = kernels.scales(scope).numpy()
    rows, columns = _grid(len(weight), min(columns, 4))
    figure = Figure(figsize=(2.2 * columns + 0.5, 1.6 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    taps = np.arange(weight.shape[2])
    for index, axis in enumerate(axes.flat):
        if index >= len(weight):
            axis.set_axis_off()
            continue
        for line, local in enumerate(kernels.inputs):
            axis.plot(taps, weight[index, line], marker=".", linewidth=1, label=f"in {local}")
        axis.axhline(0, color="grey", linewidth=0.5)
        axis.set_ylim(-1.05 * scales[index], 1.05 * scales[index])
        axis.set_title(f"output {kernels.outputs[index]}", fontsize=7)
        axis.tick_params(labelsize=6)
    axes.flat[0].set_ylabel("weight", fontsize=7)
    if len(kernels.inputs) <= 8:
        axes.flat[0].legend(fontsize=5)
    return figure


def _kernels_slices(kernels: Kernels, scope: str, columns: int) -> Figure:
    maps = kernels.maps().numpy()  # outputs x depth x H x W
    scales = kernels.map_scales(scope).numpy()
    if scope == "kernel":
        maps = maps / scales[:, None, None, None]
    limit = 1.0 if scope == "kernel" else float(scales[0])
    tiled = _mosaic([[maps[o, d] for d in range(maps.shape[1])] for o in range(maps.shape[0])])
    figure = Figure(figsize=(2 + 0.6 * maps.shape[1], 1.2 + 0.6 * maps.shape[0]), layout="constrained")
    axis = figure.subplots()
    image = _diverging_image(axis, tiled, limit)
    height, width = maps.shape[2:]
    axis.set_xticks([d * (width + 1) + (width - 1) / 2 for d in range(maps.shape[1])], [str(d) for d in range(maps.shape[1])], fontsize=6)
    labels = [f"{o} ±{s:.2g}" if scope == "kernel" else str(o) for o, s in zip(kernels.outputs, scales)]
    axis.set_yticks([o * (height + 1) + (height - 1) / 2 for o in range(maps.shape[0])], labels, fontsize=6)
    axis.set_xlabel("depth slice", fontsize=8)
    axis.set_ylabel("output channel", fontsize=8)
    bar = figure.colorbar(image, ax=axis, shrink=0.6)
    bar.set_label("sum over inputs" + (" / each row's max |value|" if scope == "kernel" else ""), fontsize=8)
    return figure


def figure_pixels(figure: Figure) -> np.ndarray:
    """The rendered figure as an ``H x W x 4`` uint8 array (what a PNG of it holds, at its dpi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().float().numpy()


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise CnnvizError(message)


# --------------------------------------------------------------------------------------------
# activations

ACTIVATION_SCOPES = ("map", "layer", "global")


def plot_activations(
    activations, layer: str | None = None, scope: str = "layer", overlay: bool = False,
    columns: int = 8, max_maps: int = 64,
) -> Figure:
    """Draw the feature maps of one layer for one image.

    Args:
        activations: from :func:`cnnviz.activations`.
        layer: which captured layer (default the first).
        scope: ``"map"`` (each map its own colour scale and colour bar), ``"layer"`` (one scale
            over every channel of the layer) or ``"global"`` (one scale over every captured layer).
        overlay: draw each map, upsampled, over the de-normalised input image.
        columns: maps per row.
        max_maps: draw at most this many of the layer's shown channels.

    Returns:
        A figure: each map titled with its channel and raw range; signed values on a diverging
        scale centred on zero, non-negative ones on a sequential scale from zero; colour bars in
        raw units.
    """
    if scope not in ACTIVATION_SCOPES:
        raise CnnvizError(f"unknown normalisation scope {scope!r}; use one of {', '.join(ACTIVATION_SCOPES)}")
    chosen = activations[layer] if layer is not None else next(iter(activations.layers.values()))
    if not chosen.spatial:
        return _plot_vector(activations, chosen, scope)
    shown = chosen.order[:max_maps]
    shared = chosen.value_range() if scope == "layer" else activations.value_range() if scope == "global" else None
    rows, columns = _grid(len(shown), columns)
    per_map_bar = scope == "map"
    figure = Figure(figsize=(1.9 * columns + (0.3 * columns if per_map_bar else 1.2), 1.9 * rows + 0.7), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    image = activations.image
    mappable = None
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index >= len(shown):
            continue
        channel = shown[index]
        values = chosen.maps[channel]
        low, high = chosen.channel_range(channel)
        colour_map, norm = _value_scale(*(shared or (low, high)))
        if overlay:
            axis.imshow(image.permute(1, 2, 0).numpy(), interpolation="bilinear")
            upsampled = torch.nn.functional.interpolate(
                values[None, None], size=image.shape[1:], mode="bilinear", align_corners=False
            )[0, 0]
            mappable = axis.imshow(upsampled.numpy(), cmap=colour_map, norm=norm, alpha=0.6, interpolation="nearest")
        else:
            mappable = axis.imshow(values.numpy(), cmap=colour_map, norm=norm, interpolation="nearest")
        axis.set_title(f"{channel} [{low:.3g}, {high:.3g}]", fontsize=7, pad=2)
        if per_map_bar:
            bar = figure.colorbar(mappable, ax=axis, fraction=0.046, pad=0.02)
            bar.ax.tick_params(labelsize=5)
    if not per_map_bar and mappable is not None:
        bar = figure.colorbar(mappable, ax=axes, shrink=0.7, aspect=30)
        bar.set_label(f"activation (raw; one scale for the {'layer' if scope == 'layer' else 'captured layers'})", fontsize=8)
    height, width = chosen.maps.shape[1:]
    figure.suptitle(
        f"{chosen.layer} on {activations.source}: {len(shown)} of {chosen.maps.shape[0]} channels "
        f"({height}x{width}), {'overlaid on the input, ' if overlay else ''}scale per {scope}",
        fontsize=10,
    )
    return figure


def _value_scale(low: float, high: float):
    """A diverging map centred on zero for signed values, else a sequential one from zero."""
    if low < 0:
        limit = max(abs(low), abs(high), 1e-12)
        return DIVERGING, colors.Normalize(-limit, limit)
    return SEQUENTIAL, colors.Normalize(0, max(high, 1e-12))


def _plot_vector(activations, chosen, scope: str) -> Figure:
    shown = chosen.order[:256]
    values = chosen.maps[shown].numpy()
    figure = Figure(figsize=(min(2 + 0.12 * len(shown), 18), 3.2), layout="constrained")
    axis = figure.subplots()
    axis.bar(range(len(shown)), values, color=["#b2182b" if v >= 0 else "#2166ac" for v in values])
    axis.axhline(0, color="grey", linewidth=0.5)
    if len(shown) <= 40:
        axis.set_xticks(range(len(shown)), [str(c) for c in shown], fontsize=6)
    axis.set_xlabel("channel (in showing order)", fontsize=8)
    axis.set_ylabel("activation (raw)", fontsize=8)
    if scope == "global":
        low, high = activations.value_range()
        axis.set_ylim(min(low, 0) * 1.05, max(high, 0) * 1.05 + 1e-12)
    figure.suptitle(f"{chosen.layer} on {activations.source}: {len(shown)} of {chosen.maps.shape[0]} units", fontsize=10)
    return figure


# --------------------------------------------------------------------------------------------
# statistics


def plot_histograms(statistics, columns: int = 3) -> Figure:
    """One histogram per layer (all channels pooled), log counts, x in raw activation units."""
    layers = list(statistics.layers.values())
    rows, columns = _grid(len(layers), columns)
    figure = Figure(figsize=(4.2 * columns, 2.8 * rows + 0.5), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        if index >= len(layers):
            axis.set_axis_off()
            continue
        layer = layers[index]
        counts = layer.histogram.sum(axis=0)
        edges = layer.edges
        used = np.flatnonzero(counts)
        first, last = (used[0], used[-1] + 1) if len(used) else (0, len(counts))
        axis.stairs(counts[first:last], edges[first:last + 1], fill=True, color="#4c72b0")
        axis.set_yscale("log")
        axis.axvline(0, color="grey", linewidth=0.6)
        summary = layer.layer_summary()
        axis.set_title(
            f"{layer.layer}: mean {summary['mean']:.3g}, std {summary['std']:.3g}, "
            f"{summary['positive_fraction']:.0%} > 0", fontsize=8,
        )
        axis.set_xlabel("activation (raw)", fontsize=7)
        axis.set_ylabel("count (log)", fontsize=7)
        axis.tick_params(labelsize=6)
    figure.suptitle(f"Activation histograms over {statistics.images} images", fontsize=10)
    return figure


def plot_channel_statistics(statistics, layer: str) -> Figure:
    """Per channel of one layer: mean with a one-std bar, min and max; below, the fractions of
    positive and near-zero values, dead channels marked."""
    stats = statistics[layer]
    channels = np.arange(stats.channels)
    figure = Figure(figsize=(min(3 + 0.09 * stats.channels, 18), 5.2), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.errorbar(channels, stats.mean, yerr=stats.std, fmt="o", markersize=2.5, linewidth=0.7, label="mean ± std")
    top.scatter(channels, stats.maximum, marker="^", s=6, color="#b2182b", label="max")
    top.scatter(channels, stats.minimum, marker="v", s=6, color="#2166ac", label="min")
    top.axhline(0, color="grey", linewidth=0.5)
    top.set_ylabel("activation (raw)", fontsize=8)
    top.legend(fontsize=6, loc="upper right")
    bottom.bar(channels, stats.positive_fraction, color="#4c72b0", label="fraction > 0")
    bottom.plot(channels, stats.near_zero_fraction, "k.", markersize=3, label=f"fraction |x| <= {stats.near_zero_tolerance:g}")
    dead = np.flatnonzero(stats.dead)
    if len(dead):
        bottom.scatter(dead, np.full(len(dead), 0.02), marker="x", color="#d62728", s=18, label="dead (never > 0)")
    bottom.set_ylim(0, 1.02)
    bottom.set_xlabel("channel", fontsize=8)
    bottom.set_ylabel("fraction of values", fontsize=8)
    bottom.legend(fontsize=6, loc="upper right")
    for axis in (top, bottom):
        axis.tick_params(labelsize=6)
    figure.suptitle(
        f"{stats.layer}: per-channel statistics over {statistics.images} images ({len(dead)} dead of {stats.channels})",
        fontsize=10,
    )
    return figure


def plot_colorful_dimension(statistics) -> Figure:
    """The "colorful dimension" across layers: each column a layer, each row a bin of a common
    signed range, colour the log density of values (each column normalised to its own peak)."""
    layers = list(statistics.layers.values())
    common = max(layer.half_range for layer in layers)
    columns = []
    for layer in layers:
        counts = layer.rebinned(common).histogram.sum(axis=0).astype(float)
        density = np.log1p(counts)
        columns.append(density / max(density.max(), 1e-12))
    image = np.stack(columns, axis=1)[::-1]  # highest values at the top
    figure = Figure(figsize=(min(2.5 + 0.7 * len(layers), 16), 4.5), layout="constrained")
    axis = figure.subplots()
    shown = axis.imshow(image, aspect="auto", cmap="viridis", interpolation="nearest",
                        extent=(-0.5, len(layers) - 0.5, -common, common))
    axis.set_xticks(range(len(layers)), [layer.layer for layer in layers], rotation=45, ha="right", fontsize=7)
    axis.set_ylabel("activation (raw)", fontsize=8)
    axis.axhline(0, color="white", linewidth=0.5)
    bar = figure.colorbar(shown, ax=axis, shrink=0.8)
    bar.set_label("log(1 + count), per layer relative to its peak", fontsize=8)
    figure.suptitle(f"Distribution of activations across layers ({statistics.images} images)", fontsize=10)
    return figure


def plot_exemplars(statistics, layer: str, channels=None, max_channels: int = 16) -> Figure:
    """Dataset exemplars of one layer: for each channel (a row) its top images, cropped around the
    position of the maximum, titled with the raw value."""
    from cnnviz.references import channel_list

    stats = statistics[layer]
    chosen = channel_list(channels, stats.channels) if channels is not None else list(range(min(stats.channels, max_channels)))
    k = stats.exemplar_values.shape[1]
    figure = Figure(figsize=(1.05 * k + 1.2, 1.15 * len(chosen) + 0.6), layout="constrained")
    axes = figure.subplots(len(chosen), k, squeeze=False)
    for row, channel in enumerate(chosen):
        for slot in range(k):
            axis = axes[row, slot]
            axis.set_xticks([])
            axis.set_yticks([])
            if stats.exemplar_images[channel, slot] < 0:
                axis.set_axis_off()
                continue
            axis.imshow(stats.exemplar_crops[channel, slot].transpose(1, 2, 0), interpolation="nearest")
            axis.set_title(f"{stats.exemplar_values[channel, slot]:.3g}", fontsize=6, pad=1)
        axes[row, 0].set_ylabel(f"ch {channel}" + (" dead" if stats.dead[channel] else ""), fontsize=7)
    size = stats.exemplar_crops.shape[-1]
    figure.suptitle(
        f"{stats.layer}: top {k} of {statistics.images} images per channel ({size}x{size} crops around the maximum)",
        fontsize=10,
    )
    return figure


# --------------------------------------------------------------------------------------------
# attributions


def plot_attribution(attribution, index: int = 0) -> Figure:
    """One method on one image: the input, the signed map (summed over channels, diverging scale
    centred on zero), the absolute map, and the absolute map over the input; colour bars in raw
    attribution units. Grad-CAM, which is non-negative, shows its map on a scale from zero."""
    image = attribution.images[index].permute(1, 2, 0).numpy()
    signed = attribution.signed_map()[index].numpy()
    absolute = attribution.absolute_map()[index].numpy()
    figure = Figure(figsize=(13, 3.5), layout="constrained")
    axes = figure.subplots(1, 4)
    axes[0].imshow(image, interpolation="nearest")
    axes[0].set_title(f"{attribution.sources[index]}", fontsize=8)
    colour_map, norm = _value_scale(float(signed.min()), float(signed.max()))
    shown = axes[1].imshow(signed, cmap=colour_map, norm=norm, interpolation="nearest")
    figure.colorbar(shown, ax=axes[1], fraction=0.046).ax.tick_params(labelsize=6)
    axes[1].set_title("signed (sum over channels)" if attribution.attribution.shape[1] > 1 else "map", fontsize=8)
    top = max(float(absolute.max()), 1e-12)
    shown = axes[2].imshow(absolute, cmap=SEQUENTIAL, vmin=0, vmax=top, interpolation="nearest")
    figure.colorbar(shown, ax=axes[2], fraction=0.046).ax.tick_params(labelsize=6)
    axes[2].set_title("absolute (sum of |.| over channels)", fontsize=8)
    axes[3].imshow(image, interpolation="nearest")
    shown = axes[3].imshow(absolute, cmap=SEQUENTIAL, vmin=0, vmax=top, alpha=0.6, interpolation="bilinear")
    axes[3].set_title("absolute over the input", fontsize=8)
    for axis in axes:
        axis.set_axis_off()
    layer = f" at {attribution.layer}" if attribution.layer else ""
    figure.suptitle(f"{attribution.method}{layer}: {attribution.targets[index]}", fontsize=10)
    return figure


def plot_attributions(attributions: dict, images: int = 4) -> Figure:
    """Several methods side by side: a row per image (at most ``images``), the input then each
    method's absolute map with its own colour bar in raw units."""
    methods = list(attributions.values())
    if not methods:
        raise CnnvizError("no attributions to draw")
    first = methods[0]
    rows = min(images, len(first.images))
    figure = Figure(figsize=(2.3 * (len(methods) + 1) + 0.5, 2.3 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, len(methods) + 1, squeeze=False)
    for row in range(rows):
        axes[row, 0].imshow(first.images[row].permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[row, 0].set_title(first.targets[row], fontsize=7)
        for column, attribution in enumerate(methods, start=1):
            values = attribution.absolute_map()[row].numpy()
            shown = axes[row, column].imshow(values, cmap=SEQUENTIAL, vmin=0, vmax=max(float(values.max()), 1e-12),
                                             interpolation="nearest")
            figure.colorbar(shown, ax=axes[row, column], fraction=0.046).ax.tick_params(labelsize=5)
            if row == 0:
                axes[row, column].set_title(attribution.method, fontsize=8)
    for axis in axes.flat:
        axis.set_axis_off()
    figure.suptitle("Attributions (absolute, summed over channels; each map on its own raw scale)", fontsize=10)
    return figure


def plot_sanity_check(check) -> Figure:
    """The randomisation test: rank correlation with the original map as more layers are
    re-initialised (top down), and the maps of the first image at each stage, each with a colour
    bar in raw attribution units."""
    stages = len(check.layers)
    figure = Figure(figsize=(max(8, 1.8 * (stages + 1)), 5.4), layout="constrained")
    grid = figure.add_gridspec(2, stages + 1, height_ratios=[1.2, 1])
    curve = figure.add_subplot(grid[0, :])
    curve.plot(range(1, stages + 1), check.correlations, "o-")
    curve.axhline(0, color="grey", linewidth=0.5)
    curve.set_ylim(-1.05, 1.05)
    curve.set_xticks(range(1, stages + 1), [f"…{name}" for name in check.layers], fontsize=7,
                     rotation=45 if stages > 8 else 0, ha="right" if stages > 8 else "center")
    curve.set_xlabel("re-initialised from the output down to", fontsize=8)
    curve.set_ylabel("rank correlation with the original", fontsize=8)
    for stage in range(stages + 1):
        axis = figure.add_subplot(grid[1, stage])
        values = check.maps[stage, 0].numpy()
        shown = axis.imshow(values, cmap=SEQUENTIAL, vmin=0, vmax=max(float(values.max()), 1e-12), interpolation="nearest")
        figure.colorbar(shown, ax=axis, fraction=0.046).ax.tick_params(labelsize=5)
        axis.set_axis_off()
        axis.set_title("original" if stage == 0 else f"≤ {check.layers[stage - 1]}", fontsize=7)
    figure.suptitle(f"Sanity check of {check.method} (model-parameter randomisation)", fontsize=10)
    return figure


# --------------------------------------------------------------------------------------------
# feature visualization


def plot_rendering(rendering, columns: int = 8) -> Figure:
    """The images of a :class:`cnnviz.Rendering` as a grid, each titled with its unit and its final
    objective value."""
    images = rendering.display()
    rows, columns = _grid(len(images), columns)
    figure = Figure(figsize=(1.7 * columns + 0.4, 1.9 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index < len(images):
            axis.imshow(images[index].permute(1, 2, 0).numpy(), interpolation="nearest")
            axis.set_title(f"{rendering.units[index]}\n{rendering.values[index]:.3g}", fontsize=6, pad=2)
    height, width = images.shape[2:]
    figure.suptitle(f"{rendering.objective}: {len(images)} images {height}x{width}, "
                    f"{rendering.settings.get('steps')} steps", fontsize=10)
    return figure

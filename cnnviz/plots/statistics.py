"""Figures of activation statistics over many images (:func:`cnnviz.statistics`)."""
from __future__ import annotations


import numpy as np
from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure

from cnnviz.plots.style import grid_shape, log_axis
from cnnviz.core.references import channel_list, channel_spec
from cnnviz.errors import CnnvizError

MAX_EXEMPLAR_CHANNELS = 16  # exemplars() shows the first 16 channels unless told which


def statistics(statistics, columns: int = 3) -> Figure:
    """One histogram per layer (all channels pooled), log counts, x in raw activation units."""
    layers = list(statistics.layers.values())
    rows, columns = grid_shape(len(layers), columns)
    figure = ShownFigure(figsize=(3.7 * columns, 2.6 * rows + 0.5), layout="constrained")
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
        log_axis(axis)
        axis.axvline(0, color="grey", linewidth=0.6)
        summary = layer.layer_summary()
        axis.set_title(
            f"{layer.layer}: mean {summary['mean']:.3g}, std {summary['std']:.3g}, "
            f"{summary['positive_fraction']:.0%} > 0", fontsize=9,
        )
        axis.set_xlabel("activation (raw)", fontsize=8)
        axis.set_ylabel("count (log)", fontsize=8)
        axis.tick_params(labelsize=8)
    figure.suptitle(f"Activation histograms over {statistics.images} images", fontsize=10)
    return figure


def channel_statistics(statistics, layer: str | None = None) -> Figure:
    """Per channel of one layer: mean with a one-std bar, min and max; below, the fractions of
    positive and near-zero values, dead channels marked.

    ``statistics`` is a :class:`cnnviz.Statistics` (``layer``: which one, default the first) or
    one :class:`cnnviz.LayerStatistics`."""
    if hasattr(statistics, "layers"):
        stats = statistics[layer if layer is not None else next(iter(statistics.layers))]
    else:
        stats = statistics
    over = f"{statistics.images} images" if hasattr(statistics, "images") else f"{int(stats.count.max())} values per channel"
    channels = np.arange(stats.channels)
    figure = ShownFigure(figsize=(min(4 + 0.06 * stats.channels, 11.5), 5.2), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.errorbar(channels, stats.mean, yerr=stats.std, fmt="o", markersize=2.5, linewidth=0.7, label="mean ± std")
    top.scatter(channels, stats.maximum, marker="^", s=6, color="#b2182b", label="max")
    top.scatter(channels, stats.minimum, marker="v", s=6, color="#2166ac", label="min")
    top.axhline(0, color="grey", linewidth=0.5)
    top.set_ylabel("activation (raw)", fontsize=9)
    top.legend(fontsize=8, loc="upper right")
    bottom.bar(channels, stats.positive_fraction, color="#4c72b0", label="fraction > 0")
    bottom.plot(channels, stats.near_zero_fraction, "k.", markersize=3, label=f"fraction |x| <= {stats.near_zero_tolerance:g}")
    dead = np.flatnonzero(stats.dead)
    if len(dead):
        bottom.scatter(dead, np.full(len(dead), 0.02), marker="x", color="#d62728", s=18, label="dead (never > 0)")
    bottom.set_ylim(0, 1.02)
    bottom.set_xlabel("channel", fontsize=9)
    bottom.set_ylabel("fraction of values", fontsize=9)
    bottom.legend(fontsize=8, loc="upper right")
    for axis in (top, bottom):
        axis.tick_params(labelsize=8)
    figure.suptitle(
        f"{stats.layer}: per-channel statistics over {over} ({len(dead)} dead of {stats.channels})",
        fontsize=10,
    )
    return figure


def colorful_dimension(statistics) -> Figure:
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
    figure = ShownFigure(figsize=(min(2.5 + 0.7 * len(layers), 16), 4.5), layout="constrained")
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


def exemplars(statistics, layer: str, channels=None, max_channels: int = MAX_EXEMPLAR_CHANNELS) -> Figure:
    """Dataset exemplars of one layer: for each channel (a row) its top images, cropped around the
    position of the maximum, titled with the raw value; the title says which channels are shown,
    of how many.

    Args:
        statistics: a :class:`cnnviz.Statistics`.
        layer: one of its layers.
        channels: which channels (a spec such as ``"0-7,12"`` or ``"all"``, or indices); default
            the first ``max_channels``.
    """
    stats = statistics[layer]
    chosen = exemplar_channels(statistics, layer, channels, max_channels)
    k = stats.exemplar_values.shape[1]
    figure = ShownFigure(figsize=(1.05 * k + 1.2, 1.15 * len(chosen) + 0.6), layout="constrained")
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
        f"{stats.layer}, {channels_shown(chosen, stats.channels)}: top {k} of {statistics.images} images per channel "
        f"({size}x{size} crops around the maximum)",
        fontsize=10,
    )
    return figure


def exemplar_channels(statistics, layer: str, channels=None, max_channels: int = MAX_EXEMPLAR_CHANNELS) -> list[int]:
    """The channels :func:`exemplars` shows: ``channels`` (a spec such as ``"0-7,12"`` or
    ``"all"``, or indices), by default the first ``max_channels`` of the layer.

    Raises:
        CnnvizError: a malformed spec, or a channel the layer does not have (the message names the layer).
    """
    count = statistics[layer].channels
    if channels is None:
        return list(range(min(count, max_channels)))
    try:
        return channel_list(channels, count)
    except CnnvizError as error:
        raise CnnvizError(f"{layer}: {error}") from None


def channels_shown(shown, total: int) -> str:
    """Which channels of how many: ``"all 16 channels"``, ``"channels 0-15 of 128"``, ``"channel 5 of 128"``."""
    if list(shown) == list(range(total)):
        return f"all {total} channels" if total != 1 else "its one channel"
    return f"channel{'s' if len(shown) > 1 else ''} {channel_spec(shown)} of {total}"

"""Figures of one image's activations (:func:`cnnviz.activations`)."""
from __future__ import annotations


import torch
from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure

from cnnviz.errors import CnnvizError
from cnnviz.plots.style import grid_shape, value_scale


ACTIVATION_SCOPES = ("map", "layer", "global")


def activations(
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
    rows, columns = grid_shape(len(shown), columns)
    per_map_bar = scope == "map"
    figure = ShownFigure(figsize=(1.9 * columns + (0.3 * columns if per_map_bar else 1.2), 1.9 * rows + 0.7), layout="constrained")
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
        colour_map, norm = value_scale(*(shared or (low, high)))
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


def _plot_vector(activations, chosen, scope: str) -> Figure:
    shown = chosen.order[:256]
    values = chosen.maps[shown].numpy()
    figure = ShownFigure(figsize=(min(2 + 0.12 * len(shown), 18), 3.2), layout="constrained")
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

"""Figures of a layer's kernels (:func:`cnnviz.kernels`)."""
from __future__ import annotations


import numpy as np
from matplotlib import cm, colors
from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure

from cnnviz.plots.style import diverging_image, grid_shape, mosaic
from cnnviz.analyses.kernels import Kernels, check_scope


def kernels(kernels: Kernels, scope: str = "layer", columns: int = 8) -> Figure:
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
    check_scope(scope)
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
    shown = (f"{kernels.out_channels} kernels" if len(kernels.outputs) == kernels.out_channels
             else f"{len(kernels.outputs)} of {kernels.out_channels} kernels")
    figure.suptitle(f"{kernels.layer} ({kernels.module_type}, {shown} of {shape}; {scope_text})", fontsize=10)
    return figure


def _kernels_colour(kernels: Kernels, scope: str, columns: int) -> Figure:
    images = kernels.color_images(scope)
    scales = kernels.scales(scope)
    rows, columns = grid_shape(len(images), columns)
    figure = ShownFigure(figsize=(1.0 * columns + 1.4, 1.05 * rows + 0.7), layout="constrained")
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


def _kernels_pairs(kernels: Kernels, scope: str, columns: int) -> Figure:
    weight = kernels.weight[:, kernels.inputs].numpy()
    scales = kernels.scales(scope).numpy()
    if scope == "kernel":  # each row on its own scale: shown as a fraction of its own max |w|
        weight = weight / scales[:, None, None, None]
    tiled = mosaic([[weight[o, i] for i in range(weight.shape[1])] for o in range(weight.shape[0])])
    rows, cols = weight.shape[0], weight.shape[1]
    height, width = weight.shape[2:]
    figure = ShownFigure(figsize=(min(2 + 0.45 * cols * max(1, width / 3), 11.5), min(1.2 + 0.45 * rows * max(1, height / 3), 24)),
                    layout="constrained")
    axis = figure.subplots()
    image = diverging_image(axis, tiled, 1.0 if scope == "kernel" else float(scales[0]))
    axis.set_xticks([i * (width + 1) + (width - 1) / 2 for i in range(cols)], [str(i) for i in kernels.inputs], fontsize=7)
    row_labels = [
        f"{o} ±{s:.2g}" if scope == "kernel" else str(o) for o, s in zip(kernels.outputs, scales)
    ]
    axis.set_yticks([r * (height + 1) + (height - 1) / 2 for r in range(rows)], row_labels, fontsize=7)
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
    rows, columns = grid_shape(len(maps), columns)
    grid = [[maps[r * columns + c] for c in range(columns) if r * columns + c < len(maps)] for r in range(rows)]
    tiled = mosaic(grid)
    height, width = maps.shape[1:]
    figure = ShownFigure(figsize=(min(2 + 0.6 * columns * max(1, width / 3), 11.5), 1.2 + 0.6 * rows * max(1, height / 3)),
                         layout="constrained")
    axis = figure.subplots()
    image = diverging_image(axis, tiled, limit)
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
    rows, columns = grid_shape(len(weight), min(columns, 4))
    figure = ShownFigure(figsize=(2.2 * columns + 0.5, 1.6 * rows + 0.6), layout="constrained")
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
    tiled = mosaic([[maps[o, d] for d in range(maps.shape[1])] for o in range(maps.shape[0])])
    figure = ShownFigure(figsize=(min(2 + 0.6 * maps.shape[1], 11.5), 1.2 + 0.6 * maps.shape[0]), layout="constrained")
    axis = figure.subplots()
    image = diverging_image(axis, tiled, limit)
    height, width = maps.shape[2:]
    axis.set_xticks([d * (width + 1) + (width - 1) / 2 for d in range(maps.shape[1])], [str(d) for d in range(maps.shape[1])], fontsize=6)
    labels = [f"{o} ±{s:.2g}" if scope == "kernel" else str(o) for o, s in zip(kernels.outputs, scales)]
    axis.set_yticks([o * (height + 1) + (height - 1) / 2 for o in range(maps.shape[0])], labels, fontsize=6)
    axis.set_xlabel("depth slice", fontsize=8)
    axis.set_ylabel("output channel", fontsize=8)
    bar = figure.colorbar(image, ax=axis, shrink=0.6)
    bar.set_label("sum over inputs" + (" / each row's max |value|" if scope == "kernel" else ""), fontsize=8)
    return figure

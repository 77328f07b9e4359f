"""Figures of input attributions (:func:`cnnviz.saliency`) and of their sanity check."""
from __future__ import annotations


from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure

from cnnviz.errors import CnnvizError
from cnnviz.plots.style import SEQUENTIAL, value_scale


def attribution(attribution, index: int = 0) -> Figure:
    """One method on one image: the input, the signed map (summed over channels, diverging scale
    centred on zero), the absolute map, and the absolute map over the input; colour bars in raw
    attribution units. A CAM method's map, which is non-negative, shows on a scale from zero."""
    image = attribution.images[index].permute(1, 2, 0).numpy()
    signed = attribution.signed_map()[index].numpy()
    absolute = attribution.absolute_map()[index].numpy()
    figure = ShownFigure(figsize=(13, 3.5), layout="constrained")
    axes = figure.subplots(1, 4)
    axes[0].imshow(image, interpolation="nearest")
    axes[0].set_title(f"{attribution.sources[index]}", fontsize=8)
    colour_map, norm = value_scale(float(signed.min()), float(signed.max()))
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


def attributions(attributions: dict, images: int = 4) -> Figure:
    """Several methods side by side: a row per image (at most ``images``), the input then each
    method's absolute map with its own colour bar in raw units."""
    methods = list(attributions.values())
    if not methods:
        raise CnnvizError("no attributions to draw")
    first = methods[0]
    rows = min(images, len(first.images))
    figure = ShownFigure(figsize=(2.3 * (len(methods) + 1) + 0.5, 2.3 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, len(methods) + 1, squeeze=False)
    for row in range(rows):
        axes[row, 0].imshow(first.images[row].permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[row, 0].set_title(str(first.targets[row]), fontsize=7)
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


def overlays(attributions: dict, index: int = 0, title: str | None = None) -> Figure:
    """One image and every method's absolute map laid over it, side by side: the input, then per
    method the map (summed over channels) on a sequential scale from zero over a grey copy of the
    image, each with a colour bar labelled in raw attribution units. ``title`` defaults to the
    image and its target."""
    methods = list(attributions.values())
    if not methods:
        raise CnnvizError("no attributions to draw")
    first = methods[0]
    image = first.images[index].permute(1, 2, 0).numpy()
    grey = image.mean(axis=2)
    columns = len(methods) + 1
    figure = ShownFigure(figsize=(min(1.65 * columns + 0.3, 11.5), 2.35), layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    axes[0].imshow(image, interpolation="nearest")
    axes[0].set_title("input", fontsize=9)
    for axis, attribution in zip(axes[1:], methods):
        values = attribution.absolute_map()[index].numpy()
        top = max(float(values.max()), 1e-12)
        axis.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        shown = axis.imshow(values, cmap=SEQUENTIAL, vmin=0, vmax=top, alpha=0.7, interpolation="bilinear")
        bar = figure.colorbar(shown, ax=axis, fraction=0.05, pad=0.02)
        bar.ax.tick_params(labelsize=7)
        bar.set_label("|attribution|", fontsize=7)
        axis.set_title(attribution.method.replace("_", " "), fontsize=9)
    for axis in axes:
        axis.set_axis_off()
    figure.suptitle(title or f"{first.sources[index]}: {first.targets[index]}", fontsize=10)
    return figure


def sanity_check(check) -> Figure:
    """The randomisation test: rank correlation with the original map as more layers are
    re-initialised (top down), and the maps of the first image at each stage, each with a colour
    bar in raw attribution units."""
    stages = len(check.layers)
    figure = ShownFigure(figsize=(max(8, 1.8 * (stages + 1)), 5.4), layout="constrained")
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

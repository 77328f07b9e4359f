"""Figures of theoretical and effective receptive fields (:func:`cnnviz.receptive_field`)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import patches
from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure

from cnnviz.errors import CnnvizError


def receptive_field(fields, image: torch.Tensor | None = None, layers: Sequence[str] | None = None) -> Figure:
    """Draw the theoretical region of the centre unit of several layers as boxes on an image.

    Args:
        fields: a :class:`cnnviz.ReceptiveFields` (``cnnviz.receptive_fields(model)``).
        image: ``3 x H x W`` in [0, 1] at the fields' input size (e.g. ``display_image`` of a model
            input); a grey canvas without it.
        layers: which layers (default: up to 8 grid layers spread over the depth, each with a
            different size).

    Boxes may extend past the image (the padding); a layer whose units see the whole input is
    drawn as the image's frame and marked "whole input" in the legend.
    """
    import matplotlib

    height, width = fields.input_size
    if layers is None:
        grid = [name for name, rf in fields.items() if rf.kind == "grid"]
        distinct = list({fields[name].size: name for name in grid}.values())
        step = max(1, math.ceil(len(distinct) / 8))
        layers = distinct[::step][:8]
    missing = [name for name in layers if name not in fields]
    if missing:
        raise CnnvizError(f"no receptive field for {missing[0]!r}; the layers are {', '.join(list(fields)[:5])}, ...")
    figure = ShownFigure(figsize=(6.5, 5.2), layout="constrained")
    axis = figure.subplots()
    if image is not None:
        axis.imshow(image.permute(1, 2, 0).numpy(), extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    else:
        axis.add_patch(patches.Rectangle((-0.5, -0.5), width, height, facecolor="#dddddd"))
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(len(layers), 1)))
    extent = [-0.5, width - 0.5, -0.5, height - 0.5]
    for colour, name in zip(colours, layers):
        rf = fields[name]
        if rf.box is not None and rf.stride is None:  # one neuron: its own region
            top, left, bottom, right = rf.box
            extent = [min(extent[0], left - 0.5), max(extent[1], right + 0.5), min(extent[2], top - 0.5), max(extent[3], bottom + 0.5)]
            axis.add_patch(patches.Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                                             edgecolor=colour, linewidth=1.8, label=f"{name}: {rf.text}"))
            continue
        if rf.kind != "grid":
            axis.add_patch(patches.Rectangle((-0.5, -0.5), width, height, fill=False, edgecolor=colour, linewidth=2.5,
                                             label=f"{name}: whole input"))
            continue
        rows, columns = _map_size(rf, height, width)
        top, left, bottom, right = rf.region(rows // 2, columns // 2)
        extent = [min(extent[0], left - 0.5), max(extent[1], right + 0.5), min(extent[2], top - 0.5), max(extent[3], bottom + 0.5)]
        label = f"{name}: {rf.size[0]}x{rf.size[1]}, stride {rf.stride[0]}" + (" (sees all)" if rf.covers_input else "")
        axis.add_patch(patches.Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                                         edgecolor=colour, linewidth=1.8, label=label))
    axis.add_patch(patches.Rectangle((-0.5, -0.5), width, height, fill=False, edgecolor="black", linestyle="--", linewidth=0.8))
    axis.set_xlim(extent[0] - 2, extent[1] + 2)
    axis.set_ylim(extent[3] + 2, extent[2] - 2)
    axis.set_aspect("equal")
    if axis.get_legend_handles_labels()[0]:  # no layer with a grid (all global): no legend
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    axis.set_title(f"theoretical receptive field of the centre unit (input {height}x{width}, dashed)", fontsize=9)
    return figure


def one_receptive_field(field, image: torch.Tensor | None = None) -> Figure:
    """Draw one :class:`cnnviz.ReceptiveField` (of a layer's centre unit, or of a neuron) as a box
    on an image, as :func:`receptive_field` draws several."""
    from cnnviz.analyses.receptive_field import ReceptiveFields

    return receptive_field(ReceptiveFields({field.layer: field}, field.input_size, field.notes), image, [field.layer])


def _map_size(rf, height: int, width: int) -> tuple[int, int]:
    """The size of a grid layer's map, from its offset and stride (units whose centre is inside)."""
    rows = max(1, (height - 1 - rf.offset[0] - (rf.size[0] - 1) // 2) // rf.stride[0] + 1) if rf.stride[0] else 1
    columns = max(1, (width - 1 - rf.offset[1] - (rf.size[1] - 1) // 2) // rf.stride[1] + 1) if rf.stride[1] else 1
    return rows, columns


def effective_receptive_field(erf) -> Figure:
    """Draw an effective receptive field (:func:`cnnviz.effective_receptive_field`): the image,
    and the mean gradient magnitude as a heat map with a colour bar, the theoretical region as a
    box and the discs holding 50% and 95% of the mass."""
    figure = ShownFigure(figsize=(9, 4.2), layout="constrained")
    image_axis, map_axis = figure.subplots(1, 2)
    height, width = erf.map.shape
    image_axis.imshow(erf.image.permute(1, 2, 0).numpy())
    image_axis.set_title(f"input ({erf.images} image(s) averaged; the first shown)", fontsize=9)
    shown = map_axis.imshow(erf.map.numpy(), cmap="magma", vmin=0)
    figure.colorbar(shown, ax=map_axis, shrink=0.85, label="mean |d unit / d input| (raw)")
    theory = erf.theoretical
    for axis in (image_axis, map_axis):
        if theory.box is not None:
            top, left, bottom, right = theory.box
            axis.add_patch(patches.Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                                             edgecolor="#00c0ff", linewidth=1.5, label=f"theoretical {theory.size[0]}x{theory.size[1]}"))
        for radius, style in ((erf.radius_50, "-"), (erf.radius_95, "--")):
            if not math.isnan(radius):
                axis.add_patch(patches.Circle((erf.centre[1], erf.centre[0]), radius, fill=False, edgecolor="white",
                                              linestyle=style, linewidth=1.2))
        axis.set_xlim(-0.5, width - 0.5)
        axis.set_ylim(height - 0.5, -0.5)
        axis.set_axis_off()
    map_axis.legend(fontsize=7, loc="lower right")
    map_axis.set_title(
        f"effective receptive field of {erf.layer}\n50% of the mass within r = {erf.radius_50:.1f} px, "
        f"95% within {erf.radius_95:.1f} px (white circles)", fontsize=9)
    return figure

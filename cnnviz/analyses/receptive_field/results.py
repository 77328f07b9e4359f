"""The result types of receptive-field analyses: :class:`ReceptiveField` (one layer, channel or
neuron), :class:`ReceptiveFields` (every layer of a model, in run order) and
:class:`EffectiveReceptiveField` (the gradient-based field of one unit), with the short text
(``"11x11 /4 @-5"``) they are shown as. They hold data only; :mod:`.theoretical` and
:mod:`.effective` compute them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cnnviz.core.display import Shows

Pair = tuple[int, int]


@dataclass(frozen=True)
class ReceptiveField(Shows):
    """The theoretical receptive field of the units of one layer (or one channel or neuron).

    Attributes:
        layer: the layer reference (``features.10``, ``layer1.0.relu#2``, ``logits``).
        kind: ``"grid"`` (a spatial map: ``size``, ``stride`` and ``offset`` hold), ``"global"``
            (no spatial grid, and every unit depends on the whole input: ``size`` is the input
            size), ``"irregular"`` (positions mixed into a sequence, e.g. the tokens of a vision
            transformer before attention: ``size`` is the largest region), or ``"none"`` (the
            units depend on no input pixel).
        size: (height, width) of a unit's region, in input pixels (may exceed the input).
        stride: (height, width) step in the input between neighbouring units (the jump), or
            ``None`` without a grid.
        offset: (row, column) of the top-left input pixel of unit (0, 0)'s region, or ``None``.
        covers_input: every unit of the layer sees the whole input.
        uniform: all units of the grid have the same size and step (``False`` after an adaptive
            pooling whose output size does not divide its input size).
        input_size: the (height, width) of the input the fields were computed for.
        box: for a neuron reference (``layer:c@i,j``), its region ``(top, left, bottom, right)``
            clipped to the input (inclusive), else ``None``.
        notes: operations that were handled conservatively (their outputs may be overestimated).
        overhang: ``(rows, columns)``: how many of the grid's last rows and columns of units have
            a region cut short at the bottom and right edge, although the grid is regular (a
            ceil-mode pooling's last window overhangs the input: GoogLeNet, SqueezeNet, MTCNN);
            ``None`` when no unit does. Their regions end at the input's edge.
    """

    layer: str
    kind: str
    size: Pair
    stride: Pair | None
    offset: Pair | None
    covers_input: bool
    uniform: bool
    input_size: Pair
    box: tuple[int, int, int, int] | None = None
    notes: tuple[str, ...] = ()
    overhang: Pair | None = None

    @property
    def is_global(self) -> bool:
        """Every unit sees the whole input (a global layer, or a grid whose regions cover it)."""
        return self.kind == "global" or self.covers_input

    def region(self, row: int, column: int) -> tuple[int, int, int, int]:
        """The unclipped region ``(top, left, bottom, right)`` (inclusive) of unit ``(row, column)``."""
        if self.kind != "grid":
            height, width = self.input_size
            return (0, 0, height - 1, width - 1)
        top = self.offset[0] + row * self.stride[0]
        left = self.offset[1] + column * self.stride[1]
        return (top, left, top + self.size[0] - 1, left + self.size[1] - 1)

    @property
    def text(self) -> str:
        """A short description: ``"11x11 /4 @-5"``, ``"global"``, ``"tokens <=16x16"``."""
        if self.kind == "global":
            return "global"
        if self.kind == "none":
            return "-"
        size = pair_text(self.size)
        if self.kind == "irregular":
            return f"tokens <={size}"
        if self.stride is None and self.box is not None:  # one neuron: its region
            top, left, bottom, right = self.box
            return f"{size} (rows {top}-{bottom}, columns {left}-{right})"
        text = f"{size} /{pair_text(self.stride)} @{pair_text(self.offset)}"
        if self.overhang:
            rows, columns = self.overhang
            text += f" (last {rows} row(s), {columns} column(s) overhang)"
        elif not self.uniform:
            text += " ~"
        return text + (" (all)" if self.covers_input else "")

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {
            "layer": self.layer, "kind": self.kind, "size": list(self.size),
            "stride": list(self.stride) if self.stride else None, "offset": list(self.offset) if self.offset else None,
            "covers_input": self.covers_input, "uniform": self.uniform, "input_size": list(self.input_size),
            "box": list(self.box) if self.box else None, "notes": list(self.notes),
            "overhang": list(self.overhang) if self.overhang else None,
        }


class ReceptiveFields(Shows, dict):
    """Layer reference -> :class:`ReceptiveField` for every layer of a model, in run order.

    ``str(fields)`` is an aligned table; ``fields.plot()`` (:func:`cnnviz.plots.receptive_field`)
    draws the sizes and strides by depth; ``fields.to_dict()`` is JSON-ready.
    """

    def __init__(self, fields: dict, input_size: Pair, notes: Sequence[str] = ()) -> None:
        super().__init__(fields)
        self.input_size = input_size
        self.notes = list(notes)

    def __str__(self) -> str:
        """An aligned table: layer, size, stride, offset, what it sees."""
        header = ("layer", "size", "stride", "offset", "sees")
        rows = [header] + [
            (name, pair_text(rf.size) if rf.kind != "none" else "-",
             pair_text(rf.stride) if rf.stride else "-", pair_text(rf.offset) if rf.offset else "-",
             "whole input" if rf.is_global else rf.kind if rf.kind != "grid" else
             f"last {rf.overhang[0]} rows, {rf.overhang[1]} columns cut at the edge" if rf.overhang else "")
            for name, rf in self.items()
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def _summary(self) -> str:
        deepest = next(reversed(self.values()), None) if self else None
        last = f"; last {next(reversed(self))}: {deepest.text}" if deepest is not None else ""
        return f"{len(self)} layers at {pair_text(self.input_size)}{last}"

    def to_dict(self) -> dict:
        """JSON-ready data: the input size, the notes and every layer's :meth:`ReceptiveField.to_dict`."""
        return {"input_size": list(self.input_size), "notes": list(self.notes),
                "layers": [field.to_dict() for field in self.values()]}


@dataclass(repr=False)
class EffectiveReceptiveField(Shows):
    """The effective receptive field of one unit.

    Attributes:
        layer: the unit's reference (``layer:channel@row,column`` or the layer, whose channels
            are then summed).
        unit: the (row, column) of the unit in the layer's map.
        map: ``H x W``, the mean over images of ``|d unit / d input|`` summed over input channels.
        centre: the (row, column) of the centre of the unit's theoretical region, in input pixels.
        radius_50, radius_95: the radius (in pixels, around ``centre``) of the disc that holds
            50% and 95% of the map's mass.
        theoretical: the unit's theoretical :class:`ReceptiveField` (``box`` is its region).
        image: the first image as the model saw it (``3 x H x W`` in [0, 1]), for display.
        images: how many images were averaged.
    """

    layer: str
    unit: tuple[int, int]
    map: torch.Tensor
    centre: tuple[float, float]
    radius_50: float
    radius_95: float
    theoretical: ReceptiveField
    image: torch.Tensor
    images: int

    def _summary(self) -> str:
        return (f"{self.layer} at {self.unit[0]},{self.unit[1]}: 50% within {self.radius_50:.1f} px, "
                f"95% within {self.radius_95:.1f} px of the centre; theoretical {self.theoretical.text}; "
                f"{self.images} images")

    def to_dict(self) -> dict:
        """JSON-ready data (without the map)."""
        return {
            "layer": self.layer, "unit": list(self.unit), "centre": list(self.centre),
            "radius_50": self.radius_50, "radius_95": self.radius_95, "images": self.images,
            "theoretical": self.theoretical.to_dict(),
        }


def pair_text(pair) -> str:
    """``"3"`` for ``(3, 3)``, ``"3x5"`` for ``(3, 5)``, ``"-"`` for ``None``."""
    if pair is None:
        return "-"
    a, b = pair
    return str(a) if a == b else f"{a}x{b}"

"""The layer table: every module of a model that produces a tensor, with its output shapes.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> table = cnnviz.layer_table(loaded)
    >>> row = table["features.12"]
    >>> row.type, row.output_shape, row.calls      # one shape per call of the module
    ('ReLU', [(32, 32, 32)], 1)
    >>> print(table)              # what `cnnviz layers` prints     # doctest: +ELLIPSIS
    layer         type               output shape  calls   params
    ------------  -----------------  ------------  -----  -------
    features      Sequential         128x4x4           1  294,480
    features.0    Conv2d             16x64x64          1      448
    ...
    logits        PhotoNet           15                1  296,415
    35 layers, 296,415 parameters, input 3x64x64
    >>> print(cnnviz.layer_table(loaded, layer="features.12", receptive_fields=True))
    layer        type  output shape  calls  params  receptive field
    -----------  ----  ------------  -----  ------  ---------------
    features.12  ReLU  32x32x32          1       0  14 /2 @-6
    1 layer, 296,415 parameters, input 3x64x64

A module that runs twice per forward pass (torchvision's ResNet ``layer1.0.relu``) has two calls
and two output shapes in its row.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from cnnviz.core.display import Shows
from cnnviz.errors import CnnvizError, first_line
from cnnviz.core.model import input_size_pair, preprocessing_of, unwrap
from cnnviz.core.probe import probe
from cnnviz.core.references import Reference, resolve_all
from cnnviz.analyses.receptive_field import receptive_fields as every_receptive_field


@dataclass(frozen=True)
class LayerRow:
    """One module of the table.

    Attributes:
        name: its layer reference (``"logits"`` for the model's output).
        type: its class name.
        output_shape: the per-image output shape of each call (the batch dimension dropped).
        calls: how many times it runs in one forward pass.
        params: its number of parameters, those of its submodules included.
        receptive_fields: with ``layer_table(..., receptive_fields=True)``, the theoretical
            :class:`cnnviz.ReceptiveField` of each call, else ``None``.
    """

    name: str
    type: str
    output_shape: list[tuple[int, ...]]
    calls: int
    params: int
    receptive_fields: list | None = None

    def to_dict(self) -> dict:
        """The row as JSON-ready data (the keys ``name``, ``type``, ``output_shape``, ``calls``, ``params``)."""
        data = {
            "name": self.name,
            "type": self.type,
            "output_shape": [list(shape) for shape in self.output_shape],
            "calls": self.calls,
            "params": self.params,
        }
        if self.receptive_fields is not None:
            data["receptive_field"] = [rf.to_dict() if rf is not None else None for rf in self.receptive_fields]
        return data

    @property
    def receptive_field_text(self) -> str:
        """``"11 /4 @-5"`` (size, stride, offset), ``"global"``, or one per call when they differ."""
        if not self.receptive_fields:
            return ""
        texts = list(dict.fromkeys(rf.text if rf is not None else "?" for rf in self.receptive_fields))
        return ", ".join(texts)

    @property
    def shape_text(self) -> str:
        """``"64x56x56"``, ``"64x56x56 (x2)"`` for repeated equal shapes, else the shapes listed."""
        texts = ["x".join(str(s) for s in shape) or "scalar" for shape in self.output_shape]
        if len(set(texts)) == 1 and len(texts) > 1:
            return f"{texts[0]} (x{len(texts)})"
        return ", ".join(texts)


class LayerTable(list):
    """A list of :class:`LayerRow` that also looks rows up by name and shows itself as a table
    (text, and HTML in a notebook); ``plot()`` draws channels and map sizes by depth."""

    plot = Shows.plot

    def __init__(
        self, rows: Sequence[LayerRow], input_shape: tuple[int, ...], total_params: int, notes: Sequence[str] = ()
    ) -> None:
        super().__init__(rows)
        self.input_shape = input_shape
        self.total_params = total_params
        #: things the reader of the table should know (e.g. why a TorchScript model shows one row)
        self.notes = list(notes)

    def __getitem__(self, key):
        if isinstance(key, str):
            for row in self:
                if row.name == key:
                    return row
            raise KeyError(key)
        return super().__getitem__(key)

    def to_dict(self) -> list[dict]:
        """Every row as a dict (what ``cnnviz layers --json`` prints)."""
        return [row.to_dict() for row in self]

    def __str__(self) -> str:
        """An aligned plain-text table with a footer (what ``cnnviz layers`` prints)."""
        header = ("layer", "type", "output shape", "calls", "params")
        cells = [header] + [
            (r.name, r.type, r.shape_text, str(r.calls), f"{r.params:,}") for r in self
        ]
        if any(r.receptive_fields is not None for r in self):
            header = (*header, "receptive field")
            cells = [header] + [(*row, r.receptive_field_text) for row, r in zip(cells[1:], self)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        lines = []
        for index, row in enumerate(cells):
            parts = [
                cell.rjust(width) if 3 <= column <= 4 else cell.ljust(width)
                for column, (cell, width) in enumerate(zip(row, widths))
            ]
            lines.append("  ".join(parts).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        shape = "x".join(str(s) for s in self.input_shape)
        noun = "layer" if len(self) == 1 else "layers"
        lines.append(f"{len(self)} {noun}, {self.total_params:,} parameters, input {shape}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The same table as HTML (for a notebook), the receptive-field column included when computed."""
        fields = any(r.receptive_fields is not None for r in self)
        header = ("layer", "type", "output shape", "calls", "params") + (("receptive field",) if fields else ())
        head = "".join(f"<th>{h}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(
                f"<td>{html.escape(str(c))}</td>"
                for c in (r.name, r.type, r.shape_text, r.calls, f"{r.params:,}")
                + ((r.receptive_field_text,) if fields else ())
            ) + "</tr>"
            for r in self
        )
        shape = "x".join(str(s) for s in self.input_shape)
        caption = html.escape(f"{len(self)} layers, {self.total_params:,} parameters, input {shape}")
        return f"<table><caption>{caption}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def layer_table(
    model,
    *,
    input_size: int | Sequence[int] | None = None,
    layer: Reference | Sequence[Reference] | None = None,
    receptive_fields: bool = False,
) -> LayerTable:
    """One row per module that produces a tensor, found by a dry run on one random image.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left exactly as it was).
        input_size: ``H`` or ``(H, W)`` of the dry run; by default the model's input size
            (its preprocessing, or what the module declares, else 224 x 224).
        layer: keep only the rows of this layer reference or these, after checking each against the dry
            run (its call, channel and position must exist), in the order given.
        receptive_fields: also compute each layer's theoretical receptive field
            (:func:`cnnviz.receptive_field`: size, stride and offset; ``global`` when every unit
            sees the whole input), shown as a column.

    Returns:
        A :class:`LayerTable` of :class:`LayerRow`, in the order of ``named_modules()``, ending with
        a ``logits`` row for the model's output (``output`` when a module is named ``logits``). Modules that do not run (training-only heads) or
        do not return a tensor are left out.

    Raises:
        CnnvizError: the dry run failed (typically the wrong input size; the message says how to
            pass the right one).
    """
    refs = None if layer is None else [layer] if isinstance(layer, (str, nn.Module)) else list(layer)
    module, _ = unwrap(model)
    preprocessing = preprocessing_of(model)
    if input_size is not None:
        preprocessing = replace(preprocessing, input_size=input_size_pair(input_size))
    height, width = preprocessing.input_size
    input_shape = (preprocessing.channels, height, width)
    generator = torch.Generator().manual_seed(0)
    try:
        inputs = torch.randn((1, *input_shape), generator=generator)
    except RuntimeError as error:
        raise CnnvizError(f"cannot make a {'x'.join(map(str, input_shape))} dry-run input ({first_line(error)}); pass a smaller input_size=(H, W)") from None
    names = [name for name, _ in module.named_modules() if name]
    output_name = "output" if "logits" in names else "logits"
    hooked = names + ["output"]
    notes = []
    if isinstance(module, torch.jit.ScriptModule):
        # TorchScript layers cannot be hooked: only the output, or the error naming the asked layer.
        names, hooked = [], ["output", *(refs or [])]
        notes.append("a TorchScript model shows only its output: its layers cannot be hooked")
    with probe(model, hooked, store=False, early_exit=False) as recorder:
        try:
            recorder.run(inputs)
        except CnnvizError as error:
            reason = first_line(error.__cause__) if error.__cause__ is not None else str(error)
            raise CnnvizError(
                f"a dry run on one {'x'.join(map(str, input_shape))} image failed ({reason}); if the "
                "model expects another input size, pass it with input_size=(H, W)"
            ) from error.__cause__
        shapes = recorder.shapes
        wanted = None
        if refs is not None:
            resolved = resolve_all(model, list(refs))
            for ref in resolved:
                recorder.check(ref)
            wanted = list(dict.fromkeys(ref.layer for ref in resolved))
    modules = dict(module.named_modules())
    fields = None
    if receptive_fields:
        fields = every_receptive_field(model, input_size=(height, width))
    rows = []
    for name in wanted if wanted is not None else names + [""]:
        calls = shapes.get(name, [])
        if not calls or any(shape is None for shape in calls):
            continue
        owner = modules[name]
        rows.append(
            LayerRow(
                name=name or output_name,
                type=type(owner).__name__ if name else type(module).__name__,
                output_shape=[tuple(shape[1:]) for shape in calls],
                calls=len(calls),
                params=_count_parameters(owner),
                receptive_fields=None if fields is None else [
                    fields.get(_call_name(name or "logits", call)) for call in range(1, len(calls) + 1)
                ],
            )
        )
    return LayerTable(rows, input_shape, _count_parameters(module), notes)


def _call_name(name: str, call: int) -> str:
    return name if call == 1 else f"{name}#{call}"


def _count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

"""Theoretical receptive fields: :func:`receptive_field` (the size, stride and offset of every
layer, or of one layer, channel or neuron) and :func:`unit_boxes` (the clipped input box of every
element). Both trace the model (:func:`~.tracer.trace`); this file summarises the per-element
boxes into :class:`~.results.ReceptiveField` values.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch

from cnnviz.analyses.receptive_field.boxes import Box
from cnnviz.analyses.receptive_field.results import Pair, ReceptiveField, ReceptiveFields, pair_text
from cnnviz.analyses.receptive_field.tracer import trace
from cnnviz.core.model import unwrap
from cnnviz.core.references import Reference, resolve_all
from cnnviz.errors import CnnvizError


def receptive_field(model, target: Reference, *, input_size: int | Sequence[int] | None = None) -> ReceptiveField:
    """The theoretical receptive field of a layer, channel or neuron (every layer's:
    :func:`receptive_fields`).

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left exactly as it was).
        target: a layer reference (``"layer4"``, ``"features.10:5"``, ``"features.10:5@3,3"``,
            ``"logits"``).
        input_size: ``H`` or ``(H, W)`` of the input; by default the model's input size. Sizes
            matter for ceil-mode and adaptive pooling and for which units see the whole input.

    Returns:
        A :class:`ReceptiveField`.

    Raises:
        CnnvizError: a bad reference, a layer inside a TorchScript model (whose code cannot be
            traced: for it, only the output's field is given, measured from input gradients), or
            a forward pass that fails at this input size.

    Example::

        >>> import cnnviz
        >>> rf = cnnviz.receptive_field(cnnviz.load_model("builtin:photos"), "features.13")
        >>> rf.size, rf.stride, rf.offset
        ((16, 16), (4, 4), (-6, -6))
    """
    if target is None:
        raise CnnvizError("receptive_field takes one layer, channel or neuron; every layer's: cnnviz.receptive_fields(model)")
    return _fields(model, target, input_size)


def receptive_fields(model, *, input_size: int | Sequence[int] | None = None) -> ReceptiveFields:
    """The theoretical receptive field of every layer (each call of a module that runs several
    times), in run order: a :class:`ReceptiveFields` mapping each layer reference to its
    :class:`ReceptiveField`, which prints as a table and draws as boxes on an image.

    Args:
        model, input_size: as for :func:`receptive_field`.

    Example::

        >>> import cnnviz
        >>> fields = cnnviz.receptive_fields(cnnviz.load_model("builtin:photos"))
        >>> len(fields), fields["features.13"].size, fields["features.27"].size, fields["logits"].kind
        (35, (16, 16), (76, 76), 'global')
    """
    return _fields(model, None, input_size)


def _fields(model, layer, input_size):
    module, _ = unwrap(model)
    if isinstance(module, torch.jit.ScriptModule):
        return _measured_output_field(model, layer, input_size)
    refs = None if layer is None else resolve_all(model, [layer])
    traced = trace(model, input_size, refs, virtual=True)
    exact = trace(model, input_size, refs, virtual=False)
    if layer is None:
        fields = {
            name: _summarise(name, box, exact.boxes[name], traced.input_size, traced.notes)
            for name, box in traced.boxes.items()
        }
        return ReceptiveFields(fields, traced.input_size, traced.notes)
    resolved = refs[0]
    key = resolved.layer_text if not resolved.is_output else "logits"
    if key not in traced.boxes:
        raise CnnvizError(
            f"{key} did not run (or returned no tensor) during a forward pass at {pair_text(traced.input_size)}; "
            "pick a layer listed by 'cnnviz layers'"
        )
    shape = traced.shapes[key]
    resolved.check(shape)
    box, clipped = traced.boxes[key], exact.boxes[key]
    if resolved.channel is not None:
        box, clipped = (b.full(shape).map(lambda t: resolved.select(t).unsqueeze(1)) for b in (box, clipped))
    return _summarise(str(resolved), box, clipped, traced.input_size, traced.notes, neuron=resolved.position is not None)


SCRIPTED_NOTE = ("a TorchScript model: only the output's field is given, measured from the input gradients of "
                 "its units on random inputs (the layers inside cannot be traced)")


def _measured_output_field(model, layer, input_size):
    """The output's field of a TorchScript model, from where the input gradients of its units are
    non-zero (on two random inputs, united): a vector output's unit is global when its gradient
    reaches every pixel; a map's size comes from its centre unit, its stride and offset from the
    neighbouring units."""
    from cnnviz.core.gradients import gradients_on
    from cnnviz.core.guard import model_guard, to_device_of
    from cnnviz.core.model import input_size_pair, preprocessing_of

    if layer is not None and str(layer) not in ("logits", "output"):
        raise CnnvizError(f"{layer} is inside a TorchScript model, whose code cannot be traced: only 'logits' has a "
                          "receptive field here (load the original nn.Module for its layers)")
    module, _ = unwrap(model)
    preprocessing = preprocessing_of(model)
    height, width = input_size_pair(input_size) if input_size is not None else preprocessing.input_size
    generator = torch.Generator().manual_seed(0)
    with gradients_on(module), model_guard(module):
        x = torch.randn(2, preprocessing.channels, height, width, generator=generator)
        x = to_device_of(x, module).requires_grad_(True)
        try:
            out = module(x)
        except Exception as error:
            raise CnnvizError(f"the model does not run at {height}x{width}: {type(error).__name__}: {error}") from None
        if not isinstance(out, torch.Tensor) or out.dim() not in (2, 4):
            raise CnnvizError("the receptive field of a TorchScript model needs an output of N x K scores or N x K x H x W maps")

        def support(select) -> tuple[int, int, int, int] | None:
            (gradient,) = torch.autograd.grad(select(out).sum(), x, retain_graph=True)
            reached = gradient.abs().sum(dim=(0, 1)) > 0
            rows, columns = reached.any(dim=1).nonzero(), reached.any(dim=0).nonzero()
            if not len(rows):
                return None
            return int(rows.min()), int(columns.min()), int(rows.max()), int(columns.max())

        notes = (SCRIPTED_NOTE,)
        base = ReceptiveField("logits", "none", (0, 0), None, None, False, True, (height, width), None, notes)
        if out.dim() == 2:
            box = support(lambda t: t)
            if box is None:
                field = base
            elif box == (0, 0, height - 1, width - 1):
                field = replace(base, kind="global", size=(height, width), offset=(0, 0), covers_input=True)
            else:
                field = replace(base, kind="irregular", size=(box[2] - box[0] + 1, box[3] - box[1] + 1))
        else:
            rows, columns = out.shape[2], out.shape[3]
            i, j = rows // 2, columns // 2
            centre = support(lambda t: t[:, :, i, j])
            below = support(lambda t: t[:, :, i + 1, j]) if i + 1 < rows else None
            right = support(lambda t: t[:, :, i, j + 1]) if j + 1 < columns else None
            def step(first, second, low, high, end):  # from an edge the input does not clip (0: none)
                if first is None or second is None:
                    return 0
                if first[low] > 0 and second[low] > 0:
                    return second[low] - first[low]
                if first[high] < end and second[high] < end:
                    return second[high] - first[high]
                return 0

            full = (0, 0, height - 1, width - 1)
            corner = support(lambda t: t[:, :, 0, 0])
            last = support(lambda t: t[:, :, rows - 1, columns - 1])
            if centre is None:
                field = base
            elif centre == corner == last == full:
                field = replace(base, kind="global", size=(height, width), offset=(0, 0), covers_input=True)
            else:
                # the step between neighbours, at the centre or else at the top-left corner (where
                # a field larger than the input still has an unclipped far edge)
                next_row = support(lambda t: t[:, :, 1, 0]) if rows > 1 else None
                next_column = support(lambda t: t[:, :, 0, 1]) if columns > 1 else None
                stride = (step(centre, below, 0, 2, height - 1) or step(corner, next_row, 0, 2, height - 1),
                          step(centre, right, 1, 3, width - 1) or step(corner, next_column, 1, 3, width - 1))
                stride = tuple(value if value > 0 else 1 for value in stride)  # a 1-wide map: no step to see
                # where the field is larger than the input, the centre unit's clipped size: what it sees
                size = (centre[2] - centre[0] + 1, centre[3] - centre[1] + 1)
                offset = (centre[0] - i * stride[0], centre[1] - j * stride[1])
                field = replace(base, kind="grid", size=size, stride=stride, offset=offset, covers_input=False)
    if layer is not None:
        return field
    return ReceptiveFields({"logits": field}, (height, width), list(notes))


def unit_boxes(model, refs: Sequence[Reference] | None = None, *, input_size=None, batch: int = 1) -> dict[str, torch.Tensor]:
    """The clipped input box of every element of the outputs of some layers (or all).

    Returns, per layer reference, an integer tensor of shape ``output shape x 4`` holding
    ``(top, left, bottom, right)`` (inclusive) of the input pixels each element depends on,
    clipped to the input; an element that depends on no pixel holds ``(0, 0, -1, -1)``. This is
    what :func:`receptive_field` summarises; it is exact element by element (used to check the
    theory against gradients).
    """
    resolved = None if refs is None else resolve_all(model, list(refs))
    traced = trace(model, input_size, resolved, batch=batch)
    height, width = traced.input_size
    result = {}
    for name, box in traced.boxes.items():
        clipped = box.full(traced.shapes[name]).clipped(height, width)
        empty = (clipped[0] > clipped[2]) | (clipped[1] > clipped[3])
        stacked = torch.stack(clipped, dim=-1)
        stacked[empty] = torch.tensor([0.0, 0.0, -1.0, -1.0])
        result[name] = stacked.to(torch.int64)
    return result


def _summarise(name: str, box: Box, clipped: Box, input_size: Pair, notes, neuron: bool = False) -> ReceptiveField:
    """Size, stride and offset of a layer from the virtual boxes of its elements (kept compressed:
    each component varies only along the dimensions it depends on); whether its units see the
    whole input from the exact (clipped) boxes."""
    height, width = input_size
    base = ReceptiveField(name, "none", (0, 0), None, None, False, True, input_size, None, tuple(notes))
    finite_rows, finite_columns = torch.isfinite(box.rlo), torch.isfinite(box.clo)
    if not bool(finite_rows.any()):
        return base
    covers = all(
        bool((part[torch.isfinite(part)] <= bound if index % 2 == 0 else part[torch.isfinite(part)] >= bound).all())
        for index, (part, bound) in enumerate(zip(clipped.parts, (0, height - 1, 0, width - 1)))
    ) and bool(torch.isfinite(clipped.rlo).any())
    if neuron:
        rlo, rhi, clo, chi = (float(t.reshape(-1)[0]) for t in box.parts)
        exact = [float(t.reshape(-1)[0]) for t in clipped.parts]
        region = (int(exact[0]), int(exact[2]), int(exact[1]), int(exact[3])) if math.isfinite(exact[0]) else None
        return replace(base, kind="grid", size=(int(rhi - rlo) + 1, int(chi - clo) + 1), stride=None,
                       offset=(int(rlo), int(clo)), covers_input=covers, box=region)
    if box.rlo.dim() == 4 and 1 in {*_varying(box.rlo), *_varying(box.rhi), *_varying(box.clo), *_varying(box.chi)}:
        # channels of branches with different fields, concatenated (Inception, SqueezeNet's Fire):
        # the layer's field is the union over its channels
        box = Box(box.rlo.amin(1, keepdim=True), box.rhi.amax(1, keepdim=True),
                  box.clo.amin(1, keepdim=True), box.chi.amax(1, keepdim=True), box.jump)
    row_dims, column_dims = _varying(box.rlo), _varying(box.clo)
    row_extent = _largest(box.rhi, box.rlo)
    column_extent = _largest(box.chi, box.clo)
    if not row_dims and not column_dims:
        if covers:
            return replace(base, kind="global", size=(height, width), offset=(0, 0), covers_input=True)
        size = (row_extent, column_extent)
        if box.rlo.dim() >= 3:  # a 1 x 1 map
            offset = (int(box.rlo[finite_rows].min()), int(box.clo[finite_columns].min()))
            stride = (_whole(box.jump[0]), _whole(box.jump[1]))
            return replace(base, kind="grid", size=size, stride=stride, offset=offset, covers_input=covers)
        return replace(base, kind="irregular", size=size, covers_input=covers)
    if len(row_dims) != 1 or len(column_dims) != 1 or row_dims == column_dims or _varying(box.rhi) != row_dims \
            or _varying(box.chi) != column_dims:
        if covers:
            return replace(base, kind="global", size=(height, width), offset=(0, 0), covers_input=True)
        return replace(base, kind="irregular", size=(row_extent, column_extent), covers_input=covers)
    rows_lo, rows_hi = _along(box.rlo, row_dims[0], low=True), _along(box.rhi, row_dims[0], low=False)
    cols_lo, cols_hi = _along(box.clo, column_dims[0], low=True), _along(box.chi, column_dims[0], low=False)
    size = (_centre(rows_hi - rows_lo) + 1, _centre(cols_hi - cols_lo) + 1)
    stride = (_step(rows_lo, box.jump[0]), _step(cols_lo, box.jump[1]))
    offset = (int(rows_lo[0]), int(cols_lo[0]))
    uniform = _uniform(rows_lo, rows_hi) and _uniform(cols_lo, cols_hi)
    rows, columns = _overhang(rows_lo, rows_hi, stride[0]), _overhang(cols_lo, cols_hi, stride[1])
    if rows is not None and columns is not None and (rows[1] or columns[1]):
        # a regular grid whose last units are cut short (ceil-mode pooling): its size is the
        # full one, and the short units are named
        size = (rows[0], columns[0])
        overhang = (rows[1], columns[1])
    else:
        overhang = None
    return replace(base, kind="grid", size=size, stride=stride, offset=offset, covers_input=covers, uniform=uniform,
                   overhang=overhang)


def _overhang(lo: torch.Tensor, hi: torch.Tensor, stride: int) -> tuple[int, int] | None:
    """Along one axis of a grid: ``(full size, how many of the last units are shorter)`` when the
    units start at a regular step and only a trailing run of them is cut short at the far edge
    (ceil-mode pooling's last window overhangs the input, and the part beyond it holds no
    pixel; the layers after it inherit the short edge). ``None`` when the grid is not like that."""
    n = len(lo)
    if n < 2 or not bool((lo - lo[0] == torch.arange(n, dtype=lo.dtype) * stride).all()):
        return None
    extent = hi - lo + 1
    full = extent.max()
    short = extent < full
    count = int(short.sum())
    if count and (count == n or not bool(short[n - count:].all())):
        return None
    return int(full), count


def _varying(part: torch.Tensor) -> list[int]:
    """The dimensions along which ``part`` changes (an empty element next to a full one counts)."""
    dims = []
    finite = torch.isfinite(part)
    for dim in range(part.dim()):
        if part.shape[dim] < 2:
            continue
        a, b = part.narrow(dim, 1, part.shape[dim] - 1), part.narrow(dim, 0, part.shape[dim] - 1)
        fa, fb = finite.narrow(dim, 1, part.shape[dim] - 1), finite.narrow(dim, 0, part.shape[dim] - 1)
        if bool((fa != fb).any()) or bool(((a - b)[fa & fb] != 0).any()):
            dims.append(dim)
    return dims


def _along(part: torch.Tensor, dim: int, low: bool) -> torch.Tensor:
    """``part`` reduced to a vector along ``dim`` (the union over every other dimension)."""
    others = [d for d in range(part.dim()) if d != dim]
    if not others:
        return part
    return part.amin(dim=others) if low else part.amax(dim=others)


def _largest(high: torch.Tensor, low: torch.Tensor) -> int:
    extent = high - low
    extent = extent[torch.isfinite(extent)]
    return int(extent.max()) + 1 if extent.numel() else 0


def _centre(values: torch.Tensor) -> int:
    return int(values[len(values) // 2])


def _step(values: torch.Tensor, jump: float) -> int:
    if len(values) < 2:
        return _whole(jump)
    index = min(len(values) // 2, len(values) - 2)
    return int(values[index + 1] - values[index])


def _uniform(lo: torch.Tensor, hi: torch.Tensor) -> bool:
    if len(lo) < 2:
        return True
    steps = lo[1:] - lo[:-1]
    return bool((steps == steps[0]).all()) and bool(((hi - lo) == (hi - lo)[0]).all())


def _whole(value: float):
    return int(value) if float(value).is_integer() else round(float(value), 3)

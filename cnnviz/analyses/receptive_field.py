"""Receptive fields: which input pixels a unit can see.

**Theoretical** (:func:`receptive_field`): one forward pass of a random image, during which a
:class:`torch.overrides.TorchFunctionMode` follows, for every element of every tensor, the box of
input pixels it depends on. Each operation maps boxes exactly: a convolution or pooling takes the
union of the boxes under its (dilated, strided, padded, ceil-mode) window over its input channels,
an elementwise operation (a residual addition, a gating multiplication) the union of its operands'
boxes (the largest region over all paths), a concatenation or reshape moves boxes with the data,
a reduction, a linear layer, a softmax or an attention product the union over what it sums.
Nothing about the model is assumed: branches, residual connections, ``F.relu`` calls, windowed
attention and channel shuffles all come out of the data flow. Zero padding is given the boxes the
padded positions would have on an unbounded input ("virtual" coordinates), so the numbers are the
textbook ones (ResNet-50's last stage sees 427 pixels although its input has 224); the boxes
clipped to the image are what a unit actually sees.

For each layer the result (:class:`ReceptiveField`) gives the ``size`` of a unit's region, the
effective ``stride`` (jump) between neighbouring units, and the ``offset`` (the input coordinate
of the first row and column of unit (0, 0)'s region, negative when it starts in the padding):
unit ``(i, j)`` sees rows ``offset[0] + i * stride[0]`` to ``offset[0] + i * stride[0] + size[0] - 1``.
A layer with no spatial grid (after global pooling, a linear layer or attention) whose every unit
depends on the whole image is reported as ``kind == "global"`` with ``size`` the input size and
no stride: nothing is invented.

**Effective** (:func:`effective_receptive_field`, Luo et al., 2016): the magnitude of the
gradient of one centre unit with respect to the input, averaged over images, and the radii that
hold 50% and 95% of its mass.

Example::

    >>> import torchvision, cnnviz
    >>> model = torchvision.models.resnet50()
    >>> rf = cnnviz.receptive_field(model, "layer4")
    >>> rf.size, rf.stride, rf.offset
    ((427, 427), (32, 32), (-202, -202))
"""
from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from cnnviz.errors import CnnvizError, first_line
from cnnviz.core.model import input_size_pair, preprocessing_of, unwrap
from cnnviz.core.probe import model_guard
from cnnviz.core.references import LayerRef, Reference, resolve_all

Pair = tuple[int, int]


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class ReceptiveField:
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
        size = _pair_text(self.size)
        if self.kind == "irregular":
            return f"tokens <={size}"
        text = f"{size} /{_pair_text(self.stride)} @{_pair_text(self.offset)}"
        if not self.uniform:
            text += " ~"
        return text + (" (all)" if self.covers_input else "")

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {
            "layer": self.layer, "kind": self.kind, "size": list(self.size),
            "stride": list(self.stride) if self.stride else None, "offset": list(self.offset) if self.offset else None,
            "covers_input": self.covers_input, "uniform": self.uniform, "input_size": list(self.input_size),
            "box": list(self.box) if self.box else None, "notes": list(self.notes),
        }


class ReceptiveFields(dict):
    """Layer reference -> :class:`ReceptiveField` for every layer of a model, in run order."""

    def __init__(self, fields: dict, input_size: Pair, notes: Sequence[str] = ()) -> None:
        super().__init__(fields)
        self.input_size = input_size
        self.notes = list(notes)

    def to_text(self) -> str:
        """An aligned table: layer, kind, size, stride, offset."""
        header = ("layer", "size", "stride", "offset", "sees")
        rows = [header] + [
            (name, _pair_text(rf.size) if rf.kind != "none" else "-",
             _pair_text(rf.stride) if rf.stride else "-", _pair_text(rf.offset) if rf.offset else "-",
             "whole input" if rf.is_global else rf.kind if rf.kind != "grid" else "")
            for name, rf in self.items()
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


# --------------------------------------------------------------------------------------------
# public functions


def receptive_field(model, ref: Reference | None = None, *, input_size: int | Sequence[int] | None = None):
    """The theoretical receptive field of a layer, channel or neuron, or of every layer.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left exactly as it was).
        ref: a layer reference (``"layer4"``, ``"features.10:5"``, ``"features.10:5@3,3"``,
            ``"logits"``); ``None`` for every layer.
        input_size: ``H`` or ``(H, W)`` of the input; by default the model's input size. Sizes
            matter for ceil-mode and adaptive pooling and for which units see the whole input.

    Returns:
        A :class:`ReceptiveField`, or for ``ref=None`` a :class:`ReceptiveFields` mapping every
        layer reference (each call of a module that runs several times) to one, in run order.

    Raises:
        CnnvizError: a bad reference, a TorchScript model, or a forward pass that fails at this
            input size.

    Example::

        rf = cnnviz.receptive_field(torchvision.models.vgg16(), "features.29")
        rf.size, rf.stride, rf.offset        # ((212, 212), (16, 16), (-90, -90))
    """
    refs = None if ref is None else resolve_all(model, [ref])
    traced = _trace(model, input_size, refs, virtual=True)
    exact = _trace(model, input_size, refs, virtual=False)
    if ref is None:
        fields = {
            name: _summarise(name, box, exact.boxes[name], traced.input_size, traced.notes)
            for name, box in traced.boxes.items()
        }
        return ReceptiveFields(fields, traced.input_size, traced.notes)
    resolved = refs[0]
    key = resolved.layer_text if not resolved.is_output else "logits"
    if key not in traced.boxes:
        raise CnnvizError(
            f"{key} did not run (or returned no tensor) during a forward pass at {_pair_text(traced.input_size)}; "
            "pick a layer listed by 'cnnviz layers'"
        )
    shape = traced.shapes[key]
    resolved.check(shape)
    box, clipped = traced.boxes[key], exact.boxes[key]
    if resolved.channel is not None:
        box, clipped = (b.full(shape).map(lambda t: resolved.select(t).unsqueeze(1)) for b in (box, clipped))
    return _summarise(str(resolved), box, clipped, traced.input_size, traced.notes, neuron=resolved.position is not None)


def unit_boxes(model, refs: Sequence[Reference] | None = None, *, input_size=None, batch: int = 1) -> dict[str, torch.Tensor]:
    """The clipped input box of every element of the outputs of some layers (or all).

    Returns, per layer reference, an integer tensor of shape ``output shape x 4`` holding
    ``(top, left, bottom, right)`` (inclusive) of the input pixels each element depends on,
    clipped to the input; an element that depends on no pixel holds ``(0, 0, -1, -1)``. This is
    what :func:`receptive_field` summarises; it is exact element by element (used to check the
    theory against gradients).
    """
    resolved = None if refs is None else resolve_all(model, list(refs))
    traced = _trace(model, input_size, resolved, batch=batch)
    height, width = traced.input_size
    result = {}
    for name, box in traced.boxes.items():
        clipped = box.full(traced.shapes[name]).clipped(height, width)
        empty = (clipped[0] > clipped[2]) | (clipped[1] > clipped[3])
        stacked = torch.stack(clipped, dim=-1)
        stacked[empty] = torch.tensor([0.0, 0.0, -1.0, -1.0])
        result[name] = stacked.to(torch.int64)
    return result


# --------------------------------------------------------------------------------------------
# boxes


@dataclass
class _Box:
    """Per-element input boxes of one tensor, in virtual (unclipped) input coordinates: first and
    last row (``rlo``, ``rhi``) and column (``clo``, ``chi``), each a float tensor of the tensor's
    shape; an element that depends on no pixel has ``lo = +inf`` and ``hi = -inf``. ``jump`` is
    the (row, column) step of the grid, used to extend a 1-pixel map into its padding."""

    rlo: torch.Tensor
    rhi: torch.Tensor
    clo: torch.Tensor
    chi: torch.Tensor
    jump: tuple[float, float] = (1.0, 1.0)

    def map(self, function, jump=None) -> _Box:
        return _Box(function(self.rlo), function(self.rhi), function(self.clo), function(self.chi), jump or self.jump)

    @property
    def parts(self):
        return (self.rlo, self.rhi, self.clo, self.chi)

    def full(self, shape) -> _Box:
        """The components expanded to ``shape`` (they are stored broadcastable to it)."""
        shape = tuple(shape)
        return self.map(lambda t: _fit(t, shape).expand(shape))

    def clipped(self, height: int, width: int):
        return (self.rlo.clamp(min=0), self.clo.clamp(min=0), self.rhi.clamp(max=height - 1), self.chi.clamp(max=width - 1))


def _fit(part: torch.Tensor, shape) -> torch.Tensor:
    """``part`` with leading 1-long dimensions added up to ``len(shape)`` dimensions."""
    missing = len(shape) - part.dim()
    return part.reshape((1,) * missing + tuple(part.shape)) if missing > 0 else part


def _empty(shape, jump=(1.0, 1.0)) -> _Box:
    lo = torch.full([1] * len(shape), math.inf)
    hi = torch.full([1] * len(shape), -math.inf)
    return _Box(lo, hi, lo, hi, jump)


def _union(boxes: Sequence[_Box], shape) -> _Box:
    """The union of boxes broadcast to ``shape``."""
    shape = tuple(shape)
    parts = []
    for index, reduce in enumerate((torch.minimum, torch.maximum, torch.minimum, torch.maximum)):
        value = None
        for box in boxes:
            part = box.parts[index]
            value = part if value is None else reduce(value, part)
        parts.append(_fit(value, shape))
    jump = tuple(max(b.jump[i] for b in boxes) for i in range(2))
    return _Box(*parts, jump)


def _reduce(box: _Box, dims, keepdim: bool = True) -> _Box:
    dims = tuple(dims)
    if not dims or box.rlo.dim() == 0:
        return box
    def low(t):
        return t.amin(dim=dims, keepdim=keepdim)
    def high(t):
        return t.amax(dim=dims, keepdim=keepdim)
    return _Box(low(box.rlo), high(box.rhi), low(box.clo), high(box.chi), box.jump)


def _extend(part: torch.Tensor, dim: int, before: int, after: int, step_when_single: float, is_lo: bool) -> torch.Tensor:
    """Pad ``part`` along ``dim`` with the values the missing positions would have on an
    unbounded grid (linear extrapolation; the grid's jump for a 1-long dimension)."""
    size = part.shape[dim]
    pieces = []
    if before > 0 or after > 0:
        if size >= 2:
            first_step = part.narrow(dim, 1, 1) - part.narrow(dim, 0, 1)
            last_step = part.narrow(dim, size - 1, 1) - part.narrow(dim, size - 2, 1)
        else:
            first_step = last_step = torch.full_like(part.narrow(dim, 0, 1), step_when_single)
        first_step = torch.nan_to_num(first_step, nan=0.0, posinf=0.0, neginf=0.0)
        last_step = torch.nan_to_num(last_step, nan=0.0, posinf=0.0, neginf=0.0)
    if before > 0:
        steps = torch.arange(before, 0, -1, dtype=part.dtype).view([-1 if d == dim % part.dim() else 1 for d in range(part.dim())])
        pieces.append(part.narrow(dim, 0, 1) - steps * first_step)
    elif before < 0:
        part = part.narrow(dim, -before, part.shape[dim] + before)
    pieces.append(part)
    if after > 0:
        steps = torch.arange(1, after + 1, dtype=part.dtype).view([-1 if d == dim % part.dim() else 1 for d in range(part.dim())])
        pieces.append(part.narrow(dim, part.shape[dim] - 1, 1) + steps * last_step)
    elif after < 0:
        pieces[-1] = part.narrow(dim, 0, part.shape[dim] + after)
    return torch.cat(pieces, dim=dim) if len(pieces) > 1 else pieces[0]


def _extend_box(box: _Box, pads: Sequence[tuple[int, int]], shape, virtual: bool) -> _Box:
    """Zero padding of the last ``len(pads)`` dimensions of a tensor of ``shape``: the padded
    positions depend on no pixel, or (``virtual``) get the boxes they would have on an unbounded
    input."""
    count = len(pads)
    box = _expand_last(box, shape, count)
    if not virtual:
        pad = [amount for before, after in reversed(pads) for amount in (before, after)]
        return _Box(*(F.pad(part, pad, value=math.inf if index % 2 == 0 else -math.inf)
                      for index, part in enumerate(box.parts)), box.jump)
    parts = list(box.parts)
    for offset, (before, after) in enumerate(pads):
        dim = -count + offset
        for index in range(4):
            is_row = index < 2
            # a 1-long map: the rows advance along the second-last dimension, the columns along the last
            grows = (is_row and dim == -2) or (not is_row and dim == -1)
            step = (box.jump[0] if is_row else box.jump[1]) if grows else 0.0
            parts[index] = _extend(parts[index], dim, before, after, step, index % 2 == 0)
    return _Box(*parts, box.jump)


def _expand_last(box: _Box, shape, count: int) -> _Box:
    """Components expanded to the full size of the last ``count`` dimensions of ``shape``."""
    shape = tuple(shape)

    def expand(t):
        t = _fit(t, shape)
        return t.expand(*t.shape[:-count], *shape[-count:])

    return box.map(expand)


def _window(box: _Box, in_shape, out_shape, kernel, stride, padding, dilation, ceil_mode: bool, groups: int | None,
            virtual: bool) -> _Box:
    """The union of boxes under a sliding window over the last ``len(kernel)`` dimensions; with
    ``groups``, also over the input channels of each group (a convolution)."""
    dims = len(kernel)
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    batched = len(in_shape) == dims + 2
    if not batched:
        in_shape, out_shape = (1, *in_shape), (1, *out_shape)
        box = box.map(lambda t: _fit(t, in_shape[1:]).unsqueeze(0))
    box = box.map(lambda t: _fit(t, in_shape))
    grouped_channels = False
    if groups is not None:
        if groups == 1 or max(p.shape[1] for p in box.parts) == 1:
            box = _reduce(box, (1,))
        else:
            box = box.map(lambda t: t.expand(t.shape[0], *in_shape[1:]))
            grouped = box.map(lambda t: t.reshape(t.shape[0], groups, in_shape[1] // groups, *t.shape[2:]))
            box = _reduce(grouped, (2,), keepdim=False)
            grouped_channels = True
    box = _extend_box(box, [(p, q) for p, q in padding], in_shape, virtual)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[dims - 1]

    def slide(t, sign):
        t = sign * t
        if any(t.shape[2 + d] < dilation[d] * (kernel[d] - 1) + 1 for d in range(dims)):  # only ceil-mode can get here
            t = F.pad(t, [0, 1] * dims, value=-math.inf)
        shape = t.shape
        flat = t.reshape(shape[0] * shape[1], 1, *shape[2:]) if shape[0] * shape[1] > 0 else t
        out = pool(flat, kernel, stride, 0, dilation, ceil_mode=ceil_mode)
        return sign * out.reshape(shape[0], shape[1], *out.shape[2:])

    if dims == 1:
        jump = (box.jump[0], box.jump[1] * stride[0])
    else:
        jump = (box.jump[0] * stride[-2], box.jump[1] * stride[-1])
    result = _Box(slide(box.rlo, -1), slide(box.rhi, 1), slide(box.clo, -1), slide(box.chi, 1), jump)
    spatial_out = out_shape[-dims:]
    result = result.map(lambda t: t[(..., *(slice(0, n) for n in spatial_out))])
    if grouped_channels and out_shape[1] != groups:
        repeat = out_shape[1] // groups
        result = result.map(lambda t: t.repeat_interleave(repeat, dim=1))
    if tuple(result.rlo.shape[-dims:]) != spatial_out:  # a window rule we did not reproduce: be safe
        raise _Unhandled("window")
    if not batched:
        result = result.map(lambda t: t[0])
    return result


def _adaptive(box: _Box, in_shape, out_shape, dims: int) -> _Box:
    """Adaptive pooling: output ``i`` pools input ``floor(i * n / m)`` to ``ceil((i + 1) * n / m) - 1``."""
    result = _expand_last(box, in_shape, dims)
    for d in range(dims):
        dim = -dims + d
        n, m = result.rlo.shape[dim], out_shape[dim]
        pieces = []
        for i in range(m):
            start, end = (i * n) // m, -(-((i + 1) * n) // m)
            pieces.append(_reduce(result.map(lambda t, s=start, e=end: t.narrow(dim, s, e - s)), (dim,)))
        jump = list(result.jump)
        axis = 0 if (dims >= 2 and d == dims - 2) else 1
        jump[axis] = jump[axis] * n / m
        result = _Box(*(torch.cat([p.parts[k] for p in pieces], dim=dim) for k in range(4)), tuple(jump))
    return result


# --------------------------------------------------------------------------------------------
# the tracing mode


class _Unhandled(Exception):
    pass


POINTWISE = set("""
abs absolute acos add addcdiv addcmul alpha_dropout asin atan atan2 batch_norm bitwise_and bitwise_not
bitwise_or bitwise_xor bool byte ceil celu char clamp clamp_max clamp_min clip copysign cos cosh deg2rad
div divide double dropout dropout1d dropout2d dropout3d elu eq erf erfc erfinv exp exp2 expm1
feature_alpha_dropout float float_power floor floor_divide fmax fmin fmod frac ge gelu glu greater
greater_equal gt half hardshrink hardsigmoid hardswish hardtanh heaviside int isfinite isinf isnan
le leaky_relu lerp less less_equal lgamma log log10 log1p log2 log_sigmoid logical_and logical_not
logical_or logical_xor logit long lt masked_fill maximum minimum mish mul multiply nan_to_num ne neg
negative not_equal pow prelu rad2deg reciprocal relu relu6 remainder round rrelu rsqrt rsub selu short
sigmoid sign signbit silu sin sinh softplus softshrink softsign sqrt square sub subtract tan tanh
tanhshrink threshold true_divide trunc where xlogy bfloat16 type_as to type cpu cuda
requires_grad_ stochastic_depth
""".split())

MOVES = set("""
view view_as reshape reshape_as permute transpose t flatten unflatten squeeze unsqueeze expand expand_as
repeat contiguous clone detach cat concat concatenate stack hstack vstack __getitem__ narrow select split
chunk unbind tensor_split split_with_sizes roll flip fliplr flipud movedim moveaxis swapaxes swapdims
index_select gather take_along_dim pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle
unfold repeat_interleave tile diagonal rot90 mT
""".split())

REDUCTIONS = set("""
sum mean amax amin prod std var norm logsumexp all any argmax argmin nansum nanmean median nanmedian
count_nonzero std_mean var_mean cumsum cumprod logcumsumexp
""".split())

DUNDER = {
    "add": "add", "radd": "add", "iadd": "add", "sub": "sub", "rsub": "sub", "isub": "sub", "mul": "mul",
    "rmul": "mul", "imul": "mul", "truediv": "div", "rtruediv": "div", "itruediv": "div", "floordiv": "div",
    "rfloordiv": "div", "mod": "div", "pow": "pow", "rpow": "pow", "ipow": "pow", "neg": "neg", "abs": "abs",
    "and": "mul", "or": "mul", "xor": "mul", "iand": "mul", "ior": "mul", "invert": "neg", "eq": "eq", "ne": "eq",
    "lt": "eq", "le": "eq", "gt": "eq", "ge": "eq", "matmul": "matmul", "rmatmul": "rmatmul",
    "getitem": "__getitem__", "setitem": "__setitem__",
}


class _Tracer(TorchFunctionMode):
    """Follows the input box of every element of every tensor through a forward pass."""

    def __init__(self, virtual: bool) -> None:
        super().__init__()
        self.virtual = virtual
        self._boxes: dict[int, tuple[weakref.ref, _Box]] = {}
        self.notes: list[str] = []
        self.paused = False

    def get(self, tensor) -> _Box | None:
        if not isinstance(tensor, torch.Tensor):
            return None
        entry = self._boxes.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            return None
        return entry[1]

    def set(self, tensor: torch.Tensor, box: _Box) -> None:
        key = id(tensor)
        boxes = self._boxes
        self._boxes[key] = (weakref.ref(tensor, lambda _ref, key=key: boxes.pop(key, None)), box)

    def box_or_empty(self, tensor) -> _Box:
        box = self.get(tensor)
        return box if box is not None else _empty(tensor.shape)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.paused:
            return result
        traced = [t for t in _tensors(args, kwargs) if self.get(t) is not None]
        if not traced:
            return result
        outputs = [t for t in _tensors((result,), {}) if t.is_floating_point() or t.dtype == torch.bool or not t.is_complex()]
        if not outputs:
            return result
        name = _name(func)
        try:
            self._propagate(name, func, args, kwargs, result, traced)
        except _Unhandled:
            self._fallback(name, traced, outputs)
        except (RuntimeError, TypeError, ValueError, IndexError) as error:
            self.note(f"{name}: {first_line(error)}")
            self._fallback(name, traced, outputs)
        return result

    # -- propagation ---------------------------------------------------------------------------
    def _fallback(self, name: str, traced, outputs) -> None:
        """Unknown operation: every output element depends on everything its inputs depend on."""
        self.note(f"{name} treated as mixing all positions (its regions may be overestimated)")
        boxes = [self.get(t) for t in traced]
        lows = [torch.minimum, torch.maximum, torch.minimum, torch.maximum]
        parts = []
        for k, reduce in enumerate(lows):
            values = [b.parts[k].amin() if k % 2 == 0 else b.parts[k].amax() for b in boxes]
            value = values[0]
            for other in values[1:]:
                value = reduce(value, other)
            parts.append(value)
        total = _Box(*parts, tuple(max(b.jump[i] for b in boxes) for i in range(2)))
        for out in outputs:
            self.set(out, _union([total], out.shape))

    def _propagate(self, name, func, args, kwargs, result, traced) -> None:
        base = name.rstrip("_") if not name.startswith("__") else name
        if name.startswith("__") and name.endswith("__"):
            base = DUNDER.get(name.strip("_"), name)
        if base in ("size", "dim", "numel", "__get__", "item", "tolist", "_assert", "new_zeros", "new_ones",
                    "new_empty", "new_full", "zeros_like", "ones_like", "empty_like", "full_like", "rand_like",
                    "randn_like", "shape", "stride", "data_ptr", "is_contiguous", "isclose", "allclose", "equal"):
            if base in ("zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "new_zeros",
                        "new_ones", "new_empty", "new_full") and isinstance(result, torch.Tensor):
                self.set(result, _empty(result.shape))
            return
        if base == "__setitem__":
            self._setitem(args)
            return
        if base in ("copy", "fill", "zero"):
            target = args[0]
            source = self.get(args[1]) if len(args) > 1 else None
            self.set(target, _union([source], target.shape) if source is not None else _empty(target.shape))
            return
        if base in POINTWISE:
            outputs = [result] if isinstance(result, torch.Tensor) else [t for t in _tensors((result,), {})]
            boxes = [self.get(t) for t in traced]
            for out in outputs:
                self.set(out, _union(boxes, out.shape))
            return
        if base in MOVES:
            self._move(func, base, args, kwargs, result)
            return
        if base in REDUCTIONS or base in ("max", "min", "sort", "topk", "kthvalue", "mode", "aminmax"):
            self._reduction(base, args, kwargs, result, traced)
            return
        if base in ("softmax", "log_softmax", "softmin", "normalize", "cumsum", "local_response_norm"):
            dim = _argument(args, kwargs, 1, "dim", None)
            if base == "normalize":
                dim = _argument(args, kwargs, 2, "dim", 1)
            if base == "local_response_norm":
                dim = 1
            box = self.get(args[0])
            dims = range(args[0].dim()) if dim is None else [dim]
            self.set(result, _union([_reduce(box, dims)], result.shape))
            return
        if base == "layer_norm":
            shape = _argument(args, kwargs, 1, "normalized_shape", None)
            count = 1 if isinstance(shape, int) else len(shape)
            box = self.get(args[0])
            self.set(result, _union([_reduce(box, range(-count, 0))], result.shape))
            return
        if base in ("group_norm", "instance_norm"):
            x = args[0]
            box = self.get(x).full(x.shape)
            groups = _argument(args, kwargs, 1, "num_groups", 1) if base == "group_norm" else x.shape[1]
            grouped = box.map(lambda t: t.reshape(x.shape[0], groups, -1))
            self.set(result, _union([_reduce(grouped, (2,)).map(lambda t: t.expand(x.shape[0], groups, x[0].numel() // groups).reshape(x.shape))], result.shape))
            return
        if base == "linear":
            box = self.get(args[0])
            boxes = [_reduce(box, (-1,))] if box is not None else []
            if any(self.get(w) is not None for w in args[1:2]):
                raise _Unhandled(base)
            self.set(result, _union(boxes, result.shape))
            return
        if base in ("matmul", "rmatmul", "mm", "bmm", "baddbmm", "addmm", "addbmm"):
            self._matmul(base, args, result)
            return
        if base == "einsum":
            self._einsum(args, result)
            return
        if base == "scaled_dot_product_attention":
            query, key, value = args[:3]
            parts = [_reduce(self.box_or_empty(query), (-1,))]
            parts += [_reduce(self.box_or_empty(t), (-2, -1)) for t in (key, value)]
            self.set(result, _union(parts, result.shape))
            return
        if base == "multi_head_attention_forward":
            query, key, value = args[:3]
            batched = query.dim() == 3
            sequence_dims = (0, 2) if batched else (0, 1)
            parts = [_reduce(self.box_or_empty(query), (-1,))]
            parts += [_reduce(self.box_or_empty(t), sequence_dims) for t in (key, value)]
            output, weights = result
            self.set(output, _union(parts, output.shape))
            if isinstance(weights, torch.Tensor):
                self.set(weights, _union([_reduce(_union(parts, output.shape), range(output.dim()))], weights.shape))
            return
        if base in ("conv1d", "conv2d", "conv3d"):
            self._conv(base, args, kwargs, result)
            return
        if base in ("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
                    "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices", "lp_pool1d",
                    "lp_pool2d", "lp_pool3d"):
            self._pool(base, args, kwargs, result)
            return
        if base.startswith("adaptive_") and "pool" in base:
            dims = int(base[-2])
            box = self.get(args[0])
            outputs = [result] if isinstance(result, torch.Tensor) else list(result)
            pooled = _adaptive(box, args[0].shape, outputs[0].shape, dims)
            for out in outputs:
                self.set(out, pooled)
            return
        if base == "pad":
            self._pad(args, kwargs, result)
            return
        if base in ("interpolate", "upsample", "upsample_nearest"):
            mode = _argument(args, kwargs, 3, "mode", "nearest")
            if mode in ("nearest", "nearest-exact"):
                self._move(func, base, args, kwargs, result)
                return
            raise _Unhandled(base)
        raise _Unhandled(base)

    def _move(self, func, base, args, kwargs, result) -> None:
        """Data movement: the same operation applied to each box component."""
        data = args[0]
        if isinstance(data, (list, tuple)):
            boxes = [self.box_or_empty(t).full(t.shape).map(torch.Tensor.contiguous) for t in data]
            parts = [func([b.parts[k] for b in boxes], *args[1:], **kwargs) for k in range(4)]
            jump = tuple(max(b.jump[i] for b in boxes) for i in range(2))
        else:
            box = self.get(data)
            if box is None:
                raise _Unhandled(base)
            box = box.full(data.shape).map(torch.Tensor.contiguous)  # views need real strides
            rest = list(args[1:])
            if base in ("__getitem__",):
                rest = [_plain_index(rest[0])]
            parts = [func(part, *rest, **kwargs) for part in box.parts]
            jump = box.jump
        if isinstance(result, torch.Tensor):
            self.set(result, _Box(*(_compress(p) for p in parts), jump))
        else:
            outputs = list(result)
            for index, out in enumerate(outputs):
                if isinstance(out, torch.Tensor):
                    self.set(out, _Box(*(_compress(p[index]) for p in parts), jump))

    def _setitem(self, args) -> None:
        target, index, value = args[0], args[1], args[2]
        box = self.box_or_empty(target).full(target.shape)
        source = self.get(value) if isinstance(value, torch.Tensor) else None
        parts = [part.clone() for part in box.parts]
        selected = parts[0][_plain_index(index)]
        new = _union([source], selected.shape) if source is not None else _empty(selected.shape)
        for k in range(4):
            parts[k][_plain_index(index)] = new.parts[k]
        self.set(target, _Box(*parts, box.jump))

    def _reduction(self, base, args, kwargs, result, traced) -> None:
        x = args[0]
        if base in ("max", "min") and len(args) > 1 and isinstance(args[1], torch.Tensor):
            self.set(result, _union([self.get(t) for t in traced], result.shape))
            return
        dim = _argument(args, kwargs, 1, "dim", None)
        if base in ("sort", "topk", "kthvalue", "mode", "cumsum", "cumprod", "logcumsumexp"):
            dim = _argument(args, kwargs, 2 if base in ("topk", "kthvalue") else 1, "dim", -1)
        if base in ("std", "var", "std_mean", "var_mean") and isinstance(dim, bool):
            dim = None
        if base == "norm":
            dim = _argument(args, kwargs, 2, "dim", None)
        box = self.get(x)
        dims = list(range(x.dim())) if dim is None else [dim] if isinstance(dim, int) else list(dim)
        box = _expand_fit(box, x.dim())
        outputs = [result] if isinstance(result, torch.Tensor) else [t for t in result if isinstance(t, torch.Tensor)]
        for out in outputs:
            if out.dim() == x.dim():
                self.set(out, _union([_reduce(box, dims, keepdim=True)], out.shape))
            elif out.dim() == x.dim() - len(set(d % max(x.dim(), 1) for d in dims)):
                self.set(out, _reduce(box, dims, keepdim=False))
            else:
                raise _Unhandled(base)

    def _matmul(self, base, args, result) -> None:
        if base in ("baddbmm", "addmm", "addbmm"):
            bias, a, b = args[:3]
            extra = [self.get(bias)] if self.get(bias) is not None else []
        else:
            a, b = args[:2]
            if base == "rmatmul":
                a, b = b, a
            extra = []
        if a.dim() < 2 or b.dim() < 2:
            raise _Unhandled(base)
        parts = [_reduce(self.box_or_empty(a), (-1,)), _reduce(self.box_or_empty(b), (-2,))]
        if base == "addbmm":
            parts = [_reduce(p, (0,), keepdim=False) for p in parts]
        self.set(result, _union(parts + extra, result.shape))

    def _einsum(self, args, result) -> None:
        equation = args[0].replace(" ", "")
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        if "->" not in equation or "." in equation:
            raise _Unhandled("einsum")
        inputs, output = equation.split("->")
        subscripts = inputs.split(",")
        parts = []
        for letters, operand in zip(subscripts, operands):
            if len(set(letters)) != len(letters):
                raise _Unhandled("einsum")
            box = _expand_fit(self.box_or_empty(operand), operand.dim())
            contracted = [i for i, letter in enumerate(letters) if letter not in output]
            kept = [letter for letter in letters if letter in output]
            box = _reduce(box, contracted, keepdim=False)
            order = sorted(range(len(kept)), key=lambda i: output.index(kept[i]))
            box = box.map(lambda t, order=order: t.permute(*order) if order else t)
            kept = [kept[i] for i in order]
            for position, letter in enumerate(output):
                if letter not in kept:
                    box = box.map(lambda t, position=position: t.unsqueeze(position))
            parts.append(box)
        self.set(result, _union(parts, result.shape))

    def _conv(self, base, args, kwargs, result) -> None:
        dims = int(base[-2])
        x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
        if self.get(weight) is not None:
            raise _Unhandled(base)
        stride = _tuple(_argument(args, kwargs, 3, "stride", 1), dims)
        padding = _argument(args, kwargs, 4, "padding", 0)
        dilation = _tuple(_argument(args, kwargs, 5, "dilation", 1), dims)
        groups = _argument(args, kwargs, 6, "groups", 1)
        kernel = tuple(weight.shape[2:])
        if isinstance(padding, str):
            if padding == "valid":
                pads = [(0, 0)] * dims
            else:
                totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
                pads = [(t // 2, t - t // 2) for t in totals]
        else:
            pads = [(p, p) for p in _tuple(padding, dims)]
        self.set(result, _window(self.get(x), x.shape, result.shape, kernel, stride, pads, dilation, False, groups, self.virtual))

    def _pool(self, base, args, kwargs, result) -> None:
        dims = int(base.split("_pool")[1][0])
        if base.startswith("lp_pool"):
            x = args[1] if not isinstance(args[0], torch.Tensor) else args[0]
            offset = 2 if not isinstance(args[0], torch.Tensor) else 1
            kernel = _tuple(args[offset], dims)
            stride = _tuple(args[offset + 1] if len(args) > offset + 1 and args[offset + 1] is not None else kernel, dims)
            padding, dilation, ceil_mode = (0,) * dims, (1,) * dims, bool(kwargs.get("ceil_mode", False))
        else:
            x = args[0]
            kernel = _tuple(_argument(args, kwargs, 1, "kernel_size", None), dims)
            stride = _argument(args, kwargs, 2, "stride", None)
            stride = kernel if stride is None or stride == [] or stride == () else _tuple(stride, dims)
            padding = _tuple(_argument(args, kwargs, 3, "padding", 0), dims)
            if base.startswith("max"):
                dilation = _tuple(_argument(args, kwargs, 4, "dilation", 1), dims)
                ceil_mode = bool(_argument(args, kwargs, 5, "ceil_mode", False))
            else:
                dilation = (1,) * dims
                ceil_mode = bool(_argument(args, kwargs, 4, "ceil_mode", False))
        outputs = [result] if isinstance(result, torch.Tensor) else [t for t in result if isinstance(t, torch.Tensor)]
        pooled = _window(self.get(x), x.shape, outputs[0].shape, kernel, stride, [(p, p) for p in padding], dilation, ceil_mode, None, self.virtual)
        for out in outputs:
            self.set(out, pooled)

    def _pad(self, args, kwargs, result) -> None:
        x = args[0]
        pad = list(_argument(args, kwargs, 1, "pad", ()))
        mode = _argument(args, kwargs, 2, "mode", "constant")
        box = self.get(x)
        if mode != "constant":
            parts = [F.pad(part, pad, mode=mode) for part in box.full(x.shape).parts]
            self.set(result, _Box(*parts, box.jump))
            return
        pairs = [(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)][::-1]
        self.set(result, _extend_box(box, pairs, x.shape, self.virtual))


def _compress(part: torch.Tensor) -> torch.Tensor:
    """``part`` with every dimension along which it is constant shrunk to length 1."""
    for dim in range(part.dim()):
        if part.shape[dim] > 1:
            first = part.narrow(dim, 0, 1)
            if bool((part == first).all()):
                part = first
    return part.contiguous()


def _expand_fit(box: _Box, dims: int) -> _Box:
    return box.map(lambda t: _fit(t, (1,) * dims))


def _name(func) -> str:
    name = getattr(func, "__name__", None) or str(func)
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        return getattr(owner, "__name__", name) if owner is not None else name
    return name


def _tensors(args, kwargs):
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _tensors(value, {})


def _argument(args, kwargs, position: int, name: str, default):
    if name in kwargs:
        return kwargs[name]
    if len(args) > position:
        return args[position]
    return default


def _tuple(value, dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    value = tuple(value)
    return value * dims if len(value) == 1 else value


def _plain_index(index):
    """An index whose tensors are plain (so indexing a box component is not traced)."""
    if isinstance(index, tuple):
        return tuple(_plain_index(i) for i in index)
    if isinstance(index, torch.Tensor):
        return index.detach()
    return index


# --------------------------------------------------------------------------------------------
# tracing a model


@dataclass
class _Traced:
    boxes: dict[str, _Box]
    shapes: dict[str, tuple[int, ...]]
    input_size: Pair
    notes: list[str] = field(default_factory=list)


def _trace(model, input_size, refs: list[LayerRef] | None, batch: int = 1, virtual: bool = False) -> _Traced:
    module, _ = unwrap(model)
    if isinstance(module, torch.jit.ScriptModule):
        raise CnnvizError("receptive fields need the model's Python code (an nn.Module); a TorchScript model cannot be traced")
    preprocessing = preprocessing_of(model)
    size = input_size_pair(input_size) if input_size is not None else preprocessing.input_size
    height, width = size
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn((batch, preprocessing.channels, height, width), generator=generator)
    for tensor in (*module.parameters(), *module.buffers()):
        inputs = inputs.to(device=tensor.device, dtype=tensor.dtype if tensor.is_floating_point() else inputs.dtype)
        break
    rows = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1)
    columns = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width)
    tracer = _Tracer(virtual)
    tracer.set(inputs, _Box(rows, rows, columns, columns))
    boxes: dict[str, _Box] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    counts: dict[str, int] = {}
    wanted = None if refs is None else {ref.layer for ref in refs}

    def hook_for(name):
        def hook(_module, _inputs, output):
            tracer.paused = True
            try:
                tensor = _first_tensor(output)
                counts[name] = counts.get(name, 0) + 1
                box = tracer.get(tensor) if tensor is not None else None
                if box is not None:
                    call = counts[name]
                    key = (name or "logits") if call == 1 else f"{name or 'logits'}#{call}"
                    boxes[key] = box.map(lambda t: t.cpu())
                    shapes[key] = tuple(tensor.shape)
            finally:
                tracer.paused = False
        return hook

    handles = []
    with model_guard(module):
        try:
            for name, submodule in module.named_modules():
                if name and (wanted is None or name in wanted):
                    handles.append(submodule.register_forward_hook(hook_for(name)))
            with torch.no_grad(), tracer:
                try:
                    output = module(inputs)
                except CnnvizError:
                    raise
                except Exception as error:
                    raise CnnvizError(
                        f"the forward pass of {type(module).__name__} failed on an input of size "
                        f"{height}x{width} ({first_line(error)}); pass the size it expects with input_size=(H, W) "
                        "(--input-size H W)"
                    ) from error
            if wanted is None or "" in wanted:
                main = _first_tensor(output)
                box = tracer.get(main) if main is not None else None
                if box is not None:
                    boxes["logits"] = box
                    shapes["logits"] = tuple(main.shape)
        finally:
            for handle in handles:
                handle.remove()
    return _Traced(boxes, shapes, (height, width), list(tracer.notes))


def _first_tensor(output):
    from cnnviz.core.probe import _main_tensor

    return _main_tensor(output)


# --------------------------------------------------------------------------------------------
# summaries


def _summarise(name: str, box: _Box, clipped: _Box, input_size: Pair, notes, neuron: bool = False) -> ReceptiveField:
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
    return replace(base, kind="grid", size=size, stride=stride, offset=offset, covers_input=covers, uniform=uniform)


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


def _pair_text(pair) -> str:
    if pair is None:
        return "-"
    a, b = pair
    return str(a) if a == b else f"{a}x{b}"


# --------------------------------------------------------------------------------------------
# effective receptive field (Luo et al., 2016)


@dataclass
class EffectiveReceptiveField:
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

    def __repr__(self) -> str:
        return (f"EffectiveReceptiveField({self.layer} at {self.unit[0]},{self.unit[1]}: 50% within "
                f"{self.radius_50:.1f} px, 95% within {self.radius_95:.1f} px of the centre; theoretical "
                f"{self.theoretical.text}; {self.images} images)")

    def summary(self) -> dict:
        """JSON-ready data (without the map)."""
        return {
            "layer": self.layer, "unit": list(self.unit), "centre": list(self.centre),
            "radius_50": self.radius_50, "radius_95": self.radius_95, "images": self.images,
            "theoretical": self.theoretical.to_dict(),
        }


def effective_receptive_field(model, ref: Reference, images, *, max_images: int = 16) -> EffectiveReceptiveField:
    """The effective receptive field (Luo et al., 2016) of the centre unit of a layer.

    The gradient of the unit (the layer's channels summed, or the channel of ``ref``) with respect
    to the input, in absolute value, summed over input channels and averaged over the images.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left exactly as it was).
        ref: a layer (``"features.10"``), a channel (``"features.10:5"``) or a neuron
            (``"features.10:5@3,3"``; without a position the centre unit is used).
        images: model inputs ``N x C x H x W`` or an image spec (``samples``, a folder, a file).
        max_images: use at most this many images.

    Example::

        erf = cnnviz.effective_receptive_field(cnnviz.load_model("builtin:photos"), "features.13", "samples")
        erf.radius_50, erf.theoretical.size
    """
    from cnnviz.analyses.equivariance import _inputs
    from cnnviz.inputs.images import display_image
    from cnnviz.core.probe import probe

    inputs = _inputs(model, images, max_images)
    resolved = resolve_all(model, [ref])[0]
    layer = resolved.layer_text if not resolved.is_output else "logits"
    with probe(model, [layer], keep_graph=True) as recorder:
        module, _ = unwrap(model)
        inputs = inputs.detach().clone().requires_grad_(True)
        recorder.run(inputs)
        output = recorder[layer]
        if output.dim() != 4:
            raise CnnvizError(
                f"{layer} has output shape {tuple(output.shape)}, not a spatial map, so it has no centre unit; "
                "pick a convolution or pooling layer ('cnnviz rf' lists them)"
            )
        resolved.check(output.shape)
        height, width = output.shape[-2:]
        row, column = resolved.position if resolved.position is not None else (height // 2, width // 2)
        selected = output[:, :, row, column] if resolved.channel is None else output[:, resolved.channel, row, column]
        gradient, = torch.autograd.grad(selected.sum(), inputs)
    magnitude = gradient.detach().abs().sum(dim=1).mean(dim=0).float().cpu()
    theoretical = receptive_field(model, f"{layer}:{resolved.channel or 0}@{row},{column}", input_size=tuple(inputs.shape[-2:]))
    top, left = theoretical.offset
    centre = (top + (theoretical.size[0] - 1) / 2, left + (theoretical.size[1] - 1) / 2)
    radius_50, radius_95 = _radii(magnitude, centre, (0.5, 0.95))
    image = display_image(inputs[0].detach(), preprocessing_of(model))
    return EffectiveReceptiveField(
        str(resolved) if resolved.position is not None else f"{layer}@{row},{column}", (row, column), magnitude,
        centre, radius_50, radius_95, theoretical, image, inputs.shape[0],
    )


def _radii(mass: torch.Tensor, centre, fractions) -> list[float]:
    height, width = mass.shape
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1) - centre[0]
    columns = torch.arange(width, dtype=torch.float32).view(1, -1) - centre[1]
    distance = (rows ** 2 + columns ** 2).sqrt().flatten()
    order = distance.argsort()
    cumulative = mass.flatten()[order].cumsum(0)
    total = float(cumulative[-1])
    if total <= 0:
        return [float("nan")] * len(fractions)
    return [float(distance[order][int(torch.searchsorted(cumulative, fraction * total))]) for fraction in fractions]

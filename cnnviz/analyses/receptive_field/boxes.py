"""Box algebra: the input region each element of a tensor depends on, and how operations map it.

A :class:`Box` holds, for every element of one tensor, the first and last input row and column it
depends on (four float tensors, kept broadcastable: each varies only along the dimensions it
depends on). The functions here combine boxes (:func:`union`, :func:`reduce_box`), pad them
(:func:`extend_box`: nothing for exact boxes, the unbounded-input boxes for "virtual" ones), and
slide windows over them (:func:`window` for convolutions and pooling, :func:`adaptive` for
adaptive pooling). :mod:`.rules` applies them per operation.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F


class Unhandled(Exception):
    """An operation (or a case of one) the rules do not map exactly: the tracer falls back to
    treating it as mixing all positions."""


@dataclass
class Box:
    """Per-element input boxes of one tensor, in virtual (unclipped) input coordinates: first and
    last row (``rlo``, ``rhi``) and column (``clo``, ``chi``), each a float tensor of the tensor's
    shape; an element that depends on no pixel has ``lo = +inf`` and ``hi = -inf``. ``jump`` is
    the (row, column) step of the grid, used to extend a 1-pixel map into its padding."""

    rlo: torch.Tensor
    rhi: torch.Tensor
    clo: torch.Tensor
    chi: torch.Tensor
    jump: tuple[float, float] = (1.0, 1.0)

    def map(self, function, jump=None) -> Box:
        return Box(function(self.rlo), function(self.rhi), function(self.clo), function(self.chi), jump or self.jump)

    @property
    def parts(self):
        return (self.rlo, self.rhi, self.clo, self.chi)

    def full(self, shape) -> Box:
        """The components expanded to ``shape`` (they are stored broadcastable to it)."""
        shape = tuple(shape)
        return self.map(lambda t: fit(t, shape).expand(shape))

    def clipped(self, height: int, width: int):
        return (self.rlo.clamp(min=0), self.clo.clamp(min=0), self.rhi.clamp(max=height - 1), self.chi.clamp(max=width - 1))


def fit(part: torch.Tensor, shape) -> torch.Tensor:
    """``part`` with leading 1-long dimensions added up to ``len(shape)`` dimensions."""
    missing = len(shape) - part.dim()
    return part.reshape((1,) * missing + tuple(part.shape)) if missing > 0 else part


def empty_box(shape, jump=(1.0, 1.0)) -> Box:
    """The boxes of a tensor of ``shape`` that depends on no pixel."""
    lo = torch.full([1] * len(shape), math.inf)
    hi = torch.full([1] * len(shape), -math.inf)
    return Box(lo, hi, lo, hi, jump)


def union(boxes: Sequence[Box], shape) -> Box:
    """The union of boxes broadcast to ``shape``."""
    shape = tuple(shape)
    parts = []
    for index, reduce in enumerate((torch.minimum, torch.maximum, torch.minimum, torch.maximum)):
        value = None
        for box in boxes:
            part = box.parts[index]
            value = part if value is None else reduce(value, part)
        parts.append(fit(value, shape))
    jump = tuple(max(b.jump[i] for b in boxes) for i in range(2))
    return Box(*parts, jump)


def reduce_box(box: Box, dims, keepdim: bool = True) -> Box:
    dims = tuple(dims)
    if not dims or box.rlo.dim() == 0:
        return box
    def low(t):
        return t.amin(dim=dims, keepdim=keepdim)
    def high(t):
        return t.amax(dim=dims, keepdim=keepdim)
    return Box(low(box.rlo), high(box.rhi), low(box.clo), high(box.chi), box.jump)


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


def extend_box(box: Box, pads: Sequence[tuple[int, int]], shape, virtual: bool) -> Box:
    """Zero padding of the last ``len(pads)`` dimensions of a tensor of ``shape``: the padded
    positions depend on no pixel, or (``virtual``) get the boxes they would have on an unbounded
    input."""
    count = len(pads)
    box = expand_last(box, shape, count)
    if not virtual:
        pad = [amount for before, after in reversed(pads) for amount in (before, after)]
        return Box(*(F.pad(part, pad, value=math.inf if index % 2 == 0 else -math.inf)
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
    return Box(*parts, box.jump)


def expand_last(box: Box, shape, count: int) -> Box:
    """Components expanded to the full size of the last ``count`` dimensions of ``shape``."""
    shape = tuple(shape)

    def expand(t):
        t = fit(t, shape)
        return t.expand(*t.shape[:-count], *shape[-count:])

    return box.map(expand)


def window(box: Box, in_shape, out_shape, kernel, stride, padding, dilation, ceil_mode: bool, groups: int | None,
            virtual: bool) -> Box:
    """The union of boxes under a sliding window over the last ``len(kernel)`` dimensions; with
    ``groups``, also over the input channels of each group (a convolution)."""
    dims = len(kernel)
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    batched = len(in_shape) == dims + 2
    if not batched:
        in_shape, out_shape = (1, *in_shape), (1, *out_shape)
        box = box.map(lambda t: fit(t, in_shape[1:]).unsqueeze(0))
    box = box.map(lambda t: fit(t, in_shape))
    grouped_channels = False
    if groups is not None:
        if groups == 1 or max(p.shape[1] for p in box.parts) == 1:
            box = reduce_box(box, (1,))
        else:
            box = box.map(lambda t: t.expand(t.shape[0], *in_shape[1:]))
            grouped = box.map(lambda t: t.reshape(t.shape[0], groups, in_shape[1] // groups, *t.shape[2:]))
            box = reduce_box(grouped, (2,), keepdim=False)
            grouped_channels = True
    box = extend_box(box, [(p, q) for p, q in padding], in_shape, virtual)
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
    result = Box(slide(box.rlo, -1), slide(box.rhi, 1), slide(box.clo, -1), slide(box.chi, 1), jump)
    spatial_out = out_shape[-dims:]
    result = result.map(lambda t: t[(..., *(slice(0, n) for n in spatial_out))])
    if grouped_channels and out_shape[1] != groups:
        repeat = out_shape[1] // groups
        result = result.map(lambda t: t.repeat_interleave(repeat, dim=1))
    if tuple(result.rlo.shape[-dims:]) != spatial_out:  # a window rule we did not reproduce: be safe
        raise Unhandled("window")
    if not batched:
        result = result.map(lambda t: t[0])
    return result


def adaptive(box: Box, in_shape, out_shape, dims: int) -> Box:
    """Adaptive pooling: output ``i`` pools input ``floor(i * n / m)`` to ``ceil((i + 1) * n / m) - 1``."""
    result = expand_last(box, in_shape, dims)
    for d in range(dims):
        dim = -dims + d
        n, m = result.rlo.shape[dim], out_shape[dim]
        pieces = []
        for i in range(m):
            start, end = (i * n) // m, -(-((i + 1) * n) // m)
            pieces.append(reduce_box(result.map(lambda t, s=start, e=end: t.narrow(dim, s, e - s)), (dim,)))
        jump = list(result.jump)
        axis = 0 if (dims >= 2 and d == dims - 2) else 1
        jump[axis] = jump[axis] * n / m
        result = Box(*(torch.cat([p.parts[k] for p in pieces], dim=dim) for k in range(4)), tuple(jump))
    return result


def compress(part: torch.Tensor) -> torch.Tensor:
    """``part`` with every dimension along which it is constant shrunk to length 1."""
    for dim in range(part.dim()):
        if part.shape[dim] > 1:
            first = part.narrow(dim, 0, 1)
            if bool((part == first).all()):
                part = first
    return part.contiguous()


def expand_fit(box: Box, dims: int) -> Box:
    """The components with leading 1-long dimensions added up to ``dims`` dimensions."""
    return box.map(lambda t: fit(t, (1,) * dims))

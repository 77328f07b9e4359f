"""The rules: for each operation, how the boxes of its inputs become the boxes of its outputs.

:data:`RULES` maps an operation's name (``conv2d``, ``max_pool2d``, ``relu``, ``cat``, ``add``,
``interpolate``, ...; see :func:`~.operations.base_name` for how names are normalised) to a rule: a function
``rule(tracer, call)`` that reads the input boxes from the tracer (``tracer.get``), and stores the
output boxes on it (``tracer.set``). :func:`rule_for` looks an operation up; the tracer
(:mod:`.tracer`) treats an operation without a rule, or a rule that raises
:class:`~.boxes.Unhandled`, as mixing all positions. Families: queries (``size``, ``zeros_like``)
depend on nothing, pointwise operations take the union of their operands, data movements
(reshapes, indexing, concatenation) apply themselves to the box components, reductions and
products take the union over what they sum, windows (convolution, pooling) use
:func:`~.boxes.window`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from cnnviz.analyses.receptive_field.boxes import (
    Box, Unhandled, adaptive, compress, empty_box, expand_fit, extend_box, reduce_box, union, window,
)
from cnnviz.analyses.receptive_field.operations import MOVES, NEW, POINTWISE, QUERIES, REDUCTIONS, tensors


@dataclass(frozen=True)
class Call:
    """One traced call: the function, its normalised name, its arguments and result, and the
    argument tensors that have boxes."""

    func: Callable
    base: str
    args: tuple
    kwargs: dict
    result: object
    traced: list


def rule_for(base: str):
    """The rule of an operation (``None`` when it has none)."""
    rule = RULES.get(base)
    if rule is None and base.startswith("adaptive_") and "pool" in base:
        return adaptive_pool
    return rule


# -- rules -------------------------------------------------------------------------------------


def shape_query(tracer, call: Call) -> None:
    """Shapes and comparisons carry no boxes; new tensors (``zeros_like``) depend on no pixel."""
    if call.base in NEW and isinstance(call.result, torch.Tensor):
        tracer.set(call.result, empty_box(call.result.shape))


def copy(tracer, call: Call) -> None:
    args = call.args
    target = args[0]
    source = tracer.get(args[1]) if len(args) > 1 else None
    tracer.set(target, union([source], target.shape) if source is not None else empty_box(target.shape))


def pointwise(tracer, call: Call) -> None:
    result = call.result
    outputs = [result] if isinstance(result, torch.Tensor) else [t for t in tensors((result,), {})]
    boxes = [tracer.get(t) for t in call.traced]
    for out in outputs:
        tracer.set(out, union(boxes, out.shape))


def move(tracer, call: Call) -> None:
    """Data movement: the same operation applied to each box component."""
    func, base, args, kwargs, result = call.func, call.base, call.args, call.kwargs, call.result
    data = args[0]
    if isinstance(data, (list, tuple)):
        boxes = [tracer.box_or_empty(t).full(t.shape).map(torch.Tensor.contiguous) for t in data]
        parts = [func([b.parts[k] for b in boxes], *args[1:], **kwargs) for k in range(4)]
        jump = tuple(max(b.jump[i] for b in boxes) for i in range(2))
    else:
        box = tracer.get(data)
        if box is None:
            raise Unhandled(base)
        box = box.full(data.shape).map(torch.Tensor.contiguous)  # views need real strides
        rest = list(args[1:])
        if base in ("__getitem__",):
            rest = [_plain_index(rest[0])]
        parts = [func(part, *rest, **kwargs) for part in box.parts]
        jump = box.jump
    if isinstance(result, torch.Tensor):
        tracer.set(result, Box(*(compress(p) for p in parts), jump))
    else:
        outputs = list(result)
        for index, out in enumerate(outputs):
            if isinstance(out, torch.Tensor):
                tracer.set(out, Box(*(compress(p[index]) for p in parts), jump))


def setitem(tracer, call: Call) -> None:
    target, index, value = call.args[0], call.args[1], call.args[2]
    box = tracer.box_or_empty(target).full(target.shape)
    source = tracer.get(value) if isinstance(value, torch.Tensor) else None
    parts = [part.clone() for part in box.parts]
    selected = parts[0][_plain_index(index)]
    new = union([source], selected.shape) if source is not None else empty_box(selected.shape)
    for k in range(4):
        parts[k][_plain_index(index)] = new.parts[k]
    tracer.set(target, Box(*parts, box.jump))


def reduction(tracer, call: Call) -> None:
    base, args, kwargs, result = call.base, call.args, call.kwargs, call.result
    x = args[0]
    if base in ("max", "min") and len(args) > 1 and isinstance(args[1], torch.Tensor):
        tracer.set(result, union([tracer.get(t) for t in call.traced], result.shape))
        return
    dim = _argument(args, kwargs, 1, "dim", None)
    if base in ("sort", "topk", "kthvalue", "mode", "cumsum", "cumprod", "logcumsumexp"):
        dim = _argument(args, kwargs, 2 if base in ("topk", "kthvalue") else 1, "dim", -1)
    if base in ("std", "var", "std_mean", "var_mean") and isinstance(dim, bool):
        dim = None
    if base == "norm":
        dim = _argument(args, kwargs, 2, "dim", None)
    box = tracer.get(x)
    dims = list(range(x.dim())) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    box = expand_fit(box, x.dim())
    outputs = [result] if isinstance(result, torch.Tensor) else [t for t in result if isinstance(t, torch.Tensor)]
    for out in outputs:
        if out.dim() == x.dim():
            tracer.set(out, union([reduce_box(box, dims, keepdim=True)], out.shape))
        elif out.dim() == x.dim() - len(set(d % max(x.dim(), 1) for d in dims)):
            tracer.set(out, reduce_box(box, dims, keepdim=False))
        else:
            raise Unhandled(base)


def along_dim(tracer, call: Call) -> None:
    """Softmax-like operations: the union along ``dim`` (all dimensions without one)."""
    base, args, kwargs = call.base, call.args, call.kwargs
    dim = _argument(args, kwargs, 1, "dim", None)
    if base == "normalize":
        dim = _argument(args, kwargs, 2, "dim", 1)
    if base == "local_response_norm":
        dim = 1
    box = tracer.get(args[0])
    dims = range(args[0].dim()) if dim is None else [dim]
    tracer.set(call.result, union([reduce_box(box, dims)], call.result.shape))


def layer_norm(tracer, call: Call) -> None:
    shape = _argument(call.args, call.kwargs, 1, "normalized_shape", None)
    count = 1 if isinstance(shape, int) else len(shape)
    box = tracer.get(call.args[0])
    tracer.set(call.result, union([reduce_box(box, range(-count, 0))], call.result.shape))


def group_norm(tracer, call: Call) -> None:
    x = call.args[0]
    box = tracer.get(x).full(x.shape)
    groups = _argument(call.args, call.kwargs, 1, "num_groups", 1) if call.base == "group_norm" else x.shape[1]
    grouped = box.map(lambda t: t.reshape(x.shape[0], groups, -1))
    tracer.set(call.result, union([reduce_box(grouped, (2,)).map(lambda t: t.expand(x.shape[0], groups, x[0].numel() // groups).reshape(x.shape))], call.result.shape))


def linear(tracer, call: Call) -> None:
    box = tracer.get(call.args[0])
    boxes = [reduce_box(box, (-1,))] if box is not None else []
    if any(tracer.get(w) is not None for w in call.args[1:2]):
        raise Unhandled(call.base)
    tracer.set(call.result, union(boxes, call.result.shape))


def matmul(tracer, call: Call) -> None:
    base, args, result = call.base, call.args, call.result
    if base in ("baddbmm", "addmm", "addbmm"):
        bias, a, b = args[:3]
        extra = [tracer.get(bias)] if tracer.get(bias) is not None else []
    else:
        a, b = args[:2]
        if base == "rmatmul":
            a, b = b, a
        extra = []
    if a.dim() < 2 or b.dim() < 2:
        raise Unhandled(base)
    parts = [reduce_box(tracer.box_or_empty(a), (-1,)), reduce_box(tracer.box_or_empty(b), (-2,))]
    if base == "addbmm":
        parts = [reduce_box(p, (0,), keepdim=False) for p in parts]
    tracer.set(result, union(parts + extra, result.shape))


def einsum(tracer, call: Call) -> None:
    args = call.args
    equation = args[0].replace(" ", "")
    operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
    if "->" not in equation or "." in equation:
        raise Unhandled("einsum")
    inputs, output = equation.split("->")
    subscripts = inputs.split(",")
    parts = []
    for letters, operand in zip(subscripts, operands):
        if len(set(letters)) != len(letters):
            raise Unhandled("einsum")
        box = expand_fit(tracer.box_or_empty(operand), operand.dim())
        contracted = [i for i, letter in enumerate(letters) if letter not in output]
        kept = [letter for letter in letters if letter in output]
        box = reduce_box(box, contracted, keepdim=False)
        order = sorted(range(len(kept)), key=lambda i: output.index(kept[i]))
        box = box.map(lambda t, order=order: t.permute(*order) if order else t)
        kept = [kept[i] for i in order]
        for position, letter in enumerate(output):
            if letter not in kept:
                box = box.map(lambda t, position=position: t.unsqueeze(position))
        parts.append(box)
    tracer.set(call.result, union(parts, call.result.shape))


def attention(tracer, call: Call) -> None:
    """``scaled_dot_product_attention``: each query sees every key and value."""
    query, key, value = call.args[:3]
    parts = [reduce_box(tracer.box_or_empty(query), (-1,))]
    parts += [reduce_box(tracer.box_or_empty(t), (-2, -1)) for t in (key, value)]
    tracer.set(call.result, union(parts, call.result.shape))


def multi_head_attention(tracer, call: Call) -> None:
    query, key, value = call.args[:3]
    batched = query.dim() == 3
    sequence_dims = (0, 2) if batched else (0, 1)
    parts = [reduce_box(tracer.box_or_empty(query), (-1,))]
    parts += [reduce_box(tracer.box_or_empty(t), sequence_dims) for t in (key, value)]
    output, weights = call.result
    tracer.set(output, union(parts, output.shape))
    if isinstance(weights, torch.Tensor):
        tracer.set(weights, union([reduce_box(union(parts, output.shape), range(output.dim()))], weights.shape))


def conv(tracer, call: Call) -> None:
    base, args, kwargs = call.base, call.args, call.kwargs
    dims = int(base[-2])
    x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
    if tracer.get(weight) is not None:
        raise Unhandled(base)
    stride = _as_tuple(_argument(args, kwargs, 3, "stride", 1), dims)
    padding = _argument(args, kwargs, 4, "padding", 0)
    dilation = _as_tuple(_argument(args, kwargs, 5, "dilation", 1), dims)
    groups = _argument(args, kwargs, 6, "groups", 1)
    kernel = tuple(weight.shape[2:])
    if isinstance(padding, str):
        if padding == "valid":
            pads = [(0, 0)] * dims
        else:
            totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
            pads = [(t // 2, t - t // 2) for t in totals]
    else:
        pads = [(p, p) for p in _as_tuple(padding, dims)]
    tracer.set(call.result, window(tracer.get(x), x.shape, call.result.shape, kernel, stride, pads, dilation, False,
                                   groups, tracer.virtual))


def pool(tracer, call: Call) -> None:
    base, args, kwargs, result = call.base, call.args, call.kwargs, call.result
    dims = int(base.split("_pool")[1][0])
    if base.startswith("lp_pool"):
        x = args[1] if not isinstance(args[0], torch.Tensor) else args[0]
        offset = 2 if not isinstance(args[0], torch.Tensor) else 1
        kernel = _as_tuple(args[offset], dims)
        stride = _as_tuple(args[offset + 1] if len(args) > offset + 1 and args[offset + 1] is not None else kernel, dims)
        padding, dilation, ceil_mode = (0,) * dims, (1,) * dims, bool(kwargs.get("ceil_mode", False))
    else:
        x = args[0]
        kernel = _as_tuple(_argument(args, kwargs, 1, "kernel_size", None), dims)
        stride = _argument(args, kwargs, 2, "stride", None)
        stride = kernel if stride is None or stride == [] or stride == () else _as_tuple(stride, dims)
        padding = _as_tuple(_argument(args, kwargs, 3, "padding", 0), dims)
        if base.startswith("max"):
            dilation = _as_tuple(_argument(args, kwargs, 4, "dilation", 1), dims)
            ceil_mode = bool(_argument(args, kwargs, 5, "ceil_mode", False))
        else:
            dilation = (1,) * dims
            ceil_mode = bool(_argument(args, kwargs, 4, "ceil_mode", False))
    outputs = [result] if isinstance(result, torch.Tensor) else [t for t in result if isinstance(t, torch.Tensor)]
    pooled = window(tracer.get(x), x.shape, outputs[0].shape, kernel, stride, [(p, p) for p in padding], dilation,
                    ceil_mode, None, tracer.virtual)
    for out in outputs:
        tracer.set(out, pooled)


def adaptive_pool(tracer, call: Call) -> None:
    dims = int(call.base[-2])
    box = tracer.get(call.args[0])
    outputs = [call.result] if isinstance(call.result, torch.Tensor) else list(call.result)
    pooled = adaptive(box, call.args[0].shape, outputs[0].shape, dims)
    for out in outputs:
        tracer.set(out, pooled)


def pad(tracer, call: Call) -> None:
    x = call.args[0]
    amounts = list(_argument(call.args, call.kwargs, 1, "pad", ()))
    mode = _argument(call.args, call.kwargs, 2, "mode", "constant")
    box = tracer.get(x)
    if mode != "constant":
        parts = [F.pad(part, amounts, mode=mode) for part in box.full(x.shape).parts]
        tracer.set(call.result, Box(*parts, box.jump))
        return
    pairs = [(amounts[i], amounts[i + 1]) for i in range(0, len(amounts), 2)][::-1]
    tracer.set(call.result, extend_box(box, pairs, x.shape, tracer.virtual))


def interpolate(tracer, call: Call) -> None:
    """Nearest-neighbour resizing moves boxes with the data; other modes are not mapped."""
    mode = _argument(call.args, call.kwargs, 3, "mode", "nearest")
    if mode in ("nearest", "nearest-exact"):
        move(tracer, call)
        return
    raise Unhandled(call.base)


def _group(names, rule) -> dict[str, Callable]:
    return dict.fromkeys(names, rule)


RULES: dict[str, Callable[..., None]] = {
    **_group(QUERIES, shape_query),
    "__setitem__": setitem,
    **_group(("copy", "fill", "zero"), copy),
    **_group(POINTWISE, pointwise),
    **_group(MOVES, move),
    **_group(REDUCTIONS | {"max", "min", "sort", "topk", "kthvalue", "mode", "aminmax"}, reduction),
    **_group(("softmax", "log_softmax", "softmin", "normalize", "local_response_norm"), along_dim),
    "layer_norm": layer_norm,
    **_group(("group_norm", "instance_norm"), group_norm),
    "linear": linear,
    **_group(("matmul", "rmatmul", "mm", "bmm", "baddbmm", "addmm", "addbmm"), matmul),
    "einsum": einsum,
    "scaled_dot_product_attention": attention,
    "multi_head_attention_forward": multi_head_attention,
    **_group(("conv1d", "conv2d", "conv3d"), conv),
    **_group([f"{kind}_pool{d}d" for kind in ("max", "avg", "lp") for d in (1, 2, 3)]
             + [f"max_pool{d}d_with_indices" for d in (1, 2, 3)], pool),
    **_group([f"adaptive_{kind}_pool{d}d" for kind in ("max", "avg") for d in (1, 2, 3)], adaptive_pool),
    "pad": pad,
    **_group(("interpolate", "upsample", "upsample_nearest"), interpolate),
}
"""Operation name (:func:`~.operations.base_name`) -> rule. Every name appears in one group only."""


# -- arguments ---------------------------------------------------------------------------------


def _argument(args, kwargs, position: int, name: str, default):
    if name in kwargs:
        return kwargs[name]
    if len(args) > position:
        return args[position]
    return default


def _as_tuple(value, dims: int) -> tuple[int, ...]:
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

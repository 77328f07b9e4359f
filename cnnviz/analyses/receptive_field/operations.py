"""The names of the operations the rules know, by family, and how a traced call's name becomes
a key of :data:`~.rules.RULES` (:func:`base_name`: in-place ``relu_`` is ``relu``, ``__radd__``
is ``add``); also :func:`tensors`, the tensors among a call's arguments.
"""
from __future__ import annotations

import torch

# elementwise: each output element depends on the same elements of its operands
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

# data movement: reshapes, views, indexing, concatenation, shuffles
MOVES = set("""
view view_as reshape reshape_as permute transpose t flatten unflatten squeeze unsqueeze expand expand_as
repeat contiguous clone detach cat concat concatenate stack hstack vstack __getitem__ narrow select split
chunk unbind tensor_split split_with_sizes roll flip fliplr flipud movedim moveaxis swapaxes swapdims
index_select gather take_along_dim pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle
unfold repeat_interleave tile diagonal rot90 mT
""".split())

# reductions (and scans) over some dimensions
REDUCTIONS = set("""
sum mean amax amin prod std var norm logsumexp all any argmax argmin nansum nanmean median nanmedian
count_nonzero std_mean var_mean cumsum cumprod logcumsumexp
""".split())

# Python operators (``__radd__``) -> the operation they are
DUNDER = {
    "add": "add", "radd": "add", "iadd": "add", "sub": "sub", "rsub": "sub", "isub": "sub", "mul": "mul",
    "rmul": "mul", "imul": "mul", "truediv": "div", "rtruediv": "div", "itruediv": "div", "floordiv": "div",
    "rfloordiv": "div", "mod": "div", "pow": "pow", "rpow": "pow", "ipow": "pow", "neg": "neg", "abs": "abs",
    "and": "mul", "or": "mul", "xor": "mul", "iand": "mul", "ior": "mul", "invert": "neg", "eq": "eq", "ne": "eq",
    "lt": "eq", "le": "eq", "gt": "eq", "ge": "eq", "matmul": "matmul", "rmatmul": "rmatmul",
    "getitem": "__getitem__", "setitem": "__setitem__",
}

# new tensors shaped like an argument (depending on no pixel)
NEW = ("zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "new_zeros", "new_ones",
       "new_empty", "new_full")
# shapes, sizes and comparisons: no boxes to follow
QUERIES = ("size", "dim", "numel", "__get__", "item", "tolist", "_assert", *NEW, "shape", "stride", "data_ptr",
           "is_contiguous", "isclose", "allclose", "equal")


def base_name(name: str) -> str:
    """The table key of an operation: without a trailing ``_`` (in-place), dunders by :data:`DUNDER`."""
    base = name.rstrip("_") if not name.startswith("__") else name
    if name.startswith("__") and name.endswith("__"):
        base = DUNDER.get(name.strip("_"), name)
    return base


def tensors(args, kwargs):
    """The tensors among the arguments, also inside lists and tuples."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from tensors(value, {})

"""Convolution as a matrix, and the arithmetic of padding, stride and dilation.

A convolutional layer is a fully connected layer whose matrix is sparse and banded: every row holds
the same kernel weights, shifted. :func:`conv_matrix` builds that matrix ``U`` for any kernel,
input size, stride, padding and dilation, so that ``U @ x.flatten()`` is ``conv2d(x, kernel)``
flattened and ``U.T @ g`` is the gradient of the loss with respect to ``x`` (the backward pass of a
convolution is a transposed convolution). :func:`conv_output_size` is the output-size formula.

The lecture's worked example::

    >>> import torch, cnnviz
    >>> kernel = torch.tensor([[1., 4, 1], [1, 4, 3], [3, 3, 1]])
    >>> x = torch.tensor([[4., 5, 8, 7], [1, 8, 8, 8], [3, 6, 6, 4], [6, 5, 7, 8]])
    >>> U = cnnviz.conv_matrix(kernel, x.shape)      # 4 x 16
    >>> (U @ x.flatten()).reshape(2, 2)
    tensor([[122., 148.],
            [126., 134.]])
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from cnnviz.errors import CnnvizError

IntOrPair = int | Sequence[int]
MAX_ENTRIES = 2**25  # conv_matrix refuses larger matrices (dense) or more non-zeros (sparse): 128 MiB of float32


def conv_output_size(
    size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """The output length of a convolution (or pooling) along one dimension.

    ``floor((size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1``; with
    ``ceil_mode`` (pooling) the division rounds up, except that the last window must start inside
    the input or its left padding (PyTorch's rule).

    Raises:
        CnnvizError: the (dilated) kernel is larger than the padded input, or a parameter is out of range.
    """
    _check_parameters(kernel_size, stride, padding, dilation)
    span = dilation * (kernel_size - 1) + 1
    if size + 2 * padding < span:
        raise CnnvizError(
            f"a kernel spanning {span} pixels (size {kernel_size}, dilation {dilation}) does not fit an input of "
            f"{size} with padding {padding}; use a smaller kernel or dilation, or more padding"
        )
    numerator = size + 2 * padding - span
    if not ceil_mode:
        return numerator // stride + 1
    out = -(-numerator // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def conv_matrix(
    kernel: torch.Tensor,
    input_shape: Sequence[int],
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    *,
    sparse: bool = False,
) -> torch.Tensor:
    """The matrix ``U`` of a convolution: ``U @ x.flatten() == conv(x, kernel).flatten()``.

    The convolution is PyTorch's (a cross-correlation, as in the lecture), with zero padding.
    Inputs and outputs are flattened row by row, channel after channel (``C x H x W`` order, as
    ``Tensor.flatten`` does).

    Args:
        kernel: ``h x w`` (one input and one output channel), ``C_in x h x w`` (one output
            channel), ``C_out x C_in x h x w`` (a ``Conv2d`` weight); or for 1-D convolutions
            ``k`` or ``C_out x C_in x k`` (a ``Conv1d`` weight).
        input_shape: ``H x W`` or ``C_in x H x W`` (1-D: ``L`` or ``C_in x L``).
        stride, padding, dilation: an int, or one per spatial dimension.
        sparse: return a ``torch.sparse_coo_tensor`` instead of a dense matrix.

    Returns:
        ``U``, of shape ``(C_out * H_out * W_out) x (C_in * H * W)`` in the kernel's dtype.
        ``U.T @ g.flatten()`` is the gradient with respect to ``x`` of ``(conv(x) * g).sum()``.

    Raises:
        CnnvizError: shapes that do not match, or parameters out of range.

    Example::

        U = cnnviz.conv_matrix(torch.randn(8, 3, 3, 3), (3, 16, 16), stride=2, padding=1)
        U.shape                     # (8 * 8 * 8) x (3 * 16 * 16)
    """
    weight, in_shape = kernel_and_shape(kernel, input_shape)
    dims = weight.dim() - 2
    strides, paddings, dilations = (per_dimension(v, dims, name) for v, name in
                                    ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
    channels_out, channels_in = weight.shape[:2]
    sizes = in_shape[1:]
    outputs = [
        conv_output_size(n, k, s, p, d)
        for n, k, s, p, d in zip(sizes, weight.shape[2:], strides, paddings, dilations)
    ]
    shape = (channels_out * math.prod(outputs), channels_in * math.prod(sizes))
    entries = shape[0] * channels_in * math.prod(weight.shape[2:])
    if entries > MAX_ENTRIES or (not sparse and shape[0] * shape[1] > MAX_ENTRIES):
        raise CnnvizError(
            f"the matrix of this convolution is {shape[0]} x {shape[1]}, too large to build here (at most "
            f"{MAX_ENTRIES:,} entries{'' if sparse else '; sparse=True stores only the non-zero ones'}); "
            "the lecture's idea shows on small inputs, e.g. 4 x 4"
        )
    # One entry per (output unit, input channel, kernel offset): its row, column and weight.
    grids = torch.meshgrid(
        torch.arange(channels_out), *(torch.arange(o) for o in outputs), torch.arange(channels_in),
        *(torch.arange(k) for k in weight.shape[2:]), indexing="ij",
    )
    out_channel, out_pos = grids[0], grids[1:1 + dims]
    in_channel, offsets = grids[1 + dims], grids[2 + dims:]
    in_pos = [o * s - p + k * d for o, k, s, p, d in zip(out_pos, offsets, strides, paddings, dilations)]
    inside = torch.ones_like(out_channel, dtype=torch.bool)
    for position, n in zip(in_pos, sizes):
        inside &= (position >= 0) & (position < n)
    row = out_channel
    for position, n in zip(out_pos, outputs):
        row = row * n + position
    column = in_channel
    for position, n in zip(in_pos, sizes):
        column = column * n + position
    values = weight[(out_channel, in_channel, *offsets)]
    indices = torch.stack([row[inside], column[inside]])
    matrix = torch.sparse_coo_tensor(indices, values[inside], shape, check_invariants=False).coalesce()
    return matrix if sparse else matrix.to_dense()


def kernel_and_shape(kernel, input_shape) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The kernel as ``C_out x C_in x k...`` and the input shape as ``C_in x n...``."""
    if not isinstance(kernel, torch.Tensor):
        try:
            kernel = torch.as_tensor(kernel, dtype=torch.get_default_dtype())
        except (TypeError, ValueError):
            raise CnnvizError("the kernel must be a tensor or nested lists of numbers, e.g. [[1, 4, 1], [1, 4, 3], [3, 3, 1]]") from None
    kernel = kernel.detach()
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise CnnvizError(f"input_shape must be a tuple of ints such as (4, 4) or (3, 32, 32), not {input_shape!r}") from None
    if not shape or any(s < 1 for s in shape) or len(shape) > 3:
        raise CnnvizError(f"input_shape {shape} must be L, H x W, C x L or C x H x W with positive sizes")
    if kernel.dim() == 4 or (kernel.dim() == 3 and len(shape) < 3):  # Conv2d weight, or Conv1d weight
        weight = kernel
    elif kernel.dim() == 3:  # C_in x h x w
        weight = kernel[None]
    elif kernel.dim() in (1, 2):  # k or h x w
        weight = kernel[None, None]
    else:
        raise CnnvizError(
            f"a kernel of shape {tuple(kernel.shape)} is not a convolution kernel; use h x w, C_in x h x w or "
            "C_out x C_in x h x w (2-D), k or C_out x C_in x k (1-D)"
        )
    dims = weight.dim() - 2
    if len(shape) == dims:
        shape = (1, *shape)
    if len(shape) != dims + 1:
        raise CnnvizError(f"a {dims}-D kernel of shape {tuple(kernel.shape)} needs an input shape of {dims} or {dims + 1} numbers, not {shape}")
    if shape[0] != weight.shape[1]:
        raise CnnvizError(
            f"the kernel has {weight.shape[1]} input channel(s) but the input has {shape[0]}; "
            f"pass input_shape=({weight.shape[1]}, ...)"
        )
    if 0 in weight.shape:
        raise CnnvizError(f"the kernel of shape {tuple(kernel.shape)} is empty")
    return weight, shape


def per_dimension(value, dims: int, name: str) -> tuple[int, ...]:
    values = (value,) * dims if isinstance(value, int) else tuple(value)
    if len(values) != dims or not all(isinstance(v, int) for v in values):
        raise CnnvizError(f"{name} must be an int or {dims} ints, not {value!r}")
    return values


def _check_parameters(kernel_size: int, stride: int, padding: int, dilation: int) -> None:
    if kernel_size < 1 or stride < 1 or dilation < 1 or padding < 0:
        raise CnnvizError(
            f"kernel size {kernel_size}, stride {stride}, dilation {dilation} must be at least 1 and padding "
            f"{padding} at least 0"
        )

"""Convolution as a matrix and convolution arithmetic, against torch."""
from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

import cnnviz
from cnnviz import CnnvizError

LECTURE_KERNEL = torch.tensor([[1.0, 4, 1], [1, 4, 3], [3, 3, 1]])
LECTURE_INPUT = torch.tensor([[4.0, 5, 8, 7], [1, 8, 8, 8], [3, 6, 6, 4], [6, 5, 7, 8]])


def test_lecture_worked_example():
    matrix = cnnviz.conv_matrix(LECTURE_KERNEL, LECTURE_INPUT.shape)
    expected = torch.tensor([
        [1, 4, 1, 0, 1, 4, 3, 0, 3, 3, 1, 0, 0, 0, 0, 0],
        [0, 1, 4, 1, 0, 1, 4, 3, 0, 3, 3, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 4, 1, 0, 1, 4, 3, 0, 3, 3, 1, 0],
        [0, 0, 0, 0, 0, 1, 4, 1, 0, 1, 4, 3, 0, 3, 3, 1],
    ], dtype=torch.float32)
    assert torch.equal(matrix, expected)
    assert torch.equal((matrix @ LECTURE_INPUT.flatten()).reshape(2, 2), torch.tensor([[122.0, 148], [126, 134]]))
    sparse = cnnviz.conv_matrix(LECTURE_KERNEL, (4, 4), sparse=True)
    assert sparse.is_sparse and torch.equal(sparse.to_dense(), expected)


def test_transposed_matrix_is_the_backward_pass_of_the_example():
    x = LECTURE_INPUT.clone().requires_grad_(True)
    out = F.conv2d(x[None, None], LECTURE_KERNEL[None, None])[0, 0]
    g = torch.tensor([[1.0, -2], [3, 0.5]])
    gradient, = torch.autograd.grad((out * g).sum(), x)
    matrix = cnnviz.conv_matrix(LECTURE_KERNEL, (4, 4))
    assert torch.allclose((matrix.T @ g.flatten()).reshape(4, 4), gradient)


@st.composite
def convolutions(draw, dims: int):
    kernel = [draw(st.integers(1, 4)) for _ in range(dims)]
    dilation = [draw(st.integers(1, 3)) for _ in range(dims)]
    stride = [draw(st.integers(1, 3)) for _ in range(dims)]
    padding = [draw(st.integers(0, 3)) for _ in range(dims)]
    size = [draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), max(1, d * (k - 1) + 1 - 2 * p) + 6)) for k, d, p in zip(kernel, dilation, padding)]
    channels_in, channels_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    return kernel, dilation, stride, padding, size, channels_in, channels_out, seed


@settings(max_examples=40, deadline=None)
@given(convolutions(2), st.sampled_from(["4d", "3d", "2d"]), st.booleans())
def test_matrix_times_input_and_transpose_times_gradient_2d(case, kernel_form, sparse):
    kernel, dilation, stride, padding, size, channels_in, channels_out, seed = case
    if kernel_form == "3d":
        channels_out = 1
    if kernel_form == "2d":
        channels_in = channels_out = 1
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(channels_out, channels_in, *kernel, generator=generator, dtype=torch.float64)
    x = torch.randn(channels_in, *size, generator=generator, dtype=torch.float64, requires_grad=True)
    given_kernel = {"4d": weight, "3d": weight[0], "2d": weight[0, 0]}[kernel_form]
    given_shape = tuple(size) if kernel_form == "2d" else (channels_in, *size)
    matrix = cnnviz.conv_matrix(given_kernel, given_shape, tuple(stride), tuple(padding), tuple(dilation), sparse=sparse)
    out = F.conv2d(x[None], weight, stride=stride, padding=padding, dilation=dilation)[0]
    assert matrix.shape == (out.numel(), x.numel())
    assert torch.allclose(matrix @ x.detach().flatten(), out.detach().flatten())
    g = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    gradient, = torch.autograd.grad((out * g).sum(), x)
    assert torch.allclose((matrix.t() @ g.flatten()).reshape(x.shape), gradient)


@settings(max_examples=25, deadline=None)
@given(convolutions(1))
def test_matrix_times_input_1d(case):
    kernel, dilation, stride, padding, size, channels_in, channels_out, seed = case
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(channels_out, channels_in, *kernel, generator=generator, dtype=torch.float64)
    x = torch.randn(channels_in, *size, generator=generator, dtype=torch.float64, requires_grad=True)
    matrix = cnnviz.conv_matrix(weight, x.shape, stride[0], padding[0], dilation[0])
    out = F.conv1d(x[None], weight, stride=stride, padding=padding, dilation=dilation)[0]
    assert torch.allclose(matrix @ x.detach().flatten(), out.detach().flatten())
    g = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    gradient, = torch.autograd.grad((out * g).sum(), x)
    assert torch.allclose((matrix.t() @ g.flatten()).reshape(x.shape), gradient)
    if channels_in == channels_out == 1:  # a 1-D kernel on a signal: a banded (Toeplitz) matrix
        single = cnnviz.conv_matrix(weight[0, 0], (size[0],), stride[0], padding[0], dilation[0])
        assert torch.equal(single, matrix)


def test_output_size_formula_matches_torch_for_all_parameter_combinations():
    checked = 0
    for size, kernel, stride, padding, dilation in itertools.product(range(1, 9), range(1, 5), range(1, 4), range(0, 3), range(1, 3)):
        span = dilation * (kernel - 1) + 1
        x = torch.zeros(1, 1, size, size)
        if size + 2 * padding < span:
            with pytest.raises(CnnvizError, match="does not fit"):
                cnnviz.conv_output_size(size, kernel, stride, padding, dilation)
            continue
        expected = F.conv2d(x, torch.zeros(1, 1, kernel, kernel), stride=stride, padding=padding, dilation=dilation).shape[-1]
        assert cnnviz.conv_output_size(size, kernel, stride, padding, dilation) == expected
        if 2 * padding <= kernel:  # what max pooling accepts
            for ceil_mode in (False, True):
                pooled = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode).shape[-1]
                assert cnnviz.conv_output_size(size, kernel, stride, padding, dilation, ceil_mode) == pooled
        checked += 1
    assert checked == 495


def test_figures():
    figure = cnnviz.plots.conv_matrix(LECTURE_KERNEL, (4, 4), x=LECTURE_INPUT)
    assert "2 x 2" in figure._suptitle.get_text() and len(figure.axes) == 4  # U, v(x), U v(x), colour bar
    figure = cnnviz.plots.conv_matrix(torch.tensor([1.0, -2, 1]), (10,))
    assert "U: 8 x 10" in figure.axes[0].get_title()
    figure = cnnviz.plots.conv_arithmetic(5, 3, stride=2, padding=1)
    assert "output 3x3" in figure._suptitle.get_text() and len(figure.axes) == 3
    figure = cnnviz.plots.conv_arithmetic((7, 5), (3, 3), dilation=(2, 1), positions=1)
    assert "output 3x3" in figure._suptitle.get_text()


@pytest.mark.parametrize(("call", "fragment"), [
    (lambda: cnnviz.conv_matrix(torch.ones(3, 3), (2, 2)), "does not fit"),
    (lambda: cnnviz.conv_matrix(torch.ones(2, 3, 3), (3, 5, 5)), "pass input_shape=(2, ...)"),
    (lambda: cnnviz.conv_matrix(torch.ones(3, 3), (5, 5), stride=0), "at least 1"),
    (lambda: cnnviz.conv_matrix(torch.ones(1, 1, 1, 3, 3), (5, 5)), "not a convolution kernel"),
    (lambda: cnnviz.conv_matrix("abc", (5, 5)), "nested lists of numbers"),
    (lambda: cnnviz.plots.conv_arithmetic(3, 5), "does not fit"),
    # sizes that would exhaust the memory are refused before anything is allocated
    (lambda: cnnviz.conv_matrix(torch.ones(3, 3), (150, 150)), "too large to build here"),
    (lambda: cnnviz.conv_matrix(torch.ones(3, 3), (3000, 3000), sparse=True), "too large to build here"),
    (lambda: cnnviz.plots.conv_arithmetic(100_000, 3), "at most 64 cells per side"),
])
def test_errors(call, fragment):
    with pytest.raises(CnnvizError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        call()

"""
Convolution as a matrix
=======================

A convolutional layer is a fully connected layer with a special matrix: sparse (each output sees
only a few inputs: locality) and banded, the same kernel weights repeated on every row (weight
sharing, hence translation equivariance). ``cnnviz.conv_matrix`` builds that matrix ``U`` for any
kernel, stride, padding and dilation, so that ``U @ x.flatten()`` is the convolution. Its transpose
is the backward pass: ``U.T @ g`` is the gradient that autograd computes, itself a (transposed)
convolution. The lecture's worked example comes first, then the 1-D case, where the band is
easiest to see, and the output-size arithmetic of padding, stride and dilation.
"""
import os
from pathlib import Path

import torch
from torch.nn import functional as F

import cnnviz

OUT = Path(os.environ.get("CNNVIZ_GALLERY_OUTPUT", "gallery_output")) / Path(__file__).stem
QUICK = os.environ.get("CNNVIZ_GALLERY_QUICK") == "1"
OUT.mkdir(parents=True, exist_ok=True)

# %%
# The lecture's example: a 3 x 3 kernel on a 4 x 4 input gives a 4 x 16 matrix and a 2 x 2 output.
kernel = torch.tensor([[1.0, 4, 1], [1, 4, 3], [3, 3, 1]])
x = torch.tensor([[4.0, 5, 8, 7], [1, 8, 8, 8], [3, 6, 6, 4], [6, 5, 7, 8]])
U = cnnviz.conv_matrix(kernel, x.shape)
print((U @ x.flatten()).reshape(2, 2))  # [[122, 148], [126, 134]]
print(F.conv2d(x[None, None], kernel[None, None])[0, 0])  # the same
cnnviz.output.save_figure(cnnviz.plots.conv_matrix(kernel, x.shape, x=x), OUT / "conv_matrix_lecture.png")

# %%
# The backward pass is the transposed matrix.
leaf = x.clone().requires_grad_(True)
g = torch.tensor([[1.0, -2], [3, 0.5]])
(F.conv2d(leaf[None, None], kernel[None, None])[0, 0] * g).sum().backward()
print(torch.allclose((U.T @ g.flatten()).reshape(4, 4), leaf.grad))  # True

# %%
# 1-D: a second-derivative kernel on a signal of 12 samples, with padding 1: a Toeplitz band.
cnnviz.output.save_figure(cnnviz.plots.conv_matrix(torch.tensor([1.0, -2, 1]), (12,), padding=1), OUT / "conv_matrix_1d.png")

# %%
# Stride 2 and dilation 2 on several channels: the rows jump by two and the band gets holes.
weight = torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(0))
size = 5 if QUICK else 7
cnnviz.output.save_figure(
    cnnviz.plots.conv_matrix(weight, (2, size, size), stride=2, padding=1, dilation=2, annotate=False),
    OUT / "conv_matrix_strided.png",
)

# %%
# Padding, stride and dilation, as in Dumoulin and Visin's guide: the kernel's footprint on the
# padded input for successive output units, and the output size.
cnnviz.output.save_figure(cnnviz.plots.conv_arithmetic(5, 3, stride=2, padding=1), OUT / "arithmetic_stride_padding.png")
cnnviz.output.save_figure(cnnviz.plots.conv_arithmetic(7, 3, dilation=2), OUT / "arithmetic_dilation.png")
print(cnnviz.conv_output_size(5, 3, stride=2, padding=1))  # 3

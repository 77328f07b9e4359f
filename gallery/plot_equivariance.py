"""
Equivariance and invariance
===========================

Weight sharing makes a convolution equivariant to translation: shift the image and its feature
maps shift with it. Pooling then buys (some) invariance: a max over a cell does not change when
its maximum moves inside the cell, and a global average ignores where things are. Neither holds for
rotation or scaling. ``cnnviz.equivariance`` measures, layer by layer, how far a network is from
each property; the curves show the translation error rising once strides make the shift
fractional, the invariance of the spatially averaged output, and how much rotation and scale
still change deep features.
"""
import os
from pathlib import Path

import torch
from torch import nn

import cnnviz

OUT = Path(os.environ.get("CNNVIZ_GALLERY_OUTPUT", "gallery_output")) / Path(__file__).stem
QUICK = os.environ.get("CNNVIZ_GALLERY_QUICK") == "1"
OUT.mkdir(parents=True, exist_ok=True)

# %%
# A convolution with circular padding is exactly equivariant to circular shifts.
conv = nn.Conv2d(3, 8, 3, padding=1, padding_mode="circular").eval()
check = cnnviz.equivariance(conv, torch.randn(2, 3, 32, 32), ["logits"], shifts=(1, 5), angles=(), scales=(), border=0)
print(check.equivariance_error["translation"])  # zeros (up to rounding)

# %%
# The built-in model, over the sample photographs: curves across depth in one figure.
model = cnnviz.load_model("builtin:photos")
result = cnnviz.equivariance(
    model, "samples", shifts=(1, 4) if QUICK else (1, 2, 4, 8), angles=(15,) if QUICK else (5, 15, 45, 90),
    scales=(0.9,) if QUICK else (0.8, 0.9, 1.1, 1.25), max_images=2 if QUICK else 8,
)
cnnviz.output.save_figure(cnnviz.plots.equivariance(result), OUT / "equivariance.png")
for layer, error in zip(result.layers, result.equivariance_error["translation"][4.0]):
    print(f"{layer:14s} shift 4 px: equivariance error {error:.3f}")

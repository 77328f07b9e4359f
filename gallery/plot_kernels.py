"""
Kernels as images
=================

The first convolution of a network trained on photographs reads RGB pixels directly, so each of
its kernels can be drawn as a small colour image: the colours and orientations it responds to.
Deeper convolutions read feature maps, not colours; their kernels are drawn as one map per output
and input channel, on a diverging scale (red positive, blue negative) shared by the whole layer.
"""
import os
from pathlib import Path

import cnnviz

OUT = Path(os.environ.get("CNNVIZ_GALLERY_OUTPUT", "gallery_output")) / Path(__file__).stem
QUICK = os.environ.get("CNNVIZ_GALLERY_QUICK") == "1"
OUT.mkdir(parents=True, exist_ok=True)

model = cnnviz.load_model("builtin:photos")  # a small VGG-like network, trained for cnnviz, offline
print(cnnviz.convolutions(model))

# %%
# The first layer: 16 colour kernels of 3 x 3 pixels.
first = cnnviz.kernels(model, "features.0")
cnnviz.output.save_figure(cnnviz.plots.kernels(first), OUT / "kernels_first_layer.png")

# %%
# A deeper layer: each output channel's kernel over its first input channels.
deeper = cnnviz.kernels(model, "features.10", channels="0-7" if QUICK else "0-15", inputs="0-7")
cnnviz.output.save_figure(cnnviz.plots.kernels(deeper), OUT / "kernels_features10.png")
print(deeper)

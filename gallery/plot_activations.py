"""
Activations of one image
========================

A convolution layer turns an image into feature maps, one per channel. Early maps look like
edge and colour detectors applied to the photograph; deeper maps are coarser and respond to
larger, more specific patterns. cnnviz captures any layers in one forward pass and stops as soon
as the last one needed has run.
"""
import os
from pathlib import Path

import cnnviz

OUT = Path(os.environ.get("CNNVIZ_GALLERY_OUTPUT", "gallery_output")) / Path(__file__).stem
QUICK = os.environ.get("CNNVIZ_GALLERY_QUICK") == "1"
OUT.mkdir(parents=True, exist_ok=True)

model = cnnviz.load_model("builtin:photos")
layers = ["features.2", "features.12"] if QUICK else ["features.2", "features.12", "features.19", "features.26"]
maps = cnnviz.activations(model, "sample:chelsea", layers, top=16)

# %%
# Each layer on its own scale, the most active channels first; then the same maps laid over the photo.
for layer in layers:
    low, high = maps[layer].value_range()
    print(f"{layer}: values from {low:.3g} to {high:.3g}")
    cnnviz.output.save_figure(cnnviz.plots.activations(maps, layer), OUT / f"activations_{layer}.png")
cnnviz.output.save_figure(cnnviz.plots.activations(maps, layers[-1], overlay=True),
                          OUT / "activations_overlay.png")

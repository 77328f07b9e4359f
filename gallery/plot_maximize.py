"""
Maximal-response images
=======================

Start from random noise and follow the gradient of one unit's activation with respect to the
image: the result shows what the unit responds to. The image is parameterised as a decorrelated
Fourier spectrum and randomly jittered, scaled and rotated at every step, which keeps it from
turning into high-frequency noise. cnnviz renders many units as one batch and stops the network
at the target layer.
"""
import os
from pathlib import Path

import cnnviz

OUT = Path(os.environ.get("CNNVIZ_GALLERY_OUTPUT", "gallery_output")) / Path(__file__).stem
QUICK = os.environ.get("CNNVIZ_GALLERY_QUICK") == "1"
OUT.mkdir(parents=True, exist_ok=True)
steps = 8 if QUICK else 256

# %%
# The pattern model knows stripes and blobs; its class images must show them.
patterns = cnnviz.load_model("builtin:patterns")
classes = cnnviz.maximize(patterns, "logits", channels="0-3" if QUICK else "all", steps=steps, regularize=1.0)
cnnviz.output.save_figure(cnnviz.plots.maximize(classes), OUT / "pattern_classes.png")
print(dict(zip(map(str, classes.units), [round(v, 2) for v in classes.values])))

# %%
# Channels of a middle layer of the photo model, one image each.
photos = cnnviz.load_model("builtin:photos")
channels = cnnviz.maximize(photos, "features.12", channels="0-3" if QUICK else "0-15", steps=steps)
cnnviz.output.save_figure(cnnviz.plots.maximize(channels), OUT / "features12_channels.png")

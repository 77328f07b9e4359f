"""
Activation statistics over many images
======================================

One image shows what a channel does once; a population shows what it does in general. cnnviz
streams images through the network and keeps, for every channel, its mean and spread, extremes,
how often it is positive (a channel that never is, is dead), an exact histogram, and the images
where it responds most (dataset exemplars), with memory that does not grow with the population.
"""
import os
from pathlib import Path

import cnnviz

OUT = Path(os.environ.get("CNNVIZ_GALLERY_OUTPUT", "gallery_output")) / Path(__file__).stem
QUICK = os.environ.get("CNNVIZ_GALLERY_QUICK") == "1"
OUT.mkdir(parents=True, exist_ok=True)

model = cnnviz.load_model("builtin:photos")
images = ["sample:chelsea", "sample:coffee", "sample:astronaut", "sample:rocket"] if QUICK else "samples"
stats = cnnviz.statistics(model, images, ["features.5", "features.19"])
print(stats)
print("dead channels of features.19:", [int(c) for c in stats["features.19"].dead.nonzero()[0]])

# %%
# Histograms per layer, per-channel statistics, and the exemplars of the first channels.
cnnviz.output.save_figure(cnnviz.plots.statistics(stats), OUT / "histograms.png")
cnnviz.output.save_figure(cnnviz.plots.channel_statistics(stats, "features.19"), OUT / "channels_features19.png")
cnnviz.output.save_figure(cnnviz.plots.exemplars(stats, "features.19", max_channels=8), OUT / "exemplars_features19.png")

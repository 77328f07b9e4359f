"""
Saliency and attributions
=========================

Which pixels does the model's decision depend on? The plain input gradient answers locally;
SmoothGrad averages it over noisy copies; integrated gradients sums it along a path from a black
image; Grad-CAM weighs a late layer's maps by their gradients; occlusion greys out patches and
measures the drop. cnnviz runs captum's implementations through its own probe, for any unit.
"""
import os
from pathlib import Path

import cnnviz

OUT = Path(os.environ.get("CNNVIZ_GALLERY_OUTPUT", "gallery_output")) / Path(__file__).stem
QUICK = os.environ.get("CNNVIZ_GALLERY_QUICK") == "1"
OUT.mkdir(parents=True, exist_ok=True)

model = cnnviz.load_model("builtin:photos")
images = ["sample:chelsea", "sample:coffee"] if QUICK else ["sample:chelsea", "sample:coffee", "sample:rocket", "sample:astronaut"]
methods = ["gradient", "gradcam"] if QUICK else ["gradient", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam", "occlusion"]

# %%
# Each image's top class, explained by every method side by side.
attributions = cnnviz.attributions(model, images, methods=methods)
print([str(t) for t in next(iter(attributions.values())).targets])
cnnviz.output.save_figure(cnnviz.plots.attributions(attributions, images=len(images)), OUT / "methods.png")

# %%
# One method in detail: signed and absolute maps with colour bars in raw units.
cnnviz.output.save_figure(cnnviz.plots.attribution(attributions["gradient"], 0), OUT / "gradient_chelsea.png")

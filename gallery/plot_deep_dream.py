"""
Deep Dream
==========

Instead of starting from noise, start from a photograph and change it so that a whole layer
responds more strongly: the patterns the layer detects appear in the image. Octaves (the image at
several scales), random shifts and a normalised gradient give the familiar look.
"""
import os
from pathlib import Path

import cnnviz

OUT = Path(os.environ.get("CNNVIZ_GALLERY_OUTPUT", "gallery_output")) / Path(__file__).stem
QUICK = os.environ.get("CNNVIZ_GALLERY_QUICK") == "1"
OUT.mkdir(parents=True, exist_ok=True)

model = cnnviz.load_model("builtin:photos")
result = cnnviz.dream(model, "sample:coffee", ["features.12", "features.19"], weights=[1.0, 0.5],
                      octaves=2 if QUICK else 4, steps=2 if QUICK else 10)
print(f"the layers' energy rose {result.gain:.1f}x")

# %%
# The original and the dream, side by side.
from matplotlib.figure import Figure

figure = Figure(figsize=(10, 3.6), layout="constrained")
for axis, image, title in zip(figure.subplots(1, 2), (result.original, result.image), ("original", "dreamed")):
    axis.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    axis.set_title(title)
    axis.set_axis_off()
cnnviz.output.save_figure(figure, OUT / "dream_coffee.png")
cnnviz.output.save_image(result.image, OUT / "dream_coffee_full.png")

"""
Receptive fields
================

A unit of a convolutional network sees only part of the image: its receptive field. Its size
grows linearly with the number of stacked convolutions and multiplicatively with pooling and
strides. ``cnnviz.receptive_field`` computes, for every layer of any model (branches and residual
connections included), the size of a unit's region, the stride (jump) between neighbouring
units and the offset of the first unit's region, and says when units see the whole input (after
global pooling). The *effective* receptive field (Luo et al., 2016) is where a unit's gradient
actually lands: a roughly Gaussian blob, much smaller than the theoretical box.
"""
import os
from pathlib import Path

import cnnviz
from cnnviz.inputs.images import display_image, open_image, prepare

OUT = Path(os.environ.get("CNNVIZ_GALLERY_OUTPUT", "gallery_output")) / Path(__file__).stem
QUICK = os.environ.get("CNNVIZ_GALLERY_QUICK") == "1"
OUT.mkdir(parents=True, exist_ok=True)

model = cnnviz.load_model("builtin:photos")

# %%
# The theoretical receptive field of every layer, as a table (what `cnnviz rf` prints).
fields = cnnviz.receptive_fields(model)
print(fields)
print(fields["features.27"].size, fields["features.27"].stride, fields["features.27"].offset)

# %%
# The region of the centre unit of several layers, drawn on an image.
image = display_image(prepare(open_image("sample:chelsea"), model.preprocessing)[0], model.preprocessing)
cnnviz.output.save_figure(cnnviz.plots.receptive_field(fields, image), OUT / "receptive_fields.png")

# %%
# The effective receptive field of a unit in the third block, averaged over the sample photographs.
erf = cnnviz.effective_receptive_field(model, "samples", "features.20", max_images=4 if QUICK else 16)
print(f"theoretical {erf.theoretical.size}, 50% of the gradient within {erf.radius_50:.1f} px, 95% within {erf.radius_95:.1f} px")
cnnviz.output.save_figure(cnnviz.plots.effective_receptive_field(erf), OUT / "effective_receptive_field.png")

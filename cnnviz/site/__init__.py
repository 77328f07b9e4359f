"""Figure galleries: a static HTML site that shows what one model has learned.

``cnnviz.gallery(model)`` (and ``cnnviz gallery``) runs the library's own functions (the layer
table, kernels, activations, statistics, attributions, maximal-response images, Deep Dream) and
writes their figures with HTML pages around them::

    import cnnviz
    site = cnnviz.gallery("builtin:photos", images="samples", output="photos-gallery")
    print(site.index)            # photos-gallery/index.html

The work is cut into jobs (the kernels of one layer, the statistics of all layers, the
maximal-response images of one layer, ...). Every file is written under a temporary name and
renamed; a job's record (what it wrote, and a key made of the model's weights, the images and the
settings) is written last. A re-run skips every job whose record has the same key and whose files
are all there, so a run that was interrupted, even killed, is completed by the next one.
"""
from cnnviz.site.build import Gallery, GallerySettings, gallery
from cnnviz.site.plan import default_layers

__all__ = ["Gallery", "GallerySettings", "default_layers", "gallery"]

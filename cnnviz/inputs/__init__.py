"""Images in: files, folders, ``sample:`` names, PIL images and tensors, turned into model inputs.

* :mod:`~cnnviz.inputs.images`: opening image files (EXIF-rotated, any mode), finding the images of
  a folder or spec, preparing them for a model (resize, crop, normalise) and back for display;
* :mod:`~cnnviz.inputs.samples`: the real photographs that ship with scikit-image (no download).
"""
from cnnviz.inputs.images import ImageSource, display_image, image_sources, open_image, prepare, rgb, to_tensor

__all__ = ["ImageSource", "display_image", "image_sources", "open_image", "prepare", "rgb", "to_tensor"]

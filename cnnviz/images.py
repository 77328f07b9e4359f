"""Images in and out: reading image files and sample photographs, and preparing them for a model.

Image specs, the same on the command line and in Python:

* ``path/to/photo.jpg``: any file Pillow opens (EXIF orientation applied);
* ``sample:chelsea``: one of :mod:`cnnviz.samples`;
* for several images, ``path/to/folder`` (every image below it, recursively) or ``samples`` (all
  sample photographs).

:func:`prepare` turns any image (any size, any mode) into a model input with the model's own
preprocessing: mode converted to its channel count, shorter side resized, centre crop, normalised.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> x = cnnviz.images.prepare(cnnviz.images.open_image("sample:chelsea"), loaded.preprocessing)
    >>> x.shape
    torch.Size([1, 3, 64, 64])
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnviz import samples
from cnnviz.errors import CnnvizError
from cnnviz.models import Preprocessing

SAMPLE_PREFIX = "sample:"
ALL_SAMPLES = "samples"


def open_image(spec: str | os.PathLike | Image.Image) -> Image.Image:
    """Read one image: a file path, ``sample:NAME``, or a PIL image (returned as it is).

    Raises:
        CnnvizError: the file does not exist, is a folder, or is not an image Pillow can read.
    """
    if isinstance(spec, Image.Image):
        return spec
    text = str(spec)
    if text.startswith(SAMPLE_PREFIX):
        return samples.image(text[len(SAMPLE_PREFIX):].strip())
    if text == ALL_SAMPLES:
        raise CnnvizError("'samples' names all sample images; for one image use sample:NAME, e.g. sample:chelsea")
    path = Path(text).expanduser()
    if not path.exists():
        raise CnnvizError(
            f"image {text!r} does not exist; give a path to an image file or sample:NAME "
            f"(e.g. sample:chelsea)"
        )
    if path.is_dir():
        raise CnnvizError(f"{text!r} is a folder; give one image file here")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            return image if image is not opened else opened.copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise CnnvizError(f"cannot read {text!r} as an image ({error}); is it an image file?") from None


def image_sources(spec: str | os.PathLike | Iterable) -> list[str]:
    """Expand an image spec into the specs of single images.

    ``samples`` gives every ``sample:NAME``; a folder gives every file below it (sorted, hidden
    files skipped; whether each is an image is found out when it is opened); a file or
    ``sample:NAME`` gives itself; a list gives the expansion of each of its items.

    Raises:
        CnnvizError: the path does not exist, or the folder holds no files.
    """
    if not isinstance(spec, (str, os.PathLike)):
        return [source for item in spec for source in image_sources(item)]
    text = str(spec)
    if text == ALL_SAMPLES:
        return [SAMPLE_PREFIX + name for name in samples.names()]
    if text.startswith(SAMPLE_PREFIX):
        samples.array(text[len(SAMPLE_PREFIX):].strip())  # unknown names fail here, early
        return [text]
    path = Path(text).expanduser()
    if not path.exists():
        raise CnnvizError(
            f"{text!r} does not exist; give an image file, a folder of images, sample:NAME or samples"
        )
    if path.is_file():
        return [text]
    files = sorted(
        str(p) for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise CnnvizError(f"the folder {text!r} holds no files; put images in it or use samples")
    return files


def prepare(image: Image.Image | torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """One image as a model input, ``1 x C x H x W``, with the model's preprocessing.

    The image is converted to the model's channel count (RGB for 3, greyscale for 1), its shorter
    side resized (to ``preprocessing.resize``, else to the larger side of the input size), centre
    cropped to ``preprocessing.input_size`` and normalised with the model's mean and std.
    ``image`` may also be a ``C x H x W`` float tensor in [0, 1].
    """
    from torchvision.transforms.v2 import functional as F

    pixels = to_tensor(image, preprocessing.channels)
    height, width = preprocessing.input_size
    shorter = preprocessing.resize or max(height, width)
    pixels = F.resize(pixels, [shorter], antialias=True)
    pixels = F.center_crop(pixels, [height, width])
    return preprocessing.normalize(pixels.clamp(0, 1)).unsqueeze(0)


def to_tensor(image: Image.Image | torch.Tensor, channels: int) -> torch.Tensor:
    """``C x H x W`` float tensor in [0, 1] with ``channels`` channels (1 or 3 for PIL images)."""
    if isinstance(image, torch.Tensor):
        pixels = image.float()
        if pixels.dim() != 3:
            raise CnnvizError(f"an image tensor must be C x H x W, got shape {tuple(image.shape)}")
        if pixels.shape[0] == channels:
            return pixels
        if pixels.shape[0] == 1 and channels == 3:
            return pixels.expand(3, -1, -1).clone()
        if pixels.shape[0] == 3 and channels == 1:
            weights = torch.tensor([0.299, 0.587, 0.114]).reshape(3, 1, 1)
            return (pixels * weights).sum(0, keepdim=True)
        raise CnnvizError(f"the image has {pixels.shape[0]} channels but the model takes {channels}")
    if not isinstance(image, Image.Image):
        raise CnnvizError(f"expected a PIL image or a C x H x W tensor, got {type(image).__name__}")
    if channels not in (1, 3):
        raise CnnvizError(
            f"the model takes {channels} input channels; give its images as C x H x W tensors"
        )
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        image = _to_8bit(image)
    converted = image.convert("RGB" if channels == 3 else "L")
    from torchvision.transforms.v2 import functional as F

    return F.to_dtype(F.pil_to_tensor(converted), torch.float32, scale=True)


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale images, scaled by their own range to 8 bits."""
    import numpy as np

    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
    return Image.fromarray(scaled.round().astype(np.uint8), mode="L")

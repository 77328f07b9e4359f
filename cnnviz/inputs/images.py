"""Images in and out: reading image files and sample photographs, and preparing them for a model.

Image specs, the same on the command line and in Python:

* ``path/to/photo.jpg``: any file Pillow opens (EXIF orientation applied, ``~`` expanded);
* ``sample:chelsea``: one of :mod:`cnnviz.inputs.samples`;
* for several images, ``path/to/folder`` (every file below it, recursively, symbolic links
  followed, hidden files skipped) or ``samples`` (all sample photographs; ``sample:*`` too, which
  stays unambiguous when a folder named ``samples`` exists, as that folder then wins).

:func:`prepare` turns any image (any size, any mode) into a model input with the model's own
preprocessing: mode converted to its channel count, shorter side resized, centre crop, normalised.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> x = cnnviz.inputs.prepare(cnnviz.inputs.open_image("sample:chelsea"), loaded.preprocessing)
    >>> x.shape
    torch.Size([1, 3, 64, 64])
"""
from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnviz.inputs import samples
from cnnviz.errors import CnnvizError, CnnvizWarning
from cnnviz.core import output
from cnnviz.core.model import Preprocessing

SAMPLE_PREFIX = "sample:"
ALL_SAMPLES = ("samples", "sample:*")


@dataclass(frozen=True)
class ImageSource:
    """One image to read: its spec, and whether it was found by listing a folder (such files are
    skipped when they are not images, while a file named on its own is an error)."""

    spec: str
    from_folder: bool = False


def open_image(spec: str | os.PathLike | Image.Image) -> Image.Image:
    """Read one image: a file path, ``sample:NAME``, or a PIL image (returned as it is).

    Raises:
        CnnvizError: the file does not exist, is a folder, or is not an image Pillow can read.
    """
    if isinstance(spec, Image.Image):
        return spec
    text = str(spec)
    if text.startswith(SAMPLE_PREFIX) and text not in ALL_SAMPLES:
        return samples.image(text[len(SAMPLE_PREFIX):].strip())
    path = _path(text)
    if text in ALL_SAMPLES and not path.is_dir():
        raise CnnvizError(f"{text!r} names all sample images; for one image use sample:NAME, e.g. sample:chelsea")
    if not path.exists():
        raise CnnvizError(
            f"image {text!r} does not exist; give a path to an image file or sample:NAME "
            f"(e.g. sample:chelsea)"
        )
    if path.is_dir():
        raise CnnvizError(f"{text!r} is a folder; give one image file here")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                image = ImageOps.exif_transpose(opened)
                image = image if image is not opened else opened.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise CnnvizError(f"cannot read {text!r} as an image ({error}); is it an image file?") from None
    if any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught):
        warnings.warn(
            f"{text} is very large ({image.width}x{image.height}); it is reduced before use",
            CnnvizWarning, stacklevel=2,
        )
    return image


def image_sources(spec: str | os.PathLike | Iterable) -> list[ImageSource]:
    """Expand an image spec (or a list of them) into single images.

    ``samples`` gives every ``sample:NAME``; a folder gives every file below it (sorted; whether
    each is an image is found out when it is opened); a ``.txt`` file the images it lists (one path
    or ``sample:NAME`` per line; unreadable ones are skipped and counted, as in a folder); another
    file or ``sample:NAME`` gives itself.

    Raises:
        CnnvizError: an empty spec, a path that does not exist or is neither file nor folder, an
            unknown sample, or a folder without files.
    """
    if not isinstance(spec, (str, os.PathLike)):
        return [source for item in spec for source in image_sources(item)]
    text = str(spec)
    if not text.strip():
        raise CnnvizError("an empty image spec; give an image file, a folder, sample:NAME or samples")
    path = _path(text)
    if text in ALL_SAMPLES:
        if text == "samples" and path.is_dir():
            warnings.warn(
                "a folder named 'samples' exists here, so 'samples' means that folder; "
                "write sample:* for the sample photographs",
                CnnvizWarning, stacklevel=2,
            )
        else:
            return [ImageSource(SAMPLE_PREFIX + name) for name in samples.names()]
    elif text.startswith(SAMPLE_PREFIX):
        samples.array(text[len(SAMPLE_PREFIX):].strip())  # an unknown name fails here, early
        return [ImageSource(text)]
    if not path.exists():
        raise CnnvizError(
            f"{text!r} does not exist; give an image file, a folder of images, sample:NAME or samples"
        )
    if path.is_file():
        return _listed(path) if path.suffix.lower() == ".txt" else [ImageSource(text)]
    if not path.is_dir():
        raise CnnvizError(f"{text!r} is neither a file nor a folder; give an image file or a folder of images")
    found, own = _walk(path)
    files = [ImageSource(str(p), from_folder=True) for p in found]
    if not files and own:
        raise CnnvizError(
            f"the folder {text!r} holds only files cnnviz wrote ({own}), which are never read as "
            "input images; put images in it or give another folder"
        )
    if not files:
        raise CnnvizError(f"the folder {text!r} holds no files; put images in it or use samples")
    return files


def _listed(path: Path) -> list[ImageSource]:
    """The images a text file lists, one path per line (relative ones from the file's folder;
    blank lines and ``#`` comments ignored); like a folder's files, those that cannot be read are
    skipped and counted."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise CnnvizError(f"cannot read the image list {str(path)!r} ({error}); give a text file with one path per line") from None
    found = []
    for line in lines:
        line = line.strip()
        if line.startswith(SAMPLE_PREFIX):
            found.append(ImageSource(line, from_folder=True))
        elif line and not line.startswith("#"):
            listed = _path(line)
            found.append(ImageSource(str(listed if listed.is_absolute() else path.parent / listed), from_folder=True))
    if not found:
        raise CnnvizError(f"the image list {str(path)!r} names no images; put one path per line in it")
    if not any(source.spec.startswith(SAMPLE_PREFIX) or os.path.isfile(source.spec) for source in found):
        raise CnnvizError(
            f"cannot read {str(path)!r} as a list of images: none of its {len(found)} entries is an existing "
            f"file (the first: {found[0].spec!r}); a .txt file is read as one image path per line"
        )
    return found


def _path(text: str) -> Path:
    return Path(text).expanduser()


def _walk(folder: Path) -> tuple[list[Path], int]:
    """Every regular file below ``folder``, sorted, hidden ones skipped, symbolic links followed
    (each real folder visited once, so a link loop ends), and files cnnviz wrote skipped (its
    outputs are never read back as inputs); with the count of those."""
    found, visited, own = [], set(), 0
    for root, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:
            folders[:] = []
            continue
        visited.add(real)
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        written = output.written_in(root) if output.RECORD in files else set()
        for name in files:
            candidate = Path(root) / name
            if name in written:
                own += 1
            elif not name.startswith(".") and _is_regular(candidate):
                found.append(candidate)
    return sorted(found), own


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def prepare(image: Image.Image | torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """One image as a model input, ``1 x C x H x W``, with the model's preprocessing.

    The image is converted to the model's channel count (RGB for 3, greyscale for 1; transparency
    composited onto white), then sized: with ``preprocessing.resize`` its shorter side is resized
    to that and the centre cropped to ``input_size`` (torchvision's recipe); without, a square
    input size takes the shorter side resized to it and the centre (the aspect ratio is kept), a
    non-square one (an OCR model's 48 x 192) is resized straight to ``input_size`` (all of the image
    is seen). Last it is normalised with the model's mean and std. ``image`` may also be a
    ``C x H x W`` tensor: floats in [0, 1] or uint8 in [0, 255].
    """
    from torchvision.transforms.v2 import functional as F

    height, width = preprocessing.input_size
    straight = preprocessing.resize is None and height != width
    shorter = preprocessing.resize or max(height, width)
    if isinstance(image, Image.Image):
        image = _reduced(image, shorter)
    pixels = to_tensor(image, preprocessing.channels)
    if straight:
        pixels = F.resize(pixels, [height, width], antialias=True)
    else:
        pixels = F.resize(pixels, [shorter], antialias=True)
        pixels = F.center_crop(pixels, [height, width])
    return preprocessing.normalize(pixels.clamp(0, 1)).unsqueeze(0)


def display_image(inputs: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Model inputs (``C x H x W`` or ``N x C x H x W``, normalised) as the images they show:
    de-normalised, clipped to [0, 1], on the CPU, RGB (see :func:`rgb`)."""
    return rgb(preprocessing.denormalize(inputs.detach().float().cpu()).clamp(0, 1))


def rgb(pixels: torch.Tensor) -> torch.Tensor:
    """``C x H x W`` or ``N x C x H x W`` images with any channel count as RGB: greyscale repeated
    into three channels, two channels completed by repeating the last, more than three cut to the
    first three."""
    channel_axis = pixels.dim() - 3
    count = pixels.shape[channel_axis]
    if count == 3:
        return pixels
    if count == 1:
        return pixels.repeat_interleave(3, dim=channel_axis)
    if count > 3:
        return pixels.narrow(channel_axis, 0, 3).clone()
    last = pixels.narrow(channel_axis, count - 1, 1)
    return torch.cat([pixels] + [last] * (3 - count), dim=channel_axis)


def to_tensor(image: Image.Image | torch.Tensor, channels: int) -> torch.Tensor:
    """``C x H x W`` float tensor in [0, 1] with ``channels`` channels (1 or 3 for PIL images).

    16-bit images are divided by 65535; 32-bit integer images by 255 or 65535, whichever their
    values fit; float images are taken as [0, 1] and clipped.
    """
    if isinstance(image, torch.Tensor):
        return _tensor_channels(_unit_range(image), channels)
    if not isinstance(image, Image.Image):
        raise CnnvizError(f"expected a PIL image or a C x H x W tensor, got {type(image).__name__}")
    if channels not in (1, 3):
        raise CnnvizError(
            f"the model takes {channels} input channels; give its images as C x H x W tensors"
        )
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = _high_depth(image)
        return values.expand(3, -1, -1).clone() if channels == 3 else values
    if "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    converted = image.convert("RGB" if channels == 3 else "L")
    from torchvision.transforms.v2 import functional as F

    return F.to_dtype(F.pil_to_tensor(converted), torch.float32, scale=True)


def _unit_range(image: torch.Tensor) -> torch.Tensor:
    if image.dim() != 3:
        raise CnnvizError(f"an image tensor must be C x H x W, got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.float() / 255
    if not image.is_floating_point():
        raise CnnvizError(f"an image tensor must be float in [0, 1] or uint8, not {image.dtype}")
    low, high = float(image.min()), float(image.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise CnnvizError(
            f"the image tensor holds values from {low:.3g} to {high:.3g}; give images in [0, 1] "
            "(not normalised: cnnviz applies the model's mean and std itself)"
        )
    return image.float()


def _tensor_channels(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    if pixels.shape[0] == channels:
        return pixels
    if pixels.shape[0] == 1 and channels == 3:
        return pixels.expand(3, -1, -1).clone()
    if pixels.shape[0] == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).reshape(3, 1, 1)
        return (pixels * weights).sum(0, keepdim=True)
    raise CnnvizError(f"the image has {pixels.shape[0]} channels but the model takes {channels}")


def _high_depth(image: Image.Image) -> torch.Tensor:
    """A 16-bit, 32-bit integer or float greyscale image as a 1 x H x W tensor in [0, 1]."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        values = values / 65535
    elif image.mode == "I":
        values = values / (255 if values.max() <= 255 else 65535)
    return torch.from_numpy(np.clip(values, 0, 1)).float().unsqueeze(0)


def _reduced(image: Image.Image, shorter: int) -> Image.Image:
    """Shrink a very large image by a whole factor first, so that it is never converted to floats
    at full size (the final resize then works on at most twice the needed size)."""
    factor = min(image.size) // (2 * shorter)
    if factor < 2 or image.mode not in ("L", "RGB", "RGBA", "LA", "I", "I;16", "F", "CMYK", "YCbCr"):
        return image
    try:
        return image.reduce(factor)
    except (ValueError, NotImplementedError):
        return image

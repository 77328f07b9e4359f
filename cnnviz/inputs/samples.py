"""Real sample photographs, from the ones scikit-image ships (no download needed).

Example::

    >>> import cnnviz
    >>> cnnviz.samples.names()[:4]
    ['astronaut', 'brick', 'camera', 'cell']
    >>> cnnviz.samples.image("chelsea").size          # a PIL image, (width, height)
    (451, 300)
    >>> cnnviz.samples.tensor("chelsea").shape        # 3 x H x W, floats in [0, 1]
    torch.Size([3, 300, 451])

Colour photographs come as RGB, the others as greyscale (PIL mode ``"L"``, tensors ``1 x H x W``).
On the command line ``sample:chelsea`` names one of them wherever an image is expected, and
``samples`` names all of them wherever a folder of images is.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cnnviz.errors import CnnvizError, did_you_mean

#: name -> what the photograph shows. Every name is the scikit-image function that returns it.
PHOTOGRAPHS = {
    "astronaut": "Eileen Collins, astronaut, portrait with a flag (colour)",
    "brick": "a brick wall, texture (grey)",
    "camera": "a man with a camera on a tripod (grey)",
    "cell": "a cell under a microscope (grey)",
    "chelsea": "Chelsea the cat (colour)",
    "clock": "a clock on a wall, motion blurred (grey)",
    "coffee": "a cup of coffee on a saucer (colour)",
    "coins": "Greek coins (grey)",
    "grass": "grass, texture (grey)",
    "gravel": "gravel, texture (grey)",
    "hubble_deep_field": "galaxies of the Hubble deep field (colour)",
    "immunohistochemistry": "stained tissue under a microscope (colour)",
    "moon": "the surface of the moon (grey)",
    "page": "a scanned page of text (grey)",
    "retina": "a human retina, fundus photograph (colour)",
    "rocket": "a rocket on its launch pad (colour)",
    "text": "text on a wall, photographed at an angle (grey)",
}


def names() -> list[str]:
    """The names of the sample photographs, sorted."""
    return sorted(PHOTOGRAPHS)


def array(name: str) -> np.ndarray:
    """The photograph as scikit-image returns it: ``H x W x 3`` or ``H x W``, uint8."""
    if name not in PHOTOGRAPHS:
        raise CnnvizError(
            f"no sample image {name!r}; {did_you_mean(name, names())} "
            f"(the samples are: {', '.join(names())})"
        )
    from skimage import data

    pixels = np.asarray(getattr(data, name)())
    if pixels.dtype != np.uint8:
        raise CnnvizError(f"scikit-image returned {name} as {pixels.dtype}, expected uint8")
    return pixels


def image(name: str) -> Image.Image:
    """The photograph as a PIL image (mode ``"RGB"`` or ``"L"``)."""
    return Image.fromarray(array(name))


def tensor(name: str) -> torch.Tensor:
    """The photograph as a ``C x H x W`` float tensor in [0, 1] (C is 3 or 1)."""
    pixels = torch.from_numpy(array(name).copy())
    if pixels.dim() == 2:
        pixels = pixels.unsqueeze(-1)
    return pixels.permute(2, 0, 1).float() / 255.0


def images() -> dict[str, Image.Image]:
    """Every sample photograph, by name."""
    return {name: image(name) for name in names()}

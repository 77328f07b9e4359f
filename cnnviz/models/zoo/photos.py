"""Crops of the sample photographs, for the natural-image model ``builtin:photos``.

The class of a crop is the photograph it comes from, named exactly as its scikit-image function.
Each photograph is split along its longer side: training crops come from the first 75%, validation
crops from the last 25%, so a validation crop never overlaps anything the model was trained on.
Both splits draw crops of the same sizes (10-25% of the photograph's shorter side); training adds
wider views of its part. Greyscale photographs are repeated into three channels.

Example::

    >>> from cnnviz.models.zoo import photos
    >>> images, labels = photos.crops(16, split="validation", seed=1)   # 16 x 3 x 64 x 64, 16
    >>> images.shape, labels.shape
    (torch.Size([16, 3, 64, 64]), torch.Size([16]))
    >>> len(photos.CLASSES), photos.CLASSES[int(labels[0])]          # the photograph each crop is of
    (15, 'coins')
"""
from __future__ import annotations

from functools import lru_cache

import torch

from cnnviz.inputs import samples

#: Every sample photograph except ``cell`` and ``clock``, whose last quarter is a nearly blank
#: background: a crop of it could come from any grey photograph.
CLASSES = [name for name in samples.names() if name not in ("cell", "clock")]
TRAINING_FRACTION = 0.75
SIZE = 64


@lru_cache(maxsize=None)
def region(name: str, split: str) -> torch.Tensor:
    """The part of photograph ``name`` that ``split`` (``"train"`` or ``"validation"``) crops
    from, ``3 x H x W`` in [0, 1]."""
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', not {split!r}")
    pixels = samples.tensor(name)
    pixels = pixels.expand(3, -1, -1).clone() if pixels.shape[0] == 1 else pixels
    axis = 2 if pixels.shape[2] >= pixels.shape[1] else 1
    cut = round(pixels.shape[axis] * TRAINING_FRACTION)
    part = pixels.narrow(axis, 0, cut) if split == "train" else pixels.narrow(axis, cut, pixels.shape[axis] - cut)
    return part.contiguous()


def crops(
    count: int, *, split: str, seed: int, size: int = SIZE, augment: bool = False, context: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random square crops with balanced classes, resized to ``size``.

    Crop sides are drawn between 10% and 25% of the photograph's shorter side, at a uniformly
    random position inside the split's part: every such crop fits in either part, so both splits
    see the same scales. With ``context`` > 0 (training), that fraction of the crops instead spans
    25% to 100% of the part's shorter side, so whole views of a photograph are learned too; they
    are never part of the held-out measure. ``augment`` adds horizontal flips and a little
    brightness and contrast jitter.

    Returns:
        ``images`` (``count x 3 x size x size`` in [0, 1]) and ``labels`` (``count``, indices into
        ``CLASSES``).
    """
    from torchvision.ops import roi_align

    generator = torch.Generator().manual_seed(seed)
    labels = (torch.arange(count) % len(CLASSES))[torch.randperm(count, generator=generator)]
    images = torch.empty(count, 3, size, size)
    for label in labels.unique().tolist():
        where = (labels == label).nonzero().flatten()
        name = CLASSES[label]
        source = region(name, split)
        height, width = source.shape[1:]
        part_shorter = min(height, width)
        photo_shorter = min(_photo_size(name))
        n = len(where)
        local = photo_shorter * (0.10 + 0.15 * torch.rand(n, generator=generator))
        wide = part_shorter * (0.25 + 0.75 * torch.rand(n, generator=generator))
        side = torch.where(torch.rand(n, generator=generator) < context, wide, local).clamp(max=part_shorter)
        left = torch.rand(n, generator=generator) * (width - side)
        top = torch.rand(n, generator=generator) * (height - side)
        boxes = torch.stack([torch.zeros(n), left, top, left + side, top + side], dim=1)
        images[where] = roi_align(source[None], boxes, output_size=size, spatial_scale=1.0,
                                  sampling_ratio=-1, aligned=True)
    if augment:
        flip = torch.rand(count, generator=generator) < 0.5
        images[flip] = images[flip].flip(-1)
        contrast = 0.9 + 0.2 * torch.rand(count, 1, 1, 1, generator=generator)
        brightness = 0.1 * (torch.rand(count, 1, 1, 1, generator=generator) - 0.5)
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * contrast + mean + brightness
    return images.clamp(0, 1), labels


@lru_cache(maxsize=None)
def _photo_size(name: str) -> tuple[int, int]:
    return tuple(samples.array(name).shape[:2])


def channel_statistics() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std over the training regions (each photograph weighted equally)."""
    means, squares = [], []
    for name in CLASSES:
        pixels = region(name, "train").flatten(1).double()
        means.append(pixels.mean(dim=1))
        squares.append((pixels**2).mean(dim=1))
    mean = torch.stack(means).mean(0)
    std = (torch.stack(squares).mean(0) - mean**2).sqrt()
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)

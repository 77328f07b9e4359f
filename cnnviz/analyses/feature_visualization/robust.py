"""How strongly a saved render drives its unit when it is moved a little: the measure the tests and
the benchmarks judge renders by (a render that only works pixel-exact is adversarial noise, not a
feature).

Each image is quantised to 8 bits as its PNG keeps it, then seen in ``views`` random views (a shift
of up to 4 % of its side, a scale of 0.9-1.1 and a rotation of up to 10 degrees, the empty corners
mid-grey), the same views for every image (one seed), optionally resized to ``size`` first (a tool
that optimised a small image seen upsampled, as Lucent's 128 px images seen at 224 px). A
channel's value is its spatial mean, a class's its logit; its robust value is the mean over the
views. For classes :func:`robust_top1` gives the fraction of views the model classifies as the
class.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> rendering = cnnviz.maximize(loaded, "features.10", channels="0-3", steps=8, size=32, reference=None)
    >>> values = robust_values(loaded, "features.10", [0, 1, 2, 3], rendering.images)
    >>> len(values), all(isinstance(value, float) for value in values)     # per image, over 16 views
    (4, True)
    >>> coffee = loaded.class_names.index("coffee")
    >>> photo = cnnviz.samples.tensor("coffee")[None]         # 1 x 3 x H x W in [0, 1], like a render
    >>> robust_top1(loaded, [coffee], photo, size=64)         # the fraction of views classified as coffee
    [1.0]
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from cnnviz.core.model import preprocessing_of, unwrap
from cnnviz.core.probe import probe

SHIFT = 0.04  # of the image's side
SCALE = (0.9, 1.1)
ROTATE = 10.0  # degrees


def random_views(images: torch.Tensor, views: int = 16, seed: int = 0, size=None) -> torch.Tensor:
    """``N x C x H x W`` images in [0, 1] -> ``N x views x C x H' x W'``: each quantised to 8 bits,
    resized to ``size`` (default: as they are) and seen in the same ``views`` random affine views."""
    images = (images.detach().float().clamp(0, 1) * 255).round() / 255
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(images.shape[2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    generator = torch.Generator().manual_seed(seed)
    draws = torch.rand(views, 4, generator=generator)
    angle = torch.deg2rad((draws[:, 0] * 2 - 1) * ROTATE)
    scale = SCALE[0] + (SCALE[1] - SCALE[0]) * draws[:, 1]
    shift = (draws[:, 2:] * 2 - 1) * SHIFT * 2  # in [-1, 1] coordinates: 2 x the fraction of the side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], -1), torch.stack([sin, cos, shift[:, 1]], -1)], 1)
    count, channels, height, width = images.shape
    grid = F.affine_grid(theta, (views, channels, height, width), align_corners=False)
    out = torch.empty(count, views, channels, height, width)
    for k in range(count):
        repeated = images[k:k + 1].expand(views, -1, -1, -1) - 0.5
        out[k] = F.grid_sample(repeated, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5
    return out


def _responses(model, layer: str, images: torch.Tensor, views: int, seed: int, size) -> torch.Tensor:
    """``N x views x C``: each view's spatial mean of every channel of ``layer`` (or its logits)."""
    preprocessing = preprocessing_of(model)
    module, _ = unwrap(model)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    seen = random_views(images, views, seed, size)
    flat = seen.flatten(0, 1)
    outputs = []
    with probe(model, [layer]) as recorder, torch.no_grad():
        for start in range(0, len(flat), 32):
            batch = flat[start:start + 32]
            recorder.run(preprocessing.normalize(batch).to(device))
            value = recorder[layer].float().cpu()
            outputs.append(value.flatten(2).mean(2) if value.dim() > 2 else value)
    return torch.cat(outputs).view(len(images), views, -1)


def robust_values(model, layer: str, channels: list[int], images: torch.Tensor, views: int = 16, seed: int = 0,
                  size=None) -> list[float]:
    """Per image, its channel's (or class's: ``layer`` ``"logits"``) mean response over the views."""
    responses = _responses(model, layer, images, views, seed, size)
    return [float(responses[k, :, channel].mean()) for k, channel in enumerate(channels)]


def robust_top1(model, classes: list[int], images: torch.Tensor, views: int = 16, seed: int = 0,
                size=None) -> list[float]:
    """Per image, the fraction of its views that the model classifies as its class."""
    responses = _responses(model, "logits", images, views, seed, size)
    return [float((responses[k].argmax(1) == c).float().mean()) for k, c in enumerate(classes)]


def contrast(images: torch.Tensor) -> list[float]:
    """Per image, the standard deviation of its 8-bit pixels over [0, 1] (a pale render is low)."""
    quantised = (images.detach().float().clamp(0, 1) * 255).round() / 255
    return [float(image.std()) for image in quantised]


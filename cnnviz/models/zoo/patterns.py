"""Procedural pattern images whose classes have a visual meaning known in advance.

Eleven classes: gratings whose stripes run at 0, 45, 90 and 135 degrees (counter-clockwise from
the horizontal, as seen on screen: ``grating_90`` has vertical stripes), concentric rings, a
checkerboard, a lattice of dots, a red, a green and a blue blob on a nearly grey background
(plain, mottled or faintly striped), and those backgrounds alone (``plain``): the background is
no evidence for a blob, so only the blob itself tells the blob classes.
Every image draws its own frequency, phase, position, contrast, colours and noise, so that only
the class's meaning is common to its images. ``CLASS_INFO`` says what each class means, for tests
that check a visualization recovers it.

Example::

    >>> from cnnviz.models.zoo import patterns
    >>> images, labels = patterns.generate(8, seed=1)     # 8 x 3 x 48 x 48 in [0, 1], and 8 labels
    >>> images.shape, labels.shape
    (torch.Size([8, 3, 48, 48]), torch.Size([8]))
    >>> patterns.CLASSES[int(labels[0])], patterns.CLASS_INFO["grating_90"]["description"]
    ('checkerboard', 'vertical stripes')
    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:patterns")             # the model trained on them
    >>> bool((loaded.module(loaded.preprocessing.normalize(images)).argmax(1) == labels).all())
    True
"""
from __future__ import annotations

import math

import torch

CLASS_INFO: dict[str, dict] = {
    "grating_0": {"kind": "grating", "stripe_angle": 0, "description": "horizontal stripes"},
    "grating_45": {"kind": "grating", "stripe_angle": 45, "description": "stripes rising to the right"},
    "grating_90": {"kind": "grating", "stripe_angle": 90, "description": "vertical stripes"},
    "grating_135": {"kind": "grating", "stripe_angle": 135, "description": "stripes falling to the right"},
    "rings": {"kind": "rings", "description": "concentric rings"},
    "checkerboard": {"kind": "checkerboard", "description": "a checkerboard"},
    "dots": {"kind": "dots", "description": "a lattice of dots"},
    "red_blob": {"kind": "blob", "color": [1.0, 0.0, 0.0], "description": "a red blob on a grey background"},
    "green_blob": {"kind": "blob", "color": [0.0, 1.0, 0.0], "description": "a green blob on a grey background"},
    "blue_blob": {"kind": "blob", "color": [0.0, 0.0, 1.0], "description": "a blue blob on a grey background"},
    "plain": {"kind": "plain", "description": "the grey backgrounds of the blobs, without a blob"},
}
CLASSES = list(CLASS_INFO)
SIZE = 48


def generate(
    count: int, *, seed: int, size: int = SIZE, classes: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random pattern images with balanced classes.

    Args:
        count: how many images.
        seed: the seed of every random choice (the same seed gives the same images).
        size: height and width in pixels.
        classes: restrict to these class names (labels stay indices into ``CLASSES``).

    Returns:
        ``images`` (``count x 3 x size x size``, floats in [0, 1]) and ``labels`` (``count``).
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = [CLASSES.index(name) for name in (classes or CLASSES)]
    labels = torch.tensor(chosen)[torch.arange(count) % len(chosen)]
    labels = labels[torch.randperm(count, generator=generator)]
    images = torch.empty(count, 3, size, size)
    for label in labels.unique().tolist():
        where = (labels == label).nonzero().flatten()
        images[where] = _draw(CLASSES[label], len(where), size, generator)
    noise = torch.rand(count, 1, 1, 1, generator=generator) * 0.06
    images = images + noise * torch.randn(images.shape, generator=generator)
    return images.clamp(0, 1), labels


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _grid(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates: x to the right, y upwards (so angles read as on screen), n x size x size."""
    rows, columns = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    return columns.expand(n, size, size), (size - 1 - rows).expand(n, size, size)


def _colour_pair(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random colours per image, at least 0.35 apart, n x 3 each."""
    first, second = torch.rand(n, 3, generator=generator), torch.rand(n, 3, generator=generator)
    close = (first - second).norm(dim=1) < 0.35
    while close.any():
        second[close] = torch.rand(int(close.sum()), 3, generator=generator)
        close = (first - second).norm(dim=1) < 0.35
    return first, second


def _mix(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Colour a pattern t (n x H x W in [0, 1]) with a random colour pair and contrast."""
    n = t.shape[0]
    background, foreground = _colour_pair(n, generator)
    contrast = _uniform(n, 0.6, 1.0, generator)
    foreground = background + (foreground - background) * contrast[:, None]
    return background[:, :, None, None] + (foreground - background)[:, :, None, None] * t[:, None]


def _draw(name: str, n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    info = CLASS_INFO[name]
    x, y = _grid(n, size)
    phase = _uniform(n, 0, 2 * math.pi, generator)[:, None, None]
    if info["kind"] == "grating":
        angle = torch.deg2rad(info["stripe_angle"] + _uniform(n, -5, 5, generator))[:, None, None]
        frequency = _uniform(n, 1 / 12, 1 / 5, generator)[:, None, None]
        # The stripes run along (cos a, sin a); the intensity varies along the normal (-sin a, cos a).
        wave = torch.cos(2 * math.pi * frequency * (-x * torch.sin(angle) + y * torch.cos(angle)) + phase)
        return _mix((wave + 1) / 2, generator)
    if info["kind"] == "rings":
        centre_x = _uniform(n, 0.15 * size, 0.85 * size, generator)[:, None, None]
        centre_y = _uniform(n, 0.15 * size, 0.85 * size, generator)[:, None, None]
        frequency = _uniform(n, 1 / 10, 1 / 4, generator)[:, None, None]
        radius = ((x - centre_x) ** 2 + (y - centre_y) ** 2).sqrt()
        return _mix((torch.cos(2 * math.pi * frequency * radius + phase) + 1) / 2, generator)
    if info["kind"] == "checkerboard":
        u, v = _rotated(x, y, _uniform(n, -8, 8, generator), n)
        frequency = (1 / _uniform(n, 6, 16, generator))[:, None, None]
        other_phase = _uniform(n, 0, 2 * math.pi, generator)[:, None, None]
        product = torch.sin(2 * math.pi * frequency * u + phase) * torch.sin(2 * math.pi * frequency * v + other_phase)
        return _mix(torch.sigmoid(6 * product), generator)
    if info["kind"] == "dots":
        u, v = _rotated(x, y, _uniform(n, -15, 15, generator), n)
        spacing = _uniform(n, 6, 12, generator)[:, None, None]
        radius = spacing * _uniform(n, 0.15, 0.3, generator)[:, None, None]
        offset_u = _uniform(n, 0, 1, generator)[:, None, None] * spacing
        offset_v = _uniform(n, 0, 1, generator)[:, None, None] * spacing
        du = torch.remainder(u - offset_u, spacing) - spacing / 2
        dv = torch.remainder(v - offset_v, spacing) - spacing / 2
        distance = (du**2 + dv**2).sqrt()
        return _mix(torch.sigmoid(3 * (radius - distance)), generator)
    if info["kind"] == "plain":
        return _blob(None, x, y, n, size, generator)
    return _blob(torch.tensor(info["color"]), x, y, n, size, generator)


def _rotated(x, y, degrees: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    angle = torch.deg2rad(degrees)[:, None, None]
    return x * torch.cos(angle) + y * torch.sin(angle), -x * torch.sin(angle) + y * torch.cos(angle)


def _blob(colour: torch.Tensor | None, x, y, n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """A Gaussian blob of a jittered primary colour on a nearly grey background, which is plain,
    softly mottled or faintly striped, so that only the blob tells the class (no blob for
    ``colour=None``)."""
    grey = _uniform(n, 0.25, 0.75, generator)[:, None, None]
    texture = torch.zeros(n, size, size)
    kind = torch.randint(0, 3, (n,), generator=generator)
    mottled = kind == 1
    if mottled.any():
        coarse = torch.rand(int(mottled.sum()), 1, 6, 6, generator=generator) - 0.5
        smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[:, 0]
        texture[mottled] = smooth * _uniform(int(mottled.sum()), 0.1, 0.3, generator)[:, None, None]
    striped = kind == 2
    if striped.any():
        count = int(striped.sum())
        angle = _uniform(count, 0, math.pi, generator)[:, None, None]
        frequency = _uniform(count, 1 / 12, 1 / 5, generator)[:, None, None]
        phase = _uniform(count, 0, 2 * math.pi, generator)[:, None, None]
        wave = torch.cos(2 * math.pi * frequency * (-x[striped] * torch.sin(angle) + y[striped] * torch.cos(angle)) + phase)
        texture[striped] = wave * _uniform(count, 0.03, 0.08, generator)[:, None, None]
    tint = 0.06 * (torch.rand(n, 3, generator=generator) - 0.5)
    background = (grey + texture)[:, None] + tint[:, :, None, None]
    if colour is None:
        return background.clamp(0, 1)
    primary = colour * _uniform(n, 0.75, 1.0, generator)[:, None]
    primary = primary + (1 - colour) * 0.25 * torch.rand(n, 3, generator=generator)
    centre_x = _uniform(n, 0.2 * size, 0.8 * size, generator)[:, None, None]
    centre_y = _uniform(n, 0.2 * size, 0.8 * size, generator)[:, None, None]
    sigma = _uniform(n, 0.05 * size, 0.10 * size, generator)[:, None, None]
    mask = torch.exp(-((x - centre_x) ** 2 + (y - centre_y) ** 2) / (2 * sigma**2))
    strength = _uniform(n, 0.8, 1.0, generator)[:, None, None]
    alpha = (mask * strength)[:, None]
    return (background * (1 - alpha) + primary[:, :, None, None] * alpha).clamp(0, 1)

"""Deep Dream: change an image so that chosen layers respond more strongly to it.

Gradient ascent on the image itself (not on a parameterisation) of the weighted mean squared
activation of one or more layers, at several scales (octaves): the image is shrunk by ``scale``
``octaves - 1`` times, dreamed at the smallest size first, and each larger octave starts from its
own sharp original plus the detail the smaller octaves added. Each step rolls the image by a
random offset (so the result has no seams), computes the gradient tile by tile (so a large image
never has to fit in memory at once), normalises it by its mean magnitude, and steps.

A model that takes one input size only (flatten then ``Linear``: it runs at its input size and
not at a larger one) is dreamed in tiles of exactly that size: every octave is cut into tiles of
at most the input size and each tile is resampled to it on its way into the network, so the
network always sees the size it takes, whatever the image's size.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> photo = cnnviz.samples.image("chelsea").reduce(4)     # 113 x 75 (any size; "sample:chelsea" is 451 x 300)
    >>> quick = {"octaves": 1, "steps": 2}                # a quick look; by default 4 octaves of 10 steps
    >>> dreamed = cnnviz.dream(loaded, photo, ["features.12", "features.19"], weights=[1, 0.5], **quick)
    >>> dreamed.image.shape, dreamed.gain > 1     # 3 x H x W in [0, 1], the objective grew
    (torch.Size([3, 75, 113]), True)
    >>> dreamed                                   # doctest: +ELLIPSIS
    Dream(75x113, layers ['features.12', 'features.19'], objective 0.686 -> ...)
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image
from torch.nn import functional as F

from cnnviz.analyses.feature_visualization.settings import DreamSettings
from cnnviz.core.settings import chosen
from cnnviz.analyses.feature_visualization import objectives as o
from cnnviz.core.display import Shows
from cnnviz.errors import CnnvizError, check_finite, check_seed
from cnnviz.core.gradients import gradients_on
from cnnviz.core.output import set_progress_total
from cnnviz.inputs.images import open_image, to_tensor
from cnnviz.core.fusion import folded_copy
from cnnviz.core.model import preprocessing_of
from cnnviz.core.probe import check_size, failure_at, probe
from cnnviz.core.references import layer_ref


@dataclass(repr=False)
class Dream(Shows):
    """A dreamed image.

    Attributes:
        image: ``C x H x W`` in [0, 1], the size of the original (``C`` the model's input channels).
        original: the original, the same way.
        layers, weights: what was raised.
        before, after: the objective (the weighted mean squared activations) on the original and on
            the result, both computed on the whole image.
        settings: octaves, scale, steps, step, jitter, tile, seed.
    """

    image: torch.Tensor
    original: torch.Tensor
    layers: list[str]
    weights: list[float]
    before: float
    after: float
    settings: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        size = "x".join(str(s) for s in self.image.shape[1:])
        return f"Dream({size}, layers {self.layers}, objective {self.before:.3g} -> {self.after:.3g} (x{self.gain:.1f}))"

    @property
    def gain(self) -> float:
        """How many times larger the objective is on the result than on the original."""
        return self.after / self.before if self.before else float("inf")

    def to_dict(self) -> dict:
        return {"layers": self.layers, "weights": self.weights, "objective_before": self.before,
                "objective_after": self.after, "gain": self.gain, "settings": self.settings,
                "size": list(self.image.shape[1:])}


def dream(
    model,
    image: str | os.PathLike | Image.Image | torch.Tensor,
    layer: str | Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    settings: DreamSettings | None = None,
    progress: Callable[[int], None] | None = None,
    **options,
) -> Dream:
    """Dream an image at one or more layers.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left untouched).
        image: an image spec (file, ``sample:NAME``), a PIL image or a ``C x H x W`` tensor in [0, 1];
            used at its own size (not cropped), converted to the model's channels.
        layer: one layer reference or several (whole layers); weights: one per layer (default 1 each).
        settings: how the image is dreamed, a :class:`cnnviz.DreamSettings` (default: its defaults).
        progress: called with 1 after each step.
        options: fields of :class:`cnnviz.DreamSettings` that replace those of ``settings``:
            ``octaves``, ``scale`` (the number of scales and the ratio between them),
            ``steps`` (gradient steps per octave), ``step`` (in pixel units of [0, 1], along
            the gradient normalised to mean magnitude 1), ``jitter`` (the largest random roll, in
            pixels), ``tile`` (the largest tile side for the gradient), ``seed`` (of the rolls).

    Returns:
        :class:`Dream`.
    """
    how = chosen(DreamSettings, settings, options, "dream")
    octaves, scale, steps, step = how.octaves, how.scale, how.steps, how.step
    jitter, tile, seed = how.jitter, how.tile, how.seed
    names = [layer] if isinstance(layer, str) else list(layer)
    if not names:
        raise CnnvizError("name at least one layer to dream at")
    weights = [1.0] * len(names) if weights is None else [float(w) for w in weights]
    if len(weights) != len(names):
        raise CnnvizError(f"{len(weights)} weights for {len(names)} layers; give one weight per layer")
    for name in names:
        ref = layer_ref(model, name)
        if ref.channel is not None:
            raise CnnvizError(f"Deep Dream raises whole layers; use {ref.layer_text!r} rather than {name!r}")
    check_finite(step, "the step")
    check_finite(scale, "the octave scale")
    check_seed(seed)
    if octaves < 1 or steps < 1 or scale <= 1 or step <= 0 or tile < 16 or jitter < 0:
        raise CnnvizError("octaves and steps must be at least 1, scale above 1, step positive, tile at least 16")
    preprocessing = preprocessing_of(model)
    original = to_tensor(image if isinstance(image, torch.Tensor) else open_image(image), preprocessing.channels)
    goal = weights[0] * o.layer(names[0])
    for name, weight in zip(names[1:], weights[1:]):
        goal = goal + weight * o.layer(name)
    generator = torch.Generator().manual_seed(seed)
    height, width = original.shape[1:]
    sizes = [(max(1, round(height / scale**k)), max(1, round(width / scale**k))) for k in range(octaves)][::-1]
    fixed = _fixed_size(model, names, preprocessing, (height, width))
    tiles = fixed or (tile, tile)
    if fixed is None:
        # octaves too small for the network are left out; the image itself must be large enough
        sizes = [size for size in sizes[:-1] if _runs_at(model, names, preprocessing.channels, size)] + sizes[-1:]
        smallest = min(min(size) for size in sizes)
        if tile < smallest and not _runs_at(model, names, preprocessing.channels, (tile, tile)):
            raise CnnvizError(f"tiles of {tile} px are too small for {', '.join(names)}; give a larger tile=...")
    set_progress_total(progress, len(sizes) * steps)
    # the allocator is left as the caller has it (see cnnviz.reuse_freed_memory)
    # the passes run on a copy with each batch normalisation folded into its convolution (the same function)
    folded = folded_copy(model, names, (preprocessing.channels, *(fixed or sizes[0])))
    with gradients_on(model), probe(folded, names, keep_graph=True) as recorder:

        def objective_of(pixels: torch.Tensor) -> torch.Tensor:
            if fixed is not None and tuple(pixels.shape[1:]) != fixed:  # a fixed-size model sees its size
                pixels = F.interpolate(pixels[None], size=fixed, mode="bilinear", align_corners=False)[0]
            recorder.run(preprocessing.normalize(pixels[None]))
            return goal({name: recorder[name] for name in names}, pixels[None])[0]

        before = _tiled_value(objective_of, original, tiles)
        detail = torch.zeros_like(original)
        current = original
        for octave, size in enumerate(sizes):
            base = _resized(original, size)
            current = (base + _resized(detail, size)).clamp(0, 1)
            for _ in range(steps):
                shift_y, shift_x = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=generator))
                rolled = current.roll((shift_y, shift_x), dims=(1, 2))
                gradient = _tiled_gradient(objective_of, rolled, tiles).roll((-shift_y, -shift_x), dims=(1, 2))
                gradient = gradient / (_mean_size(gradient) + 1e-8)
                current = (current + step * gradient).clamp(0, 1)
                if progress is not None:
                    progress(1)
            detail = current - base
        after = _tiled_value(objective_of, current, tiles)
    settings = {"octaves": octaves, "octaves_used": len(sizes), "scale": scale, "steps": steps,
                "step": step, "jitter": jitter, "tile": list(tiles) if fixed else tile, "seed": seed,
                "fixed_input_size": list(fixed) if fixed else None}
    return Dream(current.detach(), original, names, weights, before, after, settings)


def _mean_size(gradient: torch.Tensor) -> float:
    """The mean absolute value, summed in float64 where the device has it: on a CPU a float32 sum
    rounds differently with the number of threads (torchrun gives each process one), and the dream
    would not be the same bytes."""
    if gradient.device.type == "mps":  # no float64 there
        return float(gradient.abs().mean())
    return float(gradient.abs().mean(dtype=torch.float64))


def _runs_at(model, names: list[str], channels: int, size: tuple[int, int]) -> bool:
    """Whether the network reaches every layer of ``names`` from an image of ``size``."""
    return failure_at(model, names, channels, size) is None


def _fixed_size(model, names, preprocessing, image_size) -> tuple[int, int] | None:
    """The model's input size when it takes that size only and not the image's; ``None`` when the
    image runs as it is. Raises with the reason when neither runs."""
    height, width = preprocessing.input_size
    check = check_size(model, names, preprocessing.channels, image_size, (height, width))
    if check.runs:
        return None
    if check.fixed is not None:
        return check.fixed
    if check.input_size_runs and image_size[0] * image_size[1] < height * width:
        raise CnnvizError(
            f"the image ({image_size[0]}x{image_size[1]}) is too small for {', '.join(names)}: {check.why}; "
            f"use a larger image (the model runs at {height}x{width}) or an earlier layer"
        )
    raise CnnvizError(f"cannot dream at {', '.join(names)} on a {image_size[0]}x{image_size[1]} image: {check.why}")


def _resized(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(pixels.shape[1:]) == tuple(size):
        return pixels
    return F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def _tiles(height: int, width: int, tile: tuple[int, int]):
    """(top, bottom, left, right) of equal tiles of at most tile[0] x tile[1] pixels covering the image."""
    rows = -(-height // tile[0])
    columns = -(-width // tile[1])
    row_edges = [round(height * k / rows) for k in range(rows + 1)]
    column_edges = [round(width * k / columns) for k in range(columns + 1)]
    for top, bottom in zip(row_edges, row_edges[1:]):
        for left, right in zip(column_edges, column_edges[1:]):
            yield top, bottom, left, right


def _tiled_value(objective_of, pixels: torch.Tensor, tile: tuple[int, int]) -> float:
    """The objective of the whole image, as the area-weighted mean of its tiles' objectives."""
    _, height, width = pixels.shape
    total = 0.0
    for top, bottom, left, right in _tiles(height, width, tile):
        with torch.no_grad():
            value = float(objective_of(pixels[:, top:bottom, left:right]))
        total += value * (bottom - top) * (right - left)
    return total / (height * width)


def _tiled_gradient(objective_of, pixels: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    """The gradient of the objective, computed tile by tile (each tile's own objective)."""
    _, height, width = pixels.shape
    gradient = torch.zeros_like(pixels)
    for top, bottom, left, right in _tiles(height, width, tile):
        piece = pixels[:, top:bottom, left:right].clone().requires_grad_(True)
        (piece_gradient,) = torch.autograd.grad(objective_of(piece), piece)
        gradient[:, top:bottom, left:right] = piece_gradient
    return gradient

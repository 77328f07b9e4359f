"""Equivariance and invariance of every layer to translation, rotation and scaling.

A layer ``f`` is *equivariant* to a transformation ``T`` when transforming the input transforms its
output the same way, ``f(T x) = T' f(x)`` (a convolution and translation), and *invariant* when the
output does not change, ``f(T x) = f(x)`` (a global pooling and translation). For each layer and
each transformation, :func:`equivariance` measures

* the **equivariance error** ``||f(T x) - T' f(x)|| / ||f(x)||`` over the inside of the maps
  (borders cropped), where ``T'`` is ``T`` at the layer's resolution: a shift by ``k`` input
  pixels moves a map of stride ``s`` by ``k / s`` cells (fractional shifts are interpolated), a
  rotation or scaling acts about the map's centre;
* the **invariance error** ``||f(T x) - f(x)|| / ||f(x)||`` of the layer's output itself, and
* the **pooled invariance error** of the output averaged over its spatial positions (what a global
  average pooling would pass on).

Translations are circular (``torch.roll``), so a convolution with circular padding is exactly
equivariant to them; with zero padding the error comes from the borders and from strides.
Rotation and scaling are not symmetries of a convolution: no equivariance is expected there, and
the curves show how much a trained network learns anyway.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> result = cnnviz.equivariance(loaded, "sample:chelsea", shifts=[4], angles=[15], scales=[1.1])
    >>> len(result.layers), result.layers[0], result.layers[-1]   # every conv, pooling and activation
    (22, 'features.0', 'logits')
    >>> errors = result.equivariance_error["translation"][4]      # per layer, for a shift of 4 pixels
    >>> errors[:10] == [0.0] * 10, errors[-1]    # exact up to stride 4 (whole cells); logits have no map
    (True, nan)
    >>> figure = cnnviz.plots.equivariance(result)                # curves across depth
    >>> len(figure.axes)
    6
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from cnnviz.core.display import Shows
from cnnviz.errors import CnnvizError
from cnnviz.core.model import preprocessing_of, unwrap
from cnnviz.core.probe import probe
from cnnviz.core.references import Reference, resolve_all
from cnnviz.analyses.receptive_field import receptive_fields
from cnnviz.inputs.batches import stack_images

TRANSFORMS = ("translation", "rotation", "scale")


@dataclass
class Equivariance(Shows):
    """Per-layer errors for each transformation and magnitude.

    Attributes:
        layers: the layer references, in the order of the network.
        strides: the (row, column) stride of each layer in input pixels (``None`` for a layer
            without a spatial grid).
        magnitudes: per transformation, the magnitudes measured (pixels, degrees, factors).
        equivariance_error: ``[transform][magnitude]`` -> one value per layer (``nan`` for a layer
            without spatial maps).
        invariance_error, pooled_invariance_error: the same layout.
        images: how many images the errors are averaged over.
    """

    layers: list[str]
    strides: list[tuple[int, int] | None]
    magnitudes: dict[str, list[float]]
    equivariance_error: dict[str, dict[float, list[float]]] = field(default_factory=dict)
    invariance_error: dict[str, dict[float, list[float]]] = field(default_factory=dict)
    pooled_invariance_error: dict[str, dict[float, list[float]]] = field(default_factory=dict)
    images: int = 0

    def __repr__(self) -> str:
        kinds = ", ".join(f"{kind} {self.magnitudes[kind]}" for kind in self.magnitudes)
        return (f"Equivariance({len(self.layers)} layers from {self.layers[0]} to {self.layers[-1]}, "
                f"{self.images} images; {kinds})" if self.layers else "Equivariance(no layers)")

    def to_dict(self) -> dict:
        """JSON-ready data."""
        def listed(table):
            return {t: {str(m): [None if math.isnan(v) else v for v in values] for m, values in rows.items()}
                    for t, rows in table.items()}
        return {
            "layers": self.layers, "strides": [list(s) if s else None for s in self.strides],
            "magnitudes": self.magnitudes, "images": self.images,
            "equivariance_error": listed(self.equivariance_error),
            "invariance_error": listed(self.invariance_error),
            "pooled_invariance_error": listed(self.pooled_invariance_error),
        }


def equivariance(
    model,
    images,
    layer: Reference | Sequence[Reference] | None = None,
    *,
    shifts: Sequence[int] = (1, 2, 4, 8),
    angles: Sequence[float] = (5, 15, 45, 90),
    scales: Sequence[float] = (0.8, 0.9, 1.1, 1.25),
    border: float = 0.125,
    max_images: int = 8,
) -> Equivariance:
    """Measure how far each layer is from translation, rotation and scale equivariance and invariance.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left exactly as it was).
        images: model inputs ``N x C x H x W`` (normalised), or an image spec (a file, a folder,
            ``sample:NAME``, ``samples``), prepared with the model's preprocessing.
        layer: one layer reference or several; by default every convolution, pooling and activation module
            whose output is a spatial map, plus ``logits``.
        shifts: translations in input pixels (applied along both axes, circularly).
        angles: rotations in degrees, about the centre.
        scales: zoom factors about the centre.
        border: fraction of each map's height and width cropped on every side before comparing
            (plus the shift itself), so zero padding at the borders does not count.
        max_images: use at most this many images.

    Returns:
        An :class:`Equivariance`; errors are averaged over the images.

    Raises:
        CnnvizError: no images, bad magnitudes, or bad layer references.
    """
    module, _ = unwrap(model)
    inputs, _ = stack_images(images, preprocessing_of(model), limit=max_images)
    if any(int(s) != s or s <= 0 for s in shifts):
        raise CnnvizError(f"shifts must be positive whole numbers of pixels, not {list(shifts)}")
    if any(s <= 0 for s in scales):
        raise CnnvizError(f"scales must be positive factors such as 0.9 or 1.1, not {list(scales)}")
    if not 0 <= border < 0.5:
        raise CnnvizError(f"border must be a fraction in [0, 0.5), not {border}")
    height, width = inputs.shape[-2:]
    fields = receptive_fields(model, input_size=(height, width))
    names = ([layer] if isinstance(layer, (str, torch.nn.Module)) else list(layer)) if layer is not None else (
        _default_layers(module, fields))
    resolved = resolve_all(model, names)
    keys = [str(r) if r.is_output is False else "logits" for r in resolved]
    strides = []
    for key in keys:
        rf = fields.get(key)
        strides.append(rf.stride if rf is not None and rf.kind == "grid" and rf.stride and all(isinstance(s, int) for s in rf.stride) else None)
    magnitudes = {"translation": [float(s) for s in shifts], "rotation": [float(a) for a in angles],
                  "scale": [float(s) for s in scales]}
    reference = _run(module, model, keys, inputs)
    result = Equivariance(keys, strides, magnitudes, images=inputs.shape[0])
    for transform in TRANSFORMS:
        for table in (result.equivariance_error, result.invariance_error, result.pooled_invariance_error):
            table[transform] = {}
        for magnitude in magnitudes[transform]:
            moved = _transform(inputs, transform, magnitude, (1, 1))
            outputs = _run(module, model, keys, moved)
            equi, inv, pooled = [], [], []
            for key, stride in zip(keys, strides):
                before, after = reference[key], outputs[key]
                inv.append(_relative(after, before))
                spatial = before.dim() == 4 and before.shape[-1] > 1 and before.shape[-2] > 1
                pooled.append(_relative(after.mean(dim=(-2, -1)), before.mean(dim=(-2, -1))) if spatial else inv[-1])
                if not spatial or stride is None:
                    equi.append(float("nan"))
                    continue
                expected = _transform(before, transform, magnitude, stride)
                crop = _crop(before.shape[-2:], border, transform, magnitude, stride)
                equi.append(_relative(after[crop], expected[crop], before[crop]))
            result.equivariance_error[transform][magnitude] = equi
            result.invariance_error[transform][magnitude] = inv
            result.pooled_invariance_error[transform][magnitude] = pooled
    return result


def _default_layers(module, fields) -> list[str]:
    from torch import nn

    wanted = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    kinds = {name: type(m) for name, m in module.named_modules() if name}
    chosen = [name for name in fields if name in kinds and issubclass(kinds[name], wanted)]
    return chosen + ["logits"]


def _run(module, model, keys, inputs) -> dict[str, torch.Tensor]:
    refs = [k if k != "logits" else "logits" for k in keys]
    with probe(model, refs, early_exit=False) as recorder:
        recorder.run(inputs)
        return {key: recorder[ref].float().cpu() for key, ref in zip(keys, refs)}


def _transform(x: torch.Tensor, transform: str, magnitude: float, stride) -> torch.Tensor:
    """Apply a transformation to ``N x C x H x W`` maps whose cells are ``stride`` input pixels apart."""
    if transform == "translation":
        rows, columns = magnitude / stride[0], magnitude / stride[1]
        if float(rows).is_integer() and float(columns).is_integer():
            return torch.roll(x, shifts=(int(rows), int(columns)), dims=(-2, -1))
        return _affine(x, 0.0, 1.0, (rows, columns))
    if transform == "rotation":
        return _affine(x, magnitude, 1.0, (0.0, 0.0))
    return _affine(x, 0.0, magnitude, (0.0, 0.0))


def _affine(x: torch.Tensor, angle: float, scale: float, shift) -> torch.Tensor:
    """Rotate by ``angle`` degrees and zoom by ``scale`` about the centre, then shift by ``shift``
    cells (circularly for pure shifts), with bilinear interpolation."""
    height, width = x.shape[-2:]
    theta = math.radians(angle)
    cos, sin = math.cos(theta) / scale, math.sin(theta) / scale
    # output -> input coordinates in normalised [-1, 1] units (align_corners=False)
    matrix = torch.tensor([[cos, -sin * height / width, -2 * shift[1] / width],
                           [sin * width / height, cos, -2 * shift[0] / height]], dtype=x.dtype)
    grid = F.affine_grid(matrix.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    if angle == 0 and scale == 1.0:
        grid = torch.remainder(grid + 1, 2) - 1  # circular, like torch.roll
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _crop(size, border: float, transform: str, magnitude: float, stride):
    height, width = size
    if transform == "translation":
        extra = (math.ceil(magnitude / stride[0]), math.ceil(magnitude / stride[1]))
    else:
        extra = (0, 0)
    top = min(int(border * height) + extra[0], height // 2 - 1 if height > 2 else 0)
    left = min(int(border * width) + extra[1], width // 2 - 1 if width > 2 else 0)
    return (..., slice(top, height - top), slice(left, width - left))


def _relative(value: torch.Tensor, target: torch.Tensor, scale: torch.Tensor | None = None) -> float:
    """Mean over images of ``||value - target|| / ||scale||`` (``scale`` defaults to ``target``)."""
    scale = target if scale is None else scale
    difference = (value - target).flatten(1).norm(dim=1)
    norm = scale.flatten(1).norm(dim=1).clamp_min(1e-12)
    return float((difference / norm).mean())

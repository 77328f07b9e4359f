"""Objectives for feature visualization: what an image should make a model do.

An objective maps what the probe recorded (layer name -> activations, ``B x C x H x W``) and the
images themselves (``B x C x H x W`` in [0, 1]) to one score per image (``B``), to be maximised.
Objectives compose like the maths they stand for::

    >>> import torch
    >>> from cnnviz import objectives as o
    >>> goal = o.channel("features.10", 5) - 0.05 * o.total_variation()
    >>> goal, goal.layers
    (Objective(channel(features.10, 5) + -(0.05 * (total_variation))), ('features.10',))
    >>> several = o.channel("features.10", 5) - 100 * o.diversity("features.10")   # 4 different images
    >>> recorded = {"features.10": torch.ones(4, 8, 6, 6)}      # what the probe recorded, B x C x H x W
    >>> goal(recorded, torch.zeros(4, 3, 24, 24))                # one score per image: channel 5's mean
    tensor([1., 1., 1., 1.])

Every function below takes a layer reference (``"features.10"``); ``channel`` and ``neuron`` also
take one channel per image of the batch (``channel("features.10", [0, 1, 2])``), which is how one
batch renders many units, each image on its own.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Real

import torch
from torch.nn import functional as F

from cnnviz.errors import CnnvizError

Scores = Callable[[dict, torch.Tensor], torch.Tensor]


class Objective:
    """A score per image; ``+``, ``-``, ``*`` and ``/`` by numbers build new objectives.

    Attributes:
        layers: the layer references whose activations the score reads.
        description: a readable formula.
    """

    def __init__(self, scores: Scores, layers: Sequence[str] = (), description: str = "objective"):
        self._scores = scores
        self.layers = tuple(dict.fromkeys(layers))
        self.description = description

    def __call__(self, activations: dict, images: torch.Tensor) -> torch.Tensor:
        """One score per image (``B``)."""
        return self._scores(activations, images)

    def __add__(self, other):
        other = _as_objective(other)
        return Objective(lambda a, i: self(a, i) + other(a, i), self.layers + other.layers,
                         f"{self.description} + {other.description}")

    __radd__ = __add__

    def __neg__(self):
        return Objective(lambda a, i: -self(a, i), self.layers, f"-({self.description})")

    def __sub__(self, other):
        return self + (-_as_objective(other))

    def __rsub__(self, other):
        return _as_objective(other) + (-self)

    def __mul__(self, factor):
        if not isinstance(factor, Real):
            raise CnnvizError("objectives are multiplied by numbers only")
        return Objective(lambda a, i: factor * self(a, i), self.layers, f"{factor:g} * ({self.description})")

    __rmul__ = __mul__

    def __truediv__(self, divisor):
        if not isinstance(divisor, Real) or divisor == 0:
            raise CnnvizError("objectives are divided by non-zero numbers only")
        return self * (1.0 / divisor)

    def __repr__(self) -> str:
        return f"Objective({self.description})"


def _as_objective(value) -> Objective:
    if isinstance(value, Objective):
        return value
    if isinstance(value, Real):
        return Objective(lambda a, i: torch.full((len(i),), float(value), device=i.device), (), f"{value:g}")
    raise CnnvizError(f"cannot combine an objective with a {type(value).__name__}")


def _per_image(indices, count: int, device) -> torch.Tensor:
    values = [indices] * count if isinstance(indices, int) else list(indices)
    if len(values) != count:
        raise CnnvizError(f"{len(values)} units for a batch of {count} images; give one, or one per image")
    return torch.tensor(values, device=device)


def _maps(activations: dict, layer: str) -> torch.Tensor:
    values = activations[layer]
    return values if values.dim() > 2 else values[:, :, None]


def _channel_means(maps: torch.Tensor, index) -> torch.Tensor:
    """Each image's chosen channel of ``maps``, averaged over its positions."""
    chosen = _per_image(index, len(maps), maps.device)
    # pick each image's channel first, then average: flattening the whole map first would copy
    # every channel of a channels_last activation (measured: 1 ms per step of the built-in model)
    picked = maps[torch.arange(len(maps), device=maps.device), chosen]
    return picked.mean(dim=tuple(range(1, picked.dim())))


def channel(layer: str, index: int | Sequence[int]) -> Objective:
    """The spatial mean of a channel (a class score for ``"logits"``); one index, or one per image."""

    def scores(activations, images):
        return _channel_means(_maps(activations, layer), index)

    return Objective(scores, [layer], f"channel({layer}, {index})")


def neuron(layer: str, index: int | Sequence[int], row: int | None = None, column: int | None = None) -> Objective:
    """One unit of a channel, at (row, column); by default the centre of the map."""

    def scores(activations, images):
        maps = _maps(activations, layer)
        height, width = maps.shape[2], maps.shape[-1] if maps.dim() > 3 else 1
        y = height // 2 if row is None else row
        x = width // 2 if column is None else column
        if not (0 <= y < height and 0 <= x < width):
            raise CnnvizError(f"position {y},{x} is outside the {height}x{width} maps of {layer}")
        chosen = _per_image(index, len(maps), maps.device)
        grid = maps if maps.dim() > 3 else maps[..., None]
        return grid[torch.arange(len(maps), device=maps.device), chosen, y, x]

    where = "centre" if row is None else f"{row},{column}"
    return Objective(scores, [layer], f"neuron({layer}, {index}@{where})")


def layer(name: str) -> Objective:
    """The mean squared activation of a whole layer (Deep Dream's objective)."""
    def scores(activations, images):
        maps = _maps(activations, name)
        return maps.pow(2).mean(dim=tuple(range(1, maps.dim())))  # no flatten: no copy of the whole layer

    return Objective(scores, [name], f"layer({name})")


def class_logit(index: int | Sequence[int], output: str = "logits") -> Objective:
    """A class score before the softmax."""
    objective = channel(output, index)
    objective.description = f"class_logit({index})"
    return objective


def class_log_probability(index: int | Sequence[int], output: str = "logits") -> Objective:
    """A class's log-probability under a softmax over the output's channels (averaged over the
    positions of a dense output): it rises when the class gains on the others, not with them all."""

    def scores(activations, images):
        return _channel_means(_maps(activations, output).log_softmax(dim=1), index)

    return Objective(scores, [output], f"class_log_probability({index})")


def direction(name: str, vector: Sequence[float] | torch.Tensor) -> Objective:
    """The spatial mean of the activations' dot product with a direction in channel space."""
    weights = torch.as_tensor(vector, dtype=torch.float32)

    def scores(activations, images):
        maps = _maps(activations, name).flatten(2)
        if maps.shape[1] != len(weights):
            raise CnnvizError(f"the direction has {len(weights)} values but {name} has {maps.shape[1]} channels")
        return torch.einsum("bcp,c->bp", maps, weights.to(maps.device, maps.dtype)).mean(dim=1)

    return Objective(scores, [name], f"direction({name})")


def diversity(name: str, groups: Sequence[int] | None = None) -> Objective:
    """The mean cosine similarity of each image's Gram matrix at ``name`` with the other images'
    (a penalty, like the regularisers): ``channel(...) - 100 * diversity(layer)`` pushes the images
    of one batch towards different styles of the same unit. ``groups`` (one label per image)
    compares each image only with the others of its group (several units, several images each)."""

    def scores(activations, images):
        maps = _maps(activations, name).flatten(2)  # B x C x P
        if len(maps) < 2:
            return torch.zeros(len(maps), device=maps.device)
        gram = torch.bmm(maps, maps.transpose(1, 2)).flatten(1)
        gram = F.normalize(gram, dim=1)
        similarity = gram @ gram.t()
        if groups is None:
            same = torch.ones_like(similarity)
        else:
            labels = _per_image(list(groups), len(maps), maps.device)
            same = (labels[:, None] == labels[None, :]).to(similarity.dtype)
        same = same - torch.eye(len(maps), device=maps.device, dtype=similarity.dtype)
        return (similarity * same).sum(dim=1) / same.sum(dim=1).clamp(min=1)

    return Objective(scores, [name], f"diversity({name})")


def total_variation() -> Objective:
    """The mean absolute difference between neighbouring pixels (subtract it to smooth)."""

    def scores(activations, images):
        down = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().flatten(1).mean(dim=1)
        across = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().flatten(1).mean(dim=1)
        return down + across

    return Objective(scores, [], "total_variation")


def l1(constant: float = 0.5) -> Objective:
    """The mean absolute difference of the pixels from ``constant`` (subtract it to keep them near)."""
    return Objective(lambda a, i: (i - constant).abs().flatten(1).mean(dim=1), [], f"l1({constant:g})")


def l2(constant: float = 0.5) -> Objective:
    """The root mean square difference of the pixels from ``constant``."""
    return Objective(lambda a, i: (i - constant).pow(2).flatten(1).mean(dim=1).sqrt(), [], f"l2({constant:g})")


def blur() -> Objective:
    """How far the image is from a 3x3 blur of itself (subtract it to favour smooth images)."""

    def scores(activations, images):
        channels = images.shape[1]
        kernel = torch.full((channels, 1, 3, 3), 1 / 9, device=images.device, dtype=images.dtype)
        blurred = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=channels)
        return (images - blurred).pow(2).flatten(1).mean(dim=1)

    return Objective(scores, [], "blur")

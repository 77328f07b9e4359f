"""The result of :func:`cnnviz.concepts`: a layer's concepts, how each image weighs on them, where
each is strongest, and how much each matters downstream."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cnnviz.core.display import Shows


@dataclass(repr=False)
class Concepts(Shows):
    """A layer's activations over a set of images factorised into ``k`` non-negative directions.

    Every position of every image has an activation vector ``a`` (C channels, shifted by
    ``shift`` where the layer can be negative); ``a ~ sum_j w_j d_j`` with non-negative
    coefficients ``w_j`` on the concepts' directions ``d_j`` (unit length, non-negative).

    Attributes:
        layer: the layer (its reference, as :func:`cnnviz.layer_ref` writes it).
        directions: ``k x C``: a concept's direction in channel space (of unit length, non-negative,
            for a layer that is never negative or ``signed="shift"``; for ``signed="split"`` its
            positive part less its negative part, where a negative weight means the concept lowers
            that channel).
        factors: what was factorised: ``k x C``, or ``k x 2C`` (positive parts, then negative ones)
            for ``signed="split"``; each of unit length and non-negative.
        signed: ``"none"`` (the layer is never negative), ``"split"`` or ``"shift"``.
        image_weights: ``N x k``: every image's weight on every concept (its mean coefficient
            over the positions of the image).
        images: the images' names (files, ``sample:NAME``, ``image K``), in order.
        shift: ``C``: what was added to the activations before the factorisation (zeros for a
            layer that is never negative, such as a ReLU's output).
        share: ``k``: each concept's share of the layer's (shifted) activation over all images.
        error: the factorisation's relative reconstruction error ``||A - W D|| / ||A||`` over every
            position of every image (``fit_error``: over the positions it was fitted on).
        exemplar_values, exemplar_images, exemplar_positions: ``k x E`` (positions ``k x E x 2``):
            where each concept's coefficient is largest (image index, map row and column; -1 where
            there are fewer); ``exemplar_crops``: ``k x E x 3 x S x S`` uint8, the input region
            around each (``crop_region`` input pixels wide), as the model saw it;
            ``exemplar_boxes``: ``k x E x 4``, the receptive field of each in the input (top, left,
            bottom, right, inclusive; ``None`` where it cannot be traced).
        maps: ``M x k x h x w``: each concept's coefficient at every position of the first ``M``
            images; ``shown``: those images, ``M x 3 x H x W`` in [0, 1].
        targets: what the importance explains for each of the first ``I`` images (a class, or a
            unit downstream).
        importance: ``I x k``: gradient x coefficient, each concept's contribution to its image's
            target (summed over positions; what the concepts' components explain to first order).
        deletion: ``I x k``: how much the target drops when the concept's component is removed from
            the layer's activation (the rest of the network run again); ``random_deletion``: ``I``,
            the same for a stand-in of the image's most important concept: its coefficients on its
            direction's weights moved to other channels (a fixed random permutation), as much
            activation removed from channels the concept does not use (a baseline for ``deletion``
            at :meth:`most_important`).
        attribution_maps: ``M' x k x h x w``: gradient x coefficient at each position, for the
            first images that have both maps and importance.
        target_values: ``I``: each image's target as the network computes it; ``kept``: ``I``, the
            target when the layer's activation is replaced by its reconstruction from the concepts
            (:attr:`fidelity` compares the two).
        settings: how the concepts were found (k, images fitted on, positions, iterations, seed, ...).
    """

    layer: str
    directions: torch.Tensor
    factors: torch.Tensor
    signed: str
    image_weights: torch.Tensor
    images: list[str]
    shift: torch.Tensor
    share: torch.Tensor
    error: float
    fit_error: float
    exemplar_values: torch.Tensor
    exemplar_images: torch.Tensor
    exemplar_positions: torch.Tensor
    exemplar_crops: torch.Tensor | None
    crop_region: int
    maps: torch.Tensor
    shown: torch.Tensor
    targets: list[str]
    importance: torch.Tensor
    deletion: torch.Tensor
    random_deletion: torch.Tensor
    attribution_maps: torch.Tensor
    kept: torch.Tensor
    target_values: torch.Tensor
    settings: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    exemplar_boxes: torch.Tensor | None = None

    @property
    def k(self) -> int:
        """The number of concepts."""
        return len(self.directions)

    @property
    def fidelity(self) -> float:
        """How much of the target the ``k`` concepts keep: the targets with the layer's activation
        replaced by its reconstruction, summed over the images, over the targets themselves summed
        (1 keeps it all; a sum, not a per-image ratio, which a target near zero would make wild;
        ``nan`` without importance images or where the targets sum to zero)."""
        total = float(self.target_values.sum()) if len(self.target_values) else 0.0
        return float(self.kept.sum()) / total if total != 0 else float("nan")

    def top_channels(self, concept: int, count: int = 5) -> list[tuple[int, float]]:
        """The channels that weigh most in a concept's direction: ``(channel, weight)``, the largest
        weights first (by size: a negative weight, for ``signed="split"``, weighs too)."""
        direction = self.directions[concept]
        channels = torch.argsort(direction.abs(), descending=True)[:count]
        return [(int(c), float(direction[c])) for c in channels]

    def dominant(self) -> torch.Tensor:
        """Each image's concept with the largest weight (``N``)."""
        return self.image_weights.argmax(dim=1)

    def most_important(self) -> torch.Tensor:
        """For each image with importance, the concept that contributes most to its target (``I``)."""
        return self.importance.argmax(dim=1)

    def deletion_check(self) -> dict:
        """Removing each image's most important concept against removing a random direction with
        the same coefficients: the mean drops and the share of images where the concept's is larger."""
        if not len(self.importance):
            return {"images": 0, "concept": None, "random": None, "beats": None}
        drop = self.deletion[torch.arange(len(self.deletion)), self.most_important()]
        return {"images": len(drop), "concept": float(drop.mean()), "random": float(self.random_deletion.mean()),
                "beats": float((drop > self.random_deletion).float().mean())}

    def _summary(self) -> str:
        return f"{self.layer}: {self.k} concepts of {len(self.images)} images; error {self.error:.2f}"

    def to_dict(self) -> dict:
        """What ``concepts.json`` holds: every image's weights, every direction, and per concept its
        share, top channels, exemplars and importance."""
        importance = self.importance.mean(0) if len(self.importance) else torch.full((self.k,), float("nan"))
        deletion = self.deletion.mean(0) if len(self.deletion) else torch.full((self.k,), float("nan"))
        chosen = self.most_important() if len(self.importance) else torch.zeros(0, dtype=torch.long)
        random = torch.stack([self.random_deletion[chosen == j].mean() if bool((chosen == j).any())
                              else torch.tensor(float("nan")) for j in range(self.k)])
        return {
            "layer": self.layer,
            "k": self.k,
            "images": [{"image": name, "weights": [round(float(w), 6) for w in weights]}
                       for name, weights in zip(self.images, self.image_weights)],
            "directions": [[round(float(v), 6) for v in direction] for direction in self.directions],
            "signed": self.signed,
            "shift": [round(float(v), 6) for v in self.shift] if bool(self.shift.any()) else None,
            "error": round(self.error, 6),
            "fit_error": round(self.fit_error, 6),
            "fidelity": None if len(self.kept) == 0 else round(self.fidelity, 6),
            "deletion_check": {key: value if not isinstance(value, float) else round(value, 6)
                               for key, value in self.deletion_check().items()},
            "concepts": [{
                "concept": j,
                "share": round(float(self.share[j]), 6),
                "top_channels": [{"channel": c, "weight": round(w, 6)} for c, w in self.top_channels(j)],
                "importance": _number(importance[j]),
                "deletion": _number(deletion[j]),
                "random_deletion": _number(random[j]),
                "exemplars": [{"image": self.images[int(i)], "position": [int(p) for p in position],
                               "value": round(float(v), 6),
                               "box": None if self.exemplar_boxes is None else [int(b) for b in self.exemplar_boxes[j, e]]}
                              for e, (v, i, position) in enumerate(zip(self.exemplar_values[j], self.exemplar_images[j],
                                                                        self.exemplar_positions[j])) if int(i) >= 0],
            } for j in range(self.k)],
            "targets": list(self.targets),
            "skipped": list(self.skipped),
            "settings": dict(self.settings),
        }


def _number(value) -> float | None:
    value = float(value)
    return None if value != value else round(value, 6)

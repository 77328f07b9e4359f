"""What a model says an image is: the top classes with their probabilities.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> [best] = cnnviz.predict(loaded, "sample:chelsea", top=3)
    >>> best.classes[0][1]
    'chelsea'
"""
from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from cnnviz.core.display import Shows
from cnnviz.errors import CnnvizError
from cnnviz.inputs.batches import image_batches, names, no_images_message
from cnnviz.core.model import non_finite_parameter, preprocessing_of, unwrap
from cnnviz.core.probe import capture
from cnnviz.core.softmax import as_probabilities


@dataclass(frozen=True)
class Prediction:
    """The top classes of one image.

    Attributes:
        source: where the image came from (a path, ``sample:NAME``, or ``image N``).
        classes: ``(index, name, probability)`` for the top classes, best first (``name`` is
            ``None`` when the model has no class names).
        position: for a dense model (``N x K x H x W`` outputs), the output position the classes
            are read at: the arg-max of the class map with the highest spatial maximum; else ``None``.
    """

    source: str
    classes: list[tuple[int, str | None, float]]
    position: tuple[int, int] | None = None

    def __str__(self) -> str:
        ranked = ", ".join(f"{name if name is not None else index} {p:.3f}" for index, name, p in self.classes)
        where = f" (at output position {self.position[0]},{self.position[1]}: the highest class map maximum)" if self.position else ""
        return f"{self.source}: {ranked}{where}"

    def to_dict(self) -> dict:
        return {"image": self.source, "position": list(self.position) if self.position else None,
                "top": [{"index": i, "class": n, "probability": round(v, 6)} for i, n, v in self.classes]}


@dataclass(repr=False)
class Predictions(Shows):
    """Predictions for several images, and the files that could not be read. Shows itself in a
    notebook as a table (and ``plot()`` as bars of each image's top classes)."""

    predictions: list[Prediction]
    skipped: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter(self.predictions)

    def __len__(self) -> int:
        return len(self.predictions)

    def __getitem__(self, index: int) -> Prediction:
        return self.predictions[index]

    def to_dict(self) -> dict:
        return {"predictions": [p.to_dict() for p in self.predictions], "skipped": self.skipped}

    def __repr__(self) -> str:
        first = f"; {self.predictions[0]}" if self.predictions else ""
        more = ", ..." if len(self.predictions) > 1 else ""
        noun = "image" if len(self.predictions) == 1 else "images"
        return f"Predictions({len(self.predictions)} {noun}{first}{more})"

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.predictions)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(p.source)}</td><td>"
            + ", ".join(html.escape(f"{name if name is not None else index} {value:.3f}") for index, name, value in p.classes)
            + "</td></tr>"
            for p in self.predictions
        )
        skipped = f"<caption>skipped: {html.escape(', '.join(self.skipped))}</caption>" if self.skipped else ""
        return f"<table>{skipped}<thead><tr><th>image</th><th>top classes</th></tr></thead><tbody>{rows}</tbody></table>"


def predict(
    model,
    images: str | os.PathLike | Image.Image | torch.Tensor | Iterable,
    *,
    top: int = 5,
    batch_size: int = 32,
) -> Predictions:
    """Classify images with a model, using its own preprocessing.

    Args:
        model: a :class:`cnnviz.LoadedModel` (its preprocessing and class names are used) or a
            plain module (identity preprocessing unless it declares its own).
        images: an image spec (file, ``sample:NAME``, folder, ``samples``), a PIL image, a
            ``C x H x W`` tensor in [0, 1], or a list of any of these.
        top: how many classes to report per image.
        batch_size: images per forward pass.

    Returns:
        :class:`Predictions`: one :class:`Prediction` per image, and the files of a folder that
        could not be read as images (skipped).

    Raises:
        CnnvizError: an image named on its own cannot be read, nothing could be read, or the
            model's output is not one score per class.
    """
    if top < 1:
        raise CnnvizError(f"top must be at least 1, got {top}")
    _, class_names = unwrap(model)
    preprocessing = preprocessing_of(model)
    stream = image_batches(images, preprocessing, batch_size)
    predictions = []
    for batch in stream:
        predictions += _classify(model, batch.inputs, names(batch.sources, len(predictions)), class_names, top)
    if not predictions:
        raise CnnvizError(no_images_message(stream.skipped))
    skipped = stream.skipped
    return Predictions(predictions, skipped)


def _classify(model, inputs: torch.Tensor, sources: Sequence[str], class_names, top: int) -> list[Prediction]:
    logits = capture(model, inputs, ["logits"])["logits"]
    positions = [None] * len(logits)
    if logits.dim() == 4:  # a dense model: each image's classes at its strongest output position
        positions = dense_positions(logits)
        logits = torch.stack([logits[i, :, r, c] for i, (r, c) in enumerate(positions)])
    if logits.dim() != 2:
        raise CnnvizError(
            f"the model's output has shape {tuple(logits.shape)}, not one score per class (N x K) or class maps (N x K x H x W)"
        )
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(dim=1).float().argmax())
        parameter = non_finite_parameter(model)
        if parameter is not None:  # what cnnviz layers and kernels note, in the error itself
            raise CnnvizError(
                f"the model's output for {sources[bad] or f'image {bad}'} is not finite (NaN or infinity): its "
                f"parameter {parameter[0]} holds {parameter[1]} non-finite value(s); check the weights file"
            )
        raise CnnvizError(
            f"the model's output for {sources[bad] or f'image {bad}'} is not finite (NaN or infinity); check its "
            "weights (cnnviz layers) and its input preprocessing (mean=..., std=...)"
        )
    if class_names and len(class_names) != logits.shape[1] and logits.shape[1] != 1:
        raise CnnvizError(
            f"the model has {len(class_names)} class names but {logits.shape[1]} outputs; give one name per output "
            "(or none)"
        )
    # one output is a binary classifier's logit (its sigmoid), several are scores (softmax), unless
    # they already are probabilities (a graph ending in softmax): never a softmax of probabilities
    probabilities, _ = as_probabilities(logits)
    probabilities = probabilities.cpu()
    values, indices = probabilities.topk(min(top, probabilities.shape[1]), dim=1)
    names = class_names if class_names and len(class_names) == probabilities.shape[1] else None
    return [
        Prediction(source, [(int(i), names[int(i)] if names else None, float(v)) for v, i in zip(row_values, row_indices)],
                   position)
        for source, row_values, row_indices, position in zip(sources, values, indices, positions)
    ]


def dense_positions(maps: torch.Tensor) -> list[tuple[int, int]]:
    """Per image of ``N x K x H x W`` class maps: ``(row, column)`` of the highest value of the
    class map with the highest spatial maximum (the default unit of a dense model)."""
    flat = maps.flatten(1).argmax(dim=1)
    width = maps.shape[3]
    return [(int(index % (maps.shape[2] * width)) // width, int(index % width)) for index in flat]


def dense_targets(maps: torch.Tensor) -> list[str]:
    """``logits:K@R,C`` per image: the class map with the highest spatial maximum, at its arg-max."""
    flat = maps.flatten(1).argmax(dim=1)
    area, width = maps.shape[2] * maps.shape[3], maps.shape[3]
    return [f"logits:{int(i) // area}@{int(i) % area // width},{int(i) % width}" for i in flat]

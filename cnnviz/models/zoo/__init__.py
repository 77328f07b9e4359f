"""The built-in model zoo: small CNNs trained for cnnviz, shipped with it, loaded offline.

``builtin:photos`` (the default model of every command) is VGG-like and tells the sample
photographs apart from crops of them; ``builtin:patterns`` is LeNet-like and tells apart
procedural patterns whose meaning is known in advance (a ``grating_90`` has vertical stripes), so
that a visualization can be checked against that meaning. The weights are package data, read with
``torch.load(..., weights_only=True)``; ``python -m cnnviz.models.zoo.train NAME`` retrains them.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:patterns")
    >>> loaded.class_names[:3], loaded.preprocessing.input_size
    (['grating_0', 'grating_45', 'grating_90'], (48, 48))
    >>> cnnviz.zoo.info("patterns")["held_out_accuracy"]
    0.9977
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from cnnviz.errors import CnnvizError, did_you_mean
from cnnviz.models.zoo import patterns, photos
from cnnviz.models.zoo.architectures import PatternNet, PhotoNet
from cnnviz.core.probe import capture
from cnnviz.core.model import LoadedModel, Preprocessing

DEFAULT = "photos"
DEFAULT_SPEC = f"builtin:{DEFAULT}"


@dataclass(frozen=True)
class BuiltinSpec:
    """How a built-in model is built, trained and checked."""

    name: str
    summary: str
    architecture: Callable[[int], nn.Module]
    classes: Callable[[], list[str]]
    statistics: Callable[[], tuple[tuple[float, ...], tuple[float, ...]]]
    input_size: int
    steps: int
    batch: int
    held_out_description: str
    validation_count: int

    def metadata(self, mean, std) -> dict:
        meta = {
            "name": self.name,
            "summary": self.summary,
            "classes": list(self.classes()),
            "mean": list(mean),
            "std": list(std),
            "input_size": [self.input_size, self.input_size],
            "resize": self.input_size,
        }
        if self.name == "patterns":
            meta["class_info"] = {name: dict(info) for name, info in patterns.CLASS_INFO.items()}
        return meta


BUILTIN: dict[str, BuiltinSpec] = {
    "photos": BuiltinSpec(
        name="photos",
        summary="VGG-like (4 blocks of conv-BN-ReLU x2 + max-pool), which sample photograph a crop comes from",
        architecture=PhotoNet,
        classes=lambda: list(photos.CLASSES),
        statistics=photos.channel_statistics,
        input_size=photos.SIZE,
        steps=1500,
        batch=64,
        held_out_description="crops from the last quarter of each photograph, never seen in training",
        validation_count=100,
    ),
    "patterns": BuiltinSpec(
        name="patterns",
        summary="LeNet-like (conv-pool-conv-pool-fc), eleven procedural patterns of known meaning",
        architecture=PatternNet,
        classes=lambda: list(patterns.CLASSES),
        statistics=lambda: ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        input_size=patterns.SIZE,
        steps=1500,
        batch=128,
        held_out_description="freshly generated images from a seed never used in training",
        validation_count=200,
    ),
}

#: name -> function returning a LoadedModel (what ``builtin:NAME`` loads)
BUILTIN_MODELS: dict[str, Callable] = {name: (lambda name=name: _load(name)) for name in BUILTIN}


def names() -> list[str]:
    """The names accepted by ``builtin:NAME``, the default first."""
    return sorted(BUILTIN_MODELS, key=lambda name: (name != DEFAULT, name))


def weights_path(name: str) -> Path:
    """The package file holding the weights and metadata of a built-in model."""
    return Path(__file__).parent / "weights" / f"{name}.pt"


def load(name: str):
    """Load the built-in model ``name`` as a :class:`cnnviz.LoadedModel`."""
    if name not in BUILTIN_MODELS:
        raise CnnvizError(
            f"no built-in model {name!r}; {did_you_mean(name, names())} ('cnnviz models' lists them)"
        )
    return BUILTIN_MODELS[name]()


def info(name: str) -> dict:
    """The metadata stored with a built-in model: classes, preprocessing, held-out accuracy, the
    training recipe (a copy: changing it changes nothing)."""
    if name not in BUILTIN:
        raise CnnvizError(f"no built-in model {name!r}; {did_you_mean(name, names())}")
    return copy.deepcopy(_read(name)["meta"])


def validation_data(name: str, seed: int, per_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh held-out images (in [0, 1]) and labels for a built-in model."""
    spec = BUILTIN[name]
    count = (per_class or spec.validation_count) * len(spec.classes())
    if name == "patterns":
        return patterns.generate(count, seed=seed)
    return photos.crops(count, split="validation", seed=seed)


def evaluate(model, name: str, meta: dict, seed: int, per_class: int | None = None) -> float:
    """Accuracy of ``model`` on fresh held-out data of the built-in model ``name``."""

    images, labels = validation_data(name, seed, per_class)
    preprocessing = Preprocessing(tuple(meta["mean"]), tuple(meta["std"]), known=True)
    correct = 0
    for start in range(0, len(images), 256):
        logits = capture(model, preprocessing.normalize(images[start:start + 256]), "logits")["logits"]
        correct += int((logits.argmax(1) == labels[start:start + 256]).sum())
    return correct / len(images)


@lru_cache(maxsize=None)
def _read(name: str) -> dict:
    return read_weights_file(weights_path(name), name)


def read_weights_file(path: Path, name: str) -> dict:
    """``{"state_dict": ..., "meta": ...}`` from a built-in model's file, read with
    ``weights_only=True``; a missing or damaged file is a :class:`cnnviz.CnnvizError`."""
    if not path.is_file():
        raise CnnvizError(
            f"the weights of builtin:{name} are missing from this installation ({path}); "
            "reinstall cnnviz, or retrain them with python -m cnnviz.models.zoo.train " + name
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
        content["state_dict"], content["meta"]["classes"]  # noqa: B018 - the shape of the file
    except Exception as error:
        raise CnnvizError(
            f"the weights file of builtin:{name} ({path}) is damaged ({type(error).__name__}); "
            "reinstall cnnviz, or retrain it with python -m cnnviz.models.zoo.train " + name
        ) from None
    return content


def _load(name: str):

    content = _read(name)
    meta = copy.deepcopy(content["meta"])
    model = BUILTIN[name].architecture(len(meta["classes"]))
    model.load_state_dict(content["state_dict"])
    preprocessing = Preprocessing(
        mean=tuple(meta["mean"]), std=tuple(meta["std"]), input_size=tuple(meta["input_size"]),
        resize=meta["resize"], known=True,
    )
    return LoadedModel(model.eval(), preprocessing, list(meta["classes"]), f"builtin:{name}", "built in")

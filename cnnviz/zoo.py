"""The built-in model zoo: models that ship with cnnviz and load offline (``builtin:NAME``).

Each entry is a function that returns a :class:`cnnviz.LoadedModel` (architecture, weights from
package data, preprocessing and class names). The trained models arrive with a later change; the
registry and the ``builtin:`` spec are in place so that they plug in without touching the loader.
"""
from __future__ import annotations

from collections.abc import Callable

from cnnviz.errors import CnnvizError, did_you_mean

#: name -> function returning a LoadedModel
BUILTIN_MODELS: dict[str, Callable] = {}


def names() -> list[str]:
    """The names accepted by ``builtin:NAME``."""
    return sorted(BUILTIN_MODELS)


def load(name: str):
    """Load the built-in model ``name`` (a :class:`cnnviz.LoadedModel`)."""
    if name not in BUILTIN_MODELS:
        if not BUILTIN_MODELS:
            raise CnnvizError(
                f"no built-in model {name!r}: this version of cnnviz ships no built-in models yet; "
                "use torchvision:NAME or your own model"
            )
        raise CnnvizError(f"no built-in model {name!r}; {did_you_mean(name, names())}")
    return BUILTIN_MODELS[name]()

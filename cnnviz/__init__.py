"""cnnviz: see what a convolutional network has learned.

The notebook API. Every function takes a plain ``torch.nn.Module`` (or a :class:`LoadedModel`) and
leaves it exactly as it was::

    import cnnviz
    loaded = cnnviz.load_model("torchvision:resnet18", weights="DEFAULT")
    print(cnnviz.layer_table(loaded))
    maps = cnnviz.capture(loaded, images, "layer1.0.relu#2")   # N x 64 x 56 x 56

Names are imported on first use, so ``import cnnviz`` (and the command line's ``--help``) stays
fast; torch loads when the first function is touched.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "CnnvizError": "cnnviz.errors",
    "CnnvizWarning": "cnnviz.errors",
    "LoadedModel": "cnnviz.models",
    "Preprocessing": "cnnviz.models",
    "load_model": "cnnviz.models",
    "read_state_dict": "cnnviz.models",
    "resolve_device": "cnnviz.models",
    "Probe": "cnnviz.probe",
    "capture": "cnnviz.probe",
    "model_guard": "cnnviz.probe",
    "probe": "cnnviz.probe",
    "LayerRef": "cnnviz.references",
    "layer_ref": "cnnviz.references",
    "LayerRow": "cnnviz.summary",
    "LayerTable": "cnnviz.summary",
    "layer_table": "cnnviz.summary",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load lazily
    from cnnviz.errors import CnnvizError, CnnvizWarning
    from cnnviz.models import LoadedModel, Preprocessing, load_model, read_state_dict, resolve_device
    from cnnviz.probe import Probe, capture, model_guard, probe
    from cnnviz.references import LayerRef, layer_ref
    from cnnviz.summary import LayerRow, LayerTable, layer_table


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cnnviz' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

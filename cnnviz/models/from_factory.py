"""Models built by a user's function: ``package.module:factory`` or ``path/to/file.py:factory``."""
from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import os
import re
import sys

from torch import nn

from cnnviz.errors import CnnvizError, did_you_mean, first_line


from cnnviz.models.from_file import existing_file
from cnnviz.core.model import (
    LoadedModel, declared_class_names, declared_preprocessing,
)

SPEC_HELP = (
    "unknown model spec {spec!r}; use torchvision:NAME (e.g. torchvision:resnet18), timm:NAME, builtin:NAME, "
    "package.module:factory, path/to/file.py:factory or a path to a .pt file"
)


def load_factory(spec: str) -> LoadedModel:
    module_part, _, attribute = spec.rpartition(":")
    module_part, attribute = module_part.strip(), attribute.strip()
    for known in ("torchvision", "builtin"):
        if module_part != known and difflib.SequenceMatcher(None, module_part, known).ratio() > 0.8:
            raise CnnvizError(f"unknown model spec {spec!r}; did you mean '{known}:{attribute}'?")
    if module_part.endswith(".py"):
        python_module = _import_file(module_part)
    elif re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module_part) and attribute:
        python_module = _import_module(module_part)
    else:
        raise CnnvizError(SPEC_HELP.format(spec=spec))
    factory = getattr(python_module, attribute, None)
    if factory is None or not callable(factory):
        candidates = [n for n, v in vars(python_module).items() if callable(v) and not n.startswith("_")]
        raise CnnvizError(
            f"{module_part} has no function {attribute!r}; {did_you_mean(attribute, candidates)}"
        )
    try:
        module = factory()
    except (Exception, SystemExit) as error:
        raise CnnvizError(f"calling {spec}() failed: {type(error).__name__}: {first_line(error)}") from error
    if not isinstance(module, nn.Module):
        raise CnnvizError(
            f"{spec}() returned a {type(module).__name__}, not a torch.nn.Module"
        )
    return LoadedModel(
        module, declared_preprocessing(module, infer=False), declared_class_names(module), spec, "from the factory"
    )


def _import_module(name: str):
    try:
        with _on_sys_path(os.getcwd()):
            return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and (name == error.name or name.startswith(error.name + ".")):
            raise CnnvizError(
                f"cannot import {name!r}: no module {error.name!r} is installed or in the current folder"
            ) from None
        raise CnnvizError(f"importing {name} failed: {first_line(error)}") from error
    except (Exception, SystemExit) as error:  # a module that calls sys.exit() on import, too
        raise CnnvizError(f"importing {name} failed: {type(error).__name__}: {first_line(error)}") from error


def _import_file(path_text: str):
    path = existing_file(path_text, "Python file")
    name = f"cnnviz_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    python_module = importlib.util.module_from_spec(spec)
    try:  # the file's folder on the path, so that it can import its neighbours, as when run as a script
        with _on_sys_path(str(path.resolve().parent)):
            spec.loader.exec_module(python_module)
    except (Exception, SystemExit) as error:  # a file that calls sys.exit() on import, too
        raise CnnvizError(f"running {path} failed: {type(error).__name__}: {first_line(error)}") from error
    return python_module


@contextlib.contextmanager
def _on_sys_path(folder: str):
    """``folder`` first on ``sys.path`` during the block (unless it is there already), then removed,
    and no bytecode written meanwhile: importing a user's module leaves the process's path and the
    user's folders as they were."""
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    writes_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__/ written into the user's folders
    try:
        yield
    finally:
        sys.dont_write_bytecode = writes_bytecode
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)

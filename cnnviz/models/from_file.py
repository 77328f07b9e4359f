"""Models and weights from files: TorchScript archives, pickled models, state dicts, safetensors."""
from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from cnnviz.errors import CnnvizError, first_line


from cnnviz.core.model import (
    LoadedModel, declared_class_names, declared_preprocessing,
)


_STATE_DICT_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "module")


_KEY_PREFIXES = ("module.", "_orig_mod.")


AUXILIARY_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a file, safely (``weights_only=True``).

    Accepts what ``torch.save(model.state_dict(), path)`` writes, checkpoints that wrap it
    (``{"state_dict": ...}``, ``{"model": ...}``), keys prefixed by ``module.`` (DataParallel) or
    ``_orig_mod.`` (torch.compile), and ``.safetensors`` files when safetensors is installed.
    """
    path = existing_file(path, "weights file")
    if _is_torchscript(path):
        raise CnnvizError(
            f"{path} is a TorchScript archive, which holds its own architecture and weights; "
            f"pass it as the model (spec={str(path)!r}) without weights=..."
        )
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CnnvizError(
                f"{path} is a safetensors file; install safetensors (pip install safetensors) to read it"
            ) from None
        try:
            state = load_file(str(path))
        except Exception as error:
            raise CnnvizError(f"cannot read {path}: not a valid safetensors file ({first_line(error)})") from None
    else:
        state = _torch_load_weights_only(path)
    state = unwrap_checkpoint(state)
    if not isinstance(state, Mapping) or not state or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CnnvizError(
            f"{path} does not hold a state dict (a mapping of parameter names to tensors) but a "
            f"{type(state).__name__}; save one with torch.save(model.state_dict(), path)"
        )
    return strip_prefixes(dict(state))


def load_file(path_text: str, trusted: bool) -> LoadedModel:
    path = existing_file(path_text, "model file")
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as error:
            raise CnnvizError(f"cannot read the TorchScript archive {path}: {first_line(error)}") from None
        kind = "TorchScript"
    else:
        module = _load_whole_model(path, trusted)
        kind = "pickled model"
    return LoadedModel(
        module, declared_preprocessing(module, infer=False), declared_class_names(module), str(path), kind
    )


def _load_whole_model(path: Path, trusted: bool) -> nn.Module:
    try:
        content = _load_weights_only(path)
    except pickle.UnpicklingError as error:
        _refuse_blocked(path, error, "a model saved with torch.save(model, path) or torch.jit.save")
        if "Unsupported global" not in str(error):
            raise CnnvizError(_corrupt(path, error)) from None
        if not trusted:
            raise CnnvizError(
                f"{path} is a fully pickled model{_naming(error, ' (it names {})')}; loading it runs code from "
                "the file. If you trust its source, pass trusted=True"
            ) from None
        try:
            # The user vouched for this file (trusted=True): unpickling it runs its code.
            content = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:
            raise CnnvizError(f"cannot unpickle {path}: {type(error).__name__}: {first_line(error)}") from error
    except Exception as error:
        raise CnnvizError(_corrupt(path, error)) from None
    if isinstance(content, nn.Module):
        return content
    if isinstance(content, Mapping):
        held = [content[k] for k in _STATE_DICT_WRAPPERS if isinstance(content.get(k), nn.Module)]
        if held:  # a checkpoint such as {"model": model, "epoch": 3}
            return held[0]
    if isinstance(unwrap_checkpoint(content), Mapping):
        raise CnnvizError(
            f"{path} holds a state dict (weights only) with no architecture; name the architecture "
            f"and pass the file as weights: spec='torchvision:NAME' with weights={str(path)!r} "
            "(or spec='package.module:factory' with weights=...)"
        )
    raise CnnvizError(f"{path} holds a {type(content).__name__}, not a model")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _torch_load_weights_only(path: Path):
    try:
        return _load_weights_only(path)
    except pickle.UnpicklingError as error:
        _refuse_blocked(path, error, "a state dict saved with torch.save(model.state_dict(), path)")
        if "Unsupported global" in str(error):
            raise CnnvizError(
                f"{path} holds pickled Python objects (a whole model?{_naming(error, ' it names {}')}), not a "
                f"state dict; to use a whole pickled model pass it as the model (spec={str(path)!r}) with trusted=True"
            ) from None
        raise CnnvizError(_corrupt(path, error)) from None
    except Exception as error:
        raise CnnvizError(_corrupt(path, error)) from None


def _load_weights_only(path: Path):
    """``torch.load`` with ``weights_only=True``, silent: what it warns of (a pickle protocol it
    did not expect, in a file that is no checkpoint) is said by the error that follows, in one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


_BLOCKED = re.compile(r"unsupported GLOBAL (\S+) whose module \S+ is blocked")
_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL (\S+) ")


def _refuse_blocked(path: Path, error: Exception, instead: str) -> None:
    """Raise :class:`CnnvizError` when ``torch.load`` stopped at a function of ``os`` or ``sys``
    (``os.system``): a pickle that runs code, which no model or weights file does; cnnviz never
    loads it, not even with ``--trust-pickle``."""
    blocked = _BLOCKED.search(str(error))
    if blocked:
        raise CnnvizError(
            f"cnnviz refused {path}: loading it would call {blocked.group(1)}, so it runs code instead of "
            f"holding weights or a model; check where it came from and give {instead}"
        ) from None


def _naming(error: Exception, words: str) -> str:
    """``words`` formatted with the first Python object a weights-only load refused (what the
    pickle would import, ``torch.nn.modules.conv.Conv2d``, for the user to judge it by), or ``""``."""
    found = _UNSUPPORTED.search(str(error))
    return words.format(found.group(1)) if found else ""


def _corrupt(path: Path, error: Exception) -> str:
    detail = "the file is empty" if path.stat().st_size == 0 else reason_of(error)
    return (
        f"cannot read {path}: it is not a file written by torch.save or torch.jit.save ({detail}); "
        "is it corrupt or of another format?"
    )


def reason_of(error: Exception, limit: int = 100) -> str:
    """What ``torch.load`` said of a file it could not read, short: its first sentence (whole
    words, at most about ``limit`` characters), without torch's advice and source locations."""
    text = str(error)
    if isinstance(error, EOFError):
        return "the file ends early: cut short?"
    if "WeightsUnpickler error:" in text:
        text = "unreadable pickle: " + text.split("WeightsUnpickler error:")[1].split("Check the")[0]
    else:
        text = first_line(error)
    text = " ".join(re.sub(r"\[enforce fail at [^\]]*\]\s*\.?", "", text).split())
    if not re.search(r"[A-Za-z]{2}", text):  # KeyError('101'): what it is, with the value
        text = f"{type(error).__name__} {text}".strip()
    sentence = re.match(r"(.+?[.;])\s", text + " ")
    text = sentence.group(1).rstrip(".;") if sentence else text
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return text


def existing_file(path_text, what: str) -> Path:
    path = Path(path_text).expanduser()
    if not path.exists():
        raise CnnvizError(f"{what} {str(path_text)!r} does not exist; check the path")
    if not path.is_file():
        raise CnnvizError(f"{what} {str(path_text)!r} is a folder, not a file")
    return path


def looks_like_path(weights) -> bool:
    text = str(weights)
    return (
        isinstance(weights, os.PathLike)
        or os.sep in text
        or "/" in text
        or text.endswith((".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar"))
        or os.path.exists(text)
    )


def unwrap_checkpoint(content):
    for _ in range(3):
        if not isinstance(content, Mapping):
            return content
        wrapped = [k for k in _STATE_DICT_WRAPPERS if isinstance(content.get(k), Mapping)]
        if wrapped and not any(isinstance(v, torch.Tensor) for v in content.values()):
            content = content[wrapped[0]]
        else:
            return content
    return content


def strip_prefixes(state: dict) -> dict:
    for prefix in _KEY_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def state_dict_problems(module: nn.Module, state: dict) -> dict[str, list[str]]:
    expected = module.state_dict()
    return {
        # BatchNorm fills in a missing num_batches_tracked itself (older checkpoints lack it).
        "missing": [k for k in expected if k not in state and not k.endswith("num_batches_tracked")],
        "unexpected": [k for k in state if k not in expected],
        "mismatched": [
            k for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)
        ],
    }


def apply_state_dict(module: nn.Module, state: dict, what: str) -> None:
    problems = state_dict_problems(module, state)
    if any(problems.values()):
        expected = module.state_dict()
        parts = []
        if problems["missing"]:
            parts.append(f"{len(problems['missing'])} missing ({_some(problems['missing'])})")
        if problems["unexpected"]:
            parts.append(f"{len(problems['unexpected'])} unexpected ({_some(problems['unexpected'])})")
        if problems["mismatched"]:
            shown = [
                f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                for k in problems["mismatched"][:2]
            ]
            parts.append(f"{len(problems['mismatched'])} of another shape ({', '.join(shown)})")
        raise CnnvizError(
            f"the weights do not fit {what}: {'; '.join(parts)}; are they for another architecture?"
        )
    with torch.no_grad():
        # Every key was checked above; strict=False only lets BatchNorm fill num_batches_tracked.
        module.load_state_dict(state, strict=False)


def _some(keys: list[str]) -> str:
    return ", ".join(keys[:2]) + (", ..." if len(keys) > 2 else "")

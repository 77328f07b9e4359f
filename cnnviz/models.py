"""Loading models: torchvision architectures, a user's factory, TorchScript and checkpoint files.

:func:`load_model` turns a model spec (the same string as the command line's ``--model``) into a
:class:`LoadedModel`: the ``nn.Module`` in eval mode, its :class:`Preprocessing` (mean, std, input
size, channels) and its class names when known. Specs:

==============================  ================================================================
``torchvision:resnet18``        any classification architecture of ``torchvision.models``;
                                ``weights`` is a torchvision weights name (``DEFAULT``,
                                ``IMAGENET1K_V1``; torchvision downloads it when online), a path to
                                a state-dict file, or ``None`` for random weights
``builtin:NAME``                a model shipped with cnnviz (works offline)
``package.module:factory``      calls ``factory()`` from an importable module (or ``path/to/file.py:factory``);
                                ``weights`` may name a state-dict file
``path/to/model.pt``            a TorchScript archive, or a whole pickled model when ``trusted=True``
==============================  ================================================================

State dicts always load with ``torch.load(..., weights_only=True)``. A fully pickled model runs code
from the file when it is unpickled, so it loads only with ``trusted=True`` (``--trust-pickle``).

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("torchvision:resnet18")          # random weights, a warning
    >>> loaded.preprocessing.input_size, loaded.preprocessing.mean
    ((224, 224), (0.485, 0.456, 0.406))
    >>> loaded.class_names[281]
    'tabby'
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import os
import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from cnnviz.errors import CnnvizError, CnnvizWarning, did_you_mean, first_line

DEFAULT_INPUT_SIZE = (224, 224)
_AUXILIARY_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")
_STATE_DICT_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "module")
_KEY_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a model.

    Attributes:
        mean, std: per input channel, applied as ``(x - mean) / std`` to images in [0, 1].
        input_size: ``(height, width)`` the model expects.
        resize: the shorter side is resized to this before a centre crop to ``input_size``
            (torchvision's 256 for 224 crops), or ``None`` to resize straight to ``input_size``.
        known: ``False`` when cnnviz assumed the identity because the model did not say.
    """

    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    resize: int | None = None
    known: bool = False

    @property
    def channels(self) -> int:
        """Number of input channels."""
        return len(self.mean)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(images - mean) / std`` for images in [0, 1], ``N x C x H x W`` or ``C x H x W``."""
        mean, std = self._shaped(images)
        return (images - mean) / std

    def denormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalize`: model inputs back to images in [0, 1] (unclipped)."""
        mean, std = self._shaped(inputs)
        return inputs * std + mean

    def _shaped(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        channel_axis = 1 if x.dim() == 4 else 0
        if x.shape[channel_axis] != self.channels:
            raise CnnvizError(
                f"the images have {x.shape[channel_axis]} channels but the model takes {self.channels}"
            )
        shape = [1] * x.dim()
        shape[channel_axis] = self.channels
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).reshape(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).reshape(shape)
        return mean, std

    def describe(self) -> str:
        """One line: channels, size, mean and std."""
        height, width = self.input_size
        mean = ", ".join(f"{m:.3g}" for m in self.mean)
        std = ", ".join(f"{s:.3g}" for s in self.std)
        return f"{self.channels}x{height}x{width}, mean ({mean}), std ({std})"


@dataclass
class LoadedModel:
    """A model with what is needed to feed it images and to name its outputs.

    Every cnnviz function that takes a model accepts a ``LoadedModel`` or a plain ``nn.Module``.

    Attributes:
        module: the network (in eval mode when cnnviz loaded it; a module you wrapped keeps its mode).
        preprocessing: mean, std, input size and channels of its inputs.
        class_names: one name per output unit, or ``None`` when unknown.
        spec: the spec it was loaded from (e.g. ``"torchvision:resnet18"``).
        weights: where its weights came from (``"random"``, ``"IMAGENET1K_V1"``, a file path, ...).
    """

    module: nn.Module
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    class_names: list[str] | None = None
    spec: str = ""
    weights: str = "as given"

    def __repr__(self) -> str:
        classes = f"{len(self.class_names)} classes" if self.class_names else "no class names"
        known = "" if self.preprocessing.known else " (assumed)"
        return (
            f"LoadedModel({self.spec!r}, weights={self.weights!r}, {classes}, "
            f"input {self.preprocessing.describe()}{known})"
        )


def unwrap(model) -> tuple[nn.Module, list[str] | None]:
    """The ``nn.Module`` and class names of a :class:`LoadedModel` or a plain module."""
    if isinstance(model, LoadedModel):
        return model.module, model.class_names
    if isinstance(model, nn.Module):
        return model, None
    raise CnnvizError(
        f"expected a torch.nn.Module or a cnnviz.LoadedModel, got {type(model).__name__}"
    )


def preprocessing_of(model) -> Preprocessing:
    """The preprocessing of a :class:`LoadedModel`, or what a plain module declares (else identity)."""
    if isinstance(model, LoadedModel):
        return model.preprocessing
    module, _ = unwrap(model)
    return _declared_preprocessing(module)


def load_model(
    spec: str | nn.Module,
    weights: str | os.PathLike | None = None,
    *,
    trusted: bool = False,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    input_size: int | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
) -> LoadedModel:
    """Load a model from a spec (see the module docstring) with its preprocessing and class names.

    Args:
        spec: ``"torchvision:NAME"``, ``"builtin:NAME"``, ``"package.module:factory"``,
            ``"path/to/file.py:factory"``, a path to a ``.pt`` file, or an ``nn.Module`` you already
            have (wrapped as it is, not copied, not switched to eval mode).
        weights: a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``) or a path to a
            state-dict file; ``None`` keeps the model's own weights (random for torchvision).
        trusted: allow unpickling a whole-model file, which runs code from that file.
        mean, std: override the per-channel normalisation (one number is used for every channel).
        input_size: override the input size, ``H`` or ``(H, W)``.
        class_names: override the names of the output units.
        device: move the model there (``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``).

    Returns:
        A :class:`LoadedModel`. Warnings (:class:`cnnviz.CnnvizWarning`) say when the weights are
        random or the preprocessing was assumed.

    Raises:
        CnnvizError: unknown spec, missing or corrupt file, weights that do not fit, and the like.
    """
    if isinstance(spec, nn.Module):
        module = spec
        if weights is not None:
            _apply_state_dict(module, read_state_dict(weights), type(module).__name__)
        loaded = LoadedModel(
            module, _declared_preprocessing(module), _declared_class_names(module),
            spec=type(module).__name__, weights="as given" if weights is None else str(weights),
        )
    else:
        loaded = _load_spec(str(spec).strip(), weights, trusted)
        loaded.module.eval()
    loaded = _override(loaded, mean, std, input_size, class_names)
    if device is not None:
        loaded.module.to(resolve_device(device))
    return loaded


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``torch.device`` for a user's choice; ``"auto"`` picks CUDA when available."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        chosen = device
    elif str(device).strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            chosen = torch.device(str(device).strip())
        except RuntimeError:
            raise CnnvizError(
                f"unknown device {str(device)!r}; use cpu, cuda, cuda:N or auto"
            ) from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise CnnvizError(f"device {device!s} asked for, but CUDA is not available here; use --device cpu")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise CnnvizError(
            f"device {device!s} does not exist; this machine has {torch.cuda.device_count()} CUDA "
            f"device(s): cuda:0-cuda:{torch.cuda.device_count() - 1}"
        )
    try:
        torch.empty(0, device=chosen)
    except Exception as error:  # mps, xpu, ... without the hardware or the build
        raise CnnvizError(
            f"device {device!s} is not usable here ({first_line(error)}); use --device cpu"
        ) from None
    return chosen


def input_size_pair(value) -> tuple[int, int]:
    """``(H, W)`` from ``H`` or ``(H, W)``; a clear error for anything else."""
    sizes = (value,) if isinstance(value, (int, str)) else tuple(value)
    try:
        pair = tuple(int(s) for s in sizes)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) not in (1, 2) or any(s < 1 or s > 16384 for s in pair) or isinstance(value, float):
        raise CnnvizError(
            f"input size must be H or (H, W), whole numbers from 1 to 16384, got {value!r}"
        )
    return (pair[0], pair[-1])


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a file, safely (``weights_only=True``).

    Accepts what ``torch.save(model.state_dict(), path)`` writes, checkpoints that wrap it
    (``{"state_dict": ...}``, ``{"model": ...}``), keys prefixed by ``module.`` (DataParallel) or
    ``_orig_mod.`` (torch.compile), and ``.safetensors`` files when safetensors is installed.
    """
    path = _existing_file(path, "weights file")
    if _is_torchscript(path):
        raise CnnvizError(
            f"{path} is a TorchScript archive, which holds its own architecture and weights; "
            "pass it as the model (--model PATH) without --weights"
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
    state = _unwrap_checkpoint(state)
    if not isinstance(state, Mapping) or not state or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CnnvizError(
            f"{path} does not hold a state dict (a mapping of parameter names to tensors) but a "
            f"{type(state).__name__}; save one with torch.save(model.state_dict(), path)"
        )
    return _strip_prefixes(dict(state))


# --------------------------------------------------------------------------------------------
# Spec dispatch


def _load_spec(spec: str, weights, trusted: bool) -> LoadedModel:
    if not spec:
        raise CnnvizError(_SPEC_HELP.format(spec=spec))
    prefix, colon, rest = spec.partition(":")
    if colon and prefix == "torchvision":
        return _load_torchvision(rest.strip(), weights)
    if colon and prefix == "builtin":
        from cnnviz import zoo

        return _with_weights(zoo.load(rest.strip()), weights, spec)
    if spec.endswith(".py"):
        raise CnnvizError(
            f"{spec} is a Python file; name the function in it that builds the model: {spec}:FUNCTION"
        )
    if os.path.exists(spec) or spec.endswith((".pt", ".pth", ".pt2", ".ts", ".jit")):
        return _with_weights(_load_file(spec, trusted), weights, spec)
    if colon:
        return _with_weights(_load_factory(spec), weights, spec)
    return _unknown_spec(spec)


_SPEC_HELP = (
    "unknown model spec {spec!r}; use torchvision:NAME (e.g. torchvision:resnet18), builtin:NAME, "
    "package.module:factory, path/to/file.py:factory or a path to a .pt file"
)


def _unknown_spec(spec: str):
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if spec in names:
        raise CnnvizError(f"unknown model spec {spec!r}; did you mean 'torchvision:{spec}'?")
    raise CnnvizError(_SPEC_HELP.format(spec=spec))


def _with_weights(loaded: LoadedModel, weights, spec: str) -> LoadedModel:
    if weights is None:
        return loaded
    if isinstance(loaded.module, torch.jit.ScriptModule):
        raise CnnvizError(f"{spec} is a TorchScript archive with its own weights; drop --weights")
    _apply_state_dict(loaded.module, read_state_dict(weights), spec)
    loaded.weights = str(weights)
    return loaded


# --------------------------------------------------------------------------------------------
# torchvision


def _load_torchvision(name: str, weights) -> LoadedModel:
    from torchvision import models

    names = models.list_models(module=models)
    if name not in names:
        raise CnnvizError(
            f"torchvision has no classification model {name!r}; {did_you_mean(name, names)}"
        )
    weights_enum = models.get_model_weights(name)
    chosen = None
    if weights is not None and not _looks_like_path(weights):
        chosen = _torchvision_weights(name, str(weights), weights_enum)
    meta_weights = chosen if chosen is not None else weights_enum.DEFAULT
    preprocessing = _torchvision_preprocessing(meta_weights)
    categories = list(meta_weights.meta.get("categories") or []) or None
    spec = f"torchvision:{name}"
    if chosen is not None:
        module = _download_torchvision(name, chosen)
        return LoadedModel(module, preprocessing, categories, spec, chosen.name)
    module = models.get_model(name, **_quiet_init(name))
    if weights is None:
        warnings.warn(
            f"{spec} has random weights; pass weights='DEFAULT' (--weights DEFAULT) for the "
            "pretrained ones, or a state-dict file",
            CnnvizWarning,
            stacklevel=4,
        )
        return LoadedModel(module, preprocessing, categories, spec, "random")
    state = read_state_dict(weights)
    module = _fit_torchvision(name, module, state)
    _apply_state_dict(module, state, spec)
    if categories and _output_units(module) != len(categories):
        categories = None
    return LoadedModel(module, preprocessing, categories, spec, str(weights))


def _torchvision_weights(name: str, weights: str, weights_enum):
    from torchvision import models

    if "." in weights:
        try:
            chosen = models.get_weight(weights)
        except (ValueError, KeyError, AttributeError):
            chosen = None
        if chosen is not None and chosen in list(weights_enum):
            return chosen
        raise CnnvizError(
            f"{weights!r} is not a weights name of torchvision:{name}; "
            f"available: {', '.join(weights_enum.__members__)}"
        )
    try:
        return weights_enum[weights.upper()] if weights.upper() == "DEFAULT" else weights_enum[weights]
    except KeyError:
        available = list(weights_enum.__members__)
        raise CnnvizError(
            f"{weights!r} is neither a file nor a weights name of torchvision:{name}; "
            f"available: {', '.join(available)} (or a path to a state-dict file)"
        ) from None


def _download_torchvision(name: str, chosen) -> nn.Module:
    from torchvision import models

    try:
        return models.get_model(name, weights=chosen)
    except Exception as error:  # no connection (URLError is an OSError), a corrupt cached file, ...
        raise CnnvizError(
            f"could not get the {chosen} weights of torchvision:{name} ({first_line(error)[:160]}); "
            "torchvision downloads them once into its cache (torch.hub.get_dir()/checkpoints), which "
            "needs a connection, and a broken file there must be deleted; offline, pass a "
            "state-dict file with --weights PATH"
        ) from error


def _torchvision_preprocessing(weights) -> Preprocessing:
    transforms = weights.transforms()
    crop = transforms.crop_size
    crop = (crop[0], crop[0]) if len(crop) == 1 else (crop[0], crop[1])
    resize = transforms.resize_size
    return Preprocessing(
        mean=tuple(float(m) for m in transforms.mean),
        std=tuple(float(s) for s in transforms.std),
        input_size=crop,
        resize=int(resize[0]) if resize else None,
        known=True,
    )


def _quiet_init(name: str) -> dict:
    # googlenet and inception_v3 warn about their default initialisation unless it is named.
    return {"init_weights": True} if name in ("googlenet", "inception_v3") else {}


def _fit_torchvision(name: str, module: nn.Module, state: dict) -> nn.Module:
    """Rebuild the architecture when a state dict has no auxiliary heads or another class count."""
    from torchvision import models

    problems = _state_dict_problems(module, state)
    if not any(problems.values()):
        return module
    kwargs = _quiet_init(name)
    model_keys = module.state_dict().keys()
    if any(k.startswith(_AUXILIARY_PREFIXES) for k in model_keys) and not any(
        k.startswith(_AUXILIARY_PREFIXES) for k in state
    ):
        kwargs["aux_logits"] = False
    mismatched = [k for k in problems["mismatched"] if k.endswith("weight")]
    if mismatched:
        kwargs["num_classes"] = int(state[mismatched[-1]].shape[0])
    if len(kwargs) == len(_quiet_init(name)):
        return module
    try:
        rebuilt = models.get_model(name, **kwargs)
    except Exception:
        return module
    return rebuilt if not any(_state_dict_problems(rebuilt, state).values()) else module


def _output_units(module: nn.Module) -> int | None:
    last = None
    for child in module.modules():
        if isinstance(child, (nn.Linear, nn.Conv2d)):
            last = child
    if isinstance(last, nn.Linear):
        return last.out_features
    if isinstance(last, nn.Conv2d):
        return last.out_channels
    return None


# --------------------------------------------------------------------------------------------
# factories


def _load_factory(spec: str) -> LoadedModel:
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
        raise CnnvizError(_SPEC_HELP.format(spec=spec))
    factory = getattr(python_module, attribute, None)
    if factory is None or not callable(factory):
        candidates = [n for n, v in vars(python_module).items() if callable(v) and not n.startswith("_")]
        raise CnnvizError(
            f"{module_part} has no function {attribute!r}; {did_you_mean(attribute, candidates)}"
        )
    try:
        module = factory()
    except Exception as error:
        raise CnnvizError(f"calling {spec}() failed: {type(error).__name__}: {first_line(error)}") from error
    if not isinstance(module, nn.Module):
        raise CnnvizError(
            f"{spec}() returned a {type(module).__name__}, not a torch.nn.Module"
        )
    return LoadedModel(
        module, _declared_preprocessing(module), _declared_class_names(module), spec, "from the factory"
    )


def _import_module(name: str):
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and (name == error.name or name.startswith(error.name + ".")):
            raise CnnvizError(
                f"cannot import {name!r}: no module {error.name!r} is installed or in the current folder"
            ) from None
        raise CnnvizError(f"importing {name} failed: {first_line(error)}") from error
    except Exception as error:
        raise CnnvizError(f"importing {name} failed: {type(error).__name__}: {first_line(error)}") from error
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)


def _import_file(path_text: str):
    path = _existing_file(path_text, "Python file")
    name = f"cnnviz_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    python_module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    added = folder not in sys.path
    if added:  # so that the file can import its neighbours, as when it is run as a script
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(python_module)
    except Exception as error:
        raise CnnvizError(f"running {path} failed: {type(error).__name__}: {first_line(error)}") from error
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)
    return python_module


# --------------------------------------------------------------------------------------------
# files


def _load_file(path_text: str, trusted: bool) -> LoadedModel:
    path = _existing_file(path_text, "model file")
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
        module, _declared_preprocessing(module), _declared_class_names(module), str(path), kind
    )


def _load_whole_model(path: Path, trusted: bool) -> nn.Module:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" not in str(error):
            raise CnnvizError(_corrupt(path, error)) from None
        if not trusted:
            raise CnnvizError(
                f"{path} is a fully pickled model; loading it runs code from the file. If you "
                "trust its source, pass --trust-pickle (trusted=True in Python)"
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
    if isinstance(_unwrap_checkpoint(content), Mapping):
        raise CnnvizError(
            f"{path} holds a state dict (weights only) with no architecture; name the architecture "
            f"and pass the file as weights: --model torchvision:NAME --weights {path} "
            "(or --model package.module:factory --weights ...)"
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
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            raise CnnvizError(
                f"{path} holds pickled Python objects (a whole model?), not a state dict; to use a "
                "whole pickled model pass it as --model PATH --trust-pickle"
            ) from None
        raise CnnvizError(_corrupt(path, error)) from None
    except Exception as error:
        raise CnnvizError(_corrupt(path, error)) from None


def _corrupt(path: Path, error: Exception) -> str:
    text = str(error)
    if path.stat().st_size == 0:
        detail = "the file is empty"
    elif "WeightsUnpickler error:" in text:
        detail = "unreadable pickle: " + " ".join(text.split("WeightsUnpickler error:")[1].split("Check the")[0].split())
    else:
        detail = first_line(error)[:120]
    return (
        f"cannot read {path}: it is not a file written by torch.save or torch.jit.save ({detail}); "
        "is it corrupt or of another format?"
    )


def _existing_file(path_text, what: str) -> Path:
    path = Path(path_text).expanduser()
    if not path.exists():
        raise CnnvizError(f"{what} {str(path_text)!r} does not exist; check the path")
    if not path.is_file():
        raise CnnvizError(f"{what} {str(path_text)!r} is a folder, not a file")
    return path


def _looks_like_path(weights) -> bool:
    text = str(weights)
    return (
        isinstance(weights, os.PathLike)
        or os.sep in text
        or "/" in text
        or text.endswith((".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar"))
        or os.path.exists(text)
    )


# --------------------------------------------------------------------------------------------
# state dicts


def _unwrap_checkpoint(content):
    for _ in range(3):
        if not isinstance(content, Mapping):
            return content
        wrapped = [k for k in _STATE_DICT_WRAPPERS if isinstance(content.get(k), Mapping)]
        if wrapped and not any(isinstance(v, torch.Tensor) for v in content.values()):
            content = content[wrapped[0]]
        else:
            return content
    return content


def _strip_prefixes(state: dict) -> dict:
    for prefix in _KEY_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _state_dict_problems(module: nn.Module, state: dict) -> dict[str, list[str]]:
    expected = module.state_dict()
    return {
        # BatchNorm fills in a missing num_batches_tracked itself (older checkpoints lack it).
        "missing": [k for k in expected if k not in state and not k.endswith("num_batches_tracked")],
        "unexpected": [k for k in state if k not in expected],
        "mismatched": [
            k for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)
        ],
    }


def _apply_state_dict(module: nn.Module, state: dict, what: str) -> None:
    problems = _state_dict_problems(module, state)
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


# --------------------------------------------------------------------------------------------
# preprocessing


def _declared_preprocessing(module: nn.Module) -> Preprocessing:
    """Preprocessing from the module's own ``mean``, ``std``, ``input_size`` attributes, else identity.

    The channel count comes from the declared mean, else from the first convolution's
    ``in_channels``, else 3.
    """
    mean = _float_tuple(_attribute(module, "mean"))
    std = _float_tuple(_attribute(module, "std"))
    if mean is not None and std is not None and (len(mean) != len(std) or not _valid_normalisation(mean, std)):
        _ignored(module, "mean and std", (mean, std))
        mean = std = None
    channels = len(mean) if mean else _first_conv_channels(module) or 3
    known = mean is not None and std is not None
    size = _attribute(module, "input_size")
    input_size = DEFAULT_INPUT_SIZE
    if size is not None:
        sizes = size if isinstance(size, (list, tuple)) else (size,)
        if len(sizes) == 3:  # C x H x W
            sizes = sizes[1:]
        try:
            input_size = input_size_pair(sizes)
        except CnnvizError:
            _ignored(module, "input_size", size)
    return Preprocessing(
        mean=mean or (0.0,) * channels,
        std=std or (1.0,) * channels,
        input_size=tuple(input_size),
        known=known,
    )


def _ignored(module: nn.Module, what: str, value) -> None:
    warnings.warn(
        f"{type(module).__name__} declares {what} = {value!r}, which cnnviz cannot use; ignored "
        "(pass --mean/--std/--input-size instead)",
        CnnvizWarning,
        stacklevel=5,
    )


def _valid_normalisation(mean, std) -> bool:
    import math

    return all(math.isfinite(v) for v in (*mean, *std)) and all(s > 0 for s in std)


def _declared_class_names(module: nn.Module) -> list[str] | None:
    for attribute in ("class_names", "classes"):
        names = _attribute(module, attribute)
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
            return list(names)
    return None


def _attribute(module: nn.Module, name: str):
    try:
        value = getattr(module, name, None)
    except Exception:
        return None
    return None if isinstance(value, nn.Module) or callable(value) else value


def _float_tuple(value) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.flatten().tolist()
    if isinstance(value, (int, float)):
        return (float(value),)
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None


def _first_conv_channels(module: nn.Module) -> int | None:
    for child in module.modules():
        if isinstance(child, nn.modules.conv._ConvNd):
            return child.in_channels
    return None


def _override(loaded: LoadedModel, mean, std, input_size, class_names) -> LoadedModel:
    pre = loaded.preprocessing
    changes = {}
    if mean is not None or std is not None:
        mean_values = _float_tuple(mean) if mean is not None else None
        std_values = _float_tuple(std) if std is not None else None
        for what, given, values in (("mean", mean, mean_values), ("std", std, std_values)):
            if given is not None and not values:
                raise CnnvizError(f"{what} must be one number or one per input channel, got {given!r}")
        given = [len(v) for v in (mean_values, std_values) if v is not None and len(v) > 1]
        channels = _first_conv_channels(loaded.module) or (given[0] if given else pre.channels)
        new_mean = _per_channel(mean_values, channels, "mean") if mean_values else pre.mean
        new_std = _per_channel(std_values, channels, "std") if std_values else pre.std
        if len(new_mean) != len(new_std):
            raise CnnvizError(
                f"mean has {len(new_mean)} values but std has {len(new_std)}; give one per input channel"
            )
        if not _valid_normalisation(new_mean, new_std):
            raise CnnvizError("mean and std must be finite numbers and std greater than 0 (it divides the input)")
        changes.update(mean=new_mean, std=new_std, known=True)
    if input_size is not None:
        changes.update(input_size=input_size_pair(input_size), resize=None)
    if changes:
        loaded.preprocessing = replace(pre, **changes)
    if class_names is not None:
        loaded.class_names = [str(n) for n in class_names]
    return loaded


def _per_channel(values: tuple[float, ...], channels: int, what: str) -> tuple[float, ...]:
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise CnnvizError(
            f"{what} has {len(values)} values but the model takes {channels} input channel(s); "
            f"give 1 value or {channels}"
        )
    return values


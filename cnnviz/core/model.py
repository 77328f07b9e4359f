"""The model handle every analysis takes: :class:`LoadedModel` and its :class:`Preprocessing`.

A ``LoadedModel`` is an ``nn.Module`` with what is needed to feed it images (mean, std, input size,
channels) and to name its outputs (class names). Every public function accepts one or a plain
module; :func:`unwrap` and :func:`preprocessing_of` give the parts of either. Where the models come
from (torchvision, files, factories, the built-in zoo) is :mod:`cnnviz.models`.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from cnnviz.core.input_size import inferred_input_size
from cnnviz.errors import CnnvizError, CnnvizWarning, first_line


DEFAULT_INPUT_SIZE = (224, 224)


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a model.

    Attributes:
        mean, std: per input channel, applied as ``(x - mean) / std`` to images in [0, 1].
        input_size: ``(height, width)`` the model expects.
        resize: the shorter side is resized to this before a centre crop to ``input_size``
            (torchvision's 256 for 224 crops), or ``None``: a square ``input_size`` then takes the
            shorter side resized to it and the centre, a non-square one is resized straight to
            ``input_size`` (:func:`cnnviz.inputs.prepare`).
        known: ``False`` when cnnviz assumed the identity because the model did not say.
        size_from: where ``input_size`` came from: ``"declared"`` (the model or the caller said),
            ``"default"`` (224 x 224, the model runs at it or said nothing) or how cnnviz found it
            (``"found by dry runs: the first Linear takes 400 features"``).
    """

    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    resize: int | None = None
    known: bool = False
    size_from: str = "declared"

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
    """The ``nn.Module`` and class names of a :class:`LoadedModel` or a plain module (the names it
    declares itself as ``class_names`` or ``classes``, a list of strings, else ``None``)."""
    if isinstance(model, LoadedModel):
        return model.module, model.class_names
    if isinstance(model, nn.Module):
        return model, declared_class_names(model)
    raise CnnvizError(
        f"expected a torch.nn.Module or a cnnviz.LoadedModel, got {type(model).__name__}"
    )


def non_finite_parameter(model) -> tuple[str, int] | None:
    """The first parameter (or buffer) of a model that holds NaN or infinity, with the number of
    such values in it; ``None`` when every value is finite (or the model is TorchScript)."""
    module, _ = unwrap(model)
    if isinstance(module, torch.jit.ScriptModule):
        return None
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
            return name, int((~torch.isfinite(tensor)).sum())
    return None


def preprocessing_of(model) -> Preprocessing:
    """The preprocessing of a :class:`LoadedModel`, or what a plain module declares (else identity)."""
    if isinstance(model, LoadedModel):
        return model.preprocessing
    module, _ = unwrap(model)
    return declared_preprocessing(module)


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
        raise CnnvizError(f"device {device!s} asked for, but CUDA is not available here; use device='cpu'")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise CnnvizError(
            f"device {device!s} does not exist; this machine has {torch.cuda.device_count()} CUDA "
            f"device(s): cuda:0-cuda:{torch.cuda.device_count() - 1}"
        )
    try:
        torch.empty(0, device=chosen)
    except Exception as error:  # mps, xpu, ... without the hardware or the build
        raise CnnvizError(
            f"device {device!s} is not usable here ({first_line(error)}); use device='cpu'"
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


def declared_preprocessing(module: nn.Module, infer: bool = True) -> Preprocessing:
    """Preprocessing from the module's own ``mean``, ``std``, ``input_size`` attributes (or a timm
    model's ``pretrained_cfg``), else identity.

    The channel count comes from the declared mean, else from the first convolution's
    ``in_channels``, else 3. Without a declared input size, ``infer`` finds one that runs
    (:mod:`cnnviz.core.input_size`: 224 x 224 where it runs, else the size the first ``Linear``
    needs); ``infer=False`` leaves 224 x 224 marked ``size_from="default"`` (see :func:`with_input_size`).
    """
    if all(_attribute(module, name) is None for name in ("mean", "std", "input_size")):
        stated = timm_preprocessing(module)  # a timm model says it all in its pretrained_cfg
        if stated is not None:
            return stated
    mean = float_tuple(_attribute(module, "mean"))
    std = float_tuple(_attribute(module, "std"))
    if mean is not None and std is not None and (len(mean) != len(std) or not valid_normalisation(mean, std)):
        _ignored(module, "mean and std", (mean, std))
        mean = std = None
    channels = len(mean) if mean else first_conv_channels(module) or 3
    known = mean is not None and std is not None
    size = _attribute(module, "input_size")
    input_size, size_from = DEFAULT_INPUT_SIZE, "default"
    if size is not None:
        sizes = size if isinstance(size, (list, tuple)) else (size,)
        if len(sizes) == 3:  # C x H x W
            sizes = sizes[1:]
        try:
            input_size, size_from = input_size_pair(sizes), "declared"
        except CnnvizError:
            _ignored(module, "input_size", size)
    preprocessing = Preprocessing(
        mean=mean or (0.0,) * channels,
        std=std or (1.0,) * channels,
        input_size=tuple(input_size),
        known=known,
        size_from=size_from,
    )
    return with_input_size(preprocessing, module) if infer else preprocessing


def timm_preprocessing(module: nn.Module) -> Preprocessing | None:
    """The preprocessing a timm model's ``pretrained_cfg`` states (``None`` without one, or when
    it is not usable): its input size, mean and std, and the shorter side before the centre crop
    (``input size / crop_pct``, timm's own evaluation recipe)."""
    config = getattr(module, "pretrained_cfg", None)
    if not isinstance(config, dict):
        return None
    try:
        channels, height, width = (int(v) for v in config["input_size"])
        mean = tuple(float(v) for v in config["mean"])
        std = tuple(float(v) for v in config["std"])
        height, width = input_size_pair((height, width))
    except (KeyError, TypeError, ValueError, CnnvizError):
        return None
    if len(mean) != channels or len(std) != channels or not valid_normalisation(mean, std):
        return None
    if first_conv_channels(module) not in (None, channels):  # built with in_chans=1: the config is the default's
        return None
    crop = config.get("crop_pct")
    resize = None
    if isinstance(crop, (int, float)) and 0 < crop < 1 and height == width and config.get("crop_mode", "center") == "center":
        resize = int(height // crop)
    return Preprocessing(mean=mean, std=std, input_size=(height, width), resize=resize, known=True)


def with_input_size(preprocessing: Preprocessing, module: nn.Module) -> Preprocessing:
    """``preprocessing`` with an input size found by dry runs when nothing declared one."""
    if preprocessing.size_from != "default":
        return preprocessing
    size, how = inferred_input_size(module, preprocessing.channels)
    return replace(preprocessing, input_size=size, size_from="default" if size == DEFAULT_INPUT_SIZE else how)


def _ignored(module: nn.Module, what: str, value) -> None:
    warnings.warn(
        f"{type(module).__name__} declares {what} = {value!r}, which cnnviz cannot use; ignored "
        "(pass mean=..., std=... and input_size=... instead)",
        CnnvizWarning,
        stacklevel=5,
    )


def valid_normalisation(mean, std) -> bool:
    import math

    return all(math.isfinite(v) for v in (*mean, *std)) and all(s > 0 for s in std)


def declared_class_names(module: nn.Module) -> list[str] | None:
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


def float_tuple(value) -> tuple[float, ...] | None:
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


def first_conv_channels(module: nn.Module) -> int | None:
    for child in module.modules():
        if isinstance(child, nn.modules.conv._ConvNd):
            return child.in_channels
    return None


def model_key(model) -> str:
    """The model's identity: its class, spec, preprocessing and every parameter and buffer (what
    a gallery's job records and a statistics checkpoint are keyed on)."""
    module, class_names = unwrap(model)
    digest = hashlib.sha256()
    digest.update(json.dumps([type(module).__qualname__, repr(module), getattr(model, "spec", None),
                              preprocessing_of(model).describe(), class_names], default=str).encode())
    for name, tensor in list(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()

"""Loading models: torchvision architectures, a user's factory, TorchScript and checkpoint files.

:func:`load_model` turns a model spec (the same string as the command line's ``--model``) into a
:class:`LoadedModel`: the ``nn.Module`` in eval mode, its :class:`Preprocessing` (mean, std, input
size, channels) and its class names when known. Specs:

==============================  ================================================================
``torchvision:resnet18``        any classification architecture of ``torchvision.models``;
                                ``weights`` is a torchvision weights name (``DEFAULT``,
                                ``IMAGENET1K_V1``; torchvision downloads it when online), a path to
                                a state-dict file, or ``None`` for random weights
``timm:NAME``                   any model of timm (when installed); ``weights`` is ``DEFAULT`` (timm's
                                pretrained weights, downloaded when online), a state-dict file, or
                                ``None`` for random weights; the preprocessing is the model's own
``builtin:NAME``                a model shipped with cnnviz (works offline)
``package.module:factory``      calls ``factory()`` from an importable module (or ``path/to/file.py:factory``);
                                ``weights`` may name a state-dict file
``path/to/model.pt``            a TorchScript archive, or a whole pickled model when ``trusted=True``
==============================  ================================================================

State dicts always load with ``torch.load(..., weights_only=True)``. A fully pickled model runs code
from the file when it is unpickled, so it loads only with ``trusted=True`` (``--trust-pickle``).

Example::

    >>> import warnings, cnnviz
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     loaded = cnnviz.load_model("torchvision:resnet18")      # random weights (offline), a warning
    >>> print(caught[0].message)                                    # doctest: +ELLIPSIS
    torchvision:resnet18 has random weights; pass weights='DEFAULT' for the pretrained ones...
    >>> loaded.preprocessing.input_size, loaded.preprocessing.mean
    ((224, 224), (0.485, 0.456, 0.406))
    >>> loaded.class_names[281]
    'tabby'
    >>> builtin = cnnviz.load_model("builtin:photos")                # shipped with cnnviz: trained, offline
    >>> builtin.preprocessing.input_size, builtin.class_names[3]
    ((64, 64), 'chelsea')
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from cnnviz.errors import CnnvizError, CnnvizWarning


from cnnviz.core.model import (
    LoadedModel, declared_class_names, declared_preprocessing, first_conv_channels, float_tuple, with_input_size,
    input_size_pair, non_finite_parameter, resolve_device, valid_normalisation,
)
from cnnviz.models import zoo
from cnnviz.models.from_factory import SPEC_HELP, load_factory
from cnnviz.models.from_file import apply_state_dict, load_file, read_state_dict
from cnnviz.models.from_torchvision import load_torchvision


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
            apply_state_dict(module, read_state_dict(weights), type(module).__name__)
        loaded = LoadedModel(
            module, declared_preprocessing(module, infer=False), declared_class_names(module),
            spec=type(module).__name__, weights="as given" if weights is None else str(weights),
        )
    else:
        loaded = _load_spec(str(spec).strip(), weights, trusted)
        loaded.module.eval()
    loaded = _override(loaded, mean, std, input_size, class_names)
    _warn_non_finite(loaded)
    if device is not None:
        loaded.module.to(resolve_device(device))
    return loaded


def _warn_non_finite(loaded: LoadedModel) -> None:
    """Say which parameter (or buffer) first holds NaN or infinity: every result would be meaningless."""
    found = non_finite_parameter(loaded)
    if found is not None:
        warnings.warn(
            f"{loaded.spec or type(loaded.module).__name__}: parameter {found[0]} holds {found[1]} non-finite "
            "value(s) (NaN or infinity), so its outputs will be meaningless; check the weights file",
            CnnvizWarning, stacklevel=3,
        )


def _load_spec(spec: str, weights, trusted: bool) -> LoadedModel:
    if not spec:
        raise CnnvizError(SPEC_HELP.format(spec=spec))
    prefix, colon, rest = spec.partition(":")
    if colon and prefix == "torchvision":
        return load_torchvision(rest.strip(), weights)
    if colon and prefix == "timm":
        from cnnviz.models.from_timm import load_timm

        return load_timm(rest.strip(), weights)
    if colon and prefix == "builtin":
        return _with_weights(zoo.load(rest.strip()), weights, spec)
    if spec.endswith(".py"):
        raise CnnvizError(
            f"{spec} is a Python file; name the function in it that builds the model: {spec}:FUNCTION"
        )
    if os.path.exists(spec) or spec.endswith((".pt", ".pth", ".pt2", ".ts", ".jit")):
        return _with_weights(load_file(spec, trusted), weights, spec)
    if colon:
        return _with_weights(load_factory(spec), weights, spec)
    return _unknown_spec(spec)



def _unknown_spec(spec: str):
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if spec in names:
        raise CnnvizError(f"unknown model spec {spec!r}; did you mean 'torchvision:{spec}'?")
    raise CnnvizError(SPEC_HELP.format(spec=spec))


def _with_weights(loaded: LoadedModel, weights, spec: str) -> LoadedModel:
    if weights is None:
        return loaded
    if isinstance(loaded.module, torch.jit.ScriptModule):
        raise CnnvizError(f"{spec} is a TorchScript archive with its own weights; drop weights=...")
    apply_state_dict(loaded.module, read_state_dict(weights), spec)
    loaded.weights = str(weights)
    return loaded


def _override(loaded: LoadedModel, mean, std, input_size, class_names) -> LoadedModel:
    pre = loaded.preprocessing
    changes = {}
    if mean is not None or std is not None:
        mean_values = float_tuple(mean) if mean is not None else None
        std_values = float_tuple(std) if std is not None else None
        for what, given, values in (("mean", mean, mean_values), ("std", std, std_values)):
            if given is not None and not values:
                raise CnnvizError(f"{what} must be one number or one per input channel, got {given!r}")
        given = [len(v) for v in (mean_values, std_values) if v is not None and len(v) > 1]
        channels = first_conv_channels(loaded.module) or (given[0] if given else pre.channels)
        new_mean = _per_channel(mean_values, channels, "mean") if mean_values else pre.mean
        new_std = _per_channel(std_values, channels, "std") if std_values else pre.std
        if len(new_mean) != len(new_std):
            raise CnnvizError(
                f"mean has {len(new_mean)} values but std has {len(new_std)}; give one per input channel"
            )
        if not valid_normalisation(new_mean, new_std):
            raise CnnvizError("mean and std must be finite numbers and std greater than 0 (it divides the input)")
        changes.update(mean=new_mean, std=new_std, known=True)
    if input_size is not None:
        changes.update(input_size=input_size_pair(input_size), resize=None, size_from="declared")
    if changes:
        loaded.preprocessing = replace(pre, **changes)
    # nothing declared a size: find one that runs (after the weights, before the move to a device)
    loaded.preprocessing = with_input_size(loaded.preprocessing, loaded.module)
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

"""Models from ``torchvision.models``: ``torchvision:NAME`` with a weights name or file."""
from __future__ import annotations

import warnings

from torch import nn

from cnnviz.errors import CnnvizError, CnnvizWarning, did_you_mean, first_line


from cnnviz.core.model import (
    LoadedModel, Preprocessing,
)
from cnnviz.models.from_file import AUXILIARY_PREFIXES, apply_state_dict, read_state_dict, state_dict_problems, looks_like_path


def load_torchvision(name: str, weights) -> LoadedModel:
    from torchvision import models

    names = models.list_models(module=models)
    if name not in names:
        raise CnnvizError(
            f"torchvision has no classification model {name!r}; {did_you_mean(name, names)}"
        )
    weights_enum = models.get_model_weights(name)
    chosen = None
    if weights is not None and not looks_like_path(weights):
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
            f"{spec} has random weights; pass weights='DEFAULT' for the "
            "pretrained ones, or a state-dict file",
            CnnvizWarning,
            stacklevel=4,
        )
        return LoadedModel(module, preprocessing, categories, spec, "random")
    state = read_state_dict(weights)
    module = _fit_torchvision(name, module, state)
    apply_state_dict(module, state, spec)
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
            "state-dict file: weights='PATH'"
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

    problems = state_dict_problems(module, state)
    if not any(problems.values()):
        return module
    kwargs = _quiet_init(name)
    model_keys = module.state_dict().keys()
    if any(k.startswith(AUXILIARY_PREFIXES) for k in model_keys) and not any(
        k.startswith(AUXILIARY_PREFIXES) for k in state
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
    return rebuilt if not any(state_dict_problems(rebuilt, state).values()) else module


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

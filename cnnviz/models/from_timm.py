"""Models from timm (``pip install timm``): ``timm:NAME`` with random weights, ``DEFAULT`` (timm's
pretrained ones, downloaded by timm from the Hugging Face hub when online) or a state-dict file.

The preprocessing is the model's own ``pretrained_cfg`` (input size, mean, std, crop fraction),
which timm keeps on every model it builds, pretrained or not (:func:`cnnviz.core.model.timm_preprocessing`,
also read for a timm model that comes from a factory); ImageNet-1k models get the class names timm
ships.
"""
from __future__ import annotations

import warnings

from torch import nn

from cnnviz.core.model import LoadedModel, Preprocessing, timm_preprocessing
from cnnviz.errors import CnnvizError, CnnvizWarning, did_you_mean, first_line
from cnnviz.models.from_file import apply_state_dict, looks_like_path, read_state_dict


def load_timm(name: str, weights) -> LoadedModel:
    try:
        import timm
    except ImportError:
        raise CnnvizError("timm:NAME needs timm, which is not installed: pip install timm") from None
    names = timm.list_models()
    if not name or name not in names and name.split(".")[0] not in names:
        raise CnnvizError(f"timm has no model {name!r}; {did_you_mean(name, names) or 'timm.list_models() lists them'}")
    spec = f"timm:{name}"
    pretrained = weights is not None and not looks_like_path(weights)
    if pretrained and str(weights).upper() not in ("DEFAULT", "PRETRAINED"):
        raise CnnvizError(f"{weights!r} is neither a file nor DEFAULT; for timm models pass weights='DEFAULT' "
                          "(timm's pretrained weights, downloaded when online) or the path of a state-dict file")
    try:
        module = timm.create_model(name, pretrained=pretrained)
    except Exception as error:  # no connection, no weights of that name on the hub, a broken cache
        if not pretrained:
            raise CnnvizError(f"timm could not build {name}: {first_line(error)[:200]}") from None
        raise CnnvizError(
            f"could not get the pretrained weights of {spec} ({first_line(error)[:160]}); timm downloads them once "
            "from the Hugging Face hub, which needs a connection; offline, pass a state-dict file: weights='PATH'"
        ) from error
    if weights is None:
        warnings.warn(f"{spec} has random weights; pass weights='DEFAULT' for timm's pretrained ones, or a "
                      "state-dict file", CnnvizWarning, stacklevel=4)
    elif not pretrained:
        apply_state_dict(module, read_state_dict(weights), spec)
    preprocessing = timm_preprocessing(module) or Preprocessing()
    return LoadedModel(module, preprocessing, _class_names(module), spec,
                       "random" if weights is None else "pretrained" if pretrained else str(weights))


def _class_names(module: nn.Module) -> list[str] | None:
    """ImageNet-1k's class names (timm ships them) for a model with 1000 outputs trained on it."""
    config = getattr(module, "pretrained_cfg", None) or {}
    if getattr(module, "num_classes", None) != 1000 or config.get("num_classes") != 1000:
        return None
    tag = str(config.get("tag") or "")
    if tag and "in1k" not in tag and "in12k_ft_in1k" not in tag and "in22k_ft_in1k" not in tag:
        return None
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]
    except Exception:  # an older timm without the class names
        return None

"""Activations of one image: the feature maps a model computes at chosen layers.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> seen = cnnviz.activations(loaded, "sample:chelsea", ["features.2", "features.12"], top=16)
    >>> seen["features.2"].maps.shape            # all 16 channels, 64 x 64 maps
    torch.Size([16, 64, 64])
    >>> seen["features.2"].order[:3]             # channels by mean activation, highest first
    [3, 15, 5]
    >>> figure = cnnviz.plots.activations(seen, "features.2", scope="layer", overlay=True)
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from cnnviz.core.display import Shows
from cnnviz.errors import CnnvizError
from cnnviz.inputs.batches import stack_images
from cnnviz.inputs.images import display_image
from cnnviz.core.model import preprocessing_of
from cnnviz.core.probe import probe
from cnnviz.core.references import Reference, channel_list


@dataclass(repr=False)
class LayerActivations(Shows):
    """The output of one layer for one image.

    Attributes:
        layer: the layer reference.
        maps: every channel, ``C x H x W`` (``C`` for a layer without spatial dimensions).
        order: the channels to show, in showing order (by mean activation, highest first,
            unless chosen otherwise).
    """

    layer: str
    maps: torch.Tensor
    order: list[int]

    def __repr__(self) -> str:
        return f"LayerActivations({self.layer!r}, {tuple(self.maps.shape)}, {len(self.order)} shown)"

    @property
    def spatial(self) -> bool:
        """Whether the layer has 2-D maps (``C x H x W``)."""
        return self.maps.dim() == 3

    def channel_range(self, channel: int) -> tuple[float, float]:
        """Raw minimum and maximum of one channel."""
        values = self.maps[channel]
        return float(values.min()), float(values.max())

    def value_range(self) -> tuple[float, float]:
        """Raw minimum and maximum over every channel of the layer."""
        return float(self.maps.min()), float(self.maps.max())

    def to_dict(self) -> dict:
        means = self.maps.flatten(1).mean(dim=1) if self.spatial else self.maps
        return {
            "layer": self.layer,
            "shape": list(self.maps.shape),
            "min": self.value_range()[0],
            "max": self.value_range()[1],
            "shown_channels": self.order,
            "channel_means": [round(float(m), 6) for m in means],
        }


@dataclass
class Activations(Shows):
    """Activations of one image at one or more layers.

    Attributes:
        source: where the image came from.
        image: the model input, de-normalised, as the model saw it: ``3 x H x W`` RGB in [0, 1]
            (a greyscale input is repeated into three channels).
        layers: layer reference -> :class:`LayerActivations`, in the order asked.
    """

    source: str
    image: torch.Tensor
    layers: dict[str, LayerActivations] = field(default_factory=dict)

    def __getitem__(self, layer: str) -> LayerActivations:
        if layer not in self.layers:
            raise CnnvizError(f"no activations for {layer!r}; these layers were captured: {', '.join(self.layers)}")
        return self.layers[layer]

    def value_range(self) -> tuple[float, float]:
        """Raw minimum and maximum over every captured layer (the global scope)."""
        ranges = [layer.value_range() for layer in self.layers.values()]
        return min(r[0] for r in ranges), max(r[1] for r in ranges)

    def to_dict(self) -> dict:
        return {"image": self.source, "layers": [layer.to_dict() for layer in self.layers.values()]}

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}: {tuple(layer.maps.shape)}" for name, layer in self.layers.items())
        return f"Activations({self.source!r}, {shapes})"


def activations(
    model,
    image: str | os.PathLike | Image.Image | torch.Tensor,
    layer: Reference | Sequence[Reference],
    *,
    top: int | None = None,
    order: str = "mean",
    channels=None,
) -> Activations:
    """The feature maps of one image at one or more layers, in one forward pass (early exit).

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left untouched).
        image: an image spec (file, ``sample:NAME``), a PIL image, a ``C x H x W`` tensor in
            [0, 1] (prepared with the model's preprocessing), or a ``1 x C x H x W`` tensor that is
            already a normalised model input.
        layer: one layer reference or several; ``"features.3:5"`` shows only channel 5.
        top: show only this many channels per layer.
        order: ``"mean"`` (highest mean activation first) or ``"index"`` (channel order).
        channels: channels to show (``"0-15"``, a list); overrides ``top`` and ``order``.

    Returns:
        :class:`Activations` with every channel of each layer and the showing order.
    """
    if order not in ("mean", "index"):
        raise CnnvizError(f"order must be 'mean' or 'index', not {order!r}")
    if top is not None and top < 1:
        raise CnnvizError(f"top must be at least 1, got {top}")
    preprocessing = preprocessing_of(model)
    inputs, sources = stack_images(image, preprocessing, limit=2)
    if len(inputs) != 1:
        given = f"a batch of {len(image)}" if isinstance(image, torch.Tensor) else "several images"
        raise CnnvizError(f"activations are of one image; got {given}: give one file, sample:NAME, PIL image or tensor")
    source = sources[0]
    refs = [layer] if isinstance(layer, (str, torch.nn.Module)) else list(layer)
    if not refs:
        raise CnnvizError("name at least one layer")
    with probe(model, refs) as recorder:
        recorder.run(inputs)
        resolved = recorder.references
        result = Activations(source, display_image(inputs[0], preprocessing))
        for key, ref in resolved.items():
            full = recorder[ref.layer_text if ref.channel is not None else key]
            ref.check(full.shape)  # a channel or position out of range: one clear line
            maps = full[0].detach().float().cpu()
            if maps.dim() not in (1, 3):
                raise CnnvizError(
                    f"{ref.layer_text} has output shape {tuple(full.shape)}; activations are shown "
                    "for 2-D feature maps (N x C x H x W) and vectors (N x C)"
                )
            if ref.channel is not None:
                shown = [ref.channel]
            elif channels is not None:
                shown = channel_list(channels, maps.shape[0])
            else:
                shown = _order(maps, order)
                shown = shown[:top] if top else shown
            name = key if isinstance(key, str) else str(ref)
            result.layers[name] = LayerActivations(ref.layer_text, maps, shown)
    return result


def _order(maps: torch.Tensor, order: str) -> list[int]:
    if order == "index":
        return list(range(maps.shape[0]))
    means = maps.flatten(1).mean(dim=1) if maps.dim() == 3 else maps
    return [int(i) for i in torch.argsort(means, descending=True, stable=True)]

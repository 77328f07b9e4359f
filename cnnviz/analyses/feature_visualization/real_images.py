"""What real images make a unit do: the measure a render must beat, and the photograph to start
from when a render cannot get going.

A render of a unit succeeds when its final value passes the largest value any real image gives
that unit in the same measure: a channel's (or class's, or direction's) spatial mean is compared
with the largest per-image spatial mean, a neuron with the largest value anywhere in its map (an
upper bound for any one position). A negative render (the unit minimised) is compared with the
smallest. The real images are the sample photographs by default (or the user's), run at the
model's own input size with its preprocessing; a ``stats.npz`` from ``cnnviz stats`` (or a
:class:`cnnviz.Statistics`) gives the maxima of a whole dataset instead.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> reference = real_responses(loaded, "features.12", "channel", [0, 1, 2], images="samples")
    >>> reference.source, len(reference.maxima)             # the largest per-image means, one per channel
    ('17 sample images', 3)
    >>> [reference.sources[index] for index in reference.best]       # and which photograph gave each
    ['sample:hubble_deep_field', 'sample:coins', 'sample:grass']
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from cnnviz.analyses.statistics_results import array_key
from cnnviz.core.model import preprocessing_of
from cnnviz.core.probe import probe
from cnnviz.core.softmax import SkipSoftmax
from cnnviz.errors import CnnvizError
from cnnviz.inputs.batches import image_batches, names, no_images_message

#: real images kept for a reference (the first that can be read); a dataset's maxima come from stats
MAX_IMAGES = 256


@dataclass
class RealResponses:
    """Each unit's largest and smallest response to the real images, and which image gave it.

    Attributes:
        maxima, minima: per unit, in the unit's measure.
        best, worst: per unit, the index of the image that gave the maximum (minimum).
        images: the real images, ``N x C x H x W`` uint8 (what a render may start from).
        sources: each image's name.
        source: where the maxima come from, in words (``17 sample images``, ``stats.npz (5000 images)``).
    """

    maxima: list[float]
    minima: list[float]
    best: list[int]
    worst: list[int]
    images: torch.Tensor
    sources: list[str]
    source: str

    def start(self, unit: int, negative: bool, size: tuple[int, int]) -> tuple[torch.Tensor, str]:
        """The image that moves unit ``unit`` most (``C x H x W`` in [0, 1]) cut to the aspect of
        ``size`` at its centre and resized to it, and its name."""
        index = self.worst[unit] if negative else self.best[unit]
        image = self.images[index].float() / 255
        _, rows, columns = image.shape
        scale = min(rows / size[0], columns / size[1])
        height, width = int(size[0] * scale), int(size[1] * scale)
        top, left = (rows - height) // 2, (columns - width) // 2
        image = F.interpolate(image[None, :, top:top + height, left:left + width], size=tuple(size), mode="area")[0]
        return image, self.sources[index]


def measure(values: torch.Tensor, kind: str, negative: bool = False, direction: torch.Tensor | None = None) -> torch.Tensor:
    """Each image's response per channel (``N x C``; ``N x 1`` for a direction) in the measure of
    the objective ``kind`` (``channel``, ``class_logit``, ``neuron``, ``direction``)."""
    maps = values.float().flatten(2) if values.dim() > 2 else values.float()[:, :, None]
    if kind == "direction":
        return torch.einsum("bcp,c->bp", maps, direction.to(maps.device, maps.dtype)).mean(dim=1, keepdim=True)
    if kind == "neuron":
        return maps.amin(dim=2) if negative else maps.amax(dim=2)
    return maps.mean(dim=2)


def real_responses(model, layer: str, kind: str, channels: list[int], images="samples", *, negative: bool = False,
                   direction: torch.Tensor | None = None, softmax: int | None = None, statistics=None,
                   batch_size: int = 32) -> RealResponses:
    """The responses of ``channels`` of ``layer`` to real images, in the measure of ``kind``.

    Args:
        images: an image spec (``samples``, a folder, files; see :func:`cnnviz.inputs.image_batches`);
            the first :data:`MAX_IMAGES` readable ones are used.
        softmax: which softmax call to skip (a model whose output is a softmax: its input is measured).
        statistics: a :class:`cnnviz.Statistics` or the arrays of a ``stats.npz``; where it has the
            layer, its dataset maxima replace the images' (``mean_maximum`` for a channel or
            class, ``maximum`` for a neuron).
    """
    preprocessing = preprocessing_of(model)
    mean = torch.as_tensor(preprocessing.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(preprocessing.std, dtype=torch.float32).view(1, -1, 1, 1)
    stream = image_batches(images, preprocessing, batch_size, limit=MAX_IMAGES)
    responses, kept, sources = [], [], []
    skip = SkipSoftmax(softmax) if softmax is not None else contextlib.nullcontext()
    with probe(model, [layer]) as recorder, torch.no_grad():
        for batch in stream:
            with skip:
                recorder.run(batch.inputs)
            responses.append(measure(recorder[layer], kind, negative, direction).cpu())
            pixels = (batch.inputs.detach().cpu().float() * std + mean).clamp(0, 1)
            kept.append((pixels * 255).round().to(torch.uint8))
            sources += names(batch.sources, len(sources))
    if not responses:
        raise CnnvizError("no real image to compare the renders with: " + no_images_message(stream.skipped)
                          + " (or reference=None to render without)")
    table = torch.cat(responses)
    table = table[:, [0] * len(channels)] if kind == "direction" else table[:, channels]
    maxima, best = table.max(dim=0)
    minima, worst = table.min(dim=0)
    source = f"{len(table)} {'sample' if _is_samples(images) else 'real'} image{'s' * (len(table) != 1)}"
    maxima = [float(v) for v in maxima]
    dataset = _dataset_maxima(statistics, layer, kind, channels, negative)
    if dataset is not None:
        maxima, source = dataset
    return RealResponses(maxima, [float(v) for v in minima], [int(i) for i in best], [int(i) for i in worst],
                         torch.cat(kept), sources, source)


def _is_samples(images) -> bool:
    return isinstance(images, str) and (images in ("samples", "sample:*") or images.startswith("sample:"))


def _dataset_maxima(statistics, layer: str, kind: str, channels: list[int], negative: bool):
    if statistics is None or negative or kind == "direction":
        return None
    key = "maximum" if kind == "neuron" else "mean_maximum"
    if hasattr(statistics, "layers"):  # a Statistics
        if layer not in statistics.layers or getattr(statistics[layer], key, None) is None:
            return None
        values, count = getattr(statistics[layer], key), statistics.images
    else:  # the arrays of a stats.npz, by their keys there
        if array_key(layer, key) not in statistics:
            return None
        values = statistics[array_key(layer, key)]
        count = int(statistics["images"]) if "images" in statistics else None
    if max(channels) >= len(values):
        return None
    about = f"{count} images of the statistics" if count is not None else "the statistics"
    return [float(values[c]) for c in channels], about


def load_statistics(path) -> dict:
    """The maxima of a ``stats.npz`` from ``cnnviz stats`` (the arrays a reference needs)."""
    import numpy as np

    try:
        with np.load(path) as archive:
            return {key: archive[key] for key in archive.files
                    if key == "images" or key.endswith(("/maximum", "/mean_maximum"))}
    except FileNotFoundError:
        raise CnnvizError(f"statistics file {str(path)!r} does not exist; give the stats.npz that cnnviz.statistics (reports.statistics(...).write, or the "
                          "stats command) wrote") from None
    except Exception as error:
        raise CnnvizError(f"cannot read {str(path)!r} as statistics from cnnviz stats ({type(error).__name__})") from None

"""Statistics of activations over a population of images, streamed in bounded memory.

For every channel of every chosen layer: the count of values, their mean and standard deviation
(float64, merged with Chan's parallel formulas), minimum, maximum, the fraction of positive values,
the fraction near zero, whether the unit is dead (never positive), a histogram over a signed range
(negative values kept), and the dataset exemplars: the top-k images by the channel's largest
value, with the position of that value and a crop of the input around it, and the bottom-k
images by its smallest value (what the channel responds to least), the same way.

Histograms have a fixed number of bins over ``[-R, R]`` where ``R`` is a power of two that grows
(by doubling, which merges pairs of bins exactly) whenever a value falls outside. So every value
is counted, memory does not grow with the number of images, and two statistics merge exactly:
``a.merge(b)`` equals the statistics of both populations streamed together.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> stats = cnnviz.statistics(loaded, "samples", ["features.2", "features.26"])
    >>> layer = stats["features.26"]
    >>> layer.mean.shape, layer.dead.sum()           # per channel
    >>> stats.to_dict()["layers"][0]["mean"]         # per layer
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cnnviz.core.display import Shows
from cnnviz.core.version import __version__
from cnnviz.errors import CnnvizError
from cnnviz.analyses.exemplars import crop_size, exemplar_crops, merge_exemplars
from cnnviz.core import distributed
from cnnviz.inputs.batches import image_batches, no_images_message, shard_images
from cnnviz.core.model import Preprocessing, preprocessing_of
from cnnviz.core.probe import probe
from cnnviz.core.references import Reference

DEFAULT_BINS = 128
DEFAULT_TOP_K = 8
DEFAULT_NEAR_ZERO = 1e-6
CROP_PIXELS = 48  # exemplar crops are stored at most this wide (larger regions are shrunk)

CHECKPOINT_EVERY = 1024  # images of a part of a rank's share, after which it may save a checkpoint
CHECKPOINT_MINUTES = 5.0  # the least time between a rank's checkpoints (cnnviz stats --checkpoint-minutes)

MAX_TOP_K = 64  # exemplars per channel: each keeps a crop, and the figure draws them all


@dataclass(repr=False)
class LayerStatistics(Shows):
    """Per-channel statistics of one layer (arrays over its ``C`` channels).

    Attributes:
        layer: the layer reference.
        count: values seen per channel (images x positions).
        mean, m2: running mean and sum of squared deviations (float64).
        minimum, maximum: extremes.
        mean_maximum: each channel's largest per-image spatial mean (the largest value of the
            objective ``maximize`` uses for a channel, over the population; the value itself for
            N x C outputs such as logits).
        positive: how many values were > 0; near_zero: how many had ``|x| <= near_zero_tolerance``.
        histogram: ``C x bins`` counts over ``(-half_range, half_range]``; bin ``i`` holds
            ``edges[i] < x <= edges[i + 1]``, so zero is counted just below the middle edge and the
            bins above the middle hold exactly the positive values.
        half_range: ``R``, a power of two.
        exemplar_values, exemplar_images, exemplar_positions: ``C x k``: each channel's largest
            values in its top-k images (best first; ties keep the earlier image), the index of the
            image in the population, and the (row, column) of the maximum in the map
            (``C x k x 2``); -1 where fewer than k images were seen.
        exemplar_crops: ``C x k x 3 x S x S`` uint8 RGB crops of the input around each maximum
            (a region of about four map cells, at least 16 pixels, stored at most 48 pixels wide).
        exemplar_sources: the file or sample of each exemplar image (``C`` lists of up to k; ``None``
            for tensors, see :meth:`exemplar_name`).
        bottom_values, bottom_images, bottom_positions, bottom_crops, bottom_sources: the same for
            each channel's smallest values (lowest first: the images it responds to least, and
            where); ``None`` in statistics saved before they were kept.
        map_size: ``(H, W)`` of the layer's maps; input_size: ``(H, W)`` of the inputs.
    """

    layer: str
    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    positive: np.ndarray
    near_zero: np.ndarray
    histogram: np.ndarray
    half_range: float
    exemplar_values: np.ndarray
    exemplar_images: np.ndarray
    exemplar_positions: np.ndarray
    exemplar_crops: np.ndarray
    exemplar_sources: list[list[str]]
    map_size: tuple[int, int]
    input_size: tuple[int, int]
    near_zero_tolerance: float = DEFAULT_NEAR_ZERO
    mean_maximum: np.ndarray | None = None
    bottom_values: np.ndarray | None = None
    bottom_images: np.ndarray | None = None
    bottom_positions: np.ndarray | None = None
    bottom_crops: np.ndarray | None = None
    bottom_sources: list[list[str]] | None = None

    def __repr__(self) -> str:
        return f"LayerStatistics({self.layer!r}, {self.channels} channels, {int(self.count.max()) if self.count.size else 0} values per channel)"

    @property
    def channels(self) -> int:
        return len(self.count)

    @property
    def bins(self) -> int:
        return self.histogram.shape[1]

    @property
    def edges(self) -> np.ndarray:
        """The ``bins + 1`` bin edges, from ``-R`` to ``R``."""
        return np.linspace(-self.half_range, self.half_range, self.bins + 1)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per channel."""
        return np.sqrt(self.m2 / np.maximum(self.count, 1))

    @property
    def positive_fraction(self) -> np.ndarray:
        return self.positive / np.maximum(self.count, 1)

    @property
    def near_zero_fraction(self) -> np.ndarray:
        return self.near_zero / np.maximum(self.count, 1)

    @property
    def dead(self) -> np.ndarray:
        """Channels never positive over the whole population."""
        return self.positive == 0

    def layer_summary(self) -> dict:
        """The same statistics for the whole layer (all channels pooled)."""
        total = int(self.count.sum())
        mean = float((self.mean * self.count).sum() / max(total, 1))
        m2 = float(self.m2.sum() + (self.count * (self.mean - mean) ** 2).sum())
        return {
            "layer": self.layer,
            "channels": self.channels,
            "map_size": list(self.map_size),
            "count": total,
            "mean": mean,
            "std": math.sqrt(m2 / max(total, 1)),
            "min": float(self.minimum.min()),
            "max": float(self.maximum.max()),
            "positive_fraction": float(self.positive.sum() / max(total, 1)),
            "near_zero_fraction": float(self.near_zero.sum() / max(total, 1)),
            "near_zero_tolerance": self.near_zero_tolerance,
            "dead_channels": [int(c) for c in np.flatnonzero(self.dead)],
            "histogram_range": [-self.half_range, self.half_range],
            "histogram": [int(v) for v in self.histogram.sum(axis=0)],
        }

    def channel_table(self) -> list[dict]:
        """One JSON-ready row per channel."""
        return [
            {
                "channel": c,
                "mean": float(self.mean[c]),
                "std": float(self.std[c]),
                "min": float(self.minimum[c]),
                "max": float(self.maximum[c]),
                "max_image_mean": float(self.mean_maximum[c]) if self.mean_maximum is not None else None,
                "positive_fraction": float(self.positive_fraction[c]),
                "near_zero_fraction": float(self.near_zero_fraction[c]),
                "dead": bool(self.dead[c]),
                "exemplars": [
                    {"image": self.exemplar_name(c, i), "value": float(self.exemplar_values[c, i]),
                     "position": [int(p) for p in self.exemplar_positions[c, i]]}
                    for i in range(len(self.exemplar_sources[c]))
                ],
                **({"bottom_exemplars": [
                    {"image": self.exemplar_name(c, i, bottom=True), "value": float(self.bottom_values[c, i]),
                     "position": [int(p) for p in self.bottom_positions[c, i]]}
                    for i in range(len(self.bottom_sources[c]))
                ]} if self.bottom_sources is not None else {}),
            }
            for c in range(self.channels)
        ]

    def exemplar_name(self, channel: int, slot: int, bottom: bool = False) -> str:
        """Where exemplar ``slot`` of ``channel`` came from (of the bottom exemplars with
        ``bottom``): its file or sample, or ``image N`` (its place in the population) for tensors."""
        sources, images = (self.bottom_sources, self.bottom_images) if bottom else (self.exemplar_sources, self.exemplar_images)
        name = sources[channel][slot]
        return name if name is not None else f"image {int(images[channel, slot])}"

    def rebinned(self, half_range: float) -> LayerStatistics:
        """The same statistics with the histogram over a larger power-of-two range (exact)."""
        histogram = self.histogram
        current = self.half_range
        while current < half_range:
            histogram = _double_range(histogram)
            current *= 2
        if current != half_range:
            raise CnnvizError(f"cannot rebin a range of {self.half_range} to {half_range}")
        return replace(self, histogram=histogram, half_range=current)

    def merge(self, other: LayerStatistics, image_offset: int) -> LayerStatistics:
        """These statistics and ``other``'s together; ``other``'s image indices move up by
        ``image_offset`` (the number of images behind ``self``)."""
        mine = (self.channels, self.bins, self.map_size, self.input_size, self.exemplar_values.shape[1], self.near_zero_tolerance)
        theirs = (other.channels, other.bins, other.map_size, other.input_size, other.exemplar_values.shape[1], other.near_zero_tolerance)
        if mine != theirs:
            raise CnnvizError(
                f"cannot merge statistics of {self.layer} taken differently (channels, bins, map size, "
                f"input size, top_k, near-zero tolerance: {mine} and {theirs}); gather both the same way"
            )
        half_range = max(self.half_range, other.half_range)
        first, second = self.rebinned(half_range), other.rebinned(half_range)
        count = first.count + second.count
        delta = second.mean - first.mean
        safe = np.maximum(count, 1)
        mean = first.mean + delta * second.count / safe
        m2 = first.m2 + second.m2 + delta**2 * first.count * second.count / safe
        merged = replace(
            first,
            count=count, mean=mean, m2=m2,
            minimum=np.minimum(first.minimum, second.minimum),
            maximum=np.maximum(first.maximum, second.maximum),
            mean_maximum=(np.maximum(first.mean_maximum, second.mean_maximum)
                          if first.mean_maximum is not None and second.mean_maximum is not None else None),
            positive=first.positive + second.positive,
            near_zero=first.near_zero + second.near_zero,
            histogram=first.histogram + second.histogram,
        )
        merged = merge_exemplars(merged, second, image_offset)
        if first.bottom_values is None or second.bottom_values is None:  # statistics saved before they were kept
            return replace(merged, bottom_values=None, bottom_images=None, bottom_positions=None, bottom_crops=None,
                           bottom_sources=None)
        return merge_exemplars(merged, second, image_offset, bottom=True)


@dataclass
class Statistics(Shows):
    """Statistics of a population of images at several layers.

    Attributes:
        layers: layer reference -> :class:`LayerStatistics`.
        images: how many images were seen.
        skipped: files of a folder that could not be read as images.
        resumed: how many of the images were taken from checkpoints of an earlier run that
            stopped part-way (``checkpoint``), not read again.
    """

    layers: dict[str, LayerStatistics]
    images: int
    skipped: list[str] = field(default_factory=list)
    resumed: int = 0

    def __getitem__(self, layer: str) -> LayerStatistics:
        if layer not in self.layers:
            raise CnnvizError(f"no statistics for {layer!r}; these layers were measured: {', '.join(self.layers)}")
        return self.layers[layer]

    def merge(self, other: Statistics) -> Statistics:
        """The statistics of both populations together (``other``'s images after ``self``'s)."""
        if list(self.layers) != list(other.layers):
            raise CnnvizError("cannot merge statistics of different layers")
        layers = {name: self.layers[name].merge(other.layers[name], self.images) for name in self.layers}
        return Statistics(layers, self.images + other.images, self.skipped + other.skipped)

    def to_dict(self) -> dict:
        """JSON-ready: the population, then per layer its summary and one row per channel."""
        return {
            "images": self.images,
            "skipped": self.skipped,
            "layers": [{**layer.layer_summary(), "per_channel": layer.channel_table()} for layer in self.layers.values()],
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every array, named ``LAYER/field``, for ``numpy.savez``."""
        arrays = {"images": np.array(self.images)}
        for name, layer in self.layers.items():
            for key in ("count", "mean", "m2", "minimum", "maximum", "mean_maximum", "positive", "near_zero",
                        "histogram", "exemplar_values", "exemplar_images", "exemplar_positions", "exemplar_crops",
                        "bottom_values", "bottom_images", "bottom_positions", "bottom_crops"):
                if getattr(layer, key) is not None:
                    arrays[f"{name}/{key}"] = getattr(layer, key)
            arrays[f"{name}/std"] = layer.std
            arrays[f"{name}/edges"] = layer.edges
            arrays[f"{name}/dead"] = layer.dead
        return arrays

    def __repr__(self) -> str:
        layers = ", ".join(f"{name} ({layer.channels} channels)" for name, layer in self.layers.items())
        return f"Statistics({self.images} images: {layers})"


def statistics(
    model,
    images,
    layer: Reference | Sequence[Reference],
    *,
    batch_size: int = 32,
    bins: int = DEFAULT_BINS,
    top_k: int = DEFAULT_TOP_K,
    near_zero: float = DEFAULT_NEAR_ZERO,
    progress: Callable[[int], None] | None = None,
    workers: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_minutes: float = CHECKPOINT_MINUTES,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> Statistics:
    """Stream a population of images through the model and gather activation statistics.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left untouched).
        images: an image spec (a folder, ``samples``, a file, ``sample:NAME``), a list of specs or
            PIL images (prepared with the model's preprocessing), or any iterable of model inputs:
            normalised tensors ``N x C x H x W`` or ``C x H x W``, or ``(inputs, labels)`` pairs as a
            ``DataLoader`` yields them.
        layer: one layer or several (whole layers: no channel or position).
        batch_size: images per forward pass (for specs and PIL images).
        bins: histogram bins (a multiple of 4).
        top_k: exemplars kept per channel, of the largest values and of the smallest.
        near_zero: ``|x| <=`` this counts as near zero.
        progress: called with the number of images of each batch once it is done.
        workers: DataLoader worker processes decoding image files while the model runs (0: this
            process decodes them); the same statistics either way.
        checkpoint: a folder where each rank (one process: the one) saves its statistics so far,
            as ``rank-RANK-of-RANKS/statistics.npz``, after a part of its images once
            ``checkpoint_minutes`` have passed since its last save (and, in a group, when its
            share is done); a later call with the same model, images, layers, settings and
            number of ranks goes on from there instead of reading those images again (a run that
            was killed, or failed on a bad image it can now read). Each rank removes its file
            once the whole result is there. The images must be given so that they can be resumed
            part-way: a folder, a file list, a list, a 4-D tensor or a Dataset (not a DataLoader).
        checkpoint_minutes: the least time between two checkpoints of a rank (0: after every part).
        checkpoint_every: the images of a part (rounded up to whole batches): what a killed run
            reads again at most, besides the time since its last checkpoint.

    Returns:
        :class:`Statistics`. Files of a folder (or of a ``.txt`` list) that are not images are
        skipped and listed.

    Inside a ``torch.distributed`` process group (``torchrun``), each rank streams its contiguous
    share of the images (:func:`cnnviz.inputs.batches.shard_images`: not a DataLoader, give its
    Dataset) and every rank returns the statistics of all of them, merged exactly in rank order: the
    same counts, histograms and exemplars as one process, moments equal within rounding.

    Raises:
        CnnvizError: no image could be read, a reference names a channel, bad parameters; in a
            group, on every rank, when any rank failed (naming it).
    """
    if bins < 4 or bins % 4:
        raise CnnvizError(f"bins must be a positive multiple of 4, got {bins}")
    if top_k < 1 or batch_size < 1:
        raise CnnvizError("top_k and batch_size must be at least 1")
    if top_k > MAX_TOP_K:
        raise CnnvizError(f"top_k is at most {MAX_TOP_K} exemplars per channel (each keeps an image crop), not {top_k}")
    refs = [layer] if isinstance(layer, (str, torch.nn.Module)) else list(layer)
    if not refs:
        raise CnnvizError("name at least one layer")
    rank, size = distributed.rank_and_size()
    # inside a process group each rank takes its share of the images (whole batches: one process's
    # sums), listed inside together() so that a folder one machine lacks stops every rank; the
    # shares' statistics are merged in rank order (one process: its one part)
    # rank 0's progress shows every rank's images (their counts meet in the group's store)
    shown = distributed.SharedProgress(progress) if size > 1 else progress

    def this_ranks_part():
        if checkpoint is not None:
            return _resumable(model, images, refs, batch_size, bins, top_k, near_zero, shown, workers,
                              Path(checkpoint).expanduser(), checkpoint_every, checkpoint_minutes)
        share = images if size == 1 else shard_images(images, rank, size, batch_size)
        return _gather(model, share, refs, batch_size, bins, top_k, near_zero, shown, workers)

    with shown if size > 1 else contextlib.nullcontext():
        result, skipped, resumed = _merged(this_ranks_part, rank, size)
    if size > 1:
        distributed.tidy()
    if result is None:
        raise CnnvizError(no_images_message(skipped))
    result.skipped = skipped
    if checkpoint is not None:  # the whole result is here: this rank's checkpoint is spent
        result.resumed = resumed
        _forget(Path(checkpoint).expanduser(), rank, size)
    return result


def _merged(work, rank: int, size: int) -> tuple[Statistics | None, list[str], int]:
    """Run ``work`` (this rank's ``(statistics, skipped)``) and merge every rank's in rank order:
    the statistics (``None`` without images), the files skipped and the images resumed. In a
    group, in two steps: first every rank's statistics with, in place of each exemplar's crop,
    where it is (rank and slot); merged, they say which crops won, and only those travel."""
    if size == 1:
        parts = [work()]
    else:
        kept = {}

        def light_part():
            part, names = work()
            kept["part"] = part
            return _crops_left_out(part, rank), names

        parts = distributed.together(light_part)
    skipped = [name for _, names in parts for name in names]
    result = None
    for part, _ in parts:
        if part is not None:
            result = part if result is None else result.merge(part)
    if result is None:
        return None, skipped, 0
    resumed = sum(part.resumed for part, _ in parts if part is not None)
    if size > 1:
        sizes = next(part.crop_sizes for part, _ in parts if part is not None)
        won = distributed.together(lambda: _crops_won(result, kept["part"], rank))
        result = _with_crops(result, won, sizes)
    return result, skipped, resumed


def _crops_left_out(part: Statistics | None, rank: int) -> Statistics | None:
    """``part`` with each exemplar's crop replaced by where it is, ``rank * k + slot`` (``C x k x 1``;
    -1 where there is none), for a merge that moves no crop; the crops' sizes kept aside."""
    if part is None:
        return None
    layers = {}
    for name, layer in part.layers.items():
        k = layer.exemplar_values.shape[1]
        slots = rank * k + np.arange(k)[None, :, None]
        where = {f"{prefix}_crops": np.where(getattr(layer, f"{prefix}_images")[:, :, None] >= 0, slots, -1)
                 for prefix in ("exemplar", "bottom") if getattr(layer, f"{prefix}_crops") is not None}
        layers[name] = replace(layer, **where)
    light = Statistics(layers, part.images, part.skipped, part.resumed)
    light.crop_sizes = {name: layer.exemplar_crops.shape[2:] for name, layer in part.layers.items()}
    return light


def _crops_won(merged: Statistics, part: Statistics | None, rank: int) -> dict:
    """The crops of this rank that the merged statistics kept: per layer and kind, the
    ``(channel, slot)`` of each in the merged arrays and the crops themselves."""
    won = {}
    if part is None:
        return won
    for name, layer in merged.layers.items():
        for prefix in ("exemplar", "bottom"):
            where = getattr(layer, f"{prefix}_crops")
            if where is None:
                continue
            k = layer.exemplar_values.shape[1]
            channel, slot = np.nonzero((where[:, :, 0] >= 0) & (where[:, :, 0] // k == rank))
            crops = getattr(part.layers[name], f"{prefix}_crops")[channel, where[channel, slot, 0] % k]
            won[(name, prefix)] = (channel, slot, crops)
    return won


def _with_crops(merged: Statistics, won: list[dict], sizes: dict) -> Statistics:
    """The merged statistics with the crops every rank sent put where they belong."""
    layers = {}
    for name, layer in merged.layers.items():
        crops = {}
        for prefix in ("exemplar", "bottom"):
            if getattr(layer, f"{prefix}_crops") is None:
                continue
            whole = np.zeros((*layer.exemplar_values.shape, *sizes[name]), dtype=np.uint8)
            for sent in won:
                if (name, prefix) in sent:
                    channel, slot, pictures = sent[(name, prefix)]
                    whole[channel, slot] = pictures
            crops[f"{prefix}_crops"] = whole
        layers[name] = replace(layer, **crops)
    return Statistics(layers, merged.images, merged.skipped, merged.resumed)


def _resumable(model, images, refs, batch_size, bins, top_k, near_zero, progress, workers, folder: Path,
               every: int, minutes: float) -> tuple[Statistics | None, list[str]]:
    """This rank's statistics in parts of ``every`` images (whole batches), the result so far
    saved in ``folder`` after a part once ``minutes`` have passed since the last save (in a
    group also after the last part); the parts an earlier run saved are not read again."""
    from cnnviz.core.model import model_key

    rank, size = distributed.rank_and_size()
    if every < 1 or not minutes >= 0:
        raise CnnvizError(f"checkpoint_every must be at least 1 image and checkpoint_minutes 0 or more, got "
                          f"{every} and {minutes}")
    try:
        share = shard_images(images, rank, size, batch_size)
    except CnnvizError:
        raise CnnvizError("a run with checkpoints goes on part-way through its images: give a folder, a file list, a "
                          "list of images, a tensor or a Dataset (not a DataLoader or other iterable)") from None
    every = -(-every // batch_size) * batch_size
    key = hashlib.sha256(json.dumps({
        "model": model_key(model), "layers": [str(ref) for ref in refs], "images": _identity(share),
        "settings": [batch_size, bins, top_k, near_zero], "rank": [rank, size], "cnnviz": __version__,
    }, default=str).encode()).hexdigest()
    path = folder / f"rank-{rank}-of-{size}" / "statistics.npz"  # a folder of its own: ranks never share a record
    done, result, skipped = _restore(path, key)
    resumed = result.images if result is not None else 0
    if resumed and progress is not None:
        progress(resumed)
    saved = time.monotonic()
    for start in range(done, len(share), every):
        part, missed = _gather(model, _part(share, start, start + every), refs, batch_size, bins, top_k, near_zero,
                               progress, workers)
        skipped += missed
        if part is not None:
            result = part if result is None else result.merge(part)
        last = start + every >= len(share)
        # a rank's whole share is kept while the others may still fail; one process is done
        if (last and size > 1) or (not last and time.monotonic() - saved >= 60 * minutes):
            _save(path, key, start + every, result, skipped)
            saved = time.monotonic()
    if result is not None:
        result.resumed = resumed
    return result, skipped


def _identity(share) -> list:
    """What a rank's images are, for its checkpoint's key: the names of files and samples, the
    shape and a digest of a tensor, the type, length and indices of a Dataset."""
    if isinstance(share, torch.Tensor):
        return ["tensor", list(share.shape), hashlib.sha256(share.detach().cpu().contiguous().view(-1)
                                                           .view(torch.uint8).numpy().tobytes()).hexdigest()]
    if isinstance(share, torch.utils.data.Subset):
        indices = list(share.indices)  # a contiguous share: its ends say which
        return ["dataset", type(share.dataset).__qualname__, len(share.dataset), indices[:1], indices[-1:], len(indices)]
    return [str(getattr(item, "spec", item)) if isinstance(item, (str, os.PathLike)) or hasattr(item, "spec")
            else type(item).__qualname__ for item in share]


def _part(share, start: int, stop: int):
    if isinstance(share, torch.utils.data.Subset):
        return torch.utils.data.Subset(share.dataset, share.indices[start:stop])
    return share[start:stop]


def _save(path: Path, key: str, done: int, result: Statistics | None, skipped: list[str]) -> None:
    """A checkpoint: the statistics of the rank's first ``done`` images (arrays, and what no array
    holds as JSON)."""
    from cnnviz.core import output as files

    meta = {"key": key, "done": done, "skipped": skipped, "images": 0, "layers": {}}
    arrays: dict[str, np.ndarray] = {}
    if result is not None:
        meta["images"] = result.images
        for name, layer in result.layers.items():
            meta["layers"][name] = {"half_range": layer.half_range, "map_size": list(layer.map_size),
                                    "input_size": list(layer.input_size), "tolerance": layer.near_zero_tolerance,
                                    "sources": layer.exemplar_sources, "bottom_sources": layer.bottom_sources}
        arrays = {k: v for k, v in result.to_arrays().items() if k.rsplit("/", 1)[-1] in _KEPT}
    arrays["meta"] = np.array(json.dumps(meta))
    files.write_npz(path, arrays)


_KEPT = ("count", "mean", "m2", "minimum", "maximum", "mean_maximum", "positive", "near_zero", "histogram",
         "exemplar_values", "exemplar_images", "exemplar_positions", "exemplar_crops",
         "bottom_values", "bottom_images", "bottom_positions", "bottom_crops")


def _restore(path: Path, key: str) -> tuple[int, Statistics | None, list[str]]:
    """``(images of the share done, their statistics, files skipped)`` from a checkpoint of the
    same run; ``(0, None, [])`` where there is none (or one of another run, which is replaced)."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            if meta.get("key") != key:
                return 0, None, []
            arrays = {name: saved[name] for name in saved.files if name != "meta"}
    except (OSError, ValueError, KeyError):  # none yet, or unreadable (cut short): start afresh
        return 0, None, []
    if not meta["layers"]:
        return meta["done"], None, list(meta["skipped"])
    layers = {}
    for name, info in meta["layers"].items():
        fields = {field_name: arrays.get(f"{name}/{field_name}") for field_name in _KEPT}
        layers[name] = LayerStatistics(
            layer=name, half_range=info["half_range"], map_size=tuple(info["map_size"]),
            input_size=tuple(info["input_size"]), near_zero_tolerance=info["tolerance"],
            exemplar_sources=info["sources"], bottom_sources=info["bottom_sources"], **fields)
    return meta["done"], Statistics(layers, meta["images"], list(meta["skipped"])), list(meta["skipped"])


def _forget(folder: Path, rank: int, size: int) -> None:
    """Remove this rank's checkpoint (rank 0: also those of runs with another number of ranks),
    and the folder once nothing is left in it."""
    from cnnviz.core import output as files

    spent = [folder / f"rank-{rank}-of-{size}"]
    if rank == 0:
        spent += [path for path in folder.glob("rank-*-of-*") if not path.name.endswith(f"-of-{size}")]
    for place in spent:
        checkpoint = place / "statistics.npz"
        if checkpoint.exists():
            files.remove_written(checkpoint)  # the folder goes with it (its record was all that was left)
        with contextlib.suppress(OSError):
            place.rmdir()
    with contextlib.suppress(OSError):  # the last rank to leave finds it empty
        folder.rmdir()


def _gather(model, images, refs, batch_size, bins, top_k, near_zero, progress, workers) -> tuple[Statistics | None, list[str]]:
    """The statistics of ``images`` (``None`` when there was none) and the files skipped."""
    preprocessing = preprocessing_of(model)
    accumulators: dict[str, _Accumulator] = {}
    stream = image_batches(images, preprocessing, batch_size, workers=workers)
    seen = 0
    with probe(model, refs) as recorder:
        names = {}
        for key, ref in recorder.references.items():
            if ref.channel is not None:
                raise CnnvizError(
                    f"statistics are per layer: use {ref.layer_text!r} rather than {str(ref)!r} "
                    "(every channel is measured)"
                )
            names[key] = key if isinstance(key, str) else ref.layer_text
        for batch in stream:
            inputs, sources = batch.inputs, batch.sources
            recorder.run(inputs)
            inputs = inputs.detach().cpu()
            for key, name in names.items():
                values = recorder[key]
                if name not in accumulators:
                    accumulators[name] = _Accumulator(name, values, inputs, bins, top_k, near_zero, preprocessing)
                accumulators[name].add(values, inputs, seen, sources)
            seen += len(inputs)
            if progress is not None:
                progress(len(inputs))
    if seen == 0:
        return None, stream.skipped
    return Statistics({name: accumulator.result() for name, accumulator in accumulators.items()}, seen,
                      stream.skipped), stream.skipped


# --------------------------------------------------------------------------------------------
# accumulation


class _Accumulator:
    """Running statistics of one layer."""

    def __init__(self, name: str, first: torch.Tensor, inputs: torch.Tensor, bins: int, top_k: int, near_zero: float,
                 preprocessing: Preprocessing):
        values = _as_maps(first)
        self.preprocessing = preprocessing
        channels = values.shape[1]
        self.name, self.bins, self.top_k, self.tolerance = name, bins, top_k, near_zero
        self.map_size = tuple(values.shape[2:])
        self.input_size = tuple(inputs.shape[2:])
        self.region = crop_size(self.map_size, self.input_size)
        self.crop = min(self.region, CROP_PIXELS)
        self.count = np.zeros(channels, dtype=np.int64)
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)
        self.minimum = np.full(channels, np.inf)
        self.maximum = np.full(channels, -np.inf)
        self.mean_maximum = np.full(channels, -np.inf)
        self.positive = np.zeros(channels, dtype=np.int64)
        self.near_zero = np.zeros(channels, dtype=np.int64)
        self.histogram = np.zeros((channels, bins), dtype=np.int64)
        self.half_range = _half_range(float(values.min()), float(values.max()))
        self.top = _Ranked(channels, top_k, self.crop, lowest=False)
        self.bottom = _Ranked(channels, top_k, self.crop, lowest=True)

    def add(self, output: torch.Tensor, inputs: torch.Tensor, first_index: int, sources: list[str]) -> None:
        values = _as_maps(output).detach()
        if values.shape[1] != len(self.count) or tuple(values.shape[2:]) != self.map_size:
            raise CnnvizError(
                f"{self.name} changed shape between batches ({tuple(values.shape[1:])}); give images of one size"
            )
        channels = values.shape[1]
        per_channel = values.numel() // channels
        over = (0, 2, 3)
        # Counts are summed as floats, which is exact below 2**24 per channel and batch.
        counting = torch.float32 if per_channel < 2**24 else torch.float64
        low, high = values.amin(dim=over), values.amax(dim=over)
        needed = _half_range(float(low.min()), float(high.max()))
        while self.half_range < needed:
            self.histogram = _double_range(self.histogram)
            self.half_range *= 2
        # Moments of the batch. The sum, where cancellation would hurt a mean near zero, is
        # accumulated in float64. The squared deviations (positive terms, no cancellation) are
        # float32 along each row of a map, then float64; the deviations are taken from the float32
        # mean and corrected for its rounding exactly: sum (x - s)^2 = m2 + n (mean - s)^2.
        total = values.sum(dim=over, dtype=torch.float64)
        batch_mean = total / per_channel
        shift = batch_mean.to(values.dtype)
        deviations = values - shift[None, :, None, None]
        deviations.mul_(deviations)
        second = deviations.sum(dim=3).double().sum(dim=(0, 2))
        del deviations
        batch_m2 = (second - per_channel * (batch_mean - shift.double()) ** 2).clamp_min(0)
        near = values.abs().le(self.tolerance).sum(dim=over, dtype=counting)
        histogram = _histogram(values, self.half_range, self.bins, counting)
        self._combine(per_channel, batch_mean.cpu().numpy(), batch_m2.cpu().numpy())
        self.minimum = np.minimum(self.minimum, low.double().cpu().numpy())
        self.maximum = np.maximum(self.maximum, high.double().cpu().numpy())
        image_means = values.mean(dim=(2, 3), dtype=torch.float64).amax(dim=0)
        self.mean_maximum = np.maximum(self.mean_maximum, image_means.cpu().numpy())
        self.positive += histogram[:, self.bins // 2:].sum(axis=1)  # the bins above zero, exactly
        self.near_zero += near.cpu().numpy().astype(np.int64)
        self.histogram += histogram
        for ranked in (self.top, self.bottom):
            ranked.add(values, inputs, first_index, sources, self.map_size, self.region, self.preprocessing)

    def _combine(self, batch_count: int, batch_mean: np.ndarray, batch_m2: np.ndarray) -> None:
        count = self.count + batch_count
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * batch_count / count
        self.m2 = self.m2 + batch_m2 + delta**2 * self.count * batch_count / count
        self.count = count

    def result(self) -> LayerStatistics:
        top, bottom = self.top.arrays(), self.bottom.arrays()
        return LayerStatistics(
            layer=self.name, count=self.count, mean=self.mean, m2=self.m2, minimum=self.minimum,
            maximum=self.maximum, positive=self.positive, near_zero=self.near_zero,
            histogram=self.histogram, half_range=self.half_range, exemplar_values=top[0],
            exemplar_images=top[1], exemplar_positions=top[2], exemplar_crops=top[3], exemplar_sources=top[4],
            map_size=self.map_size, input_size=self.input_size,
            near_zero_tolerance=self.tolerance, mean_maximum=self.mean_maximum,
            bottom_values=bottom[0], bottom_images=bottom[1], bottom_positions=bottom[2], bottom_crops=bottom[3],
            bottom_sources=bottom[4],
        )


class _Ranked:
    """The running top-k images of every channel by its largest value in the image (or, with
    ``lowest``, its smallest: best first either way), with the position of that value and a crop
    around it."""

    def __init__(self, channels: int, k: int, crop: int, lowest: bool):
        self.k, self.crop, self.lowest = k, crop, lowest
        self.values = torch.full((channels, 0), -math.inf, dtype=torch.float64)  # negated when lowest
        self.images = torch.zeros((channels, 0), dtype=torch.int64)
        self.positions = torch.zeros((channels, 0, 2), dtype=torch.int64)
        self.crops = torch.zeros((channels, 0, 3, crop, crop), dtype=torch.uint8)
        self.sources: list[list[str]] = [[] for _ in range(channels)]

    def add(self, values: torch.Tensor, inputs: torch.Tensor, first_index: int, sources: list[str], map_size,
            region: int, preprocessing: Preprocessing) -> None:
        n, channels, height, width = values.shape
        flat = values.flatten(2)
        peak, where = (flat.min(dim=2) if self.lowest else flat.max(dim=2))  # N x C
        peak = -peak if self.lowest else peak
        where = where.t().cpu()
        candidates = torch.cat([self.values, peak.t().double().cpu()], dim=1)
        images = torch.cat([self.images, (first_index + torch.arange(n)).expand(channels, n)], dim=1)
        positions = torch.stack([where // width, where % width], dim=2)  # C x N x 2
        all_positions = torch.cat([self.positions, positions], dim=1)
        # Best first; stable, so a tie keeps the earlier image (kept ones come before new ones).
        order = torch.sort(candidates, dim=1, descending=True, stable=True).indices[:, : self.k]
        kept = self.values.shape[1]
        new = order >= kept
        crops = torch.empty((channels, order.shape[1], 3, self.crop, self.crop), dtype=torch.uint8)
        if kept:
            old_channel, old_slot = (~new).nonzero(as_tuple=True)
            crops[old_channel, old_slot] = self.crops[old_channel, order[old_channel, old_slot]]
        new_channel, new_slot = new.nonzero(as_tuple=True)
        if len(new_channel):
            image = order[new_channel, new_slot] - kept
            row_column = positions[new_channel, image]
            crops[new_channel, new_slot] = exemplar_crops(
                inputs, image, row_column, map_size, region, self.crop, preprocessing
            )
        names = []
        for channel, picks in enumerate(order.tolist()):
            names.append([self.sources[channel][p] if p < kept else sources[p - kept] for p in picks])
        self.values = torch.gather(candidates, 1, order)
        self.images = torch.gather(images, 1, order)
        self.positions = torch.gather(all_positions, 1, order[..., None].expand(-1, -1, 2))
        self.crops, self.sources = crops, names

    def arrays(self) -> tuple:
        """``(values, images, positions, crops, sources)`` padded to k (NaN, -1 where fewer images
        were seen), the values as they are (not negated)."""
        channels, kept = len(self.sources), self.values.shape[1]
        values = np.full((channels, self.k), np.nan)
        images = np.full((channels, self.k), -1, dtype=np.int64)
        positions = np.full((channels, self.k, 2), -1, dtype=np.int64)
        crops = np.zeros((channels, self.k, 3, self.crop, self.crop), dtype=np.uint8)
        values[:, :kept] = (-self.values if self.lowest else self.values).numpy()
        images[:, :kept] = self.images.numpy()
        positions[:, :kept] = self.positions.numpy()
        crops[:, :kept] = self.crops.numpy()
        return values, images, positions, crops, [list(names) for names in self.sources]


def _as_maps(values: torch.Tensor) -> torch.Tensor:
    """N x C x H x W; vectors (N x C) become 1 x 1 maps, 1-D signals (N x C x L) 1 x L maps."""
    if values.dim() == 2:
        return values[:, :, None, None]
    if values.dim() == 3:
        return values[:, :, None, :]
    if values.dim() == 4:
        return values
    raise CnnvizError(f"statistics need outputs N x C (x H x W), got shape {tuple(values.shape)}")


def _half_range(low: float, high: float) -> float:
    """The smallest power of two R (at least 2**-20) with -R < low and high <= R: every value then
    lies inside a left-open bin, which keeps doubling the range exact."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise CnnvizError("the layer produced a non-finite value (inf or NaN); statistics need finite activations")
    half_range = 2.0**-20
    while high > half_range or -low >= half_range:
        half_range *= 2
    return half_range


def _histogram(values: torch.Tensor, half_range: float, bins: int, counting: torch.dtype) -> np.ndarray:
    """C x bins counts of N x C x H x W values; bin i holds edges[i] < x <= edges[i+1].

    torch.histogram bins are closed on the left, so the negated values are counted and the bins
    reversed. Its linear binning checks the neighbouring edges, so no value near an edge is
    misplaced by rounding (the edges, multiples of a power of two, are exact in float32).
    """
    per_channel = values.transpose(0, 1).reshape(values.shape[1], -1)
    negated = per_channel.neg().to(counting)
    counts = torch.stack([
        torch.histogram(negated[c].cpu(), bins=bins, range=(-half_range, half_range)).hist
        for c in range(per_channel.shape[0])
    ])
    return counts.flip(1).numpy().astype(np.int64)


def _double_range(histogram: np.ndarray) -> np.ndarray:
    """The histogram over twice the range: pairs of bins merge into the middle half."""
    bins = histogram.shape[1]
    doubled = np.zeros_like(histogram)
    doubled[:, bins // 4: bins // 4 + bins // 2] = histogram[:, 0::2] + histogram[:, 1::2]
    return doubled

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
    >>> photos = ["sample:chelsea", "sample:coffee", "sample:astronaut"]     # or "samples", a folder
    >>> stats = cnnviz.statistics(loaded, photos, ["features.2", "features.26"])
    >>> stats
    Statistics(3 images: features.2 (16 channels), features.26 (128 channels))
    >>> layer = stats["features.26"]
    >>> layer.mean.shape, int(layer.count[0]), int(layer.dead.sum())   # per channel: 3 images x 8 x 8 values
    ((128,), 192, 1)
    >>> summary = stats.to_dict()["layers"][0]                         # per layer, JSON-ready
    >>> summary["layer"], summary["count"], round(summary["mean"], 2)  # 3 images x 16 channels x 64 x 64
    ('features.2', 196608, 0.4)
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from cnnviz.errors import CnnvizError
from cnnviz.analyses.exemplars import crop_size, exemplar_crops
from cnnviz.analyses.statistics_results import DEFAULT_NEAR_ZERO, LayerStatistics, Statistics, double_range
from cnnviz.analyses.statistics_shards import forget, merged, resumable
from cnnviz.core.executor import executor
from cnnviz.inputs.batches import image_batches, no_images_message
from cnnviz.core.model import Preprocessing, non_finite_parameter, preprocessing_of
from cnnviz.core.probe import probe
from cnnviz.core.references import Reference

DEFAULT_BINS = 128
DEFAULT_TOP_K = 8
CROP_PIXELS = 48  # exemplar crops are stored at most this wide (larger regions are shrunk)

CHECKPOINT_EVERY = 1024  # images of a part of a rank's share, after which it may save a checkpoint
CHECKPOINT_MINUTES = 5.0  # the least time between a rank's checkpoints (cnnviz stats --checkpoint-minutes)

MAX_TOP_K = 64  # exemplars per channel: each keeps a crop, and the figure draws them all


def statistics(
    model,
    images,
    layer: Reference | Sequence[Reference],
    *,
    batch_size: int = 32,
    bins: int = DEFAULT_BINS,
    exemplars: int = DEFAULT_TOP_K,
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
        exemplars: the images kept per channel where it is highest, and where it is lowest (the
            gallery's ``exemplars``, ``cnnviz stats --exemplars``).
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
    share of the images (:mod:`cnnviz.core.executor`: not a DataLoader, give its
    Dataset) and every rank returns the statistics of all of them, merged exactly in rank order: the
    same counts, histograms and exemplars as one process, moments equal within rounding.

    Raises:
        CnnvizError: no image could be read, a reference names a channel, bad parameters; in a
            group, on every rank, when any rank failed (naming it).
    """
    if bins < 4 or bins % 4:
        raise CnnvizError(f"bins must be a positive multiple of 4, got {bins}")
    if exemplars < 1 or batch_size < 1:
        raise CnnvizError("exemplars and batch_size must be at least 1")
    if exemplars > MAX_TOP_K:
        raise CnnvizError(f"exemplars is at most {MAX_TOP_K} per channel (each keeps an image crop), not {exemplars}")
    top_k = exemplars
    refs = [layer] if isinstance(layer, (str, torch.nn.Module)) else list(layer)
    if not refs:
        raise CnnvizError("name at least one layer")
    # the executor hands this process its share of the images (inside a torchrun group: contiguous,
    # whole batches, so that the shares' statistics merged in order are one pass's sums) and
    # shows the progress of all of them; one process: the whole, untouched
    checkpoints = Path(checkpoint).expanduser() if checkpoint is not None else None

    def statistics_of(share, shown):
        if checkpoints is not None:
            return resumable(_gather, model, share, refs, batch_size, bins, top_k, near_zero, shown, workers,
                             checkpoints, checkpoint_every, checkpoint_minutes)
        return _gather(model, share.items, refs, batch_size, bins, top_k, near_zero, shown, workers)

    result, skipped, resumed, share = merged(executor(), images, statistics_of, batch_size, progress,
                                             listed=checkpoints is not None)
    if result is None:
        raise CnnvizError(no_images_message(skipped))
    result.skipped = skipped
    if checkpoints is not None:  # the whole result is here: this share's checkpoint is spent
        result.resumed = resumed
        forget(checkpoints, share)
    return result


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
                try:
                    if name not in accumulators:
                        accumulators[name] = _Accumulator(name, values, inputs, bins, top_k, near_zero, preprocessing)
                    accumulators[name].add(values, inputs, seen, sources)
                except _NonFinite:
                    parameter = non_finite_parameter(model)
                    if parameter is None:
                        raise
                    raise CnnvizError(  # what cnnviz layers notes, in the error itself
                        f"{name} produced a non-finite value (inf or NaN): the model's parameter {parameter[0]} "
                        f"holds {parameter[1]} non-finite value(s); check the weights file"
                    ) from None
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
            self.histogram = double_range(self.histogram)
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


class _NonFinite(CnnvizError):
    """A layer's output holds NaN or infinity."""


def _half_range(low: float, high: float) -> float:
    """The smallest power of two R (at least 2**-20) with -R < low and high <= R: every value then
    lies inside a left-open bin, which keeps doubling the range exact."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise _NonFinite("the layer produced a non-finite value (inf or NaN); statistics need finite activations")
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

"""What :func:`cnnviz.statistics` returns: the statistics of each layer's channels over a
population of images (:class:`LayerStatistics`) and of several layers (:class:`Statistics`), and
how two populations' statistics merge exactly (see :mod:`cnnviz.analyses.statistics`)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import numpy as np

from cnnviz.analyses.exemplars import merge_exemplars
from cnnviz.core.display import Shows
from cnnviz.errors import CnnvizError

DEFAULT_NEAR_ZERO = 1e-6

_UNSAFE = re.compile(r"[%\\\x00-\x1f\x7f\ud800-\udfff]")  # '%' itself, '\', control characters, lone surrogates
_ESCAPED = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def array_key(layer: str, name: str) -> str:
    """The name of a layer's array in a ``.npz`` file: ``LAYER/name`` (``features.3/mean``).

    A layer name is kept as it is unless it holds ``%``, a control character (a zip file cuts a
    name at NUL, so ``a\\x00b`` and ``a`` would share their arrays), ``\\`` (a ``/`` in a zip
    file written on Windows) or a character UTF-8 cannot hold; those are written as ``%XX`` (the
    bytes of their UTF-8), so that every layer has keys of its own, and :func:`split_array_key`
    reads them back. The array's own name never holds ``/``: the last ``/`` ends the layer name
    (which may hold ``/`` itself)."""
    safe = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8", "surrogatepass")), layer)
    return f"{safe}/{name}"


def split_array_key(key: str) -> tuple[str, str] | None:
    """``(layer, name)`` of a key :func:`array_key` made (``None`` for a key of no layer, such as
    ``images``). A ``%`` without two hexadecimal digits after it (written by an older cnnviz,
    which kept names as they were) stays as it is."""
    safe, slash, name = key.rpartition("/")
    if not slash:
        return None

    def unescape(match: re.Match) -> str:
        try:
            return bytes.fromhex(match.group().replace("%", "")).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return match.group()

    return _ESCAPED.sub(unescape, safe), name


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

    def to_dict(self) -> dict:
        """JSON-ready: the layer's summary and one row per channel (an entry of :meth:`Statistics.to_dict`)."""
        return {**self.layer_summary(), "per_channel": self.channel_table()}

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
            histogram = double_range(histogram)
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
            "layers": [layer.to_dict() for layer in self.layers.values()],
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every array, named ``LAYER/field`` (:func:`array_key`: any layer name, also one with
        NUL or ``%``, gets keys of its own), for ``numpy.savez``."""
        arrays = {"images": np.array(self.images)}
        for name, layer in self.layers.items():
            for key in ("count", "mean", "m2", "minimum", "maximum", "mean_maximum", "positive", "near_zero",
                        "histogram", "exemplar_values", "exemplar_images", "exemplar_positions", "exemplar_crops",
                        "bottom_values", "bottom_images", "bottom_positions", "bottom_crops"):
                if getattr(layer, key) is not None:
                    arrays[array_key(name, key)] = getattr(layer, key)
            arrays[array_key(name, "std")] = layer.std
            arrays[array_key(name, "edges")] = layer.edges
            arrays[array_key(name, "dead")] = layer.dead
        return arrays

    def __repr__(self) -> str:
        layers = ", ".join(f"{name} ({layer.channels} channels)" for name, layer in self.layers.items())
        return f"Statistics({self.images} images: {layers})"


def double_range(histogram: np.ndarray) -> np.ndarray:
    """The histogram over twice the range: pairs of bins merge into the middle half."""
    bins = histogram.shape[1]
    doubled = np.zeros_like(histogram)
    doubled[:, bins // 4: bins // 4 + bins // 2] = histogram[:, 0::2] + histogram[:, 1::2]
    return doubled

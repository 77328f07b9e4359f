"""Concepts: what a layer knows, as a few named directions instead of hundreds of units.

A layer's channels are polysemantic, and nobody reads 512 unit pages. Following Olah et al.'s
"Building Blocks of Interpretability" (2018) and Fel et al.'s CRAFT (2023), :func:`concepts`
factorises the layer's activation vectors, at every position of every image, into ``k``
non-negative directions (non-negative matrix factorisation; :mod:`cnnviz.analyses.concepts_nmf`),
and says of each: its direction over the channels, the images and image regions where it is
strongest, its map over each image, its share of the layer's activation, and how much it matters
to a class (or any unit downstream): gradient x coefficient, and what removing it from the
activation does to the class.

One pass over the images, memory bounded whatever their number: the factorisation is fitted on a
uniform random sample of the positions of the first ``fit_images`` images (their inputs and, up to
256 MiB, their activations are kept until then), and every image, those included, is then
expressed on the directions found (non-negative least squares per position) as it streams by. Sampling, rather
than a mini-batch solver over the whole stream, because the directions must be fixed before the
images' weights, exemplars and maps mean anything, and a pass cannot be repeated over a
DataLoader; a few hundred images' positions (tens of thousands of vectors) pin down a handful of
directions: the error over every image is reported beside the fitted one.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> found = cnnviz.concepts(loaded, "samples", "features.19", k=4, importance_images=4)
    >>> found.directions.shape, found.image_weights.shape     # k x C, N x k
    (torch.Size([4, 64]), torch.Size([17, 4]))
    >>> found.signed, round(found.error, 2)                   # a ReLU's output, as it is; the error left
    ('none', 0.67)
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnnviz.analyses.concepts_nmf import FIT_ITERATIONS, coefficients, factorise
from cnnviz.analyses.concepts_results import Concepts
from cnnviz.analyses.exemplars import crop_size, exemplar_crops
from cnnviz.analyses.predictions import dense_targets
from cnnviz.core.executor import Executor, executor
from cnnviz.core.gradients import gradients_on
from cnnviz.core.model import preprocessing_of, unwrap
from cnnviz.core.probe import model_guard, probe
from cnnviz.core.references import LayerRef, Unit, layer_ref
from cnnviz.errors import CnnvizError
from cnnviz.inputs.batches import image_batches, names, no_images_message, shard_images
from cnnviz.inputs.images import display_image

DEFAULT_K = 8
SIGNED = ("split", "shift")  # how a layer that goes negative is made non-negative
FIT_IMAGES = 128          # images whose positions the factorisation is fitted on (the first ones)
FIT_POSITIONS = 40_000    # positions sampled from them, at most
IMPORTANCE_IMAGES = 32    # images whose importance, deletion and fidelity are measured (the first ones)
MAPS = 8                  # images whose concept maps are kept (the first ones)
EXEMPLARS = 8             # image regions kept per concept
CROP_PIXELS = 64          # exemplar crops are stored at most this wide
KEPT_ACTIVATIONS = 256 << 20  # bytes of the first images' activations kept for the second phase (beyond: recomputed)


def concepts(model, images, layer, *, k: int = DEFAULT_K, score=None, exemplars: int = EXEMPLARS,
             maps: int = MAPS, importance_images: int = IMPORTANCE_IMAGES, fit_images: int = FIT_IMAGES,
             fit_positions: int = FIT_POSITIONS, iterations: int = FIT_ITERATIONS, batch_size: int = 32,
             seed: int = 0, signed: str = "split", directions: Concepts | None = None,
             progress: Callable[[int], object] | None = None, workers: int = 0) -> Concepts:
    """Factorise a layer's activations over ``images`` into ``k`` non-negative concepts.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left untouched).
        images: anything :mod:`cnnviz.inputs.batches` takes (a folder, ``samples``, a Dataset, ...).
        layer: a layer with spatial maps (``N x C x H x W``), e.g. ``"layer4"`` or ``"features.18"``.
        k: the number of concepts (at least 1, at most the layer's channels).
        score: what the importance explains: a class (index or name), ``"logits:K"``, or a unit
            downstream (``"layer4.1:12"``, its spatial mean); default each image's top class.
        exemplars: image regions kept per concept (where its coefficient is largest).
        maps: images (the first ones) whose concept maps are kept.
        importance_images: images (the first ones) whose importance, deletion and fidelity are
            measured (each costs ``k + 3`` passes of the network and one backward pass).
        fit_images: images (the first ones) whose positions the factorisation is fitted on.
        fit_positions: positions sampled from those, at most.
        iterations: iterations of the factorisation.
        batch_size: images per forward pass.
        seed: the seed of the sampled positions and of the baselines' permutations.
        signed: for a layer whose activations go negative (a convolution before its ReLU, a linear
            bottleneck, GELU): ``"split"`` factorises each vector's positive and negative parts side
            by side (2C non-negative channels; a concept's direction is then the positive part less
            the negative one), ``"shift"`` adds each channel's least value over the images fitted on
            (the directions stay non-negative, but a large offset shared by every vector can take
            the first concepts). A layer that is never negative is factorised as it is.
        directions: the :class:`Concepts` of an earlier call on the same layer: these images are
            expressed on its directions (and shift) instead of fitting new ones (concepts found
            on a dataset, applied to new images).
        progress: called with the number of images of each batch once it is done.
        workers: DataLoader worker processes decoding image files (0: this process).

    Returns:
        :class:`Concepts`.

    Inside a ``torch.distributed`` process group (``torchrun``) each process streams its share
    of the images, the factorisation is fitted once on the sampled positions of every share, and
    every process returns the concepts of all the images, in order: the same weights, exemplars
    and importance as one process expressing those images on those directions. The directions
    themselves depend a little on the number of processes (each fits on the first ``fit_images``
    / N images of its share); ``directions=`` an earlier result gives the same ones everywhere. The maps and the
    importance are of the first images of the first share (at most ``maps`` and
    ``importance_images`` of them).

    Raises:
        CnnvizError: ``k`` below 1 or above the layer's channels, a layer without spatial maps or
            with a channel named, a score upstream of the layer, no image that could be read.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise CnnvizError(f"k is the number of concepts: a whole number of at least 1, not {k!r}")
    counts = {"exemplars": exemplars, "batch_size": batch_size, "fit_images": fit_images, "fit_positions": fit_positions,
              "iterations": iterations}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CnnvizError(f"{name} must be a whole number of at least 1, got {value!r}")
    for name, value in {"maps": maps, "importance_images": importance_images}.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CnnvizError(f"{name} must be 0 or more, got {value!r}")
    ref = layer_ref(model, layer)
    if ref.channel is not None:
        raise CnnvizError(f"concepts are found over a whole layer's channels: give {ref.layer_text!r}, not {str(ref)!r}")
    if ref.is_output:
        raise CnnvizError("concepts need a layer with spatial maps inside the network, not the model's output (logits)")
    if directions is not None:
        if not isinstance(directions, Concepts):
            raise CnnvizError(f"directions= takes the Concepts of an earlier call, not a {type(directions).__name__}")
        if directions.layer != ref.layer_text:
            raise CnnvizError(f"these concepts are of {directions.layer}, not {ref.layer_text}: give layer="
                              f"{directions.layer!r} or find concepts of {ref.layer_text} first")
        k = directions.k
    if signed not in SIGNED:
        raise CnnvizError(f"signed takes {' or '.join(SIGNED)}, not {signed!r}")
    options = dict(given=directions, signed=signed, k=k, score=score, exemplars=exemplars, maps=maps, importance_images=importance_images,
                   fit_images=fit_images, fit_positions=fit_positions, iterations=iterations, batch_size=batch_size,
                   seed=seed, workers=workers)
    with gradients_on(model):
        return _Finder(model, ref, options).run(images, progress)


class _Finder:
    """One call of :func:`concepts`: the stream of this process's share, in two phases around the fit."""

    def __init__(self, model, ref: LayerRef, options: dict):
        self.model, self.ref, self.o = model, ref, options
        self.module, self.class_names = unwrap(model)
        self.preprocessing = preprocessing_of(model)
        self.work: Executor = executor()

    def run(self, images, progress) -> Concepts:
        o, work = self.o, self.work
        with work.progress("concepts/progress", progress) as shown:
            self.progress = shown
            samples = work.everywhere("concepts/sample",
                                      lambda: self._sample(work.share(images, o["batch_size"], shard_images)))
            fitted = work.first("concepts/fit", lambda: self._fit(samples))
            parts = work.everywhere("concepts/parts", lambda: self._express(fitted))
        work.tidy()
        return self._merged(parts, fitted)

    # -- the first phase: the images to fit on, a sample of their positions ------------------------

    def _sample(self, share) -> dict:
        """Read this share's first images (kept for the second phase) and a uniform random sample of
        their positions' activations; also the least value of every channel and the maps' shape."""
        o = self.o
        count = 1 if o["given"] is not None else max(1, math.ceil(o["fit_images"] / share.count))
        quota = max(1, math.ceil(o["fit_positions"] / share.count))
        generator = torch.Generator().manual_seed(o["seed"] * 1000 + share.index)
        self.stream = image_batches(share.items, self.preprocessing, o["batch_size"], workers=o["workers"])
        self.batches = iter(self.stream)
        self.kept: list = []
        taken, picked, least = 0, [], None
        kept_bytes = 0
        for batch in self.batches:
            values = self._activations(batch.inputs)
            kept_bytes += values.numel() * values.element_size()
            # their activations too, unless that is a lot: then they are computed again
            self.kept.append((batch, values if kept_bytes <= KEPT_ACTIVATIONS else None))
            positions = values.permute(0, 2, 3, 1).reshape(-1, values.shape[1])
            per_batch = max(1, math.ceil(quota * len(values) / count))
            choice = torch.randperm(len(positions), generator=generator)[:per_batch]
            picked.append(positions[choice].cpu())
            smallest = positions.amin(0).cpu()
            least = smallest if least is None else torch.minimum(least, smallest)
            taken += len(values)
            if taken >= count:
                break
        if not picked:
            return {"positions": None, "least": None, "shape": None}
        if all(kept is not None for _, kept in self.kept):  # every position is at hand: a uniform sample of all
            everything = torch.cat([kept.permute(0, 2, 3, 1).reshape(-1, kept.shape[1]) for _, kept in self.kept])
            chosen = torch.randperm(len(everything), generator=generator)[:quota]
            return {"positions": everything[chosen].cpu(), "least": least, "shape": tuple(values.shape[1:])}
        return {"positions": torch.cat(picked)[:quota], "least": least, "shape": tuple(values.shape[1:])}

    def _activations(self, inputs: torch.Tensor) -> torch.Tensor:
        """The layer's output for a batch (``N x C x h x w``), checked."""
        with probe(self.model, [self.ref]) as recorder:
            recorder.run(inputs)
            values = recorder[self.ref]
        if values.dim() != 4:
            raise CnnvizError(f"concepts need a layer with spatial maps (N x C x H x W); {self.ref.layer_text} gives "
                              f"{' x '.join(['N', *map(str, values.shape[1:])])}: choose a convolutional layer")
        if values.shape[1] < self.o["k"]:
            raise CnnvizError(f"k={self.o['k']} is more than the {values.shape[1]} channels of {self.ref.layer_text}; "
                              f"give k at most {values.shape[1]}")
        if not torch.isfinite(values).all():
            raise CnnvizError(f"{self.ref.layer_text} produced a non-finite value (inf or NaN); check the weights")
        return values.detach().float()

    # -- the fit ------------------------------------------------------------------------------------

    def _fit(self, samples: list[dict]) -> dict:
        """The directions, fitted on every share's sampled positions (in share order)."""
        found = [one for one in samples if one["positions"] is not None]
        if not found:
            return {"directions": None}
        given = self.o["given"]
        if given is not None:  # an earlier call's directions: nothing to fit
            if given.directions.shape[1] != found[0]["shape"][0]:
                raise CnnvizError(f"these concepts have {given.directions.shape[1]} channels, but {self.ref.layer_text} "
                                  f"has {found[0]['shape'][0]} here: they were found on another model")
            return {"space": _Space(given.signed, given.shift), "factors": given.factors,
                    "directions": given.directions, "fit_error": given.fit_error, "shape": found[0]["shape"],
                    "positions": 0}
        positions = torch.cat([one["positions"] for one in found])
        least = torch.stack([one["least"] for one in found]).amin(0)
        if bool((least >= 0).all()):
            space = _Space("none", torch.zeros_like(least))
        else:  # a layer that goes negative: its parts side by side, or shifted
            space = _Space(self.o["signed"], (-least).clamp_min(0) if self.o["signed"] == "shift" else torch.zeros_like(least))
        fit = factorise(space.features(positions), self.o["k"], self.o["iterations"])
        return {"space": space, "factors": fit.directions, "directions": space.signed(fit.directions),
                "fit_error": fit.error, "shape": found[0]["shape"], "positions": len(positions)}

    # -- the second phase: every image on the directions ----------------------------------------------

    def _express(self, fitted: dict) -> dict:
        """This share's images expressed on the fitted directions: weights, exemplars, maps, sums,
        importance (``{}`` without images)."""
        if fitted["directions"] is None:
            return {"count": 0, "skipped": list(self.stream.skipped)}
        part = _Part(self, fitted)
        for batch, values in self._batches():
            part.add(batch, values)
            if self.progress is not None:
                self.progress(len(batch.inputs))
        return part.result(list(self.stream.skipped))

    def _batches(self):
        """``(batch, its activations or None)``: the first images, kept, then the rest of the stream."""
        kept, self.kept = self.kept, []
        yield from kept
        for batch in self.batches:
            yield batch, None

    def _merged(self, parts: list[dict], fitted: dict) -> Concepts:
        skipped = [name for part in parts for name in part["skipped"]]
        parts = [part for part in parts if part["count"]]
        if not parts or fitted["directions"] is None:
            raise CnnvizError(no_images_message(skipped))
        result = merge_parts(parts, fitted, self.ref.layer_text, self.o, skipped)
        result.exemplar_boxes = self._boxes(result, tuple(parts[0]["input_size"]))
        return result

    def _boxes(self, result: Concepts, input_size) -> torch.Tensor | None:
        """Each exemplar's receptive field in the input, ``k x E x 4`` (top, left, bottom, right,
        inclusive; ``-1`` where there is no exemplar), or ``None`` where it cannot be traced."""
        from cnnviz.analyses.receptive_field import unit_boxes

        try:
            boxes = unit_boxes(self.model, [self.ref.layer_text], input_size=input_size)[self.ref.layer_text][0, 0]
        except CnnvizError:
            return None
        rows, columns = result.exemplar_positions[..., 0], result.exemplar_positions[..., 1]
        found = boxes[rows.clamp(0, boxes.shape[0] - 1), columns.clamp(0, boxes.shape[1] - 1)]
        return found.masked_fill((result.exemplar_images < 0)[..., None], -1)


@dataclass(frozen=True)
class _Space:
    """How a layer's activation vectors become the non-negative vectors factorised, and back:
    ``none`` (never negative: as they are), ``shift`` (plus each channel's least value) or
    ``split`` (positive and negative parts side by side)."""

    mode: str
    shift: torch.Tensor

    def features(self, positions: torch.Tensor) -> torch.Tensor:
        """n x C activation vectors -> the non-negative vectors factorised (n x C, or n x 2C split)."""
        if self.mode == "split":
            return torch.cat([positions.clamp_min(0), (-positions).clamp_min(0)], dim=1)
        return (positions + self.shift.to(positions.device)).clamp_min(0)

    def signed(self, factors: torch.Tensor) -> torch.Tensor:
        """The factorisation's directions in the layer's own channels (``k x C``): a concept's
        component of an activation vector is its coefficient times this (less the shift, once)."""
        if self.mode == "split":
            channels = factors.shape[1] // 2
            return factors[:, :channels] - factors[:, channels:]
        return factors


class _Part:
    """The running results of one share's images."""

    def __init__(self, finder: _Finder, fitted: dict):
        self.f, self.o = finder, finder.o
        self.space, self.factors, self.directions = fitted["space"], fitted["factors"], fitted["directions"]
        channels, height, width = fitted["shape"]
        k, exemplars = self.o["k"], self.o["exemplars"]
        self.map_size = (height, width)
        self.input_size = tuple(finder.preprocessing.input_size)
        self.region = None
        self.count = 0
        self.names: list[str] = []
        self.weights: list[torch.Tensor] = []
        self.squared_error = self.squared_total = 0.0
        self.explained = torch.zeros(k, dtype=torch.float64)
        self.total = 0.0
        self.top_values = torch.full((k, exemplars), -math.inf)
        self.top_images = torch.full((k, exemplars), -1, dtype=torch.long)
        self.top_positions = torch.zeros(k, exemplars, 2, dtype=torch.long)
        self.top_crops: torch.Tensor | None = None
        self.maps: list[torch.Tensor] = []
        self.shown: list[torch.Tensor] = []
        self.importance = _Importance(finder, self.directions, self.space)

    def add(self, batch, raw: torch.Tensor | None = None) -> None:
        inputs = batch.inputs
        raw = self.f._activations(inputs) if raw is None else raw
        n, channels, height, width = raw.shape
        if (height, width) != self.map_size:
            raise CnnvizError(f"{self.f.ref.layer_text} changed its map size between images ({self.map_size} and "
                              f"{(height, width)}): give images of one size")
        positions = self.space.features(raw.permute(0, 2, 3, 1).reshape(-1, channels))
        factors = self.factors.to(positions.device)
        coefficients_ = coefficients(positions, factors)
        reconstruction = coefficients_ @ factors
        self.squared_error += float(((positions - reconstruction) ** 2).sum())
        self.squared_total += float((positions ** 2).sum())
        self.explained += (coefficients_.sum(0) * factors.sum(1)).double().cpu()
        self.total += float(positions.sum())
        per_position = coefficients_.reshape(n, height, width, -1).permute(0, 3, 1, 2).cpu()  # n x k x h x w
        self.weights.append(per_position.mean((2, 3)))
        self.names += list(batch.sources)  # unnamed ones are named by their place once the shares are merged
        self._exemplars(per_position, inputs.cpu())
        if self.f.work.first_process:  # the first images' maps and importance: the first share's
            wanted = max(0, self.o["maps"] - len(self.maps))
            if wanted:
                self.maps += list(per_position[:wanted])
                self.shown += list(display_image(inputs[:wanted].cpu(), self.f.preprocessing))
            wanted = max(0, self.o["importance_images"] - self.importance.count)
            if wanted:
                self.importance.add(inputs[:wanted], raw[:wanted], per_position[:wanted])
        self.count += n

    def _exemplars(self, per_position: torch.Tensor, inputs: torch.Tensor) -> None:
        """Keep, per concept, the images where it is strongest so far (each image once, at its
        strongest position; the crops cut from this batch)."""
        n, k, height, width = per_position.shape
        if self.region is None:
            self.input_seen = tuple(inputs.shape[2:])
            self.region = crop_size(self.map_size, self.input_seen)
            self.stored = min(self.region, CROP_PIXELS)
        strongest, where = per_position.flatten(2).max(dim=2)  # n x k: each image's strongest position
        take = min(self.o["exemplars"], n)
        values, image = strongest.T.topk(take, dim=1)  # k x take
        place = where.T.gather(1, image)
        row, column = place // width, place % width
        crops = exemplar_crops(inputs, image.flatten(), torch.stack([row.flatten(), column.flatten()], 1), self.map_size,
                               self.region, self.stored, self.f.preprocessing).reshape(k, take, 3, self.stored, self.stored)
        if self.top_crops is None:
            self.top_crops = torch.zeros(k, self.o["exemplars"], 3, self.stored, self.stored, dtype=torch.uint8)
        all_values = torch.cat([self.top_values, values], 1)
        all_images = torch.cat([self.top_images, image + self.count], 1)
        all_positions = torch.cat([self.top_positions, torch.stack([row, column], 2)], 1)
        all_crops = torch.cat([self.top_crops, crops], 1)
        best = all_values.topk(self.o["exemplars"], dim=1).indices
        pick = torch.arange(k)[:, None]
        self.top_values, self.top_images = all_values[pick, best], all_images[pick, best]
        self.top_positions, self.top_crops = all_positions[pick, best], all_crops[pick, best]

    def result(self, skipped: list[str]) -> dict:
        maps = torch.stack(self.maps) if self.maps else torch.zeros(0, self.o["k"], *self.map_size)
        shown = torch.stack(self.shown) if self.shown else torch.zeros(0, 3, *self.input_size)
        return {"count": self.count, "names": self.names, "input_size": self.input_seen, "weights": torch.cat(self.weights),
                "squared_error": self.squared_error, "squared_total": self.squared_total,
                "explained": self.explained, "total": self.total, "top_values": self.top_values,
                "top_images": self.top_images, "top_positions": self.top_positions, "top_crops": self.top_crops,
                "region": self.region, "maps": maps, "shown": shown, "skipped": skipped,
                **self.importance.result(self.o["k"], self.map_size, min(self.o["maps"], self.importance.count))}


def merge_parts(parts: list[dict], fitted: dict, layer: str, o: dict, skipped: list[str]) -> Concepts:
    """The shares' results, merged in share order (image indices moved up by the images before)."""
    k, exemplars = o["k"], o["exemplars"]
    offsets = [0]
    for part in parts:
        offsets.append(offsets[-1] + part["count"])
    values = torch.cat([part["top_values"] for part in parts], 1)
    image_index = torch.cat([part["top_images"] + offset * (part["top_images"] >= 0)
                             for part, offset in zip(parts, offsets)], 1)
    positions = torch.cat([part["top_positions"] for part in parts], 1)
    crops = torch.cat([part["top_crops"] for part in parts], 1)
    best = values.topk(exemplars, dim=1).indices
    pick = torch.arange(k)[:, None]
    values, image_index, positions, crops = values[pick, best], image_index[pick, best], positions[pick, best], crops[pick, best]
    missing = ~torch.isfinite(values)
    values, image_index = values.masked_fill(missing, float("nan")), image_index.masked_fill(missing, -1)
    total = sum(part["total"] for part in parts)
    explained = sum(part["explained"] for part in parts)
    squared_total = sum(part["squared_total"] for part in parts)
    first = parts[0]  # maps and importance: the first images, which are the first share's
    settings = {key: value for key, value in o.items() if key not in ("score", "workers", "given")}
    settings.update(score=None if o["score"] is None else str(o["score"]), fitted_positions=fitted["positions"],
                    solver="HALS from NNDSVDa (cnnviz.analyses.concepts_nmf)")
    return Concepts(
        layer=layer, directions=fitted["directions"].cpu(), image_weights=torch.cat([part["weights"] for part in parts]),
        images=names([name for part in parts for name in part["names"]]), shift=fitted["space"].shift.cpu(),
        signed=fitted["space"].mode, factors=fitted["factors"].cpu(),
        share=(explained / total).float() if total > 0 else torch.zeros(k),
        error=math.sqrt(sum(part["squared_error"] for part in parts) / squared_total) if squared_total > 0 else 0.0,
        fit_error=fitted["fit_error"], exemplar_values=values, exemplar_images=image_index,
        exemplar_positions=positions, exemplar_crops=crops, crop_region=first["region"], maps=first["maps"],
        shown=first["shown"], targets=first["targets"], importance=first["importance"], deletion=first["deletion"],
        random_deletion=first["random_deletion"], attribution_maps=first["attribution_maps"],
        kept=first["kept"], target_values=first["target_values"],
        settings=settings, skipped=skipped)


class _Importance:
    """How much each concept matters to each image's target: gradient x coefficient, the drop when
    its component is removed (and, as a baseline, the drop when the image's most important concept's
    coefficients are put on a permutation of its direction's channels), and the target when the
    activation is replaced by its reconstruction. ``k + 3`` passes of the network and one backward pass per batch."""

    def __init__(self, finder: _Finder, directions: torch.Tensor, space: _Space):
        self.f, self.directions, self.space = finder, directions, space
        # the baseline of each concept: its own direction's weights on other channels (a fixed random
        # permutation), so that as much is removed, spread as the concept spreads it, from channels it does not use
        generator = torch.Generator().manual_seed(finder.o["seed"] + 1)
        self.random = torch.stack([direction[torch.randperm(len(direction), generator=generator)]
                                   for direction in directions.cpu()])
        self.count = 0
        self.targets: list[str] = []
        self.rows: dict[str, list[torch.Tensor]] = {"importance": [], "deletion": [], "random_deletion": [], "kept": [],
                                                    "target_values": [], "attribution_maps": []}

    def add(self, inputs: torch.Tensor, raw: torch.Tensor, per_position: torch.Tensor) -> None:
        units, which, described = _targets(self.f, inputs)
        device = raw.device
        directions, random = self.directions.to(device), self.random.to(device)
        coefficient = per_position.to(device)  # n x k x h x w
        leaf = raw.clone().requires_grad_(True)
        score = self._score(inputs, leaf, units, which)
        gradient, = torch.autograd.grad(score.sum(), leaf)
        along = torch.einsum("kc,nchw->nkhw", directions, gradient)  # each direction's gradient, per position
        contribution = (coefficient * along).detach()
        base = score.detach()
        with torch.no_grad():
            deletion = []
            for j in range(len(directions)):
                component = coefficient[:, j, None] * directions[j][None, :, None, None]
                deletion.append(base - self._score(inputs, raw - component, units, which))
            # the baseline, in one pass: each image's most important concept's coefficients on a random direction
            chosen = contribution.sum((2, 3)).argmax(1)
            rows = torch.arange(len(chosen), device=device)
            stand_in = coefficient[rows, chosen][:, None] * random[chosen][:, :, None, None]
            random_deletion = base - self._score(inputs, raw - stand_in, units, which)
            reconstruction = (torch.einsum("nkhw,kc->nchw", coefficient, directions)
                              - self.space.shift.to(device)[None, :, None, None])
            kept = self._score(inputs, reconstruction, units, which)
        self.rows["importance"].append(contribution.sum((2, 3)).cpu())
        self.rows["deletion"].append(torch.stack(deletion, 1).cpu())
        self.rows["random_deletion"].append(random_deletion.cpu())
        self.rows["kept"].append(kept.cpu())
        self.rows["target_values"].append(base.cpu())
        self.rows["attribution_maps"].append(contribution.cpu())
        self.targets += described
        self.count += len(inputs)

    def _score(self, inputs: torch.Tensor, replacement: torch.Tensor, units: list[LayerRef], which: list[int]) -> torch.Tensor:
        """Each image's target when the layer's output is ``replacement``."""
        with _replaced(self.f.module, self.f.ref, replacement) as calls, \
                probe(self.f.model, units, keep_graph=True) as recorder:
            recorder.run(inputs)
            columns = [_unit_value(recorder[unit]) for unit in units]
        if calls[0] < self.f.ref.call:
            raise CnnvizError(f"the score {', '.join(map(str, units))} comes before {self.f.ref.layer_text} in the network; "
                              "name a class or a unit downstream of the concepts' layer")
        values = torch.stack(columns, 1)  # n x units
        return values[torch.arange(len(values)), torch.tensor(which, device=values.device)]

    def result(self, k: int, map_size, with_maps: int) -> dict:
        def rows(name, shape):
            return torch.cat(self.rows[name]) if self.rows[name] else torch.zeros(0, *shape)
        return {"targets": self.targets, "importance": rows("importance", (k,)), "deletion": rows("deletion", (k,)),
                "random_deletion": rows("random_deletion", ()), "kept": rows("kept", ()),
                "target_values": rows("target_values", ()),
                "attribution_maps": rows("attribution_maps", (k, *map_size))[:with_maps]}


def _unit_value(value: torch.Tensor) -> torch.Tensor:
    return value.flatten(1).mean(1) if value.dim() > 1 else value


@contextlib.contextmanager
def _replaced(module, ref: LayerRef, replacement: torch.Tensor):
    """Inside, the call ``ref`` names of its module returns ``replacement`` (the rest of the network
    runs on it); the model is as it was afterwards."""
    calls = [0]

    def hook(_module, _inputs, output):
        calls[0] += 1
        if calls[0] != ref.call:
            return output
        if not isinstance(output, torch.Tensor) or output.shape != replacement.shape:
            raise CnnvizError(f"{ref.layer_text} gives {type(output).__name__} of another shape than its maps; "
                              "concepts cannot replace it")
        return replacement.to(output.dtype).clone()  # a copy: an in-place operation after it must not touch ours

    with model_guard(module):
        handle = ref.module.register_forward_hook(hook)
        try:
            yield calls
        finally:
            handle.remove()


def _targets(finder: _Finder, inputs: torch.Tensor) -> tuple[list[LayerRef], list[int], list[str]]:
    """The units the importance explains, each image's index among them, and their descriptions."""
    score = finder.o["score"]
    if score is None:
        with probe(finder.model, ["logits"]) as recorder:
            recorder.run(inputs)
            logits = recorder["logits"]
        if logits.dim() == 4:
            chosen = dense_targets(logits)
        elif logits.dim() == 2:
            chosen = [f"logits:{int(c)}" for c in logits.argmax(1)]
        else:
            raise CnnvizError(f"the model's output has shape {tuple(logits.shape)}, so there is no top class; name what "
                              "the importance explains (score=...)")
    else:
        text = f"logits:{score}" if isinstance(score, int) and not isinstance(score, bool) else score
        chosen = [text] * len(inputs)
    refs = [layer_ref(finder.model, text) for text in chosen]
    for ref in refs:
        if ref.channel is None:
            raise CnnvizError(f"the score {str(ref)!r} is a whole layer; name one unit, such as '{ref.layer_text}:0'")
        if not ref.is_output and ref.layer == finder.ref.layer:
            raise CnnvizError(f"the score {str(ref)!r} is in the concepts' own layer; name a unit downstream of it")
    units = list(dict.fromkeys(refs))
    return units, [units.index(ref) for ref in refs], [str(Unit.of(ref, finder.class_names)) for ref in refs]

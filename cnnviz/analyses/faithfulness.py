"""Faithfulness of attributions: does a map mark the pixels the model's output depends on?

Every metric perturbs the input where a map says it matters and reads the target's score again
(the target's probability for a class of a classifier, its softmax over the classes at the position
read for a dense output; the unit's value for any other unit). Every map is ranked by its absolute
value summed over channels (:meth:`Attribution.absolute_map`), and a random map (uniform noise,
seeded) is evaluated beside the methods as the baseline row: a method that does not beat it says
nothing about the model.

- **Deletion** and **insertion** (Petsiuk et al., RISE, 2018): the pixels are removed in ``steps``
  equal steps, most important first, by setting them to zero in the model's input space (the mean
  image, for a model that normalises: the baseline of integrated gradients and occlusion too); for
  insertion they are put back, most important first, into a blurred copy of the image (Gaussian,
  sigma = the larger side / 45 px, 5 px at 224). The area under the score's curve over the fraction
  of pixels (0 to 1, trapezoids): ``deletion_auc`` lower is better, ``insertion_auc`` higher.
  ``auc_difference`` (insertion less deletion, higher is better) ranks the methods.
- **ROAD** (Rong et al., 2022): the ``percentiles`` % most relevant pixels (MoRF) or least relevant
  (LeRF) are removed and *imputed* from their neighbours (noisy linear imputation: each removed pixel
  is the weighted mean of its eight neighbours, weights 1/6 beside and 1/12 across, solved as one
  linear system by conjugate gradients in torch, with Gaussian noise of standard deviation ``noise``
  in model-input units), so that the removal's shape does not leak into the score.
  ``road_morf`` (mean score over the percentiles, lower is better), ``road_lerf`` (higher is
  better) and ``road_combined`` = (LeRF - MoRF) / 2, as pytorch-grad-cam's ``ROADCombined``.
- **Average Drop** and **Increase in Confidence** (Chattopadhay et al., Grad-CAM++, 2018): the input
  multiplied by the map scaled to [0, 1] (each image's own min to max), again in the model's input
  space: ``average_drop`` = mean of max(0, Y - O) / Y in % (lower is better), ``average_increase``
  = % of images whose score rose (higher is better); Y the score on the image, O on the masked one.

All perturbed inputs of all methods go through the model together, ``batch_size`` at a time (one
forward per ``batch_size`` perturbed images, whatever the method or step; on a CPU fewer where
malloc would hand big blocks back after each pass), under ``torch.no_grad()``, through cnnviz's
probe (the model is untouched; the pass stops at the deepest target) on a copy with its batch
normalisations folded where that gives the same values (cnnviz.core.fusion).

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> quick = cnnviz.FaithfulnessSettings(steps=8, percentiles=(50,))   # or faithfulness=True: the defaults
    >>> results = cnnviz.attributions(loaded, "sample:chelsea", methods=["gradient", "gradcam"], faithfulness=quick)
    >>> scores = results.faithfulness                 # one row per method, and the random map's
    >>> scores.methods, sorted(scores.ranking) == sorted(scores.methods)
    (['gradient', 'gradcam', 'random'], True)
    >>> round(scores.summary()["random"]["deletion_auc"], 3) >= 0   # print(scores.table()) for all of them
    True
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cnnviz.core.display import Shows
from cnnviz.core.guard import to_device_of
from cnnviz.core.model import unwrap
from cnnviz.core.fusion import folded_copy
from cnnviz.core.memory import PassSizes
from cnnviz.core.probe import ChannelsLast, probe
from cnnviz.core.references import LayerRef, Unit, rebound, unit_ref
from cnnviz.core.settings import chosen, setting
from cnnviz.core.softmax import as_probabilities
from cnnviz.errors import CnnvizError

#: the metrics, each a number per image; and whether a higher value is better
METRICS = {
    "deletion_auc": False, "insertion_auc": True, "auc_difference": True,
    "road_morf": False, "road_lerf": True, "road_combined": True,
    "average_drop": False, "average_increase": True,
}
RANDOM = "random"


@dataclass(frozen=True)
class FaithfulnessSettings:
    """The settings of :func:`faithfulness` (and of ``attributions(..., faithfulness=True)``,
    ``cnnviz saliency --faithfulness`` and the gallery's attributions page)."""

    steps: int = setting(32, "Deletion and insertion: the pixels are removed (or put back) in this many equal steps.")
    percentiles: tuple[int, ...] = setting((20, 40, 60, 80), "ROAD: the percentages of the pixels removed and imputed.")
    noise: float = setting(0.01, "ROAD: the standard deviation of the noise on imputed pixels, in model-input units.")
    blur: float | None = setting(None, "Insertion's start: the sigma in pixels of the blurred image "
                                       "(default: the larger side / 45, 5 px at 224).")
    road: bool = setting(True, "Measure ROAD (its imputation is the slowest part; without it, road_* are NaN).")
    seed: int = setting(0, "Seed of the random baseline map and of ROAD's noise.")
    batch_size: int = setting(64, "The most perturbed images per forward pass.")


@dataclass(repr=False)
class Faithfulness(Shows):
    """The faithfulness of several attribution methods on the same images and targets.

    Attributes:
        methods: the methods evaluated, in the order given, then ``"random"`` (the baseline map).
        per_image: method -> metric (``METRICS``) -> one value per image (a tensor of N).
        curves: method -> ``"deletion"`` / ``"insertion"`` (``N x (steps + 1)``, the score after each
            step, the unperturbed image first for deletion and the blurred one first for insertion),
            ``"road_morf"`` / ``"road_lerf"`` (``N x len(percentiles)``).
        fractions: the fraction of pixels removed (put back) at each step, ``steps + 1`` values.
        percentiles: ROAD's percentages.
        original: the target's score on each unperturbed image.
        score: what the score is, per image: ``"probability"`` or ``"value"`` (a unit's raw value).
        targets, sources: what was explained on each image, and where each image came from.
        settings: the :class:`FaithfulnessSettings` used, as a dict.
    """

    methods: list[str]
    per_image: dict[str, dict[str, torch.Tensor]]
    curves: dict[str, dict[str, torch.Tensor]]
    fractions: torch.Tensor
    percentiles: tuple[int, ...]
    original: torch.Tensor
    score: list[str]
    targets: list[Unit]
    sources: list[str]
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        """method -> metric -> its mean over the images (NaN values, e.g. an average drop of a
        score that was not positive, left out)."""
        return {m: {k: _mean(v) for k, v in self.per_image[m].items()} for m in self.methods}

    def spread(self) -> dict[str, dict[str, float]]:
        """method -> metric -> its standard deviation over the images (0 for one image)."""
        return {m: {k: _std(v) for k, v in self.per_image[m].items()} for m in self.methods}

    @property
    def ranking(self) -> list[str]:
        """The methods, ``"random"`` among them, best first by ``auc_difference`` (insertion AUC less
        deletion AUC)."""
        means = self.summary()
        return sorted(self.methods, key=lambda m: -_or_minus_inf(means[m]["auc_difference"]))

    @property
    def best(self) -> str:
        """The best method by :attr:`ranking` (which may be ``"random"``: then no map beat chance)."""
        return self.ranking[0]

    def beats_random(self) -> dict[str, bool]:
        """method -> whether its ``auc_difference`` is above the random map's."""
        means = self.summary()
        return {m: means[m]["auc_difference"] > means[RANDOM]["auc_difference"] for m in self.methods if m != RANDOM}

    def table(self) -> str:
        """The metrics as a text table, one row per method in :attr:`ranking` order: the mean and,
        after ``±``, the standard deviation over the images; under each metric's name whether
        higher (``+``) or lower (``-``) is better."""
        means, spreads = self.summary(), self.spread()
        names = list(METRICS)
        cells = {m: [f"{means[m][n]:.3g}±{spreads[m][n]:.2g}" for n in names] for m in self.methods}
        widths = [max(len(n), *(len(cells[m][k]) for m in self.methods)) + 2 for k, n in enumerate(names)]
        width = max(len("method"), *(len(m) for m in self.methods)) + 2
        rows = ["rank " + "method".ljust(width) + "".join(n.ljust(w) for n, w in zip(names, widths)),
                " " * (5 + width) + "".join(("(+)" if METRICS[n] else "(-)").ljust(w) for n, w in zip(names, widths))]
        for rank, method in enumerate(self.ranking, start=1):
            rows.append(f"{rank:<5}{method.ljust(width)}" + "".join(c.ljust(w) for c, w in zip(cells[method], widths)))
        return "\n".join(row.rstrip() for row in rows)

    def to_dict(self) -> dict:
        """``faithfulness.json``: per method name (and ``"random"``) each metric's mean over the
        images, with ``rank``, ``beats_random`` and ``std`` (each metric's spread); the settings,
        the images and what their score is under ``"_about"``."""
        means, spreads, ranks = self.summary(), self.spread(), {m: k for k, m in enumerate(self.ranking, start=1)}
        beats = self.beats_random()
        data = {}
        for method in self.methods:
            entry = {name: _finite(value) for name, value in means[method].items()}
            entry["rank"] = ranks[method]
            if method != RANDOM:
                entry["beats_random"] = bool(beats[method])
            entry["std"] = {name: _finite(value) for name, value in spreads[method].items()}
            entry["deletion_curve"] = [significant(float(v)) for v in self.curves[method]["deletion"].mean(dim=0)]
            entry["insertion_curve"] = [significant(float(v)) for v in self.curves[method]["insertion"].mean(dim=0)]
            data[method] = entry
        data["_about"] = {
            "images": self.sources, "targets": [str(t) for t in self.targets], "score": self.score,
            "ranking": self.ranking, "better": {name: "higher" if up else "lower" for name, up in METRICS.items()},
            "fractions": [round(float(v), 6) for v in self.fractions], "percentiles": list(self.percentiles),
            "settings": self.settings,
        }
        return data

    def to_record(self) -> dict:
        """Everything, per image, as JSON-ready lists (what :meth:`from_records` reads back; the
        gallery keeps one per batch of images and joins them)."""
        return {
            "methods": self.methods, "percentiles": list(self.percentiles), "score": self.score,
            "fractions": self.fractions.tolist(), "original": self.original.tolist(), "sources": self.sources,
            "targets": [{"layer": t.layer, "channel": t.channel, "position": t.position, "class_name": t.class_name}
                        for t in self.targets],
            "per_image": {m: {k: v.tolist() for k, v in self.per_image[m].items()} for m in self.methods},
            "curves": {m: {k: v.tolist() for k, v in self.curves[m].items()} for m in self.methods},
            "settings": self.settings,
        }

    @classmethod
    def from_records(cls, records: list[dict]) -> Faithfulness:
        """One result over the images of several :meth:`to_record` records (same methods and settings)."""
        if not records:
            raise CnnvizError("no faithfulness records to join")
        first = records[0]
        if any(r["methods"] != first["methods"] or r["fractions"] != first["fractions"]
               or r["percentiles"] != first["percentiles"] for r in records):
            raise CnnvizError("faithfulness records of other methods or settings cannot be joined")

        def joined(get):
            return torch.cat([torch.tensor(get(r), dtype=torch.float64) for r in records])

        methods = first["methods"]
        return cls(
            methods=list(methods),
            per_image={m: {k: joined(lambda r, m=m, k=k: r["per_image"][m][k]) for k in first["per_image"][m]} for m in methods},
            curves={m: {k: joined(lambda r, m=m, k=k: r["curves"][m][k]).float() for k in first["curves"][m]} for m in methods},
            fractions=torch.tensor(first["fractions"]), percentiles=tuple(first["percentiles"]),
            original=joined(lambda r: r["original"]).float(), score=[s for r in records for s in r["score"]],
            targets=[Unit(t["layer"], t["channel"], None if t["position"] is None else tuple(t["position"]), t["class_name"])
                     for r in records for t in r["targets"]],
            sources=[s for r in records for s in r["sources"]], settings=dict(first["settings"]),
        )

    def _summary(self) -> str:
        count = len(self.original)
        return f"{', '.join(self.ranking)} (best first); {count} image{'' if count == 1 else 's'}"

    def _repr_html_(self) -> str:
        means, spreads = self.summary(), self.spread()
        head = "".join(f"<th>{n}<br><small>{'higher' if up else 'lower'} better</small></th>" for n, up in METRICS.items())
        rows = "".join(
            f"<tr><td>{rank}</td><td>{m}</td>" + "".join(f"<td>{means[m][n]:.4g} ± {spreads[m][n]:.2g}</td>" for n in METRICS) + "</tr>"
            for rank, m in enumerate(self.ranking, start=1))
        return f"<table><tr><th>rank</th><th>method</th>{head}</tr>{rows}</table>"


def faithfulness(model, attributions, *, settings: FaithfulnessSettings | None = None, **options) -> Faithfulness:
    """Measure how faithful each attribution is to the model: deletion and insertion AUC, ROAD,
    Average Drop and Increase in Confidence, with a random map as the baseline.

    Args:
        model: the model the attributions explain (an ``nn.Module`` or :class:`cnnviz.LoadedModel`,
            left untouched).
        attributions: what :func:`cnnviz.attributions` returned (or one :class:`cnnviz.Attribution`,
            or a dict of them over the same inputs and targets).
        settings: a :class:`FaithfulnessSettings` (default: its defaults).
        options: its fields, replacing those of ``settings``: ``steps``, ``percentiles``, ``noise``,
            ``blur``, ``seed``, ``batch_size``.

    Returns:
        :class:`Faithfulness`.
    """
    how = checked(chosen(FaithfulnessSettings, settings, options, "faithfulness"))
    percentiles = tuple(how.percentiles)
    results = _as_results(attributions)
    first = next(iter(results.values()))
    inputs = first.inputs
    count, _, height, width = inputs.shape
    maps = {}
    for name, result in results.items():
        if name == RANDOM:
            raise CnnvizError(f"{RANDOM!r} names the baseline map; a method cannot be called so")
        if not torch.equal(result.inputs, inputs) or [str(t) for t in result.targets] != [str(t) for t in first.targets]:
            raise CnnvizError(f"{name} explains other images or targets than {first.method}; evaluate attributions of one call together")
        absolute = result.absolute_map().float()
        if tuple(absolute.shape) != (count, height, width):
            raise CnnvizError(f"{name}'s map is {tuple(absolute.shape)}, not one map per image at the input's size {(count, height, width)}")
        maps[name] = absolute
    generator = torch.Generator().manual_seed(how.seed)
    maps[RANDOM] = torch.rand(count, height, width, generator=generator)
    refs = [unit_ref(model, target) for target in first.targets]
    scorer = _Scorer(model, refs, tuple(inputs.shape[1:]), how.batch_size)
    module, _ = unwrap(model)
    with torch.no_grad():
        x = to_device_of(inputs, module)
        evaluation = _Evaluation(scorer, x, maps, how)
        per_image, curves, original, fractions = evaluation.run(percentiles)
    return Faithfulness(
        methods=list(maps), per_image=per_image, curves=curves, fractions=fractions,
        percentiles=percentiles if how.road else (),
        original=original, score=[scorer.kind(i) for i in range(count)], targets=list(first.targets),
        sources=list(first.sources),
        settings={"steps": how.steps, "percentiles": list(percentiles), "road": how.road, "noise": how.noise,
                  "blur": evaluation.sigma, "seed": how.seed, "batch_size": how.batch_size,
                  "deletion_baseline": "zeros in the model's input space (the mean image after normalisation)",
                  "insertion_start": f"the image blurred (Gaussian, sigma {evaluation.sigma:.3g} px)"},
    )


def checked(how: FaithfulnessSettings) -> FaithfulnessSettings:
    """``how``, or one line saying which of its values cannot be used."""
    chosen(FaithfulnessSettings, how, {}, "faithfulness")  # the types
    if how.steps < 2 or how.batch_size < 1 or how.noise < 0 or (how.blur is not None and how.blur <= 0):
        raise CnnvizError("faithfulness: steps must be at least 2, batch_size at least 1, noise not negative, blur positive")
    percentiles = [int(p) for p in how.percentiles]
    if not percentiles or any(not 0 < p < 100 for p in percentiles):
        raise CnnvizError(f"faithfulness: ROAD's percentiles must lie strictly between 0 and 100, not {percentiles}")
    return how


def _as_results(attributions) -> dict:
    def one(value) -> bool:  # a cnnviz.Attribution (not imported: cnnviz.analyses.attribution imports this module)
        return all(hasattr(value, name) for name in ("method", "absolute_map", "inputs", "targets", "sources"))

    if one(attributions):
        return {attributions.method: attributions}
    if isinstance(attributions, dict) and attributions and all(one(v) for v in attributions.values()):
        return dict(attributions)
    raise CnnvizError("faithfulness evaluates what cnnviz.attributions(...) returned (or one cnnviz.Attribution), "
                      f"not a {type(attributions).__name__}")


class _Scorer:
    """``inputs, rows -> scores``: each row's target score, its image's target (``rows`` maps each
    input to its image). The passes run on the model with its batch normalisations folded where
    that gives the same values, channels-last, on a CPU as many inputs at a time as keep malloc's
    blocks in the process (cnnviz.core.fusion, cnnviz.core.memory)."""

    def __init__(self, model, refs: list[LayerRef], shape: tuple[int, ...], batch_size: int):
        self.refs = refs
        self.units = list(dict.fromkeys(refs))
        self.index = torch.tensor([self.units.index(ref) for ref in refs])
        self.classes = [u for u in self.units if u.is_output and u.channel is not None]
        self._kinds: dict[LayerRef, str] = {}
        self.output = LayerRef("", unwrap(model)[0])  # the whole output, for the classes' probabilities
        wanted = [*self.units, *([self.output] if self.classes else [])]
        self.model = folded_copy(model, wanted, shape)
        self.wanted = [rebound(self.model, ref) for ref in wanted]  # equal to the model's, on the copy's modules
        self.layout, self.batch_size, self.sizes = ChannelsLast(), batch_size, None

    def kind(self, image: int) -> str:
        return self._kinds.get(self.refs[image], "value")

    def __call__(self, inputs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if self.sizes is None:
            self.sizes = PassSizes(self.model, self.wanted, inputs[:1], self.batch_size)
        parts = []
        with probe(self.model, self.wanted) as recorder:
            for part in self.sizes.slices(len(inputs)):
                self.layout.run(recorder, inputs[part])
                parts.append(torch.stack([self._score(recorder, unit) for unit in self.units], dim=1).float().cpu())
        values = torch.cat(parts)  # M x U
        return values[torch.arange(len(rows)), self.index[rows]]

    def _score(self, recorder, unit: LayerRef) -> torch.Tensor:
        if unit in self.classes:
            logits = recorder[self.output]
            if logits.dim() == 2 and unit.position is None:
                self._kinds[unit] = "probability"
                return as_probabilities(logits)[0][:, unit.channel]
            if logits.dim() == 4 and unit.position is not None and len(unit.position) == 2:
                self._kinds[unit] = "probability"
                row, column = unit.position
                return as_probabilities(logits[:, :, row, column])[0][:, unit.channel]
        self._kinds[unit] = "value"
        value = recorder[unit]
        return value.flatten(1).mean(dim=1) if value.dim() > 1 else value


class _Evaluation:
    """Every metric of every map, the perturbed inputs of all maps batched together."""

    def __init__(self, scorer: _Scorer, inputs: torch.Tensor, maps: dict[str, torch.Tensor], how: FaithfulnessSettings):
        self.scorer, self.inputs, self.maps, self.how = scorer, inputs, maps, how
        count, _, height, width = inputs.shape
        self.count, self.height, self.width = count, height, width
        self.sigma = float(how.blur if how.blur is not None else max(height, width) / 45)
        # ties in one seeded random order, the same for every map (a constant map ranks like a random one)
        shuffle = torch.rand(count, height * width, generator=torch.Generator().manual_seed(how.seed + 1))
        first = torch.argsort(shuffle, dim=1).to(inputs.device)
        self.ranks = {name: _ranks(m.to(inputs.device), first) for name, m in maps.items()}

    def scores(self, make, jobs: list) -> torch.Tensor:
        """Scores of ``make(job) -> (1 x C x H x W input, image)`` for each job, ``batch_size`` per forward."""
        out = []
        for start in range(0, len(jobs), self.how.batch_size):
            made = [make(job) for job in jobs[start:start + self.how.batch_size]]
            batch = torch.cat([m[0] for m in made])
            rows = torch.tensor([m[1] for m in made])
            out.append(self.scorer(batch, rows))
        return torch.cat(out) if out else torch.empty(0)

    def run(self, percentiles):
        steps, count, pixels = self.how.steps, self.count, self.height * self.width
        cuts = [round(k * pixels / steps) for k in range(steps + 1)]
        fractions = torch.tensor([c / pixels for c in cuts], dtype=torch.float64)
        zeros = torch.zeros_like(self.inputs)
        blurred = _blur(self.inputs, self.sigma)
        names = list(self.maps)

        # deletion and insertion: the ends of each curve are the same for every map (computed once)
        ends = self.scores(lambda job: (job[0][job[1]:job[1] + 1], job[1]),
                           [(source, n) for source in (self.inputs, zeros, blurred) for n in range(count)])
        original, emptied, blank = ends[:count], ends[count:2 * count], ends[2 * count:]

        def step(job):
            name, kind, n, k = job
            removed = (self.ranks[name][n] < cuts[k]).view(1, 1, self.height, self.width)
            image = self.inputs[n:n + 1]
            if kind == "deletion":
                return torch.where(removed, zeros[n:n + 1], image), n
            return torch.where(removed, image, blurred[n:n + 1]), n

        jobs = [(name, kind, n, k) for name in names for kind in ("deletion", "insertion")
                for n in range(count) for k in range(1, steps)]
        inner = self.scores(step, jobs).view(len(names), 2, count, steps - 1)
        curves: dict[str, dict[str, torch.Tensor]] = {}
        per_image: dict[str, dict[str, torch.Tensor]] = {}
        for i, name in enumerate(names):
            deletion = torch.cat([original[:, None], inner[i, 0], emptied[:, None]], dim=1)
            insertion = torch.cat([blank[:, None], inner[i, 1], original[:, None]], dim=1)
            curves[name] = {"deletion": deletion, "insertion": insertion}
            deletion_auc, insertion_auc = area_under_curve(deletion, fractions), area_under_curve(insertion, fractions)
            per_image[name] = {"deletion_auc": deletion_auc, "insertion_auc": insertion_auc,
                               "auc_difference": insertion_auc - deletion_auc}

        # ROAD: the removed pixels imputed from their neighbours, most and least relevant first
        if not self.how.road:
            percentiles = ()
        road_jobs = [(name, order, n, p) for name in names for order in ("morf", "lerf")
                     for n in range(count) for p in percentiles]
        road = []
        for start in range(0, len(road_jobs), self.how.batch_size):  # imputed and scored a batch at a time
            chunk = road_jobs[start:start + self.how.batch_size]
            masks = torch.stack([self._road_mask(name, order, n, p) for name, order, n, p in chunk])
            rows = torch.tensor([n for _, _, n, _ in chunk])
            images = self.inputs[rows.to(self.inputs.device)]
            noise = torch.stack([self._noise(job, images.shape[1:]) for job in chunk]).to(images) * self.how.noise
            road.append(self.scorer(impute(images, masks) + noise * masks, rows))
        road = torch.cat(road) if road else torch.empty(0)
        road = road.view(len(names), 2, count, len(percentiles))
        for i, name in enumerate(names):
            morf, lerf = road[i, 0], road[i, 1]
            curves[name]["road_morf"], curves[name]["road_lerf"] = morf, lerf
            nothing = torch.full((count,), torch.nan, dtype=torch.float64)
            per_image[name]["road_morf"] = morf.mean(dim=1) if percentiles else nothing
            per_image[name]["road_lerf"] = lerf.mean(dim=1) if percentiles else nothing
            per_image[name]["road_combined"] = (lerf - morf).mean(dim=1) / 2 if percentiles else nothing

        # Average Drop / Increase in Confidence: the input times the map scaled to [0, 1]
        def masked(job):
            name, n = job
            one = self.maps[name][n].to(self.inputs.device)
            low, high = one.min(), one.max()
            scaled = (one - low) / (high - low) if high > low else torch.zeros_like(one)  # nothing stands out
            return self.inputs[n:n + 1] * scaled, n

        confidence = self.scores(masked, [(name, n) for name in names for n in range(count)]).view(len(names), count)
        for i, name in enumerate(names):
            after = confidence[i]
            drop = torch.where(original > 0, (original - after).clamp(min=0) / original.clamp(min=1e-30), torch.nan)
            per_image[name]["average_drop"] = 100 * drop
            per_image[name]["average_increase"] = 100 * (after > original).double()
        per_image = {name: {k: per_image[name][k].double() for k in METRICS} for name in names}
        return per_image, curves, original, fractions.float()

    def _noise(self, job, shape) -> torch.Tensor:
        """ROAD's noise for one imputation: its own seed (the settings' seed, the method, the order,
        the image, the percentile), so that it does not depend on what else is evaluated."""
        name, order, n, percentile = job
        seed = zlib.crc32(f"{self.how.seed}/{name}/{order}/{n}/{percentile}".encode())
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed))

    def _road_mask(self, name: str, order: str, n: int, percentile: int) -> torch.Tensor:
        pixels = self.height * self.width
        removed = int(pixels * percentile / 100)
        ranks = self.ranks[name][n]
        chosen = ranks < removed if order == "morf" else ranks >= pixels - removed
        return chosen.view(1, self.height, self.width).to(self.inputs.dtype)


def _ranks(maps: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
    """``N x H x W``: each pixel's place (0 = most important) in its map's descending order; ties
    in the order ``first`` gives (``N x HW`` pixel indices), or else in reading order."""
    flat = maps.flatten(1)
    if first is None:
        first = torch.arange(flat.shape[1], device=flat.device).expand_as(flat)
    order = first.gather(1, torch.argsort(flat.gather(1, first), dim=1, descending=True, stable=True))
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order).contiguous())
    return ranks.view_as(maps)


def area_under_curve(curve: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Trapezoidal area under each row of ``curve`` over ``fractions``."""
    curve = curve.double()
    widths = (fractions[1:] - fractions[:-1]).to(curve)
    return ((curve[:, 1:] + curve[:, :-1]) / 2 * widths).sum(dim=1)


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of ``N x C x H x W`` images (reflected borders)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-offsets**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    count, channels, height, width = images.shape
    flat = images.reshape(count * channels, 1, height, width)
    pad_h, pad_w = min(radius, height - 1), min(radius, width - 1)
    flat = F.pad(flat, (pad_w, pad_w, pad_h, pad_h), mode="reflect") if pad_h and pad_w else flat
    horizontal = kernel[radius - pad_w: radius + pad_w + 1].view(1, 1, 1, -1)
    vertical = kernel[radius - pad_h: radius + pad_h + 1].view(1, 1, -1, 1)
    flat = F.conv2d(F.conv2d(flat, horizontal / horizontal.sum()), vertical / vertical.sum())
    return flat.reshape(count, channels, height, width)


_NEIGHBOURS = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def impute(images: torch.Tensor, removed: torch.Tensor, *, tolerance: float = 1e-3, iterations: int | None = None) -> torch.Tensor:
    """ROAD's linear imputation (noise-free): each removed pixel becomes the weighted mean of its
    eight neighbours (1/6 beside, 1/12 across; neighbours outside the image left out), the kept
    pixels fixed. The linear system of all removed pixels is solved together by conjugate gradients
    in torch, started from the same problem solved at half the resolution (recursively), which
    converges in tens of iterations where a cold start needs hundreds in a large hole.

    Args:
        images: ``N x C x H x W``.
        removed: ``N x 1 x H x W`` (or ``N x H x W``), 1 where a pixel is removed.
        tolerance: stop when every map's residual is below this fraction of its right-hand side.
        iterations: at most this many iterations (default: twice the larger side).

    Returns:
        The images with the removed pixels imputed.
    """
    count, channels, height, width = images.shape
    mask = removed.reshape(count, 1, height, width).to(images.dtype).expand(count, channels, height, width)
    maps = count * channels  # every channel of every image one map, side by side as channels (depthwise)
    filled = _cascade(images.reshape(1, maps, height, width), mask.reshape(1, maps, height, width), tolerance, iterations)
    return filled.reshape(count, channels, height, width)


def _cascade(flat: torch.Tensor, mask: torch.Tensor, tolerance: float, iterations: int | None) -> torch.Tensor:
    """Solve for the masked pixels of ``1 x M x H x W`` maps, started from the solution at half the
    resolution."""
    height, width = flat.shape[2:]
    maps = flat.shape[1]
    keep = 1 - mask
    if min(height, width) >= 16:  # the start: the problem at half the resolution, blocks all removed
        kept = F.avg_pool2d(keep, 2, ceil_mode=True)
        coarse = F.avg_pool2d(flat * keep, 2, ceil_mode=True) / kept.clamp(min=1e-12)
        start = F.interpolate(_cascade(coarse, (kept == 0).to(flat.dtype), tolerance, iterations), size=(height, width),
                              mode="bilinear", align_corners=False)
    else:  # the mean of the kept pixels
        start = ((flat * keep).sum(dim=(2, 3), keepdim=True) / keep.sum(dim=(2, 3), keepdim=True).clamp(min=1)).expand_as(flat)
    kernel = _NEIGHBOURS.to(flat).view(1, 1, 3, 3).expand(maps, 1, 3, 3).contiguous()

    def spread(tensor):
        return F.conv2d(tensor, kernel, padding=1, groups=maps)

    weights = spread(torch.ones_like(flat))  # the weight of each pixel's neighbours inside the image

    def operator(v):
        return mask * (weights * v - spread(v * mask))

    def dot(a, b):
        return (a * b).sum(dim=(2, 3), keepdim=True)

    b = mask * spread(flat * keep)
    x = mask * start
    r = b - operator(x)
    p = r.clone()
    rr = dot(r, r)
    bb = dot(b, b).clamp(min=1e-30)
    for _ in range(iterations or 2 * max(height, width)):
        if bool((rr <= tolerance**2 * bb).all()):
            break
        ap = operator(p)
        alpha = rr / dot(p, ap).clamp(min=1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        new = dot(r, r)
        p = r + (new / rr.clamp(min=1e-30)) * p
        rr = new
    return flat * keep + x * mask


def _mean(values: torch.Tensor) -> float:
    kept = values[~torch.isnan(values)]
    return float(kept.mean()) if len(kept) else float("nan")


def _std(values: torch.Tensor) -> float:
    kept = values[~torch.isnan(values)]
    return float(kept.std(unbiased=False)) if len(kept) > 1 else 0.0 if len(kept) else float("nan")


def _or_minus_inf(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def _finite(value: float):
    return None if math.isnan(value) or math.isinf(value) else significant(value)


def significant(value: float) -> float:
    """``value`` to 7 significant digits (small values keep theirs)."""
    return float(f"{value:.7g}")

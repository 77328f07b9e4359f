"""Building a gallery (see :mod:`cnnviz.site`): its plan made once (:mod:`cnnviz.site.plan`),
then its stages in order, each a list of jobs (:mod:`cnnviz.site.jobs`,
:mod:`cnnviz.site.classes`) run by a :class:`cnnviz.site.stages.StageRunner`, which reuses what
has not changed; then the manifest and the pages."""
from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

from cnnviz.core.version import __version__
from cnnviz.core import output as files
from cnnviz.core.executor import Executor, executor
from cnnviz.errors import CnnvizError
from cnnviz.core.model import LoadedModel, preprocessing_of
from cnnviz.models import load_model
from cnnviz.site import pages
from cnnviz.site.choice import UnitChoice, choose_units, rendered_classes
from cnnviz.site.classes import attributions_job, classes_job, faithfulness_job
from cnnviz.site.concepts import concept_count, concepts_job, importance_images, job_size
from cnnviz.site.jobs import (
    activations_job, dream_job, kernels_job, maximize_job, renders_job, statistics_job, units_job,
)
from cnnviz.site.plan import GalleryPlan, plan_gallery
from cnnviz.site.records import images_key, remove_partial_files
from cnnviz.core.settings import renamed
from cnnviz.site.settings import (
    CONCEPT_MAP_IMAGES, CONCEPT_TOP_CHANNELS, CONCEPT_USES, IMAGES_PER_ATTRIBUTION_FIGURE, KERNEL_FIGURE_UNITS,
    GallerySettings, ProgressFactory,
)
from cnnviz.site.stages import Job, StageRunner


@dataclass
class Gallery:
    """A written gallery.

    Attributes:
        folder: where it is; index: its ``index.html``; manifest: its ``manifest.json``.
        figures: the figures it shows (the manifest's entries).
        done, reused: jobs run now, and jobs whose earlier results were kept.
        failed: ``job: reason`` for each job that could not be done (shown on its page).
        units: the unit pages written (``units/LAYER/CHANNEL.html``).
    """

    folder: Path
    index: Path
    manifest: Path
    figures: list[dict]
    done: int
    reused: int
    failed: list[str] = field(default_factory=list)
    units: list[Path] = field(default_factory=list)

    def __repr__(self) -> str:
        return (f"Gallery({str(self.index)!r}, {len(self.figures)} figures, {len(self.units)} unit pages, "
                f"{self.done} jobs run, {self.reused} reused)")

    def _repr_html_(self) -> str:
        """In a notebook: a link to the index (opened from the file system) and what was written."""
        failed = f", {len(self.failed)} jobs failed" if self.failed else ""
        text = html.escape(f"{len(self.figures)} figures, {len(self.units)} unit pages, {self.done} jobs run, "
                           f"{self.reused} reused{failed}")
        link = html.escape(self.index.resolve().as_uri())
        return f'<p>Gallery: <a href="{link}" target="_blank">{html.escape(str(self.index))}</a> ({text})</p>'

    def to_dict(self) -> dict:
        """JSON-ready: where it is, what it shows and what the run did."""
        return {"folder": str(self.folder), "index": str(self.index), "manifest": str(self.manifest),
                "figures": len(self.figures), "unit_pages": len(self.units), "done": self.done,
                "reused": self.reused, "failed": list(self.failed)}

    def plot(self, per_layer: int = 8):
        """The index's hierarchy as one figure: a row per layer of its first ``per_layer`` unit
        renders, from shallow to deep."""
        from PIL import Image

        from cnnviz.core.display import ShownFigure

        rows: dict[str, list[dict]] = {}
        for entry in self.figures:
            if entry.get("kind") == "maximize" and entry.get("objective") == "channel" and entry.get("layer"):
                rows.setdefault(entry["layer"], []).append(entry)
        if not rows:
            raise CnnvizError("the gallery has no unit renders to draw; open its index instead")
        columns = min(per_layer, max(len(entries) for entries in rows.values()))
        figure = ShownFigure(figsize=(1.3 * columns + 1.2, 1.4 * len(rows)), layout="constrained")
        axes = figure.subplots(len(rows), columns, squeeze=False)
        for axes_row, (layer, entries) in zip(axes, rows.items()):
            for index, axis in enumerate(axes_row):
                axis.set_axis_off()
                if index < len(entries):
                    with Image.open(self.folder / entries[index]["file"]) as picture:
                        axis.imshow(picture.convert("RGB"))
                    axis.set_title(str(entries[index].get("unit", "")).split(":")[-1], fontsize=7)
            axes_row[0].text(-0.1, 0.5, layer, transform=axes_row[0].transAxes, ha="right", va="center", fontsize=8)
        return figure


def gallery(
    model,
    images="samples",
    layer: str | Sequence[str] | None = None,
    *,
    output: str | os.PathLike = "cnnviz-gallery",
    settings: GallerySettings | None = None,
    force: bool = False,
    progress: ProgressFactory | None = None,
    **overrides,
) -> Gallery:
    """Write a static HTML gallery of one model (see :mod:`cnnviz.site`).

    Args:
        model: a spec (``"builtin:photos"``), a :class:`LoadedModel` or an ``nn.Module`` (left
            untouched).
        images: an image spec (a folder, ``samples``, files, ``sample:NAME``), or a list of them;
            ``C x H x W`` tensors (floats in [0, 1] or uint8; or one ``N x C x H x W`` batch) and
            PIL images too, kept in the gallery as PNG files (``data/inputs``, 8-bit).
        layer: the layer or layers that get a page (whole layers); default every convolution, or
            8 of them spread over the depth when there are more than 12.
        output: the gallery's folder (created; an existing gallery there is completed or updated).
        settings: a :class:`GallerySettings`; ``overrides`` change single fields
            (``max_channels=4, steps=16``).
        force: redo every job, even those whose inputs and settings have not changed.
        progress: ``progress(stage, total)`` returns a callable that is given the work done.

    Returns:
        A :class:`Gallery`.

    Raises:
        CnnvizError: a bad model, image spec, layer or setting, or an unwritable folder; before
            any file is written.
    """
    try:
        settings = replace(settings or GallerySettings(), **renamed(GallerySettings, overrides, "gallery"))
    except TypeError as error:
        raise CnnvizError(f"{error}; the settings are: {', '.join(GallerySettings.__dataclass_fields__)}") from None
    methods = settings.methods
    settings = replace(settings, methods=(methods,) if isinstance(methods, str) else tuple(methods),
                       concept_layers=_layer_names(settings.concept_layers))
    settings.check()
    loaded = model if isinstance(model, LoadedModel) else (
        load_model(model) if isinstance(model, str) else LoadedModel(model, preprocessing_of(model), spec=type(model).__name__)
    )
    import matplotlib

    from cnnviz.core.staging import writing_into

    layers = [layer] if isinstance(layer, str) else layer
    with writing_into(output, "cnnviz gallery", group=True):  # under torchrun: rank 0's, for every rank  # one run at a time; an unwritable folder said now
        work = executor()
        plan = plan_gallery(loaded, images, layers, Path(output).expanduser(), settings, work)
        # file and class names go into figure titles as they are: a '$' is text, not mathematics
        with matplotlib.rc_context({"text.parse_math": False}):
            return _build(plan, settings, StageRunner(plan, settings, work, force, progress), work)


def _layer_names(value):
    """``concept_layers`` as a tuple of names: one name alone, a list, or ``0`` (none); ``None`` as it is."""
    if value is None or isinstance(value, tuple):
        return value
    if isinstance(value, str):
        return () if value.strip() in ("", "0") else (value,)
    if isinstance(value, list):
        return tuple(value)
    return () if value == 0 and not isinstance(value, bool) else value


def _build(plan: GalleryPlan, settings: GallerySettings, stages: StageRunner, work: Executor) -> Gallery:
    """The stages in order, then the site (written by the first process; every process returns it)."""
    if work.first_process:
        remove_partial_files(plan.folder)
    s = settings
    hooked = not plan.scripted  # a TorchScript model: only what needs no hook inside it
    # the statistics come first: they rank the units that every other section shows
    if hooked:
        stages.run("statistics", [Job("statistics", {"layers": plan.layers, "images": plan.images_key},
                                      partial(statistics_job, plan, s), len(plan.sources))])
    choice = choose_units(plan, s, stages.records.get("statistics"))
    conv = set(plan.convolution_names)
    stages.run("kernels", [
        Job(f"kernels {layer}", {"layer": layer, "channels": sorted(choice.strongest(layer)[:KERNEL_FIGURE_UNITS])},
            partial(kernels_job, plan, s, layer, choice.strongest(layer)), 1)
        for layer in plan.layers if layer in conv])
    if hooked:
        _hooked_stages(plan, s, stages, choice)
    count = min(s.attribution_images, len(plan.readable)) if plan.class_count else 0
    chunks = [list(plan.readable[i: i + IMAGES_PER_ATTRIBUTION_FIGURE])
              for i in range(0, count, IMAGES_PER_ATTRIBUTION_FIGURE)]
    stages.run("attributions", [Job(f"attributions {k}", {"images": chunk, "image_key": images_key(chunk)},
                                    partial(attributions_job, plan, s, chunk), len(chunk))
                                for k, chunk in enumerate(chunks)])
    measured = [stages.records[f"attributions {k}"] for k in range(len(chunks))
                if ((stages.records.get(f"attributions {k}") or {}).get("data") or {}).get("faithfulness")]
    if measured:  # every attributed image's faithfulness, joined: the ranking on the attributions page
        stages.run("faithfulness", [Job("faithfulness", {"attributions": [record["key"] for record in measured]},
                                        partial(faithfulness_job, plan, s,
                                                [record["data"]["faithfulness"] for record in measured]), 1)])
    classes = rendered_classes(plan, s)
    if classes:
        stages.run("classes", [Job("classes", {"classes": classes, "images": plan.images_key},
                                   partial(classes_job, plan, s, classes), len(classes) * s.class_steps)])
    caps = {**choice.caps, "max_classes": len(classes)}
    # rank 0 writes; every rank returns the same
    site = work.first("gallery/site", lambda: _write_site(plan, s, stages, choice, caps))
    work.tidy()
    return site


def _hooked_stages(plan: GalleryPlan, s: GallerySettings, stages: StageRunner, choice: UnitChoice) -> None:
    """The stages that look inside the model: activations, renders, unit pictures, concepts, Deep Dream."""
    shown, extra, records = choice.shown, choice.extra, stages.records
    statistics = records.get("statistics", {})
    stages.run("activations", [
        Job(f"activations {spec}", {"image": spec, "image_key": images_key([spec]), "units": shown},
            partial(activations_job, plan, s, choice, spec), 1) for spec in plan.readable[: s.activation_images]])
    stages.run("maximize", [
        Job(f"maximize {layer}", {"layer": layer, "channels": shown[layer], "images": plan.images_key},
            partial(maximize_job, plan, s, layer, shown[layer]), len(shown[layer]) * s.steps)
        for layer in plan.layers if shown[layer]])
    diverse = {layer: [c for c in extra[layer] if (records.get(f"maximize {layer}", {}).get("data") or {})
                       .get("units", {}).get(str(c), {}).get("start") != "filter"] for layer in plan.layers}
    stages.run("renders", [
        Job(f"renders {layer}", {"layer": layer, "channels": extra[layer], "diverse": diverse[layer],
                                 "images": plan.images_key},
            partial(renders_job, plan, s, layer, extra[layer], diverse[layer]),
            (2 * len(extra[layer]) + s.diverse * len(diverse[layer])) * s.steps)
        for layer in plan.layers if extra[layer]])
    if statistics.get("key") is not None and not statistics.get("error"):
        stages.run("units", [
            Job(f"units {layer}", {"layer": layer, "channels": shown[layer], "statistics": statistics["key"],
                                   "images": plan.images_key},
                partial(units_job, plan, s, layer, shown[layer], statistics["data"]), len(shown[layer]))
            for layer in plan.layers if shown[layer]])
    # each chosen layer's concepts, with a render of each (after the units: its page links to theirs)
    stages.run("concepts", [
        Job(f"concepts {layer}", {"layer": layer, "k": concept_count(plan, s, layer), "images": plan.images_key,
                                  "maps": CONCEPT_MAP_IMAGES, "importance_images": importance_images(plan),
                                  "uses": [CONCEPT_TOP_CHANNELS, CONCEPT_USES]},
            partial(concepts_job, plan, s, layer), job_size(plan, s, layer))
        for layer in plan.concept_layers])
    dream_image = s.dream_image or plan.readable[0]
    stages.run("dream", [
        Job(f"dream {layer}", {"layer": layer, "image": dream_image, "image_key": images_key([dream_image])},
            partial(dream_job, plan, s, layer, dream_image), s.dream_octaves * s.dream_steps)
        for layer in plan.layers])


def _write_site(plan: GalleryPlan, settings: GallerySettings, stages: StageRunner, choice: UnitChoice,
                caps: dict) -> Gallery:
    """The manifest and the pages (and what no job of this run made any more, removed)."""
    stages.remove_stale_jobs()
    figures = [figure for record in stages.records.values() for figure in record["figures"]]
    manifest = _manifest(plan, settings, stages, figures)
    manifest_path = files.write_json(plan.folder / "manifest.json", manifest)
    content = pages.SiteContent(plan.folder, list(plan.layers), stages.records, list(plan.table), settings,
                                sum(p.numel() for p in plan.module.parameters()), plan.class_count,
                                choice.shown, choice.ranking, _links(plan), plan.class_names, caps)
    index, units = pages.write_site(content, manifest)
    return Gallery(plan.folder, index, manifest_path, manifest["figures"], stages.done, stages.reused, stages.failed,
                   units)


def _links(plan: GalleryPlan) -> list:
    """The weight links between neighbouring shown layers (a reason where there is none)."""
    from cnnviz.analyses.connections import connections

    layers = list(plan.layers)
    try:
        return connections(plan.loaded, layers) if len(layers) > 1 else []
    except CnnvizError as why:
        return [str(why)] * (len(layers) - 1)


def _manifest(plan: GalleryPlan, settings: GallerySettings, stages: StageRunner, figures: list[dict]) -> dict:
    stats = stages.records.get("statistics", {}).get("data", {})
    maxima = stats.get("layers", {})
    shown = []
    for figure in figures:
        figure = dict(figure)
        if (figure["kind"] == "maximize" and figure.get("objective") == "channel" and figure["layer"] in maxima
                and figure.get("channel") is not None):  # the channel's own measure: its best mean over one image
            figure["dataset_maximum"] = maxima[figure["layer"]]["mean_maximum"][figure["channel"]]
        shown.append(figure)
    loaded, module = plan.loaded, plan.module
    return {
        "cnnviz": __version__,
        "model": {"spec": loaded.spec, "weights": loaded.weights, "type": type(module).__name__,
                  "name": model_name(loaded.spec, type(module).__name__),
                  "source": without_folders(loaded.spec), "weights_name": without_folders(loaded.weights),
                  "parameters": sum(p.numel() for p in module.parameters()),
                  "input": loaded.preprocessing.describe(),
                  "classes": len(plan.class_names) if plan.class_names else None},
        "images": {"count": len(plan.sources), "first": list(plan.sources[:5]),
                   "skipped": stats.get("skipped", [])},
        "layers": list(plan.layers),
        "settings": asdict(settings),
        "failed": stages.failed,
        "figures": shown,
    }


def without_folders(text):
    """A spec or weights as a page shows it: a file's name without the folders it is in
    (``/home/me/models/net.py:make`` -> ``net.py:make``); other names as they are."""
    if not isinstance(text, str) or ("/" not in text and "\\" not in text):
        return text
    head, colon, tail = text.rpartition(":")
    path, suffix = (head, colon + tail) if colon and "/" not in tail and "\\" not in tail else (text, "")
    return os.path.basename(path.replace("\\", "/")) + suffix


def model_name(spec: str | None, type_name: str) -> str:
    """What a gallery calls the model: a registry spec as it is (``torchvision:mobilenet_v2``,
    ``timm:resnet18``, ``builtin:photos``), else its class with where it came from, without folders
    (``MobileNetV2 (nets.py:make)``), or its class alone (a module given in Python)."""
    if spec and spec.split(":", 1)[0] in ("torchvision", "timm", "builtin"):
        return spec
    if not spec:
        return type_name
    return f"{type_name} ({without_folders(spec)})"


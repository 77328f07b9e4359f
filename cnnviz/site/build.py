"""Building a gallery: choosing layers, running the jobs in stages, reusing what has not changed
(see :mod:`cnnviz.site`)."""
from __future__ import annotations

import hashlib
import html
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path


import torch

from cnnviz.core.version import __version__
from cnnviz.core import distributed
from cnnviz.core import output as files
from cnnviz.errors import CnnvizError, CnnvizWarning
from cnnviz.inputs.images import image_sources, open_image
from cnnviz.core.model import LoadedModel, model_key, preprocessing_of, unwrap
from cnnviz.models import load_model
from cnnviz.core.references import layer_ref
from cnnviz.analyses.feature_visualization.maximize import step_cost
from cnnviz.analyses.kernels import as_convolution, convolutions
from cnnviz.analyses.summary import layer_table
from cnnviz.site import pages
from cnnviz.site.content import attribution_pages, channels_in, layer_page, row_of, unit_page
from cnnviz.site.classes import ClassJobs
from cnnviz.site.jobs import Jobs
from cnnviz.site.stages import Stages
from cnnviz.site.records import adopt_older_gallery, check_folders_writable, images_key, remove_partial_files
from cnnviz.site.settings import (
    IMAGES_PER_ATTRIBUTION_FIGURE, KERNEL_FIGURE_UNITS, MANY_CONVOLUTIONS, SUBSET, GallerySettings,
    ProgressFactory, within_budget, AUTO_CLASSES, CLASS_BUDGET,
)


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
        settings = replace(settings or GallerySettings(), **overrides)
    except TypeError as error:
        raise CnnvizError(f"{error}; the settings are: {', '.join(GallerySettings.__dataclass_fields__)}") from None
    methods = settings.methods
    settings = replace(settings, methods=(methods,) if isinstance(methods, str) else tuple(methods))
    settings.check()
    loaded = model if isinstance(model, LoadedModel) else (
        load_model(model) if isinstance(model, str) else LoadedModel(model, preprocessing_of(model), spec=type(model).__name__)
    )
    import matplotlib

    from cnnviz.core.staging import writing_into

    layers = [layer] if isinstance(layer, str) else layer
    with writing_into(output, "cnnviz gallery", group=True):  # under torchrun: rank 0's, for every rank  # one run at a time; an unwritable folder said now
        builder = _Builder(loaded, images, layers, Path(output).expanduser(), settings, force, progress)
        # file and class names go into figure titles as they are: a '$' is text, not mathematics
        with matplotlib.rc_context({"text.parse_math": False}):
            return builder.run()


INPUTS = "data/inputs"  # where images given as tensors or PIL images are kept, as PNG files


def _image_specs(images, folder: Path, channels: int) -> tuple[list, dict[str, bytes]]:
    """The image specs of ``images`` with every tensor (``C x H x W``, or ``N x C x H x W``) and
    PIL image replaced by the path of a PNG file in the gallery's ``data/inputs`` (named by its
    content, so a re-run reuses its results); with those files' contents, to be written. A
    tensor is stored as 8-bit PNG (1 or 3 channels; what the pages show and the jobs read)."""
    import io

    from PIL import Image

    from cnnviz.inputs.images import to_tensor

    if isinstance(images, (str, os.PathLike)):
        return [images], {}
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if isinstance(images, torch.Tensor):
        items = list(images) if images.dim() == 4 else [images]
    specs, pending = [], {}
    for item in items:
        if isinstance(item, torch.Tensor):
            pixels = to_tensor(item.detach().cpu(), item.shape[0] if item.dim() == 3 else channels)
            if pixels.shape[0] not in (1, 3):
                raise CnnvizError(f"a gallery keeps its images as PNG files: give 1- or 3-channel tensors, "
                                  f"not {pixels.shape[0]} channels (or save them as files yourself)")
            data = files.png_bytes(pixels)
        elif isinstance(item, Image.Image):
            image = item if item.mode in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA") else item.convert("RGB")
            buffer = io.BytesIO()
            image.save(buffer, format="png")
            data = buffer.getvalue()
        else:
            specs.append(item)
            continue
        path = str(Path(folder).expanduser() / INPUTS / f"image{len(specs)}-{hashlib.sha256(data).hexdigest()[:10]}.png")
        specs.append(path)
        pending[path] = data
    return specs, pending


def default_layers(model) -> list[str]:
    """The layers a gallery shows by default: every convolution, or 8 of them spread evenly over
    the depth (the first and the last included) when there are more than 12."""
    found = convolutions(model)
    if not found:
        raise CnnvizError("this model has no convolution layers; name the layers to show with layer=...")
    if len(found) <= MANY_CONVOLUTIONS:
        return found
    picks = sorted({round(i * (len(found) - 1) / (SUBSET - 1)) for i in range(SUBSET)})
    return [found[i] for i in picks]


class _Builder(Stages, ClassJobs, Jobs):
    def __init__(self, loaded: LoadedModel, images, layers, folder: Path, settings: GallerySettings, force: bool,
                 progress: ProgressFactory | None):
        self.loaded, self.settings, self.force = loaded, settings, force
        self.module, self.class_names = unwrap(loaded)
        self.progress = progress
        # inside a process group (torchrun) every rank makes the same plan (a mistake every rank
        # makes is said once); rank 0 alone reads and writes the folder, and the others hand it
        # what they made (see _run_stage)
        self.rank, self.ranks = distributed.rank_and_size()
        self.writer = self.rank == 0
        in_memory: dict[str, bytes] = {}  # each rank's own: the images' bytes need not travel
        distributed.together("gallery/plan", lambda: in_memory.update(self._plan(images, layers, folder)))
        self.folder = Path(folder).expanduser()
        distributed.from_first("gallery/folder", lambda: self._prepare_folder(folder, in_memory))
        self.model_key = model_key(loaded)
        self.images_key = images_key(self.sources)
        self.done = self.reused = 0
        self.failed: list[str] = []
        self.records: dict[str, dict] = {}

    def _plan(self, images, layers, folder: Path) -> dict[str, bytes]:
        """The layers and images, checked; the images given in memory, to be kept as files."""
        loaded, settings = self.loaded, self.settings
        try:  # the layer table with each layer's theoretical receptive field, when it can be found
            self.table = layer_table(loaded, receptive_fields=True)
        except CnnvizError:
            self.table = layer_table(loaded)
        self.images = images
        self.scripted = isinstance(self.module, torch.jit.ScriptModule)
        specs, in_memory = _image_specs(images, folder, loaded.preprocessing.channels)
        self._in_memory = set(in_memory)  # readable: cnnviz makes them (written below, once all is checked)
        self.sources = [source for spec in specs
                        for source in ([spec] if spec in in_memory else [s.spec for s in image_sources(spec)])]
        if in_memory:  # every job reads the same images: the PNG files (statistics too)
            self.images = list(self.sources)
        self.convolution_names = convolutions(self.loaded)
        self.layers = self._layers(layers)
        self._readable: list[str] | None = None
        self.readable()  # no image can be read: fail now, before any file is written
        if settings.dream_image is not None:
            open_image(settings.dream_image)
        self.check_classes()  # a class name that is not the model's: said now, not on the attributions page
        return in_memory

    def _prepare_folder(self, folder: Path, in_memory: dict[str, bytes]) -> None:
        """Check the folder can take the gallery and keep the images given in memory there."""
        settings = self.settings
        self.folder = files.output_folder(folder)
        check_folders_writable(self.folder)
        adopt_older_gallery(self.folder)
        # a user's own index.html (or manifest, or page) in the folder is refused before any work
        files.check_writable([self.folder / name for name in
                              ("index.html", "manifest.json", "style.css", "classes.html",
                               *attribution_pages(min(settings.attribution_images, len(self.sources))),
                               *(layer_page(layer) for layer in self.layers),
                               *(unit_page(layer, c) for layer in self.layers for c in range(self.channels_of(layer))))]
                             + list(in_memory))
        for path, data in in_memory.items():  # images given as tensors or PIL images: kept with the gallery
            files.write_bytes(path, data)
        wanted = {os.path.realpath(spec) for spec in self.sources}
        for stale in sorted((self.folder / INPUTS).glob("*.png")):  # those of an earlier run's images
            if os.path.realpath(stale) not in wanted:
                files.remove_written(stale)

    # -- choosing ---------------------------------------------------------------------------

    def _layers(self, layers) -> list[str]:
        if self.scripted:  # no hook runs inside TorchScript: its convolutions show their kernels only
            found = convolutions(self.loaded)
            chosen = default_layers(self.loaded) if not layers else [layer_ref(self.loaded, text).layer_text for text in layers]
            wrong = [name for name in chosen if name not in found]
            if wrong:
                raise CnnvizError(f"{wrong[0]} is not a convolution; a TorchScript model's layers cannot be hooked, "
                                  "so its gallery shows the kernels of its convolutions only")
            warnings.warn("a TorchScript model's layers cannot be hooked: the gallery shows its kernels, "
                          "attributions and classes (load the original nn.Module for the rest)", CnnvizWarning, stacklevel=4)
            return list(dict.fromkeys(chosen))
        ran = {row.name for row in self.table if row.output_shape and row.output_shape[0] is not None}
        if not layers:  # the default: convolutions that run in a forward pass
            chosen = [layer for layer in default_layers(self.loaded) if layer in ran]  # module names, as the table's
            if not chosen:
                raise CnnvizError("no convolution of this model runs in a forward pass; name the layers with layer=...")
            return chosen
        chosen = []
        for text in layers:
            ref = layer_ref(self.loaded, text)
            if ref.channel is not None or ref.position is not None:
                raise CnnvizError(f"{text!r} names a unit; a gallery page shows whole layers: give {ref.layer_text}")
            if ref.is_output:
                raise CnnvizError("the model's output has the class page; give layers inside the model")
            if ref.layer not in ran:
                raise CnnvizError(f"{text!r} does not run in a forward pass of this model; pick a layer that does "
                                  "(cnnviz layers lists them with their output shapes)")
            if ref.layer_text not in chosen:
                chosen.append(ref.layer_text)
        return chosen

    def readable(self) -> list[str]:
        """The first image sources that open (as many as any job needs)."""
        if self._readable is None:
            wanted = max(self.settings.activation_images, self.settings.attribution_images, 1)
            readable = []
            for spec in self.sources:
                try:
                    if spec not in self._in_memory:
                        open_image(spec)
                except CnnvizError:
                    continue
                readable.append(spec)
                if len(readable) >= wanted:
                    break
            if not readable:
                raise CnnvizError("none of the images could be read; give image files, a folder of images or samples")
            self._readable = readable
        return self._readable

    def row_of(self, layer: str):
        """The layer table's row of a layer reference (``None`` when the table has none)."""
        return row_of(self.table, layer)

    def channels_of(self, layer: str) -> int:
        """The channels of the layer's output in the call the reference names (``NAME#2``: the second)."""
        return channels_in(self.row_of(layer), layer_ref(self.loaded, layer).call)

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> Gallery:
        if self.writer:
            remove_partial_files(self.folder)
        s = self.settings
        hooked = not self.scripted  # a TorchScript model: only what needs no hook inside it
        # the statistics come first: they rank the units that every other section shows
        if hooked:
            self._run_stage("statistics", [("statistics", {"layers": self.layers, "images": self.images_key},
                                            self.statistics_job, len(self.sources))])
        self._choose_units()
        conv = set(self.convolution_names)
        self._run_stage("kernels", [
            (f"kernels {layer}", {"layer": layer, "channels": sorted(self._strongest(layer)[:KERNEL_FIGURE_UNITS])},
             lambda layer=layer: self.kernels_job(layer, self._strongest(layer)), 1)
            for layer in self.layers if layer in conv])
        if hooked:
            self._hooked_stages()
        count = min(s.attribution_images, len(self.readable())) if self.class_count() else 0
        chunks = [self.readable()[i: i + IMAGES_PER_ATTRIBUTION_FIGURE]
                  for i in range(0, count, IMAGES_PER_ATTRIBUTION_FIGURE)]
        self._run_stage("attributions", [(f"attributions {k}", {"images": chunk, "image_key": images_key(chunk)},
                                          lambda k=k, chunk=chunk: self.attributions_job(k, chunk), len(chunk))
                                         for k, chunk in enumerate(chunks)])
        classes = self._classes()
        self.caps["max_classes"] = len(classes)
        if classes:
            self._run_stage("classes", [("classes", {"classes": classes, "images": self.images_key},
                                         lambda: self.classes_job(classes), len(classes) * s.class_steps)])
        site = distributed.from_first("gallery/site", self._write_site)  # rank 0 writes; every rank returns the same
        if self.ranks > 1:
            distributed.tidy()
        return site

    def _write_site(self) -> Gallery:
        """The manifest and the pages (and what no job of this run made any more, removed)."""
        self._remove_stale_jobs()
        figures = [figure for record in self.records.values() for figure in record["figures"]]
        manifest = self._manifest(figures)
        manifest_path = files.write_json(self.folder / "manifest.json", manifest)
        content = pages.SiteContent(self.folder, self.layers, self.records, list(self.table), self.settings,
                                    sum(p.numel() for p in self.module.parameters()), self.class_count(),
                                    self.shown, self.ranking, self._links(), self.class_names, self.caps)
        index, units = pages.write_site(content, manifest)
        return Gallery(self.folder, index, manifest_path, manifest["figures"], self.done, self.reused, self.failed, units)

    def _hooked_stages(self) -> None:
        """The stages that look inside the model: activations, renders, unit pictures, Deep Dream."""
        s = self.settings
        statistics_key = self.records.get("statistics", {}).get("key")
        self._run_stage("activations", [
            (f"activations {spec}", {"image": spec, "image_key": images_key([spec]), "units": self.shown},
             lambda spec=spec: self.activations_job(spec), 1) for spec in self.readable()[: s.activation_images]])
        self._run_stage("maximize", [
            (f"maximize {layer}", {"layer": layer, "channels": self.shown[layer], "images": self.images_key},
             lambda layer=layer: self.maximize_job(layer, self.shown[layer]), len(self.shown[layer]) * s.steps)
            for layer in self.layers if self.shown[layer]])
        diverse = {layer: [c for c in self.extra[layer] if (self.records.get(f"maximize {layer}", {}).get("data") or {})
                           .get("units", {}).get(str(c), {}).get("start") != "filter"] for layer in self.layers}
        self._run_stage("renders", [
            (f"renders {layer}", {"layer": layer, "channels": self.extra[layer], "diverse": diverse[layer],
                                  "images": self.images_key},
             lambda layer=layer: self.renders_job(layer, self.extra[layer], diverse[layer]),
             (2 * len(self.extra[layer]) + s.diverse * len(diverse[layer])) * s.steps)
            for layer in self.layers if self.extra[layer]])
        if statistics_key is not None and not self.records["statistics"].get("error"):
            self._run_stage("units", [
                (f"units {layer}", {"layer": layer, "channels": self.shown[layer], "statistics": statistics_key,
                                    "images": self.images_key},
                 lambda layer=layer: self.units_job(layer, self.shown[layer]), len(self.shown[layer]))
                for layer in self.layers if self.shown[layer]])
        dream_image = s.dream_image or self.readable()[0]
        self._run_stage("dream", [
            (f"dream {layer}", {"layer": layer, "image": dream_image, "image_key": images_key([dream_image])},
             lambda layer=layer: self.dream_job(layer, dream_image), s.dream_octaves * s.dream_iterations)
            for layer in self.layers])

    def _choose_units(self) -> None:
        """One rule for every section: each layer's units ranked by their strongest response to the
        images (the largest per-image mean activation; channel order without statistics), the
        first ``max_channels`` shown (in channel order), the first ``unit_renders`` of those also
        rendered as a neuron, a diverse set and negatively; ``"auto"`` takes as many as the render
        budget allows (:data:`cnnviz.site.settings.CHANNEL_BUDGET`)."""
        measured = self.records.get("statistics", {}).get("data", {}).get("layers", {})
        counts = {layer: self.channels_of(layer) for layer in self.layers}
        self.shown, self.ranking, self.extra = {}, {}, {}
        caps = self._budgeted(counts)
        self.caps = caps
        for layer in self.layers:
            count = counts[layer]
            maxima = measured.get(layer, {}).get("mean_maximum")
            if maxima and len(maxima) == count:
                order = sorted(range(count), key=lambda c: -maxima[c] if maxima[c] is not None else float("inf"))
            else:
                order = list(range(count))
            limit = count if caps["max_channels"] is None else min(count, caps["max_channels"])
            self.ranking[layer] = order
            self.shown[layer] = sorted(order[:limit])
            extra = limit if caps["unit_renders"] is None else min(limit, caps["unit_renders"])
            self.extra[layer] = sorted(order[:extra])

    def _budgeted(self, counts: dict[str, int]) -> dict:
        """``max_channels`` and ``unit_renders`` as numbers (``None``: all), an ``"auto"`` one within
        the render budget (:func:`cnnviz.site.settings.within_budget`)."""
        s = self.settings
        if "auto" not in (s.max_channels, s.unit_renders):
            return {"max_channels": s.max_channels, "unit_renders": s.unit_renders}
        costs = {}
        for layer in [] if self.scripted else self.layers:
            try:
                costs[layer] = step_cost(self.loaded, layer)
            except CnnvizError:
                costs[layer] = 0  # not rendered at all (its render job says why)
        return within_budget(counts, costs, s.max_channels, s.unit_renders, s.diverse, s.steps)

    def _strongest(self, layer: str) -> list[int]:
        """The shown units of a layer, strongest first (see :meth:`_choose_units`)."""
        shown = set(self.shown[layer])
        return [channel for channel in self.ranking[layer] if channel in shown]

    def _links(self) -> list:
        """The weight links between neighbouring shown layers (a reason where there is none)."""
        from cnnviz.analyses.connections import connections

        try:
            return connections(self.loaded, self.layers) if len(self.layers) > 1 else []
        except CnnvizError as why:
            return [str(why)] * (len(self.layers) - 1)

    def class_count(self) -> int:
        """How many class scores the model outputs per image: a vector's length, or the number of
        class maps of a dense ``K x H x W`` output made by a convolution (a detector's or a
        segmenter's head; its attributions explain the strongest map at its arg-max, as ``cnnviz
        saliency`` does) or named by class names; 0 for any other output (a feature map)."""
        rows = list(self.table)
        logits = rows[-1] if rows and rows[-1].name == "logits" else None
        shape = logits.output_shape[0] if logits is not None and logits.output_shape else ()
        if shape is None or len(shape) not in (1, 3):
            return 0
        if len(shape) == 3 and not (self.class_names and len(self.class_names) == shape[0]) \
                and not self._made_by_convolution(rows[:-1]):
            return 0
        return int(shape[0])

    def _made_by_convolution(self, rows) -> bool:
        """Whether the last leaf module that runs is a convolution (a head's logits, not an
        activation's feature map)."""
        for row in reversed(rows):
            try:
                module = self.module.get_submodule(row.name)  # a row is a module's (its calls in one row)
            except (AttributeError, ValueError):
                continue
            if not list(module.children()):
                return as_convolution(module) is not None
        return False

    def _classes(self) -> list[int]:
        """The classes rendered: the first ``max_classes`` (``"auto"``: as many as fit
        ``CLASS_BUDGET``, each costing its steps of the whole model at its canvas)."""
        limit = self.settings.max_classes
        if limit == "auto":
            try:
                cost = step_cost(self.loaded, "logits")
            except CnnvizError:
                cost = 0
            limit = min(AUTO_CLASSES, int(CLASS_BUDGET // (cost * self.settings.class_steps))) if cost else AUTO_CLASSES
        return list(range(min(self.class_count(), limit)))

    def _manifest(self, figures: list[dict]) -> dict:
        stats = self.records.get("statistics", {}).get("data", {})
        maxima = stats.get("layers", {})
        shown = []
        for figure in figures:
            figure = dict(figure)
            if (figure["kind"] == "maximize" and figure.get("objective") == "channel" and figure["layer"] in maxima
                    and figure.get("channel") is not None):  # the channel's own measure: its best mean over one image
                figure["dataset_maximum"] = maxima[figure["layer"]]["mean_maximum"][figure["channel"]]
            shown.append(figure)
        return {
            "cnnviz": __version__,
            "model": {"spec": self.loaded.spec, "weights": self.loaded.weights, "type": type(self.module).__name__,
                      "name": model_name(self.loaded.spec, type(self.module).__name__),
                      "source": without_folders(self.loaded.spec), "weights_name": without_folders(self.loaded.weights),
                      "parameters": sum(p.numel() for p in self.module.parameters()),
                      "input": self.loaded.preprocessing.describe(),
                      "classes": len(self.class_names) if self.class_names else None},
            "images": {"count": len(self.sources), "first": self.sources[:5],
                       "skipped": stats.get("skipped", [])},
            "layers": self.layers,
            "settings": asdict(self.settings),
            "failed": self.failed,
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


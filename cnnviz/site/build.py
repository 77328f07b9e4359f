"""Building a gallery: jobs, their records and keys, figures and thumbnails (see :mod:`cnnviz.site`)."""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnviz import __version__
from cnnviz import output as files
from cnnviz.errors import CnnvizError
from cnnviz.images import image_sources, open_image
from cnnviz.models import LoadedModel, load_model, preprocessing_of, unwrap
from cnnviz.references import layer_ref

RECORDS = ".cnnviz"  # the folder of job records inside the gallery
THUMBNAIL_WIDTH, THUMBNAIL_HEIGHT = 360, 540  # thumbnails fit in this box
MANY_CONVOLUTIONS = 12  # above this, the default is a subset of the convolutions
SUBSET = 8
METHODS = ("gradient", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam", "occlusion")
IMAGES_PER_ATTRIBUTION_FIGURE = 4

# The settings each kind of job depends on (the others do not change its figures).
JOB_SETTINGS = {
    "kernels": (),
    "activations": (),
    "statistics": ("batch_size",),
    "maximize": ("steps", "seed"),
    "dream": ("dream_octaves", "dream_iterations", "seed"),
    "attributions": ("methods", "batch_size"),
    "classes": ("class_steps", "seed"),
}

# Progress: ``progress(stage, total)`` returns a callable that is given the work done.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True)
class GallerySettings:
    """What a gallery shows and how hard it works (every field is part of the jobs' keys).

    Attributes:
        max_channels: maximal-response images per layer (the first channels); ``None`` for all.
        steps: optimisation steps of each maximal-response image.
        activation_images: images whose activations are drawn (the first readable ones).
        attribution_images: images attributed with every method (the first readable ones).
        methods: the attribution methods, side by side.
        dream_image: the image Deep Dream changes (default: the first readable image).
        dream_octaves, dream_iterations: Deep Dream's octaves and steps per octave.
        max_classes: class visualizations (the first classes); ``0`` for none.
        class_steps: optimisation steps of each class visualization.
        seed: the seed of every random choice.
        batch_size: images per forward pass for statistics and attributions.
    """

    max_channels: int | None = 16
    steps: int = 64
    activation_images: int = 3
    attribution_images: int = 8
    methods: tuple[str, ...] = METHODS
    dream_image: str | None = None
    dream_octaves: int = 3
    dream_iterations: int = 8
    max_classes: int = 64
    class_steps: int = 128
    seed: int = 0
    batch_size: int = 32

    def check(self) -> None:
        counts = {"steps": self.steps, "activation_images": self.activation_images,
                  "attribution_images": self.attribution_images, "dream_octaves": self.dream_octaves,
                  "dream_iterations": self.dream_iterations, "class_steps": self.class_steps,
                  "batch_size": self.batch_size}
        for name, value in counts.items():
            if not isinstance(value, int) or value < 1:
                raise CnnvizError(f"{name} must be a whole number of at least 1, got {value!r}")
        if self.max_channels is not None and (not isinstance(self.max_channels, int) or self.max_channels < 1):
            raise CnnvizError(f"max_channels must be at least 1 (or None for all), got {self.max_channels!r}")
        if not isinstance(self.max_classes, int) or self.max_classes < 0:
            raise CnnvizError(f"max_classes must be 0 or more, got {self.max_classes!r}")
        from cnnviz.attribution import METHODS as KNOWN

        unknown = [m for m in self.methods if m not in KNOWN]
        if unknown or not self.methods:
            raise CnnvizError(f"unknown attribution methods {unknown}; choose from {', '.join(KNOWN)}")


@dataclass
class Gallery:
    """A written gallery.

    Attributes:
        folder: where it is; index: its ``index.html``; manifest: its ``manifest.json``.
        figures: the figures it shows (the manifest's entries).
        done, reused: jobs run now, and jobs whose earlier results were kept.
        failed: ``job: reason`` for each job that could not be done (shown on its page).
    """

    folder: Path
    index: Path
    manifest: Path
    figures: list[dict]
    done: int
    reused: int
    failed: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Gallery({str(self.index)!r}, {len(self.figures)} figures, {self.done} jobs run, {self.reused} reused)"


def gallery(
    model,
    images="samples",
    layers: Sequence[str] | None = None,
    output: str | os.PathLike = "cnnviz-gallery",
    *,
    settings: GallerySettings | None = None,
    force: bool = False,
    progress: ProgressFactory | None = None,
    **overrides,
) -> Gallery:
    """Write a static HTML gallery of one model (see :mod:`cnnviz.site`).

    Args:
        model: a spec (``"builtin:photos"``), a :class:`LoadedModel` or an ``nn.Module`` (left
            untouched).
        images: an image spec (a folder, ``samples``, files, ``sample:NAME``), or a list of them.
        layers: the layers that get a page (whole layers); default every convolution, or
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

    builder = _Builder(loaded, images, layers, Path(output).expanduser(), settings, force, progress)
    # file and class names go into figure titles as they are: a '$' is text, not mathematics
    with matplotlib.rc_context({"text.parse_math": False}):
        return builder.run()


def default_layers(model) -> list[str]:
    """The layers a gallery shows by default: every convolution, or 8 of them spread evenly over
    the depth (the first and the last included) when there are more than 12."""
    from cnnviz.kernels import convolutions as find

    convolutions = find(model)
    if not convolutions:
        raise CnnvizError("this model has no convolution layers; name the layers to show with --layers")
    if len(convolutions) <= MANY_CONVOLUTIONS:
        return convolutions
    picks = sorted({round(i * (len(convolutions) - 1) / (SUBSET - 1)) for i in range(SUBSET)})
    return [convolutions[i] for i in picks]


class _Builder:
    def __init__(self, loaded: LoadedModel, images, layers, folder: Path, settings: GallerySettings, force: bool,
                 progress: ProgressFactory | None):
        import cnnviz

        self.cnnviz = cnnviz
        self.loaded, self.settings, self.force = loaded, settings, force
        self.module, self.class_names = unwrap(loaded)
        self.progress = progress
        try:  # the layer table with each layer's theoretical receptive field, when it can be found
            self.table = cnnviz.layer_table(loaded, receptive_fields=True)
        except CnnvizError:
            self.table = cnnviz.layer_table(loaded)
        self.images = images
        self.sources = [source.spec for source in image_sources(images)]
        self.layers = self._layers(layers)
        self._readable: list[str] | None = None
        self.readable()  # no image can be read: fail now, before any file is written
        if settings.dream_image is not None:
            open_image(settings.dream_image)
        self.folder = files.output_folder(folder)
        self.model_key = _model_key(loaded)
        self.images_key = _images_key(self.sources)
        self.done = self.reused = 0
        self.failed: list[str] = []
        self.records: dict[str, dict] = {}

    # -- choosing ---------------------------------------------------------------------------

    def _layers(self, layers) -> list[str]:
        ran = {row.name for row in self.table if row.output_shape and row.output_shape[0] is not None}
        if not layers:  # the default: convolutions that run in a forward pass
            chosen = [layer for layer in default_layers(self.loaded) if layer.split("#")[0] in ran]
            if not chosen:
                raise CnnvizError("no convolution of this model runs in a forward pass; name the layers with --layers")
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
        return next((row for row in self.table if row.name == layer.split("#")[0]), None)

    def channels_of(self, layer: str) -> int:
        """The channels of the layer's output in the call the reference names (``NAME#2``: the second)."""
        row = self.row_of(layer)
        index = layer_ref(self.loaded, layer).call - 1
        shapes = row.output_shape if row is not None and row.output_shape else []
        shape = shapes[index] if index < len(shapes) and shapes[index] else ()
        return int(shape[0]) if shape else 0

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> Gallery:
        from cnnviz.site import pages

        _remove_partial_files(self.folder)
        s = self.settings
        conv = set(self.cnnviz.convolutions(self.loaded))
        stages: list[tuple[str, list[tuple[str, dict, Callable, int]]]] = []
        stages.append(("kernels", [(f"kernels {layer}", {"layer": layer}, lambda layer=layer: self.kernels(layer), 1)
                                   for layer in self.layers if layer in conv]))
        stages.append(("activations", [(f"activations {spec}", {"image": spec, "image_key": _images_key([spec]), "layers": self.layers},
                                        lambda spec=spec: self.activations(spec), 1)
                                       for spec in self.readable()[: s.activation_images]]))
        stages.append(("statistics", [("statistics", {"layers": self.layers, "images": self.images_key},
                                       self.statistics, len(self.sources))]))
        shown = {layer: self._shown_channels(layer) for layer in self.layers}
        stages.append(("maximize", [(f"maximize {layer}", {"layer": layer, "channels": shown[layer]},
                                     lambda layer=layer: self.maximize(layer, shown[layer]),
                                     len(shown[layer]) * s.steps) for layer in self.layers if shown[layer]]))
        dream_image = s.dream_image or self.readable()[0]
        stages.append(("dream", [(f"dream {layer}", {"layer": layer, "image": dream_image, "image_key": _images_key([dream_image])},
                                  lambda layer=layer: self.dream(layer, dream_image), s.dream_octaves * s.dream_iterations)
                                 for layer in self.layers]))
        # attributions explain each image's top class: a model without one score per class has none
        count = min(s.attribution_images, len(self.readable())) if self.class_count() else 0
        chunks = [self.readable()[i: i + IMAGES_PER_ATTRIBUTION_FIGURE]
                  for i in range(0, count, IMAGES_PER_ATTRIBUTION_FIGURE)]
        stages.append(("attributions", [(f"attributions {k}", {"images": chunk, "image_key": _images_key(chunk)},
                                         lambda k=k, chunk=chunk: self.attributions(k, chunk), len(chunk))
                                        for k, chunk in enumerate(chunks)]))
        classes = self._classes()
        if classes:
            stages.append(("classes", [("classes", {"classes": classes}, lambda: self.classes(classes),
                                        len(classes) * s.class_steps)]))
        for stage, jobs in stages:
            self._run_stage(stage, jobs)
        self._remove_stale_jobs()
        figures = [figure for record in self.records.values() for figure in record["figures"]]
        manifest = self._manifest(figures)
        manifest_path = files.write_json(self.folder / "manifest.json", manifest)
        index = pages.write_site(self, manifest)
        return Gallery(self.folder, index, manifest_path, manifest["figures"], self.done, self.reused, self.failed)

    def _run_stage(self, stage: str, jobs) -> None:
        total = sum(work for *_, work in jobs)
        update = self.progress(stage, total) if self.progress is not None and jobs else None
        for name, inputs, work_function, work in jobs:
            key = self._key(name, inputs)
            record_path = self.folder / RECORDS / f"{_file_stem(name)}.json"
            previous = _read_record(record_path) or {}
            record = None if self.force else previous
            if record and record.get("key") == key and not record.get("error") and all(
                (self.folder / path).is_file() for path in _recorded_files(record)
            ):
                self.reused += 1
                if update is not None:
                    update(work)
            else:
                self._stage_update = update
                # the old record goes first: a job interrupted while it overwrites its files must
                # not leave a record that a later run would trust
                record_path.unlink(missing_ok=True)
                try:
                    figures, data = work_function()
                    error = None
                except CnnvizError as failure:
                    figures, data, error = [], {}, str(failure)
                except Exception as failure:  # a bug in one figure: report it, write the rest
                    figures, data = [], {}
                    error = f"internal error: {type(failure).__name__}: {failure} (please report it)"
                written = {path for f in figures for path in (f["file"], f["thumbnail"])} | set(data.pop("written", []))
                record = {"key": key, "job": name, "figures": figures, "data": data, "error": error,
                          "files": sorted(written)}
                if error is None:  # failures are retried by the next run, never reused
                    files.write_json(record_path, record)
                # what the job wrote last time and not this time (fewer channels, say) is stale
                _remove_written(self.folder, _recorded_files(previous) - written)
                self.done += 1
            if record.get("error"):
                self.failed.append(f"{name}: {record['error']}")
            self.records[name] = record
        if update is not None and hasattr(update, "__self__") and hasattr(update.__self__, "close"):
            update.__self__.close()

    def _remove_stale_jobs(self) -> None:
        """Records of jobs this run no longer has (a layer no longer shown, fewer images), and the
        files only they wrote."""
        current = {f"{_file_stem(name)}.json" for name in self.records}
        kept = {path for record in self.records.values() for path in _recorded_files(record)}
        for record_path in sorted((self.folder / RECORDS).glob("*.json")):
            if record_path.name in current:
                continue
            _remove_written(self.folder, _recorded_files(_read_record(record_path) or {}) - kept)
            record_path.unlink(missing_ok=True)

    def _key(self, name: str, inputs: dict) -> str:
        """A job's key: its inputs, the settings it depends on, the model and cnnviz's version."""
        relevant = {field_name: getattr(self.settings, field_name) for field_name in JOB_SETTINGS[name.split(" ")[0]]}
        content = {"job": name, "inputs": inputs, "settings": relevant, "model": self.model_key,
                   "version": __version__}
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()

    def _tick(self, amount: int) -> None:
        if getattr(self, "_stage_update", None) is not None:
            self._stage_update(amount)

    def _shown_channels(self, layer: str) -> list[int]:
        count = self.channels_of(layer)
        limit = count if self.settings.max_channels is None else min(count, self.settings.max_channels)
        return list(range(limit))

    def class_count(self) -> int:
        """How many class scores the model outputs per image (0 when its output is not a vector)."""
        logits = list(self.table)[-1] if list(self.table) and list(self.table)[-1].name == "logits" else None
        shape = logits.output_shape[0] if logits is not None and logits.output_shape else ()
        return int(shape[0]) if shape is not None and len(shape) == 1 else 0

    def _classes(self) -> list[int]:
        if not self.settings.max_classes:
            return []
        return list(range(min(self.class_count(), self.settings.max_classes)))

    # -- the jobs: each returns (figures, data) --------------------------------------------------

    def kernels(self, layer: str):
        from cnnviz import plots

        kernels = self.cnnviz.kernels(self.loaded, layer)
        weight = kernels.weight
        # the range of what the figure shows: the chosen inputs' kernels, or the maps summed over inputs
        shown = {"pairs": lambda: weight[:, kernels.inputs], "outputs": kernels.maps}.get(kernels.view, lambda: weight)()
        low, high = float(shown.min()), float(shown.max())
        shape = " x ".join(str(n) for n in weight.shape)
        inputs = (f", the first {len(kernels.inputs)} of {weight.shape[1]} inputs" if kernels.view == "pairs"
                  and len(kernels.inputs) < weight.shape[1] else "")
        caption = (f"Kernels of {layer} ({kernels.module_type}, the first {len(kernels.outputs)} of "
                   f"{kernels.out_channels} outputs{inputs}, {kernels.view} view; weights {shape})")
        figure = self._save_figure(plots.plot_kernels(kernels), f"figures/{_safe(layer)}/kernels.png",
                                   kind="kernels", layer=layer, value_range=(low, high), caption=caption,
                                   settings={"view": kernels.view, "channels": len(kernels.outputs)})
        self._tick(1)
        return [figure], {"notes": list(kernels.notes)}

    def activations(self, spec: str):
        from cnnviz import plots

        result = self.cnnviz.activations(self.loaded, spec, self.layers)
        result.source = display_name(spec)  # figure titles: the file's name, not where it lies on this disk
        figures = []
        for layer in self.layers:
            low, high = result[layer].value_range()
            caption = (f"Activations of {layer} on {result.source} (one scale over the layer; the 32 most active "
                       "channels first)")
            figures.append(self._save_figure(
                plots.plot_activations(result, layer, max_maps=32), f"figures/{_safe(layer)}/activations_{_file_stem(spec)}.png",
                kind="activations", layer=layer, value_range=(low, high), caption=caption,
                settings={"image": spec, "order": "mean", "max_maps": 32}, extra={"image": spec},
            ))
        self._tick(1)
        return figures, {}

    def statistics(self):
        from cnnviz import plots

        stats = self.cnnviz.statistics(self.loaded, self.images, self.layers, batch_size=self.settings.batch_size,
                                       progress=self._tick)
        files.write_npz(self.folder / "data" / "stats.npz", stats.arrays())
        figures = [self._save_figure(
            plots.plot_histograms(stats), "figures/statistics/histograms.png", kind="histograms", layer=None,
            value_range=(min(float(s.minimum.min()) for s in stats.layers.values()),
                         max(float(s.maximum.max()) for s in stats.layers.values())),
            caption=f"Histograms of every shown layer's activations over {stats.images} images",
            settings={"images": stats.images},
        )]
        data = {"images": stats.images, "skipped": stats.skipped, "layers": {}, "written": ["data/stats.npz"]}
        for layer in self.layers:
            part = stats[layer]
            value_range = (float(part.minimum.min()), float(part.maximum.max()))
            figures.append(self._save_figure(
                plots.plot_channel_statistics(stats, layer), f"figures/{_safe(layer)}/channel_statistics.png",
                kind="channel_statistics", layer=layer, value_range=value_range,
                caption=f"Per-channel statistics of {layer} over {stats.images} images "
                        f"({int(part.dead.sum())} of {part.channels} channels never positive)",
                settings={"images": stats.images},
            ))
            exemplar_values = part.exemplar_values[np.isfinite(part.exemplar_values)]
            figures.append(self._save_figure(
                plots.plot_exemplars(stats, layer), f"figures/{_safe(layer)}/exemplars.png",
                kind="exemplars", layer=layer,
                value_range=(float(exemplar_values.min()), float(exemplar_values.max())) if exemplar_values.size else (0.0, 0.0),
                caption=f"Dataset exemplars of {layer}: for each channel, the crops of the images where it "
                        "responds most, best first",
                settings={"top_k": int(part.exemplar_values.shape[1])},
            ))
            data["layers"][layer] = {"mean_maximum": [float(v) for v in part.mean_maximum],
                                     "dead": int(part.dead.sum()), "channels": part.channels}
        return figures, data

    def maximize(self, layer: str, channels: list[int]):
        s = self.settings
        rendering = self.cnnviz.maximize(self.loaded, layer, channels=channels, steps=s.steps, seed=s.seed,
                                         progress=lambda n: self._tick(n))
        figures = []
        for image, shown, unit, value, channel in zip(rendering.images, rendering.display(), rendering.units,
                                                      rendering.values, channels):
            figures.append(self._save_image(
                shown, f"figures/{_safe(layer)}/maximize_{channel}.png", kind="maximize", layer=layer, unit=unit,
                value_range=(float(image.min()), float(image.max())), value=value,
                caption=f"{unit}: mean activation {value:.3g}",
                settings={"steps": s.steps, "seed": s.seed, "size": rendering.settings["size"],
                          "param": rendering.settings["param"]},
            ))
        return figures, {"size": rendering.settings["size"]}

    def dream(self, layer: str, image: str):
        s = self.settings
        result = self.cnnviz.dream(self.loaded, image, layer, octaves=s.dream_octaves, iterations=s.dream_iterations,
                                   seed=s.seed, progress=lambda n: self._tick(n))
        shown = self.cnnviz.images.rgb(result.image)
        figure = self._save_image(
            shown, f"figures/{_safe(layer)}/dream.png", kind="dream", layer=layer,
            value_range=(float(result.image.min()), float(result.image.max())),
            caption=(f"Deep Dream of {layer} on {display_name(image)}: the layer's mean squared activation "
                     f"{result.before:.3g} -> {result.after:.3g} (x{result.gain:.1f})"),
            settings={"image": image, "octaves": s.dream_octaves, "iterations": s.dream_iterations, "seed": s.seed},
            extra={"image": image}, thumbnail=True,
        )
        return [figure], {"gain": result.gain}

    def attributions(self, number: int, chunk: list[str]):
        from cnnviz import plots

        s = self.settings
        results = self.cnnviz.saliency(self.loaded, chunk, method=list(s.methods), batch_size=s.batch_size)
        if not isinstance(results, dict):
            results = {s.methods[0]: results}
        for result in results.values():
            result.sources = [display_name(source) for source in result.sources]
        ranges = {name: [float(r.attribution.min()), float(r.attribution.max())] for name, r in results.items()}
        first = next(iter(results.values()))
        caption = ("Attributions of each image's top class (" + "; ".join(first.targets) + "), absolute maps; raw ranges: "
                   + ", ".join(f"{name} {low:.2g} to {high:.2g}" for name, (low, high) in ranges.items()))
        figure = self._save_figure(
            plots.plot_attributions(results, images=len(chunk)), f"figures/attributions/attributions_{number}.png",
            kind="attributions", layer=None, value_range=(min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())),
            caption=caption, settings={"methods": list(s.methods), "images": chunk},
            extra={"method": list(s.methods), "method_ranges": ranges, "images": chunk},
            thumbnail=False,  # shown full width: the methods side by side need the detail
        )
        self._tick(len(chunk))
        return [figure], {}

    def classes(self, classes: list[int]):
        s = self.settings
        rendering = self.cnnviz.maximize(self.loaded, "logits", channels=classes, steps=s.class_steps, seed=s.seed,
                                         size=tuple(self.loaded.preprocessing.input_size),
                                         progress=lambda n: self._tick(n))
        figures = []
        for image, shown, unit, value, index in zip(rendering.images, rendering.display(), rendering.units,
                                                    rendering.values, classes):
            name = self.class_names[index] if self.class_names and index < len(self.class_names) else f"class {index}"
            figures.append(self._save_image(
                shown, f"figures/classes/class_{index}.png", kind="class", layer="logits", unit=unit,
                value_range=(float(image.min()), float(image.max())), value=value,
                caption=f"{name}: logit {value:.3g}",
                settings={"steps": s.class_steps, "seed": s.seed, "size": rendering.settings["size"]},
            ))
        return figures, {}

    # -- writing ------------------------------------------------------------------------------------

    def _entry(self, path: str, thumbnail: str, kind: str, layer, value_range, caption: str, settings: dict,
               unit=None, value=None, extra=None) -> dict:
        entry = {"file": path, "thumbnail": thumbnail, "kind": kind, "layer": layer, "unit": unit,
                 "method": None, "caption": caption, "value_range": [_finite(value_range[0]), _finite(value_range[1])],
                 "settings": settings}
        if value is not None:
            entry["value"] = _finite(value)
        entry.update(extra or {})
        return entry

    def _save_figure(self, figure, path: str, kind, layer, value_range, caption, settings, extra=None,
                     thumbnail: bool = True) -> dict:
        files.save_figure(figure, self.folder / path)
        small = self._thumbnail(path) if thumbnail else path
        return self._entry(path, small, kind, layer, value_range, caption, settings, extra=extra)

    def _save_image(self, pixels: torch.Tensor, path: str, kind, layer, value_range, caption, settings, unit=None,
                    value=None, extra=None, thumbnail: bool = False) -> dict:
        files.save_image(pixels, self.folder / path)
        small = self._thumbnail(path) if thumbnail else path
        return self._entry(path, small, kind, layer, value_range, caption, settings, unit=unit, value=value, extra=extra)

    def _thumbnail(self, path: str) -> str:
        with Image.open(self.folder / path) as image:
            image.load()
            scale = min(THUMBNAIL_WIDTH / image.width, THUMBNAIL_HEIGHT / image.height)
            if scale >= 1:
                return path
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            small = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        small.save(buffer, format="PNG", optimize=False)
        thumbnail = f"thumbs/{path}"
        files.write_bytes(self.folder / thumbnail, buffer.getvalue())
        return thumbnail

    def _manifest(self, figures: list[dict]) -> dict:
        stats = self.records.get("statistics", {}).get("data", {})
        maxima = stats.get("layers", {})
        shown = []
        for figure in figures:
            figure = dict(figure)
            if figure["kind"] == "maximize" and figure["layer"] in maxima and figure["unit"]:
                channel = int(figure["unit"].split(":")[1].split("@")[0])
                figure["dataset_maximum"] = maxima[figure["layer"]]["mean_maximum"][channel]
            shown.append(figure)
        return {
            "cnnviz": __version__,
            "model": {"spec": self.loaded.spec, "weights": self.loaded.weights, "type": type(self.module).__name__,
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


def _safe(text: str) -> str:
    return files.safe_name(text).replace(":", "_")


def _file_stem(text: str) -> str:
    """A short, readable file name for any text (an image path, a job), unique through a hash of
    the whole text: names that differ only in characters a file name cannot hold stay apart."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    readable = _safe(Path(text).name if ("/" in text or os.sep in text) else text)[:40].strip("-.")
    return f"{readable}-{digest}" if readable else digest


def display_name(spec: str) -> str:
    """How a page names an image: a file by its name (a gallery is often published, and the
    folders of the machine that made it are nobody's business), a sample by its spec."""
    path = Path(spec).expanduser()
    return path.name if path.is_file() else spec


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _read_record(path: Path) -> dict | None:
    """A job's record, or None when there is none or it is not one (unreadable, edited by hand)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _recorded_files(record: dict) -> set[str]:
    """The files a record says its job wrote (relative to the gallery)."""
    listed = record.get("files")
    return {path for path in listed if isinstance(path, str)} if isinstance(listed, list) else set()


GALLERY_FOLDERS = ("figures", "thumbs", "data", RECORDS)  # what a gallery writes below its top level


def _remove_partial_files(folder: Path) -> None:
    """Temporary files of a run that was killed while writing them (``.NAME.XXXX.part``), only
    where a gallery writes: its top level and its own folders, never elsewhere in a folder that
    the user also keeps other things in."""
    candidates = list(folder.glob(".*.part"))
    for name in GALLERY_FOLDERS:
        candidates += (folder / name).rglob(".*.part") if (folder / name).is_dir() else []
    for partial in candidates:
        try:
            partial.unlink()
        except OSError:
            pass


def _remove_written(folder: Path, paths) -> None:
    """Delete files an earlier run of the gallery wrote (paths relative to the gallery, inside
    its own folders), and the folders that leaves empty."""
    root = folder.resolve()
    for relative in sorted(paths):
        path = (folder / relative).resolve()
        if relative.split("/")[0] not in GALLERY_FOLDERS or root not in path.parents:
            continue  # a record names only what the gallery wrote; anything else is left alone
        try:
            path.unlink(missing_ok=True)
            parent = path.parent
            while parent != root and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        except OSError:
            pass


def _model_key(loaded: LoadedModel) -> str:
    """The model's identity: its class, spec, preprocessing and every parameter and buffer."""
    module, class_names = unwrap(loaded)
    digest = hashlib.sha256()
    digest.update(json.dumps([type(module).__qualname__, repr(module), loaded.spec,
                              loaded.preprocessing.describe(), class_names], default=str).encode())
    for name, tensor in list(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


def _images_key(sources: list[str]) -> str:
    """The images' identity: sample names, and each file's path, size and modification time."""
    parts = []
    for spec in sources:
        path = Path(spec).expanduser()
        if path.is_file():
            info = path.stat()
            parts.append([spec, info.st_size, info.st_mtime_ns])
        else:
            parts.append([spec])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

"""The gallery's jobs: each runs one analysis, turns the result into its report
(:mod:`cnnviz.reports`, the same figures and captions the commands write) and places the report's
items in the site, returning their manifest entries and a little data (``(figures, data)``).
Thumbnails are made here too.

:class:`Jobs` is a mixin of the builder (:mod:`cnnviz.site.build`): it reads the builder's model
(``self.loaded``), settings, layers and folder, and reports progress through ``self._tick``.
"""
from __future__ import annotations

import io

from PIL import Image

from cnnviz import reports
from cnnviz.analyses.activations import activations
from cnnviz.analyses.attribution import attributions
from cnnviz.analyses.feature_visualization.dream import dream
from cnnviz.analyses.feature_visualization.maximize import maximize
from cnnviz.analyses.kernels import kernels
from cnnviz.analyses.statistics import statistics
from cnnviz.core import output as files
from cnnviz.site.records import display_name, file_stem, layer_stem

THUMBNAIL_WIDTH, THUMBNAIL_HEIGHT = 360, 540  # thumbnails fit in this box


class Jobs:
    """The jobs of a gallery builder (mixed into it): each returns ``(figures, data)``."""

    # -- the jobs: each returns (figures, data) --------------------------------------------------

    def kernels_job(self, layer: str):
        report = reports.kernels(kernels(self.loaded, layer))
        figures = [self._place(item, f"figures/{layer_stem(layer)}/kernels.png") for item in report]
        self._tick(1)
        return figures, {"notes": list(report.data["notes"])}

    def activations_job(self, spec: str):
        result = activations(self.loaded, spec, self.layers)
        result.source = display_name(spec)  # figure titles: the file's name, not where it lies on this disk
        report = reports.activations(result, max_maps=32)
        figures = [
            self._place(item, f"figures/{layer_stem(item.layer)}/activations_{file_stem(spec)}.png",
                        settings={**item.settings, "image": spec}, image=spec)
            for item in report if item.kind == "activations"
        ]
        self._tick(1)
        return figures, {}

    def statistics_job(self):
        stats = statistics(self.loaded, self.images, self.layers, batch_size=self.settings.batch_size,
                           progress=self._tick)
        report = reports.statistics(stats)
        files.write_npz(self.folder / "data" / "stats.npz", report.arrays["stats.npz"])
        paths = {"histograms": lambda item: "figures/statistics/histograms.png",
                 "channel_statistics": lambda item: f"figures/{layer_stem(item.layer)}/channel_statistics.png",
                 "exemplars": lambda item: f"figures/{layer_stem(item.layer)}/exemplars.png"}
        figures = [self._place(item, paths[item.kind](item)) for item in report if item.kind in paths]
        data = {"images": stats.images, "skipped": stats.skipped, "layers": {}, "written": ["data/stats.npz"]}
        for layer in self.layers:
            part = stats[layer]
            data["layers"][layer] = {"mean_maximum": [float(v) for v in part.mean_maximum],
                                     "dead": int(part.dead.sum()), "channels": part.channels}
        return figures, data

    def maximize_job(self, layer: str, channels: list[int]):
        s = self.settings
        rendering = maximize(self.loaded, layer, channels=channels, steps=s.steps, seed=s.seed,
                             reference=self._reference_images(), progress=lambda n: self._tick(n))
        figures = [self._place(item, f"figures/{layer_stem(layer)}/maximize_{item.unit.channel}.png", thumbnail=False)
                   for item in reports.maximize(rendering) if item.unit is not None]
        return figures, {"size": rendering.settings["size"], "summary": rendering.summary(),
                         "succeeded": [bool(ok) if ok is not None else None for ok in rendering.succeeded]}

    def dream_job(self, layer: str, image: str):
        s = self.settings
        result = dream(self.loaded, image, layer, octaves=s.dream_octaves, iterations=s.dream_iterations,
                       seed=s.seed, progress=lambda n: self._tick(n))
        report = reports.dream(result, display_name(image))
        figures = [self._place(item, f"figures/{layer_stem(layer)}/dream.png", settings={**item.settings, "image": image},
                               image=image) for item in report]
        return figures, {"gain": result.gain}

    def attributions_job(self, number: int, chunk: list[str]):
        s = self.settings
        results = attributions(self.loaded, chunk, methods=list(s.methods), batch_size=s.batch_size)
        for result in results.values():
            result.sources = [display_name(source) for source in result.sources]
        panel = [item for item in reports.attributions(results, panel_images=len(chunk)) if item.kind == "attributions"]
        figures = [self._place(item, f"figures/attributions/attributions_{number}.png",
                               settings={**item.settings, "images": chunk}, images=chunk,
                               thumbnail=False)  # shown full width: the methods side by side need the detail
                   for item in panel]
        self._tick(len(chunk))
        return figures, {}

    def classes_job(self, classes: list[int]):
        s = self.settings
        rendering = maximize(self.loaded, "logits", channels=classes, steps=s.class_steps, seed=s.seed,
                             size=tuple(self.loaded.preprocessing.input_size), reference=self._reference_images(),
                             progress=lambda n: self._tick(n))
        figures = [self._place(item, f"figures/classes/class_{item.unit.channel}.png", thumbnail=False)
                   for item in reports.maximize(rendering) if item.kind == "class"]
        return figures, {}

    def _reference_images(self):
        """What the renders are compared with: the gallery's own images (photographs of 1 or 3
        channels; other models' renders go uncompared unless their images are tensors)."""
        return self.images

    # -- writing ------------------------------------------------------------------------------------

    def _place(self, item, path: str, thumbnail: bool = True, **extra) -> dict:
        """Write a report's item at ``path`` in the site (with a thumbnail for a large figure) and
        return its manifest entry: the item's own (caption, kind, layer, unit, value range,
        settings) with the site's file names and ``extra`` fields."""
        item.save(self.folder / path)
        small = self._thumbnail(path) if thumbnail else path
        return {"method": None, **item.to_dict(), **extra, "file": path, "thumbnail": small}

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

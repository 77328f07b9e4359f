"""The gallery's jobs: each runs one analysis and writes its figures, returning their manifest
entries and a little data (``(figures, data)``). Thumbnails are made here too.

:class:`Jobs` is a mixin of the builder (:mod:`cnnviz.site.build`): it reads the builder's model
(``self.loaded``), settings, layers and folder, and reports progress through ``self._tick``.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from cnnviz import plots
from cnnviz.core import output as files
from cnnviz.analyses.activations import activations
from cnnviz.analyses.attribution import attributions
from cnnviz.analyses.feature_visualization.dream import dream
from cnnviz.analyses.feature_visualization.maximize import maximize
from cnnviz.analyses.kernels import kernels
from cnnviz.analyses.statistics import statistics
from cnnviz.inputs.images import rgb
from cnnviz.site.records import display_name, file_stem, finite, safe

THUMBNAIL_WIDTH, THUMBNAIL_HEIGHT = 360, 540  # thumbnails fit in this box


class Jobs:
    """The jobs of a gallery builder (mixed into it): each returns ``(figures, data)``."""

    # -- the jobs: each returns (figures, data) --------------------------------------------------

    def kernels_job(self, layer: str):
        result = kernels(self.loaded, layer)
        weight = result.weight
        # the range of what the figure shows: the chosen inputs' kernels, or the maps summed over inputs
        shown = {"pairs": lambda: weight[:, result.inputs], "outputs": result.maps}.get(result.view, lambda: weight)()
        low, high = float(shown.min()), float(shown.max())
        shape = " x ".join(str(n) for n in weight.shape)
        inputs = (f", the first {len(result.inputs)} of {weight.shape[1]} inputs" if result.view == "pairs"
                  and len(result.inputs) < weight.shape[1] else "")
        caption = (f"Kernels of {layer} ({result.module_type}, the first {len(result.outputs)} of "
                   f"{result.out_channels} outputs{inputs}, {result.view} view; weights {shape})")
        figure = self._save_figure(plots.kernels(result), f"figures/{safe(layer)}/kernels.png",
                                   kind="kernels", layer=layer, value_range=(low, high), caption=caption,
                                   settings={"view": result.view, "channels": len(result.outputs)})
        self._tick(1)
        return [figure], {"notes": list(result.notes)}

    def activations_job(self, spec: str):
        result = activations(self.loaded, spec, self.layers)
        result.source = display_name(spec)  # figure titles: the file's name, not where it lies on this disk
        figures = []
        for layer in self.layers:
            low, high = result[layer].value_range()
            caption = (f"Activations of {layer} on {result.source} (one scale over the layer; the 32 most active "
                       "channels first)")
            figures.append(self._save_figure(
                plots.activations(result, layer, max_maps=32), f"figures/{safe(layer)}/activations_{file_stem(spec)}.png",
                kind="activations", layer=layer, value_range=(low, high), caption=caption,
                settings={"image": spec, "order": "mean", "max_maps": 32}, extra={"image": spec},
            ))
        self._tick(1)
        return figures, {}

    def statistics_job(self):
        stats = statistics(self.loaded, self.images, self.layers, batch_size=self.settings.batch_size,
                                       progress=self._tick)
        files.write_npz(self.folder / "data" / "stats.npz", stats.to_arrays())
        figures = [self._save_figure(
            plots.statistics(stats), "figures/statistics/histograms.png", kind="histograms", layer=None,
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
                plots.channel_statistics(stats, layer), f"figures/{safe(layer)}/channel_statistics.png",
                kind="channel_statistics", layer=layer, value_range=value_range,
                caption=f"Per-channel statistics of {layer} over {stats.images} images "
                        f"({int(part.dead.sum())} of {part.channels} channels never positive)",
                settings={"images": stats.images},
            ))
            exemplar_values = part.exemplar_values[np.isfinite(part.exemplar_values)]
            figures.append(self._save_figure(
                plots.exemplars(stats, layer), f"figures/{safe(layer)}/exemplars.png",
                kind="exemplars", layer=layer,
                value_range=(float(exemplar_values.min()), float(exemplar_values.max())) if exemplar_values.size else (0.0, 0.0),
                caption=f"Dataset exemplars of {layer}: for each channel, the crops of the images where it "
                        "responds most, best first",
                settings={"top_k": int(part.exemplar_values.shape[1])},
            ))
            data["layers"][layer] = {"mean_maximum": [float(v) for v in part.mean_maximum],
                                     "dead": int(part.dead.sum()), "channels": part.channels}
        return figures, data

    def maximize_job(self, layer: str, channels: list[int]):
        s = self.settings
        rendering = maximize(self.loaded, layer, channels=channels, steps=s.steps, seed=s.seed,
                                         progress=lambda n: self._tick(n))
        figures = []
        for image, shown, unit, value, channel in zip(rendering.images, rendering.display(), rendering.units,
                                                      rendering.values, channels):
            figures.append(self._save_image(
                shown, f"figures/{safe(layer)}/maximize_{channel}.png", kind="maximize", layer=layer, unit=str(unit),
                value_range=(float(image.min()), float(image.max())), value=value,
                caption=f"{unit}: mean activation {value:.3g}", extra={"channel": unit.channel},
                settings={"steps": s.steps, "seed": s.seed, "size": rendering.settings["size"],
                          "param": rendering.settings["param"]},
            ))
        return figures, {"size": rendering.settings["size"]}

    def dream_job(self, layer: str, image: str):
        s = self.settings
        result = dream(self.loaded, image, layer, octaves=s.dream_octaves, iterations=s.dream_iterations,
                                   seed=s.seed, progress=lambda n: self._tick(n))
        shown = rgb(result.image)
        figure = self._save_image(
            shown, f"figures/{safe(layer)}/dream.png", kind="dream", layer=layer,
            value_range=(float(result.image.min()), float(result.image.max())),
            caption=(f"Deep Dream of {layer} on {display_name(image)}: the layer's mean squared activation "
                     f"{result.before:.3g} -> {result.after:.3g} (x{result.gain:.1f})"),
            settings={"image": image, "octaves": s.dream_octaves, "iterations": s.dream_iterations, "seed": s.seed},
            extra={"image": image}, thumbnail=True,
        )
        return [figure], {"gain": result.gain}

    def attributions_job(self, number: int, chunk: list[str]):
        s = self.settings
        results = attributions(self.loaded, chunk, methods=list(s.methods), batch_size=s.batch_size)
        for result in results.values():
            result.sources = [display_name(source) for source in result.sources]
        ranges = {name: [float(r.attribution.min()), float(r.attribution.max())] for name, r in results.items()}
        first = next(iter(results.values()))
        caption = ("Attributions of each image's top class (" + "; ".join(str(t) for t in first.targets) + "), absolute maps; raw ranges: "
                   + ", ".join(f"{name} {low:.2g} to {high:.2g}" for name, (low, high) in ranges.items()))
        figure = self._save_figure(
            plots.attributions(results, images=len(chunk)), f"figures/attributions/attributions_{number}.png",
            kind="attributions", layer=None, value_range=(min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())),
            caption=caption, settings={"methods": list(s.methods), "images": chunk},
            extra={"method": list(s.methods), "method_ranges": ranges, "images": chunk},
            thumbnail=False,  # shown full width: the methods side by side need the detail
        )
        self._tick(len(chunk))
        return [figure], {}

    def classes_job(self, classes: list[int]):
        s = self.settings
        rendering = maximize(self.loaded, "logits", channels=classes, steps=s.class_steps, seed=s.seed,
                                         size=tuple(self.loaded.preprocessing.input_size),
                                         progress=lambda n: self._tick(n))
        figures = []
        for image, shown, unit, value, index in zip(rendering.images, rendering.display(), rendering.units,
                                                    rendering.values, classes):
            name = self.class_names[index] if self.class_names and index < len(self.class_names) else f"class {index}"
            figures.append(self._save_image(
                shown, f"figures/classes/class_{index}.png", kind="class", layer="logits", unit=str(unit),
                value_range=(float(image.min()), float(image.max())), value=value,
                caption=f"{name}: logit {value:.3g}", extra={"channel": unit.channel},
                settings={"steps": s.class_steps, "seed": s.seed, "size": rendering.settings["size"]},
            ))
        return figures, {}

    # -- writing ------------------------------------------------------------------------------------

    def _entry(self, path: str, thumbnail: str, kind: str, layer, value_range, caption: str, settings: dict,
               unit=None, value=None, extra=None) -> dict:
        entry = {"file": path, "thumbnail": thumbnail, "kind": kind, "layer": layer, "unit": unit,
                 "method": None, "caption": caption, "value_range": [finite(value_range[0]), finite(value_range[1])],
                 "settings": settings}
        if value is not None:
            entry["value"] = finite(value)
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

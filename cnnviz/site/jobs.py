"""The gallery's jobs on layers and units: each runs one analysis, writes its figures and images
into the site and returns their manifest entries and a little data (``(figures, data)``), which
the pages read from the job's record. Figures of a layer come from the report the commands write
(:mod:`cnnviz.reports`, the same captions); a unit's pictures are made straight from arrays
(:mod:`cnnviz.site.units`).

Every job is a function ``job(plan, settings, ..., progress=...)`` of the gallery's
:class:`cnnviz.site.plan.GalleryPlan`, its settings and its own arguments (the layer, the units,
the image), which tells ``progress`` the work it has done. A job whose analysis shares its work
between the ranks of a process group (the statistics, the renders) draws and writes on the first
rank alone (:func:`cnnviz.core.executor.executor`).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from cnnviz import reports
from cnnviz.analyses.activations import activations
from cnnviz.analyses.feature_visualization.dream import dream
from cnnviz.analyses.feature_visualization.maximize import maximize
from cnnviz.analyses.kernels import as_convolution, kernels
from cnnviz.analyses.receptive_field import unit_boxes
from cnnviz.analyses.statistics import statistics
from cnnviz.core import output as files
from cnnviz.core.executor import executor
from cnnviz.core.references import layer_ref
from cnnviz.errors import CnnvizError
from cnnviz.reports.report import finite
from cnnviz.site import units as pictures
from cnnviz.site.choice import UnitChoice
from cnnviz.site.plan import GalleryPlan
from cnnviz.site.records import display_name, file_stem, layer_stem
from cnnviz.site.settings import ACTIVATION_TILES, KERNEL_FIGURE_UNITS, GallerySettings


Progress = Callable[[int], object]


def unit_folder(layer: str) -> str:
    return f"figures/{layer_stem(layer)}"


def no_progress(amount: int) -> None:
    """Progress told to no one."""


# -- statistics: the ranking of units, their distributions and exemplars ---------------------------

def statistics_job(plan: GalleryPlan, settings: GallerySettings, progress: Progress = no_progress):
    """The statistics of every layer over every image: what ranks the units, with their
    distributions and exemplars (the units' pages read them from this job's record)."""
    s = settings
    stats = statistics(plan.loaded, plan.images, list(plan.layers), batch_size=s.batch_size, exemplars=s.exemplars,
                       progress=progress)
    if not executor().first_process:  # in a process group every rank measured its share; rank 0 draws and writes
        return [], {}
    report = reports.statistics(stats)
    files.write_npz(plan.folder / "data" / "stats.npz", report.arrays["stats.npz"])
    paths = {"histograms": lambda item: "figures/statistics/histograms.png",
             "channel_statistics": lambda item: f"{unit_folder(item.layer)}/channel_statistics.png"}
    figures = [_place(plan, item, paths[item.kind](item), text=True) for item in report if item.kind in paths]
    data = {"images": stats.images, "skipped": stats.skipped, "layers": {}, "written": ["data/stats.npz"]}
    for layer in plan.layers:
        part = stats[layer]
        data["layers"][layer] = {
            "mean_maximum": [finite(v) for v in part.mean_maximum], "dead": int(part.dead.sum()),
            "channels": part.channels, "half_range": part.half_range, "bins": part.bins,
            "map_size": list(part.map_size), "units": [_unit_statistics(part, c) for c in range(part.channels)],
        }
    return figures, data


# -- per layer ------------------------------------------------------------------------------------

def kernels_job(plan: GalleryPlan, settings: GallerySettings, layer: str, channels: list[int],
                progress: Progress = no_progress):
    """The kernels of the layer's strongest units (``channels``, strongest first: at most 16, so
    the figure stays readable)."""
    report = reports.kernels(kernels(plan.loaded, layer, channels=sorted(channels[:KERNEL_FIGURE_UNITS]) or None))
    figures = [_place(plan, item, f"{unit_folder(layer)}/kernels.png", text=True) for item in report]
    progress(1)
    return figures, {"notes": list(report.data["notes"])}


def activations_job(plan: GalleryPlan, settings: GallerySettings, choice: UnitChoice, spec: str,
                    progress: Progress = no_progress):
    """The maps of the units shown, on one image: a small picture per unit, on one scale for the
    layer (the largest absolute value among its units shown), and the image as the model saw it."""
    result = activations(plan.loaded, spec, list(plan.layers))
    name, stem = display_name(spec), file_stem(spec)
    seen = f"figures/inputs/{stem}.jpg"
    files.write_bytes(plan.folder / seen, pictures.jpeg(files.uint8_pixels(result.image)))
    figures = [{"file": seen, "thumbnail": seen, "kind": "input", "layer": None, "unit": None, "method": None,
                "caption": f"{name} as the model sees it", "value_range": [0.0, 1.0], "settings": {"image": spec},
                "image": spec}]
    data = {"image": name, "input": seen, "layers": {}}
    for layer in plan.layers:
        maps = result[layer].maps
        maps = maps.reshape(maps.shape[0], 1, 1) if maps.dim() == 1 else maps.reshape(maps.shape[0], -1, maps.shape[-1])
        shown = choice.shown[layer]
        values = maps[shown].float()
        limit = float(values.abs().max()) or 1e-12
        signed = bool(values.min() < 0)
        means = values.flatten(1).mean(dim=1)
        units = {}
        for channel, one, mean in zip(shown, values, means.tolist()):
            path = f"{unit_folder(layer)}/maps/{stem}-{channel}.png"
            files.write_bytes(plan.folder / path, pictures.map_tile(one.numpy(), limit, signed))
            low, high = float(one.min()), float(one.max())
            figures.append({"file": path, "thumbnail": path, "kind": "activation_map", "layer": layer,
                            "unit": f"{layer}:{channel}", "method": None, "image": spec,
                            "caption": f"{layer}:{channel} on {name}: mean {mean:.3g}, max {high:.3g}",
                            "value_range": [low, high], "settings": {"image": spec, "scale": [-limit if signed else 0.0, limit]}})
            units[str(channel)] = {"file": path, "mean": mean, "max": high}
        ranked = sorted(shown, key=lambda c: -units[str(c)]["mean"])[:ACTIVATION_TILES]
        data["layers"][layer] = {"limit": limit, "signed": signed, "units": units, "most_active": ranked}
    progress(1)
    return figures, data


def maximize_job(plan: GalleryPlan, settings: GallerySettings, layer: str, channels: list[int],
                 progress: Progress = no_progress):
    """The render of each of the layer's ``channels`` (the units shown)."""
    s = settings
    rendering = maximize(plan.loaded, layer, channels=channels, steps=s.steps, seed=s.seed,
                         reference=reference_images(plan), progress=lambda n: progress(n))
    if not executor().first_process:  # in a process group every rank rendered its share; rank 0 writes them all
        return [], {}
    figures, units = place_renders(plan, rendering, unit_folder(layer), "channel")
    return figures, {"size": rendering.settings["size"], "summary": rendering.summary(), "units": units}


def renders_job(plan: GalleryPlan, settings: GallerySettings, layer: str, channels: list[int], diverse: list[int],
                progress: Progress = no_progress):
    """The neuron at the centre and the negative render of the strongest units (``channels``),
    and a diverse set of those of them that are not one linear filter (``diverse``: a filter has
    one maximum)."""
    s = settings
    common = {"steps": s.steps, "seed": s.seed, "reference": reference_images(plan),
              "progress": lambda n: progress(n)}
    figures, units, summaries = [], {}, {}
    for kind, chosen, options in (("neuron", channels, {"neuron": True}), ("negative", channels, {"negative": True}),
                                  ("diverse", diverse, {"diverse": s.diverse})):
        if not chosen:
            continue
        rendering = maximize(plan.loaded, layer, channels=chosen, **common, **options)
        if not executor().first_process:  # in a process group: rank 0 writes every rank's renders
            continue
        placed, rendered = place_renders(plan, rendering, unit_folder(layer), kind)
        figures += placed
        summaries[kind] = rendering.summary()
        for channel, entries in rendered.items():
            units.setdefault(channel, {})[kind] = entries
    return figures, {"units": units, "summary": summaries}


def place_renders(plan: GalleryPlan, rendering, folder: str, kind: str):
    """Place a rendering's images in ``folder`` (each with a JPEG thumbnail) and return their
    manifest entries and, per channel (or class), what its pages say of them."""
    figures, units = [], {}
    items = [item for item in reports.maximize(rendering) if item.unit is not None]
    counts: dict[int, int] = {}
    for k, item in enumerate(items):
        channel = item.unit.channel
        number = counts[channel] = counts.get(channel, -1) + 1
        name = {"channel": f"maximize_{channel}", "neuron": f"neuron_{channel}", "negative": f"negative_{channel}",
                "diverse": f"diverse_{channel}-{number}", "class": f"class_{channel}"}[kind]
        path = f"{folder}/{name}.png"
        item.save(plan.folder / path)
        data, kind_of = pictures.thumbnail(item.pixels)
        small = f"thumbs/{folder}/{name}.{kind_of}"
        files.write_bytes(plan.folder / small, data)
        entry = {"method": None, **item.to_dict(), "file": path, "thumbnail": small, "objective": kind}
        if kind != "class":  # the unit the render belongs to (a neuron's render too), as every section names it
            entry["unit"] = f"{item.unit.layer}:{channel}"
        figures.append(entry)
        shown = {"file": path, "thumbnail": small, "value": entry.get("value"), "reference": entry.get("reference"),
                 "succeeded": entry.get("succeeded"), "start": entry.get("start"), "outcome": entry.get("outcome"),
                 "steps": rendering.steps_taken[k] if k < len(rendering.steps_taken) else None,
                 "size": list(item.pixels.shape[1:])}
        if kind == "diverse":
            units.setdefault(str(channel), []).append(shown)
        else:
            units[str(channel)] = shown
    return figures, units


def units_job(plan: GalleryPlan, settings: GallerySettings, layer: str, channels: list[int], measured: dict,
              progress: Progress = no_progress):
    """Per unit: its top and bottom dataset exemplars (from ``measured``, the statistics job's
    data), cropped around the receptive field of the position where each image moved it most
    (least), and its kernel."""
    stats = measured["layers"][layer]
    boxes, box_note = _boxes(plan, layer)
    convolution = _convolution(plan, layer)
    colour = convolution is not None and _first_convolution(plan, layer) and convolution.weight.shape[1] == 3
    figures, units = [], {}
    for channel in channels:
        unit = stats["units"][channel]
        entry: dict = {}
        for which in ("top", "bottom"):
            picks = unit[which]
            if not picks:
                continue
            images = [plan.as_seen(source) for source, *_ in picks]
            regions = [_box(boxes, channel, row, column, image.shape[1:]) for (_, _, row, column), image in zip(picks, images)]
            data, overlays = pictures.exemplar_strip(images, regions)
            path = f"{unit_folder(layer)}/units/{channel}-{which}.jpg"
            files.write_bytes(plan.folder / path, data)
            values = [value for _, value, *_ in picks]
            figures.append({"file": path, "thumbnail": path, "kind": "exemplars" if which == "top" else "bottom_exemplars",
                            "layer": layer, "unit": f"{layer}:{channel}", "method": None,
                            "caption": f"{layer}:{channel}: the {len(picks)} images where it is {'highest' if which == 'top' else 'lowest'}, "
                                       "cropped around the receptive field of that position",
                            "value_range": [min(values), max(values)], "settings": {"exemplars": settings.exemplars}})
            entry[which] = {"file": path, "crops": [
                {"image": display_name(source), "value": value, "position": [row, column], **overlay}
                for (source, value, row, column), overlay in zip(picks, overlays)]}
        if convolution is not None:
            weight = _unit_kernel(convolution, channel)
            data, scale = pictures.kernel_image(weight, colour)
            path = f"{unit_folder(layer)}/units/{channel}-kernel.png"
            files.write_bytes(plan.folder / path, data)
            figures.append({"file": path, "thumbnail": path, "kind": "kernel", "layer": layer, "unit": f"{layer}:{channel}",
                            "method": None, "value_range": [float(weight.min()), float(weight.max())], "settings": {},
                            "caption": f"The kernel of {layer}:{channel}: {_kernel_text(weight, colour)}"})
            entry["kernel"] = {"file": path, "scale": scale, "colour": colour, "text": _kernel_text(weight, colour)}
        units[str(channel)] = entry
        progress(1)
    return figures, {"units": units, "receptive_field": box_note}


def dream_job(plan: GalleryPlan, settings: GallerySettings, layer: str, image: str, progress: Progress = no_progress):
    """Deep Dream of the layer on one image."""
    s = settings
    result = dream(plan.loaded, image, layer, octaves=s.dream_octaves, steps=s.dream_steps,
                   seed=s.seed, progress=lambda n: progress(n))
    report = reports.dream(result, display_name(image))
    figures = [_place(plan, item, f"{unit_folder(layer)}/dream.png", settings={**item.settings, "image": image},
                      image=image) for item in report]
    return figures, {"gain": result.gain}


# -- helpers -------------------------------------------------------------------------------------

def reference_images(plan: GalleryPlan):
    """What the renders are compared with: the gallery's own images (photographs of 1 or 3
    channels; other models' renders go uncompared unless their images are tensors)."""
    return plan.images


def _boxes(plan: GalleryPlan, layer: str):
    """The input box of every position of the layer's maps (``C x H x W x 4``, clipped), and
    a note when it could not be traced (the crops are then centred on the position's own
    pixels, without a field)."""
    try:
        return unit_boxes(plan.loaded, [layer])[layer][0], None
    except (CnnvizError, RuntimeError, KeyError, IndexError) as why:
        return None, f"the receptive field could not be traced ({str(why).splitlines()[0][:120]})"


def _convolution(plan: GalleryPlan, layer: str):
    try:
        return as_convolution(layer_ref(plan.loaded, layer).module)
    except CnnvizError:
        return None


def _first_convolution(plan: GalleryPlan, layer: str) -> bool:
    try:
        module = layer_ref(plan.loaded, layer).layer  # a call's module (act#2: act), a name with '#' whole
    except CnnvizError:
        return False
    return next((name for name in plan.convolution_names), None) == module


def _place(plan: GalleryPlan, item, path: str, text: bool = False, **extra) -> dict:
    """Write a report's item at ``path`` in the site and return its manifest entry: the
    item's own (caption, kind, layer, unit, value range, settings) with the site's file name
    and ``extra`` fields. A figure with text is shown at its own size (no thumbnail); an image
    gets a JPEG thumbnail."""
    item.save(plan.folder / path, palette=text)
    small = path
    if item.pixels is not None and not text:
        data, kind_of = pictures.thumbnail(item.pixels)
        small = f"thumbs/{path.rsplit('.', 1)[0]}.{kind_of}"
        files.write_bytes(plan.folder / small, data)
    entry = {"method": None, **item.to_dict(), **extra, "file": path, "thumbnail": small}
    if text:
        entry["text"] = True
    return entry


def _unit_statistics(part, channel: int) -> dict:
    """What a unit's page shows of its statistics: moments, extremes, its histogram (the bins
    between the first and the last that hold a value, as a line of counts) and its exemplars
    ``[source, value, row, column]``."""
    counts = part.histogram[channel]
    used = np.flatnonzero(counts)
    first, last = (int(used[0]), int(used[-1]) + 1) if len(used) else (part.bins // 2, part.bins // 2 + 1)

    def picks(bottom: bool):
        values, images = (part.bottom_values, part.bottom_images) if bottom else (part.exemplar_values, part.exemplar_images)
        positions = part.bottom_positions if bottom else part.exemplar_positions
        sources = part.bottom_sources if bottom else part.exemplar_sources
        if values is None:
            return []
        return [[sources[channel][k], float(values[channel, k]), int(positions[channel, k, 0]), int(positions[channel, k, 1])]
                for k in range(len(sources[channel])) if images[channel, k] >= 0 and sources[channel][k] is not None]

    return {"mean": float(part.mean[channel]), "std": float(part.std[channel]), "min": float(part.minimum[channel]),
            "max": float(part.maximum[channel]), "best_mean": finite(part.mean_maximum[channel]),
            "positive": float(part.positive_fraction[channel]), "dead": bool(part.dead[channel]),
            "histogram": {"first": first, "counts": " ".join(str(int(v)) for v in counts[first:last])},
            "top": picks(False), "bottom": picks(True)}


def _box(boxes, channel: int, row: int, column: int, size) -> tuple[int, int, int, int]:
    """The clipped input box of one position of a map, or the whole image where it is not known
    (a layer without maps sees all of it)."""
    height, width = size
    if boxes is not None and boxes.dim() == 4 and row < boxes.shape[1] and column < boxes.shape[2]:
        top, left, bottom, right = (int(v) for v in boxes[channel, row, column])
        if bottom >= top and right >= left:
            return top, left, bottom, right
    return 0, 0, height - 1, width - 1


def _unit_kernel(convolution, channel: int) -> torch.Tensor:
    """The weights of one output channel, ``inputs-of-its-group x kH x kW``."""
    weight = convolution.weight.detach().float().cpu()
    if getattr(convolution, "transposed", False):
        groups = int(getattr(convolution, "groups", 1))
        per_group = weight.shape[1]
        group, local = divmod(channel, per_group)
        ins = weight.shape[0] // groups
        weight = weight[group * ins:(group + 1) * ins, local]
    else:
        weight = weight[channel]
    while weight.dim() < 3:
        weight = weight.unsqueeze(-1)
    if weight.dim() > 3:  # a 3-D convolution: its depth slices side by side
        weight = weight.flatten(1, -2)
    return weight


def _kernel_text(weight: torch.Tensor, colour: bool) -> str:
    inputs, height, width = weight.shape
    scale = float(weight.abs().max())
    if colour:
        return f"{height}x{width} over RGB, as colour (mid-grey is zero, full colour is ±{scale:.3g})"
    return (f"{inputs} input map{'s' if inputs != 1 else ''} of {height}x{width}, red positive, blue negative, "
            f"full colour ±{scale:.3g}")

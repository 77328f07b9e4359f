"""The gallery's concepts (issue 31): per chosen layer (:func:`cnnviz.site.plan.concept_layers`),
:func:`cnnviz.concepts` over the gallery's images, and a render of each concept's direction
(:func:`cnnviz.maximize` with ``direction=``), compared with the images where the concept is
strongest. The job writes the concepts' figure, each concept's render, its strongest image regions
and its maps over the first images, and ``data/concepts/LAYER.json`` (the result's ``to_dict()``:
every direction and every image's weights); its record says, per concept, its share, top channels,
importance, deletion against its baseline, and which units it uses. The page that shows
them is made by :mod:`cnnviz.site.concept_pages`.
"""
from __future__ import annotations

import torch

from cnnviz.analyses.concepts import concepts
from cnnviz.analyses.feature_visualization.maximize import maximize
from cnnviz.core import output as files
from cnnviz.core.executor import executor
from cnnviz.reports.report import finite
from cnnviz.site import units as pictures
from cnnviz.site.jobs import Progress, no_progress, unit_folder
from cnnviz.site.plan import GalleryPlan
from cnnviz.site.records import display_name, layer_stem
from cnnviz.site.settings import (
    CONCEPT_IMPORTANCE_IMAGES, CONCEPT_MAP_IMAGES, CONCEPT_TOP_CHANNELS, CONCEPT_USES, GallerySettings,
)

OVERVIEW_EXEMPLARS, OVERVIEW_IMAGES = 4, 3  # the concepts' figure: crops and maps per row (it fits the page)


def concept_count(plan: GalleryPlan, settings: GallerySettings, layer: str) -> int:
    """The concepts of a layer: ``concepts_k``, at most the layer's channels."""
    channels = plan.channels_of(layer)
    return min(settings.concepts_k, channels) if channels else settings.concepts_k


def importance_images(plan: GalleryPlan) -> int:
    """The images whose importance is measured: none where the output is not one score per class."""
    return CONCEPT_IMPORTANCE_IMAGES if plan.class_count else 0


def job_size(plan: GalleryPlan, settings: GallerySettings, layer: str) -> int:
    """Its part of the stage's progress: every image once, and the steps of each render."""
    return len(plan.sources) + concept_count(plan, settings, layer) * settings.steps


def used_units(direction: torch.Tensor) -> list[tuple[int, float, int]]:
    """The units a concept uses: its ``CONCEPT_TOP_CHANNELS`` largest weights, and any other whose
    weight is at least ``CONCEPT_USES`` of the largest; ``(channel, weight, rank)``, largest first
    (rank 1 is the largest)."""
    weights, channels = torch.sort(direction.float(), descending=True)
    largest = float(weights[0]) if len(weights) else 0.0
    return [(int(c), float(w), rank + 1) for rank, (c, w) in enumerate(zip(channels, weights))
            if w > 0 and (rank < CONCEPT_TOP_CHANNELS or float(w) >= CONCEPT_USES * largest)]


def concepts_job(plan: GalleryPlan, settings: GallerySettings, layer: str, progress: Progress = no_progress):
    """The concepts of one layer over the gallery's images and a render of each (see the module's text)."""
    s = settings
    told = [0]

    def tell(amount: int) -> None:
        told[0] += amount
        progress(amount)

    found = concepts(plan.loaded, plan.images, layer, k=concept_count(plan, s, layer), exemplars=s.exemplars,
                     maps=CONCEPT_MAP_IMAGES, importance_images=importance_images(plan), batch_size=s.batch_size,
                     seed=s.seed, progress=tell)
    sources = set(plan.sources)
    renders = []
    for j in range(found.k):  # every rank renders with the others (maximize shares its work)
        strongest = [found.images[int(i)] for i in dict.fromkeys(found.exemplar_images[j].tolist()) if int(i) >= 0]
        renders.append(maximize(plan.loaded, layer, direction=found.directions[j], steps=s.steps, seed=s.seed,
                                reference=[name for name in strongest if name in sources] or None, progress=tell))
    if not executor().first_process:  # in a process group: rank 0 draws and writes
        return [], {}
    progress(max(0, job_size(plan, s, layer) - told[0]))  # renders that stopped early, images skipped
    return _written(plan, s, layer, found, renders)


def _written(plan: GalleryPlan, settings: GallerySettings, layer: str, found, renders) -> tuple[list, dict]:
    """Write the figure, the pictures of each concept and the JSON; their entries and the record's data."""
    folder = f"{unit_folder(layer)}/concepts"
    summary = found.to_dict()
    overview = f"{folder}/concepts.png"
    files.save_figure(found.plot(exemplars=OVERVIEW_EXEMPLARS, images=OVERVIEW_IMAGES), plan.folder / overview,
                      palette=True)
    top_value = float(found.maps.max()) if found.maps.numel() else 0.0
    figures = [{"file": overview, "thumbnail": overview, "kind": "concepts", "layer": layer, "unit": None,
                "method": None,
                "caption": f"{layer}: {found.k} concepts of {len(found.images)} images (reconstruction error "
                           f"{found.error:.2f}): each one's share, top channels and importance, its strongest image "
                           "regions and its coefficient over the first images (brighter where stronger)",
                "value_range": [0.0, top_value], "settings": {"k": found.k, "seed": settings.seed}, "text": True}]
    record = f"data/concepts/{layer_stem(layer)}.json"
    files.write_json(plan.folder / record, {**summary, "renders": [rendering.to_dict() for rendering in renders]})
    used: dict[str, list] = {}
    entries = []
    for j, (part, rendering) in enumerate(zip(summary["concepts"], renders)):
        placed, render = _render(plan, folder, layer, j, rendering)
        exemplars, maps, pictured = _pictures(plan, folder, layer, j, found)
        figures += [placed, *pictured]
        uses = used_units(found.directions[j])
        for channel, weight, rank in uses:
            used.setdefault(str(channel), []).append({"concept": j, "weight": weight, "rank": rank})
        entries.append({"concept": j, "share": part["share"], "importance": part["importance"],
                        "deletion": part["deletion"], "random_deletion": part["random_deletion"],
                        "top_channels": [[c["channel"], c["weight"]] for c in part["top_channels"]],
                        "uses": [[channel, weight] for channel, weight, _ in uses],
                        "render": render, "exemplars": exemplars, "maps": maps})
    data = {"layer": layer, "k": found.k, "asked": settings.concepts_k, "channels": int(found.directions.shape[1]),
            "images": len(found.images), "error": finite(found.error), "fit_error": finite(found.fit_error),
            "fidelity": summary["fidelity"], "deletion_check": summary.get("deletion_check"),
            "targets": list(found.targets), "shifted": summary["shift"] is not None,
            "crop_region": found.crop_region, "figure": overview, "json": record, "concepts": entries, "units": used,
            "written": [record]}
    return figures, data


def _render(plan: GalleryPlan, folder: str, layer: str, j: int, rendering) -> tuple[dict, dict]:
    """A concept's render, placed with a JPEG thumbnail: its manifest entry and what its pages say of it."""
    pixels = rendering.display()[0]
    path, (thumbnail, kind_of) = f"{folder}/concept_{j}.png", pictures.thumbnail(pixels)
    files.save_image(pixels, plan.folder / path)
    small = f"thumbs/{folder}/concept_{j}.{kind_of}"
    files.write_bytes(plan.folder / small, thumbnail)
    value, reference = finite(rendering.values[0]), _first(rendering.reference)
    succeeded = _first(rendering.succeeded)
    caption = f"Concept {j} of {layer}: its direction's mean activation {value:.3g}" if value is not None else \
        f"Concept {j} of {layer}"
    if reference is not None:
        caption += f" ({'beats' if succeeded else 'below'} the strongest of its images' {reference:.3g})"
    render = {"file": path, "thumbnail": small, "value": value, "reference": finite(reference) if reference is not None
              else None, "succeeded": succeeded, "start": _first(rendering.starts) or "noise",
              "outcome": _first(rendering.outcomes) or "render", "steps": _first(rendering.steps_taken),
              "size": list(pixels.shape[1:])}
    entry = {"file": path, "thumbnail": small, "kind": "concept_render", "layer": layer, "unit": None, "method": None,
             "concept": j, "caption": caption, "value_range": [float(pixels.min()), float(pixels.max())],
             "value": value, "reference": render["reference"], "succeeded": succeeded,
             "settings": {key: rendering.settings.get(key) for key in ("steps", "seed", "size", "param")}}
    return entry, render


def _pictures(plan: GalleryPlan, folder: str, layer: str, j: int, found) -> tuple[dict | None, dict | None, list]:
    """A concept's strongest image regions and its maps over the first images, as strips."""
    figures: list = []
    exemplars = maps = None
    slots = [e for e in range(found.exemplar_images.shape[1]) if int(found.exemplar_images[j, e]) >= 0]
    if found.exemplar_crops is not None and slots:
        path = f"{folder}/{j}-exemplars.jpg"
        files.write_bytes(plan.folder / path, pictures.crop_strip(
            [found.exemplar_crops[j, e].permute(1, 2, 0).numpy() for e in slots]))
        values = [float(found.exemplar_values[j, e]) for e in slots]
        exemplars = {"file": path, "crops": [
            {"image": display_name(found.images[int(found.exemplar_images[j, e])]), "value": value,
             "position": [int(p) for p in found.exemplar_positions[j, e]]} for e, value in zip(slots, values)]}
        figures.append({"file": path, "thumbnail": path, "kind": "concept_exemplars", "layer": layer, "unit": None,
                        "method": None, "concept": j, "value_range": [min(values), max(values)],
                        "caption": f"Concept {j} of {layer}: the {len(slots)} image regions where its coefficient is "
                                   f"largest ({found.crop_region} input pixels around the position)",
                        "settings": {"exemplars": found.exemplar_images.shape[1]}})
    shown = min(len(found.maps), len(found.shown))
    if shown:
        top = float(found.maps[:shown, j].max())
        path = f"{folder}/{j}-maps.jpg"
        files.write_bytes(plan.folder / path, pictures.overlay_strip(found.shown[:shown], found.maps[:shown, j], top))
        maps = {"file": path, "top": top, "images": [display_name(name) for name in found.images[:shown]]}
        figures.append({"file": path, "thumbnail": path, "kind": "concept_maps", "layer": layer, "unit": None,
                        "method": None, "concept": j, "value_range": [float(found.maps[:shown, j].min()), top],
                        "caption": f"Concept {j} of {layer} over the first {shown} images: each image darkened where "
                                   f"the concept's coefficient is weak (full brightness at {top:.3g})",
                        "settings": {"images": shown}})
    return exemplars, maps, figures


def _first(values):
    return values[0] if values else None

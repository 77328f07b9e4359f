"""The report of concepts (:func:`cnnviz.concepts`): ``concepts.json``, the concepts figure, the
per-image concept maps and, when given, an image rendered along each concept's direction."""
from __future__ import annotations

from cnnviz import plots
from cnnviz.core.output import safe_name
from cnnviz.inputs.batches import skipped_text
from cnnviz.reports.report import Item, Report, finite, value_range


def concepts(result, renders: dict | None = None) -> Report:
    """Concepts as files: ``concepts_<layer>.png`` (per concept its share, top channels, strongest
    image regions and maps), ``concept_maps_<layer>.png`` (each concept's coefficient over the first
    images, when maps were kept), ``concept_attribution_<layer>.png`` (each concept's gradient x
    coefficient over the first images that have importance), ``concept_<j>_<layer>.png`` per concept rendered in ``renders``
    (concept number -> the :class:`cnnviz.Rendering` of ``cnnviz.maximize(model, layer,
    direction=result.directions[j])``, its one image at its own size), and ``concepts.json``:
    ``result.to_dict()`` (``images``: each image's name and its ``k`` weights; ``directions``:
    ``k`` lists of ``C`` numbers; per concept its share, top channels, importance, deletion and
    exemplars) with each render's value and outcome under ``renders``."""
    stem, k = safe_name(result.layer), result.k
    settings = {key: result.settings.get(key) for key in ("k", "fit_images", "importance_images", "seed")}
    items = [Item(
        f"concepts_{stem}.png", "concepts",
        f"The {k} concepts of {result.layer} over {len(result.images)} images: per concept its share of the layer, "
        f"its top channels, the image regions where it is strongest, and its map over the first images "
        f"(reconstruction error {result.error:.2f})",
        layer=result.layer, value_range=value_range(result.exemplar_values), settings=settings,
        draw=lambda: plots.concepts(result),
    )]
    shown = min(len(result.maps), len(result.shown))
    if shown:
        items.append(Item(
            f"concept_maps_{stem}.png", "concept_maps",
            f"Each concept's coefficient at every position of {result.layer}, over the first "
            f"{min(shown, 8)} images (one colour scale per concept, in raw units)",
            layer=result.layer, value_range=value_range(result.maps), settings=settings,
            draw=lambda: plots.concept_maps(result),
        ))
    attributed = min(len(result.attribution_maps), len(result.shown))
    if attributed:
        items.append(Item(
            f"concept_attribution_{stem}.png", "concept_attribution",
            f"Each concept's contribution to each image's target at every position of {result.layer} "
            f"(gradient x coefficient; red raises the target, blue lowers it), over the first {min(attributed, 8)} "
            f"images", layer=result.layer, value_range=value_range(result.attribution_maps), settings=settings,
            draw=lambda: plots.concept_maps(result, attribution=True),
        ))
    rendered = []
    for concept, rendering in sorted((renders or {}).items()):
        value = float(rendering.values[0])
        outcome = rendering.outcomes[0] if rendering.outcomes else "render"
        reference = rendering.reference[0] if rendering.reference else None
        succeeded = rendering.succeeded[0] if rendering.succeeded else None
        steps = rendering.steps_taken[0] if rendering.steps_taken else None
        caption = f"Concept {concept} of {result.layer} rendered along its direction: response {value:.3g}"
        if reference is not None:
            caption += f" ({'beats' if succeeded else 'BELOW'} the best real image's {reference:.3g})"
        if outcome == "photo":
            caption += "; the photograph it started again from, not a feature visualization"
        elif outcome == "flat":
            caption += "; a flat field (no pattern)"
        if steps is not None:
            caption += f"; {steps} step{'' if steps == 1 else 's'}"
        render_settings = {key: rendering.settings.get(key) for key in ("steps", "seed", "size", "param")}
        record = {"concept": concept, "value": finite(value),
                  "reference": None if reference is None else finite(reference), "succeeded": succeeded,
                  "outcome": outcome, "steps_taken": steps}
        items.append(Item(
            f"concept_{concept}_{stem}.png", "concept_render", caption, layer=result.layer,
            value_range=value_range(rendering.images), value=value, settings=render_settings,
            extra={name: entry for name, entry in record.items() if name != "value"}, pixels=rendering.display()[0],
        ))
        rendered.append(record)
    data = {**result.to_dict(), "renders": rendered}
    notes = [f"skipped {skipped_text(result.skipped)}"] if result.skipped else []
    return Report("concepts", data, items, notes=notes)

"""Which units and classes a gallery shows, chosen once the statistics are known:
:class:`UnitChoice`, made by :func:`choose_units` from the plan and the statistics' record, and
:func:`rendered_classes`."""
from __future__ import annotations

from dataclasses import dataclass

from cnnviz.analyses.feature_visualization.maximize import step_cost
from cnnviz.errors import CnnvizError
from cnnviz.site.plan import GalleryPlan
from cnnviz.site.settings import AUTO_CLASSES, CLASS_BUDGET, GallerySettings, within_budget


@dataclass(frozen=True)
class UnitChoice:
    """The units of each layer that the gallery shows (see :func:`choose_units`).

    Attributes:
        shown: per layer, the channels with a page (channel order).
        ranking: per layer, every channel, strongest first (the first of them are those shown).
        extra: per layer, the shown channels also rendered as a neuron, negatively and diversely.
        caps: ``max_channels`` and ``unit_renders`` as the run took them (``"auto"`` made numbers).
    """

    shown: dict[str, list[int]]
    ranking: dict[str, list[int]]
    extra: dict[str, list[int]]
    caps: dict

    def strongest(self, layer: str) -> list[int]:
        """The shown units of a layer, strongest first."""
        shown = set(self.shown[layer])
        return [channel for channel in self.ranking[layer] if channel in shown]


def choose_units(plan: GalleryPlan, settings: GallerySettings, statistics: dict | None) -> UnitChoice:
    """One rule for every section: each layer's units ranked by their strongest response to the
    images (the largest per-image mean activation, from the statistics' record; channel order
    without it), the first ``max_channels`` shown (in channel order), the first ``unit_renders``
    of those also rendered as a neuron, a diverse set and negatively; ``"auto"`` takes as many as
    the render budget allows (:data:`cnnviz.site.settings.CHANNEL_BUDGET`)."""
    measured = (statistics or {}).get("data", {}).get("layers", {})
    counts = {layer: plan.channels_of(layer) for layer in plan.layers}
    shown, ranking, extra = {}, {}, {}
    caps = _budgeted(plan, settings, counts)
    for layer in plan.layers:
        count = counts[layer]
        maxima = measured.get(layer, {}).get("mean_maximum")
        if maxima and len(maxima) == count:
            order = sorted(range(count), key=lambda c: -maxima[c] if maxima[c] is not None else float("inf"))
        else:
            order = list(range(count))
        limit = count if caps["max_channels"] is None else min(count, caps["max_channels"])
        ranking[layer] = order
        shown[layer] = sorted(order[:limit])
        most = limit if caps["unit_renders"] is None else min(limit, caps["unit_renders"])
        extra[layer] = sorted(order[:most])
    return UnitChoice(shown, ranking, extra, caps)


def _budgeted(plan: GalleryPlan, settings: GallerySettings, counts: dict[str, int]) -> dict:
    """``max_channels`` and ``unit_renders`` as numbers (``None``: all), an ``"auto"`` one within
    the render budget (:func:`cnnviz.site.settings.within_budget`)."""
    s = settings
    if "auto" not in (s.max_channels, s.unit_renders):
        return {"max_channels": s.max_channels, "unit_renders": s.unit_renders}
    costs = {}
    for layer in [] if plan.scripted else plan.layers:
        try:
            costs[layer] = step_cost(plan.loaded, layer)
        except CnnvizError:
            costs[layer] = 0  # not rendered at all (its render job says why)
    return within_budget(counts, costs, s.max_channels, s.unit_renders, s.diverse, s.steps)


def rendered_classes(plan: GalleryPlan, settings: GallerySettings) -> list[int]:
    """The classes rendered: the first ``max_classes`` (``"auto"``: as many as fit
    ``CLASS_BUDGET``, each costing its steps of the whole model at its canvas)."""
    limit = settings.max_classes
    if limit == "auto":
        try:
            cost = step_cost(plan.loaded, "logits")
        except CnnvizError:
            cost = 0
        limit = min(AUTO_CLASSES, int(CLASS_BUDGET // (cost * settings.class_steps))) if cost else AUTO_CLASSES
    return list(range(min(plan.class_count, limit)))

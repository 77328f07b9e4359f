"""A unit's page, as OpenAI Microscope shows one, for any model: its feature visualizations (the
channel, the neuron at the centre, a diverse set, the negative) each against the real images,
its dataset exemplars (top and bottom) with the receptive field marked, its activation
distribution, its maps on the sample images, its kernel, and the units of the neighbouring layers
it is most strongly connected to. Built from the jobs' records (:mod:`cnnviz.site.jobs`).
"""
from __future__ import annotations

import math

from markupsafe import Markup

from cnnviz.site.concept_pages import unit_concepts
from cnnviz.site.content import SiteContent, layer_page, number, unit_page, verdict
from cnnviz.site.records import display_name
from cnnviz.site.units import histogram_svg

LINKS = 6  # strongest inputs and outputs listed


def unit_context(content: SiteContent, layer: str, channel: int, position: int, neighbours: dict) -> dict:
    """What ``unit.html`` shows of ``layer:channel`` (``position``: the layer's place among those shown)."""
    stats = content.statistics(layer)
    measured = stats.get("units", [])
    unit = measured[channel] if channel < len(measured) else None
    render = content.render(layer, channel)
    extra = content.data(f"renders {layer}").get("units", {}).get(str(channel), {})
    pictures = content.data(f"units {layer}")
    own = pictures.get("units", {}).get(str(channel), {})
    renders = [_card("Channel", "the channel's mean activation over the whole image", render)]
    if render and render.get("start") == "filter":
        renders[0]["text"] = "the channel, a linear filter of the input"
    if extra:
        renders.append(_card("Neuron", "the activation of the single neuron at the centre of the map", extra.get("neuron")))
        renders.append(_card("Negative", "the channel's mean activation made as low as it goes", extra.get("negative"),
                             negative=True))
    diverse = [_card(f"Diverse {k + 1}", "", entry) for k, entry in enumerate(extra.get("diverse", []))]
    single = bool(extra) and not diverse and render is not None and render.get("start") == "filter"
    facts = _facts(content, layer, channel, unit, stats)
    return {
        "layer": layer, "channel": channel, "layer_href": layer_page(layer),
        "previous_unit": _unit_link(layer, neighbours["previous"]), "next_unit": _unit_link(layer, neighbours["next"]),
        "facts": facts, "renders": renders, "diverse": diverse, "extra_rendered": bool(extra), "single": single,
        "unit_renders": (content.caps or {}).get("unit_renders", content.settings.unit_renders),
        "exemplars": [dict(own[which], which=which) for which in ("top", "bottom") if which in own],
        "field_note": pictures.get("receptive_field"),
        "histogram": _histogram(unit, stats, render),
        "maps": _maps(content, layer, channel),
        "kernel": own.get("kernel"),
        "concepts": unit_concepts(content, layer, channel),
        "inputs": _linked(content, position - 1, channel, "inputs") if position > 0 else None,
        "outputs": _linked(content, position, channel, "outputs") if position + 1 < len(content.layers) else None,
    }


def _unit_link(layer: str, channel) -> dict | None:
    return None if channel is None else {"href": unit_page(layer, channel), "label": f"{layer}:{channel}"}


def _card(title: str, text: str, entry: dict | None, negative: bool = False) -> dict:
    return {"title": title, "text": text, "entry": entry, "verdict": verdict(entry, negative)}


def _facts(content: SiteContent, layer: str, channel: int, unit: dict | None, stats: dict) -> list[tuple[str, str]]:
    row = content.row_of(layer)
    facts = [("layer", f"{layer} ({row.type})" if row is not None else layer)]
    field = content.receptive_field(layer)
    if field:
        facts.append(("receptive field", field))
    if unit is None:
        return facts
    images = content.data("statistics").get("images")
    facts += [
        ("over", f"{images} images" if images else "the images"),
        ("mean ± std", f"{number(unit['mean'])} ± {number(unit['std'])}"),
        ("min, max", f"{number(unit['min'])}, {number(unit['max'])}"),
        ("best mean over one image", number(unit["best_mean"])
         + (f" ({display_name(unit['top'][0][0])} has its largest value)" if unit.get("top") else "")),
        ("values > 0", f"{100 * unit['positive']:.1f} %" + (" (dead: never positive)" if unit["dead"] else "")),
    ]
    ranking = content.ranking.get(layer, [])
    if channel in ranking:
        facts.append(("rank in its layer", f"{ranking.index(channel) + 1} of {len(ranking)} by its best mean over one image"))
    return facts


def _histogram(unit: dict | None, stats: dict, render: dict | None):
    """The unit's activation histogram (inline SVG), with its dataset extremes and its
    render's mean marked."""
    if unit is None:
        return None
    counts = [int(v) for v in unit["histogram"]["counts"].split()]
    first, bins, half_range = unit["histogram"]["first"], stats["bins"], stats["half_range"]
    width = 2 * half_range / bins
    low, high = -half_range + first * width, -half_range + (first + len(counts)) * width
    marks = [(f"max {number(unit['max'])}", unit["max"], "#b42318"), (f"min {number(unit['min'])}", unit["min"], "#2456c7")]
    value = render.get("value") if render else None
    if value is not None and math.isfinite(value) and render.get("start") != "filter":
        # the axis reaches the render's mean, which may lie beyond every real value
        extra_low, extra_high = max(0, math.ceil((low - value) / width)), max(0, math.ceil((value - high) / width))
        counts = [0] * extra_low + counts + [0] * extra_high
        low, high = low - extra_low * width, high + extra_high * width
        marks.append((f"render's mean {number(value)}", value, "#7a2e8e"))
    svg = histogram_svg(counts, low, high, marks)
    return {"svg": Markup(svg), "total": sum(counts),
            "text": f"{sum(counts):,} values in {len(counts)} bins of {number(width)} from {number(low)} to {number(high)}"}


def _maps(content: SiteContent, layer: str, channel: int) -> list[dict]:
    found = []
    for image in content.activation_images():
        part = image.get("layers", {}).get(layer)
        entry = part["units"].get(str(channel)) if part else None
        if entry:
            scale = part["limit"]
            found.append({"image": image["image"], "input": image["input"], "file": entry["file"], "mean": entry["mean"],
                          "max": entry["max"],
                          "scale": f"{'-' if part['signed'] else ''}{number(scale) if part['signed'] else '0'} to {number(scale)}"})
    return found


def _linked(content: SiteContent, link_index: int, channel: int, direction: str) -> dict | None:
    """The strongest links of this unit into the previous layer (``inputs``) or the next
    (``outputs``), each a unit with its render where it has a page."""
    if link_index < 0 or link_index >= len(content.links):
        return None
    link = content.links[link_index]
    other = content.layers[link_index] if direction == "inputs" else content.layers[link_index + 1]
    if isinstance(link, str) or not link.linked:
        return {"layer": other, "why": link if isinstance(link, str) else link.why, "units": []}
    pairs = link.strongest_inputs(channel, LINKS) if direction == "inputs" else link.strongest_outputs(channel, LINKS)
    shown = set(content.shown.get(other, []))
    units = []
    for unit, strength in pairs:
        render = content.render(other, unit)
        units.append({"label": f"{other}:{unit}", "channel": unit, "href": unit_page(other, unit) if unit in shown else None,
                      "strength": strength, "render": render})
    return {"layer": other, "how": link.how, "units": units, "why": None,
            "note": "" if all(math.isfinite(u["strength"]) for u in units) else "some strengths are not finite"}

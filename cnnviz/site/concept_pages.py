"""What the gallery's pages show of a layer's concepts (:mod:`cnnviz.site.concepts`): the concepts
page (its concepts side by side: render, strongest image regions, maps over images, share, top
channels linked to their units' pages, importance and the deletion check against a baseline that
removes as much activation elsewhere), the layer page's link to it, and on each unit's page the
concepts that use the unit. Built from the concepts jobs' records."""
from __future__ import annotations

from cnnviz.site.content import SiteContent, concepts_page, layer_page, number, unit_page, verdict
from cnnviz.site.settings import CONCEPT_TOP_CHANNELS, CONCEPT_USES


def concept_layers(content: SiteContent) -> list[str]:
    """The layers whose concepts job made concepts (their pages are written)."""
    return [layer for layer in content.layers if content.data(f"concepts {layer}").get("concepts")]


def concepts_context(content: SiteContent, layer: str) -> dict:
    """What ``concepts.html`` shows of ``layer``'s concepts."""
    data = content.data(f"concepts {layer}")
    shown = set(content.shown.get(layer, []))
    concepts = []
    for entry in data["concepts"]:
        j = entry["concept"]
        channels = []
        for channel, weight in entry["uses"]:
            channels.append({"channel": channel, "weight": weight, "render": content.render(layer, channel),
                             "href": unit_page(layer, channel) if channel in shown else None})
        render = entry.get("render")
        concepts.append({
            "concept": j, "anchor": f"concept-{j}", "render": render, "verdict": verdict(render),
            "card": {"title": f"Concept {j}", "text": "its direction's mean activation", "entry": render,
                     "verdict": verdict(render)},
            "share": entry["share"], "importance": entry["importance"], "deletion": entry["deletion"],
            "random_deletion": entry["random_deletion"], "check": _deletion_text(entry),
            "channels": channels, "top": ", ".join(str(c) for c, _ in entry["top_channels"]),
            "exemplars": entry.get("exemplars"), "maps": entry.get("maps"),
        })
    return {"layer": layer, "layer_href": layer_page(layer), "intro": _intro(data, layer), "concepts": concepts,
            "overview": _overview(content, data), "importance": _importance_text(data),
            "uses": f"the {CONCEPT_TOP_CHANNELS} channels of largest weight in its direction, and any other whose "
                    f"weight is at least {CONCEPT_USES:.0%} of the largest",
            "pages": len(shown), "crop_region": data.get("crop_region")}


def layer_concepts(content: SiteContent, layer: str) -> dict | None:
    """The layer page's link to its concepts page, with each concept's render (``None`` without one)."""
    data = content.data(f"concepts {layer}")
    if not data.get("concepts"):
        return None
    href = concepts_page(layer)
    return {"href": href, "k": data["k"], "images": data["images"],
            "concepts": [{"concept": c["concept"], "href": f"{href}#concept-{c['concept']}", "render": c.get("render"),
                          "share": c["share"], "verdict": verdict(c.get("render"))} for c in data["concepts"]]}


def unit_concepts(content: SiteContent, layer: str, channel: int) -> dict | None:
    """The concepts of the unit's layer that use it (``None`` where the layer has no concepts page):
    each with its render, the unit's weight in its direction and that weight's rank."""
    data = content.data(f"concepts {layer}")
    if not data.get("concepts"):
        return None
    href = concepts_page(layer)
    concepts = data["concepts"]
    used = []
    for use in data["units"].get(str(channel), []):
        entry = concepts[use["concept"]]
        used.append({"concept": use["concept"], "href": f"{href}#concept-{use['concept']}", "weight": use["weight"],
                     "rank": use["rank"], "share": entry["share"], "render": entry.get("render"),
                     "largest": max(weight for _, weight in entry["top_channels"]) if entry["top_channels"] else None})
    return {"href": href, "k": data["k"], "concepts": used,
            "rule": f"among its {CONCEPT_TOP_CHANNELS} largest, or at least {CONCEPT_USES:.0%} of the largest"}


def concept_page_links(content: SiteContent) -> list[dict]:
    """The index's (and the navigation's) links to the concepts pages."""
    links = []
    for layer in concept_layers(content):
        data = content.data(f"concepts {layer}")
        links.append({"href": concepts_page(layer), "label": f"Concepts of {layer}",
                      "note": f"{data['k']} concepts over {data['images']} images (reconstruction error "
                              f"{number(data['error'])})"})
    return links


def _intro(data: dict, layer: str) -> str:
    k, images, channels = data["k"], data["images"], data["channels"]
    text = (f"What {layer} knows, as {k} directions over its {channels} channels instead of {channels} units: the "
            f"layer's activation vector at every position of each of the {images} images is factorised into {k} "
            f"non-negative concepts (cnnviz.concepts, non-negative matrix factorisation"
            + ("; the layer can be negative, so its activations were shifted to be non-negative first"
               if data.get("shifted") else "")
            + f"). Their reconstruction error over every position is {number(data['error'])} (relative; "
            f"{number(data['fit_error'])} on the positions fitted).")
    if data["asked"] > k:
        text += f" {data['asked']} concepts were asked for; the layer has only {channels} channels."
    if data.get("fidelity") is not None:
        text += (f" Replacing the layer's activation by its reconstruction from the {k} concepts keeps "
                 f"{100 * data['fidelity']:.0f} % of the images' targets (fidelity: their sum, over the first "
                 f"{len(data.get('targets') or [])} images).")
    return text


def _importance_text(data: dict) -> str:
    targets = data.get("targets") or []
    if not targets:
        return "No importance: the model's output is not one score per class."
    text = (f"Importance and deletion are measured on the first {len(targets)} images, each for its top class "
            f"({', '.join(targets[:3])}{', ...' if len(targets) > 3 else ''}): importance is gradient x coefficient "
            "(the concept's contribution to the class's logit, to first order, averaged over the images); deletion is how "
            "much the logit drops when the concept's component is removed from the layer's activation and the rest of "
            "the network is run again. Its baseline (random): for the images where the concept is the most important, "
            "the drop when as much activation is removed from channels the concept does not use (its weights moved to "
            "other channels by a fixed random permutation); n/a where it is the most important for none.")
    check = data.get("deletion_check") or {}
    if check.get("concept") is not None and check.get("random") is not None:
        text += (f" Removing each image's most important concept lowers its logit by {number(check['concept'])} on "
                 f"average, the baseline by {number(check['random'])}: the concept's drop is the larger in "
                 f"{100 * check['beats']:.0f} % of the {check['images']} images.")
    return text


def _deletion_text(entry: dict) -> str:
    deletion, random = entry["deletion"], entry["random_deletion"]
    if deletion is None:
        return "n/a"
    if random is None:
        return f"{number(deletion)} (no baseline: it is no image's most important concept)"
    return (f"{number(deletion)} (baseline {number(random)}: "
            f"{'more' if deletion > random else 'not more'} than removing as much elsewhere)")


def _overview(content: SiteContent, data: dict) -> dict | None:
    figure = data.get("figure")
    layer = data.get("layer")
    figures = content.records.get(f"concepts {layer}", {}).get("figures", [])
    return next((f for f in figures if f["file"] == figure), None)

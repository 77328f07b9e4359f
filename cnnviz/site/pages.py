"""The gallery's HTML pages, from Jinja2 templates shipped with the package: the index (with the
hierarchy of renders, shallow to deep), a page per layer (a grid of its units), a page per unit
(:mod:`cnnviz.site.unit_pages`), attributions, classes and concepts (:mod:`cnnviz.site.concept_pages`).
Pages read the jobs' records only.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import jinja2

from cnnviz.core.version import __version__
from cnnviz.core import output as files
from cnnviz.inputs.batches import missing_files
from cnnviz.site.concept_pages import concept_layers, concept_page_links, concepts_context, layer_concepts
from cnnviz.site.content import (
    ATTRIBUTIONS_PER_PAGE, SiteContent, attribution_pages, concepts_page, layer_page, number, unit_page, verdict,
)
from cnnviz.site.records import display_name
from cnnviz.site.unit_pages import unit_context

HIERARCHY_UNITS = 8  # renders per layer in the index's hierarchy

RECEPTIVE_FIELD_NOTE = (
    "Receptive field: the input region one unit sees (size), the step between the regions of neighbouring "
    "units (/stride) and where the first region starts (@offset: negative where it begins in the padding); "
    "global: every input pixel. A ~ marks a grid whose regions are not all the same size (an adaptive "
    "pooling whose output does not divide its input); the size is the largest."
)


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("cnnviz.site", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    environment.filters["number"] = number
    environment.filters["short"] = lambda name: name[len("sample:"):] if name.startswith("sample:") else name
    environment.filters["percent"] = lambda value: "n/a" if value is None else f"{100 * value:.0f} %"
    return environment


def write_site(content: SiteContent, manifest: dict) -> tuple[Path, list[Path]]:
    """Write style.css and every page; return the index's path and the unit pages'."""
    environment = _environment()
    folder = content.folder
    css = resources.files("cnnviz.site").joinpath("static", "style.css").read_bytes()
    files.write_bytes(folder / "style.css", css)
    problems: dict[str, list[str]] = {}
    for record in content.records.values():
        if record.get("error"):
            kind, _, subject = record["job"].partition(" ")
            problems.setdefault(subject if subject in content.layers else "", []).append(f"{record['job']}: {record['error']}")
    layer_links = [{"href": layer_page(layer), "label": layer} for layer in content.layers]
    figures = manifest["figures"]
    others = []
    attribution_images = [image for name, record in content.records.items() if name.startswith("attributions ")
                          for image in (record.get("data") or {}).get("images", [])]
    if attribution_images:
        others.append({"href": "attributions.html", "label": "Attributions",
                       "note": f"{', '.join(content.settings.methods)} on {len(attribution_images)} images"})
    classes = content.data("classes").get("classes", {})
    if classes:
        others.append({"href": "classes.html", "label": "Classes", "note": f"an image for each of {len(classes)} classes"})
    concept_links = concept_page_links(content)
    others += concept_links
    nav = [{"href": "index.html", "label": "Index"}] + layer_links + others
    common = {"model": manifest["model"], "version": __version__, "nav": nav}

    def write(name: str, template: str, **context) -> Path:
        root = "../" * name.count("/")
        html = environment.get_template(template).render(current=name, root=root, **common, **context)
        return files.write_bytes(folder / name, html.encode("utf-8"))

    units = []
    for position, layer in enumerate(content.layers):
        write(layer_page(layer), "layer.html", title=f"Layer {layer}", pager=_around(layer_links, position),
              **_layer_context(content, layer, figures, problems.get(layer, [])))
        shown = content.shown.get(layer, [])
        for place, channel in enumerate(shown):
            context = unit_context(content, layer, channel, position, _around(shown, place))
            units.append(write(unit_page(layer, channel), "unit.html", title=f"{layer}:{channel}", **context))
    for layer in concept_layers(content):
        write(concepts_page(layer), "concepts.html", title=f"Concepts of {layer}", **concepts_context(content, layer))
    names = attribution_pages(len(attribution_images)) if attribution_images else []
    if attribution_images:
        skipped = {name: why for record_name, record in content.records.items() if record_name.startswith("attributions ")
                   for name, why in (record.get("data") or {}).get("skipped", {}).items()}
        links = [{"href": name, "label": f"images {k * ATTRIBUTIONS_PER_PAGE + 1}-"
                  f"{min((k + 1) * ATTRIBUTIONS_PER_PAGE, len(attribution_images))}"} for k, name in enumerate(names)]
        for k, name in enumerate(names):  # a page per 12 images, so that no page grows heavy
            write(name, "attributions.html", title="Attributions" + (f" ({links[k]['label']})" if len(names) > 1 else ""),
                  images=attribution_images[k * ATTRIBUTIONS_PER_PAGE:(k + 1) * ATTRIBUTIONS_PER_PAGE],
                  pager=_around(links, k),
                  methods=content.settings.methods, classes=", ".join(content.settings.classes), skipped=skipped,
                  faithfulness=content.data("faithfulness") if k == 0 else None,
                  problems=[p for p in problems.get("", []) if p.startswith("attributions")])
    if classes:
        measured = [c for c in classes.values() if c["render"].get("succeeded") is not None]
        beat = sum(1 for c in measured if c["render"]["succeeded"])
        write("classes.html", "classes.html", title="Class visualizations", classes=list(classes.values()),
              summary=(f"{beat} of {len(measured)} renders beat the best real image's logit; "
                       f"{sum(1 for c in classes.values() if c['weak'])} are weak (marked): below it, or given "
                       "their class with under 50 % probability") if measured else None,
              problems=[p for p in problems.get("", []) if p.startswith("classes")])
    _remove_stale_pages(folder, content, names + [link["href"] for link in concept_links], bool(classes), units)
    index = write("index.html", "index.html", title=f"What {manifest['model'].get('name') or manifest['model']['spec']} has learned",
                  **_index_context(content, manifest, layer_links, others, figures))
    return index, units


def _around(items: list, place: int) -> dict:
    """The items before and after ``items[place]`` (``None`` at either end): a page's pager."""
    return {"previous": items[place - 1] if place else None, "next": items[place + 1] if place + 1 < len(items) else None}


def _remove_stale_pages(folder: Path, content: SiteContent, pages: list[str], classes: bool, units: list[Path]) -> None:
    """Pages of an earlier run that this one does not write (other layers or units, no classes, no
    concepts): only those the gallery wrote (a user's own page stays). ``pages``: the attributions
    and concepts pages written."""
    written = {layer_page(layer) for layer in content.layers} | {"index.html"} | set(pages)
    written |= {"classes.html"} if classes else set()
    for page in [*folder.glob("layer-*.html"), *folder.glob("attributions*.html"), *folder.glob("concepts-*.html"),
                 folder / "classes.html"]:
        if page.name not in written:
            files.remove_written(page)
    current = {path.resolve() for path in units}
    for page in sorted((folder / "units").rglob("*.html")) if (folder / "units").is_dir() else []:
        if page.resolve() not in current and files.remove_written(page):
            try:
                page.parent.rmdir()  # a layer's folder of unit pages, now empty
            except OSError:
                pass


def _layer_context(content: SiteContent, layer: str, figures: list[dict], problems: list[str]) -> dict:
    row = content.row_of(layer)
    shown = content.shown.get(layer, [])
    count = content.channels(layer)
    field = content.receptive_field(layer)
    intro = (f"{layer}: {row.type}, output {_shape_text(row.output_shape)}, {row.params:,} parameters"
             if row is not None else layer)
    intro += f"; receptive field {field}." if field else "."
    tiles = []
    for channel in shown:  # channel order
        render = content.render(layer, channel)
        tiles.append({"channel": channel, "href": unit_page(layer, channel), "render": render,
                      "verdict": verdict(render)})
    measured_tiles = [tile for tile in tiles if tile["verdict"]["ok"] is not None]
    apart = {what: sum(1 for tile in measured_tiles if (tile["render"] or {}).get("outcome") == what)
             for what in ("photo", "flat")}
    below = sum(1 for tile in measured_tiles if tile["verdict"]["ok"] is False
                and (tile["render"] or {}).get("outcome") not in ("photo", "flat"))
    measured = len(measured_tiles)
    summary = None
    if measured:
        beat = sum(1 for tile in measured_tiles if tile["verdict"]["ok"])
        summary = f"{beat} of {measured} renders beat the unit's best real image"
        if apart["photo"]:
            summary += (f"; {apart['photo']} ended as the photograph they started again from (marked photo), "
                        "not feature visualizations")
        if apart["flat"]:
            summary += f"; {apart['flat']} flat fields (marked flat)"
        if below:
            summary += f"; {below} below (marked)"
    mine = [f for f in figures if f.get("layer") == layer]
    maps = []
    for image in content.activation_images():
        part = image.get("layers", {}).get(layer)
        if part:
            maps.append({"image": image["image"], "input": image["input"], "limit": part["limit"],
                         "signed": part["signed"],
                         "tiles": [{"channel": c, "href": unit_page(layer, c), **part["units"][str(c)]}
                                   for c in part["most_active"]]})
    return {
        "intro": intro, "choice": _choice_text(len(shown), count, content.settings.max_channels),
        "tiles": tiles, "summary": summary,
        "kernels": [f for f in mine if f["kind"] == "kernels"],
        "statistics": [f for f in mine if f["kind"] == "channel_statistics"],
        "dream": [f for f in mine if f["kind"] == "dream"],
        "maps": maps, "problems": problems, "concepts": layer_concepts(content, layer),
    }


def _choice_text(shown: int, count: int, limit) -> str:
    if shown >= count:
        return f"All {count} units (channels) of this layer have a page."
    how = ("as many as the render budget allows (a larger max_channels, --max-channels N, for more)"
           if limit == "auto" else f"max_channels {limit}")
    return (f"{shown} of {count} units (channels) have a page: those with the strongest response to the images "
            f"(the largest mean activation over one image), the same in every section; {how}.")


def _index_context(content: SiteContent, manifest: dict, layer_links, others, figures) -> dict:
    hierarchy = []
    for layer, link in zip(content.layers, layer_links):
        # the strongest units whose render beat the real images from noise (or is a filter's exact
        # maximum) first; restarts from a photograph, and renders below, only to fill the row
        candidates = []
        for place, channel in enumerate(content.ranking.get(layer, [])):
            render = content.render(layer, channel)
            if render is not None:
                grown = (render.get("start") in ("noise", "filter", None) and render.get("succeeded") is not False
                         and render.get("outcome") not in ("photo", "flat"))
                candidates.append((not grown, place, channel, render))
        kernels = content.data(f"units {layer}").get("units", {})
        units = []
        for _, _, channel, render in sorted(candidates, key=lambda c: c[:2])[:HIERARCHY_UNITS]:
            tile = {"channel": channel, "href": unit_page(layer, channel), "render": render, "verdict": verdict(render)}
            kernel = kernels.get(str(channel), {}).get("kernel")
            if render.get("start") == "filter" and kernel and kernel.get("colour"):
                # a first layer's unit is one linear filter: its kernel in colour says more than its
                # saturated sign pattern (both are on its page)
                tile["render"] = {**render, "thumbnail": kernel["file"]}
                tile["verdict"] = {**tile["verdict"], "badge": "kernel"}
            units.append(tile)
        hierarchy.append({**link, "field": content.receptive_field(layer), "units": units,
                          "count": len(content.shown.get(layer, []))})
    layer_notes = {}
    for layer in content.layers:
        summary = content.data(f"maximize {layer}").get("summary")
        layer_notes[layer] = f"{len(content.shown.get(layer, []))} unit pages" + (f"; {summary}" if summary else "")
    return {
        "images": {**manifest["images"], "first": [display_name(spec) for spec in manifest["images"]["first"]]},
        "failed": manifest["failed"], "hierarchy": hierarchy,
        "overview": [f for f in figures if f["kind"] == "histograms"],
        "layer_pages": [{**link, "note": layer_notes[link["label"]]} for link in layer_links],
        "other_pages": others, "table": _table(content), "settings": _settings(content, manifest),
    }


def _shape_text(shapes) -> str:
    if not shapes or shapes[0] is None:
        return "?"
    text = "x".join(str(n) for n in shapes[0])
    return text + (f" (x{len(shapes)} calls)" if len(shapes) > 1 else "")


def _table(content) -> dict:
    rows = list(content.table)
    fields = any(row.receptive_fields for row in rows)
    columns = ["layer", "type", "output shape", "calls", "parameters"]
    columns += ["receptive field (size /stride @offset)"] if fields else []
    linked: dict[str, str] = {}  # a module's row links to its page (a module run twice: its first shown call)
    for layer in content.layers:
        linked.setdefault(content.module_of(layer), layer_page(layer))
    body = []
    for row in rows:
        cells = [row.name, row.type, _shape_text(row.output_shape), row.calls, f"{row.params:,}"]
        cells += [row.receptive_field_text] if fields else []
        body.append({"cells": cells, "href": linked.get(row.name)})
    footer = f"{len(rows)} layers, {content.parameters:,} parameters; the layers in bold have a page."
    if fields:
        footer += " " + RECEPTIVE_FIELD_NOTE
    return {"columns": columns, "rows": body, "footer": footer}


def _settings(content, manifest: dict) -> list[tuple[str, str]]:
    settings = [("layers shown", ", ".join(content.layers)), ("images", str(manifest["images"]["count"])),
                ("units with a page", str(sum(len(shown) for shown in content.shown.values())))]
    missing = missing_files(manifest["images"]["skipped"])
    if missing:  # named by a .txt list of images
        settings.append(("files skipped (they do not exist)", ", ".join(Path(spec).name for spec in missing)))
    unreadable = [spec for spec in manifest["images"]["skipped"] if spec not in missing]
    if unreadable:
        settings.append(("files skipped (not images)", ", ".join(display_name(spec) for spec in unreadable)))
    if not content.class_count:
        settings.append(("attributions and classes", "none: the model's output is not one score per class"))
    dreamed = next((f.get("image") for f in manifest["figures"] if f["kind"] == "dream"), None)
    for name, value in manifest["settings"].items():
        if name == "dream_image":
            value = display_name(value) if value is not None else (
                f"{display_name(dreamed)} (the first image)" if dreamed else "the first image")
        elif name in ("max_channels", "unit_renders", "max_classes"):
            chosen = content.caps.get(name)
            value = ("all" if value is None else f"auto: {'all' if chosen is None else chosen} within the budget"
                     if value == "auto" else value)
        elif name == "concept_layers" and value is None:
            value = f"the last two with spatial maps: {', '.join(concept_layers(content)) or 'none'}"
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value) or "none"
        settings.append((name.replace("_", " "), str(value)))
    return settings

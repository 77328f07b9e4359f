"""The gallery's HTML pages, from Jinja2 templates shipped with the package."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2

from cnnviz.core.version import __version__
from cnnviz.core import output as files
from cnnviz.site.records import display_name, layer_stem

LAYER_SECTIONS = [
    ("kernels", "Kernels", ["kernels"],
     "The convolution's weights as images: for a convolution reading RGB, each output's kernel in colour; "
     "otherwise a map per output and input channel on one diverging scale (red positive, blue negative)."),
    ("activations", "Activations on sample images", ["activations"],
     "The layer's feature maps for single images, the most active channels first, on one scale for the layer."),
    ("statistics", "Statistics over all images", ["channel_statistics", "exemplars"],
     "Per channel: mean, spread, extremes and how often it is positive, over every image; and the image "
     "crops where each channel responds most (dataset exemplars)."),
    ("maximize", "Maximal-response images", ["maximize"],
     "Images optimised by gradient ascent to raise each channel's mean activation (decorrelated Fourier "
     "image, random transformations each step). The caption gives the value reached and, for comparison, "
     "the largest per-image mean the channel reaches on the real images."),
    ("dream", "Deep Dream", ["dream"],
     "An image changed, octave by octave, so that the whole layer responds more strongly."),
]


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("cnnviz.site", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def layer_page(layer: str) -> str:
    return f"layer-{layer_stem(layer)}.html"


@dataclass
class SiteContent:
    """What the pages show besides the manifest (the content makes it; the pages only read it).

    Attributes:
        folder: the gallery's folder; layers: the layers with a page, in order.
        records: each job's record (``job``, ``figures``, ``error``, ...), by job name.
        table: the model's layer table (:class:`cnnviz.LayerTable`).
        methods: the attribution methods shown side by side.
        parameters: the model's parameter count; class_count: its class scores (0: not a classifier).
    """

    folder: Path
    layers: list[str]
    records: dict[str, dict]
    table: list
    methods: tuple[str, ...]
    parameters: int
    class_count: int

    def row_of(self, layer: str):
        """The layer table's row of a layer reference (``None`` when the table has none)."""
        return next((row for row in self.table if row.name == layer.split("#")[0]), None)


def write_site(content: SiteContent, manifest: dict) -> Path:
    """Write style.css and every page; return the index's path."""
    environment = _environment()
    folder = content.folder
    css = resources.files("cnnviz.site").joinpath("static", "style.css").read_bytes()
    files.write_bytes(folder / "style.css", css)
    figures = [_shown(figure) for figure in manifest["figures"]]
    by_layer: dict[str, list[dict]] = {}
    for figure in figures:
        by_layer.setdefault(figure["layer"], []).append(figure)
    problems: dict[str, list[str]] = {}
    for record in content.records.values():
        if record.get("error"):
            kind, _, subject = record["job"].partition(" ")
            problems.setdefault(subject if subject in content.layers else "", []).append(f"{record['job']}: {record['error']}")
    layer_links = [{"href": layer_page(layer), "label": layer} for layer in content.layers]
    others = []
    if any(f["kind"] == "attributions" for f in figures):
        others.append({"href": "attributions.html", "label": "Attributions",
                       "note": f"{', '.join(content.methods)} side by side"})
    if any(f["kind"] == "class" for f in figures):
        others.append({"href": "classes.html", "label": "Classes", "note": "an image per class that the model scores highly"})
    nav = [{"href": "index.html", "label": "Index"}] + layer_links + others
    common = {"model": manifest["model"], "version": __version__, "nav": nav}

    def write(name: str, template: str, **context) -> Path:
        html = environment.get_template(template).render(current=name, **common, **context)
        return files.write_bytes(folder / name, html.encode("utf-8"))

    for position, layer in enumerate(content.layers):
        mine = by_layer.get(layer, [])
        sections = []
        for section_id, title, kinds, text in LAYER_SECTIONS:
            chosen = [f for f in mine if f["kind"] in kinds]
            failed = [p for p in problems.get(layer, []) if p.split(" ", 1)[0] == section_id]
            if not chosen and not failed:
                continue
            tiles = section_id == "maximize"
            sections.append({"id": section_id, "title": title, "text": text, "problems": failed, "wide": False,
                             "cards": [] if tiles else chosen, "tiles": chosen if tiles else []})
        pager = {"previous": layer_links[position - 1] if position else None,
                 "next": layer_links[position + 1] if position + 1 < len(layer_links) else None}
        row = content.row_of(layer)
        intro = (f"{layer}: {row.type}, output {_shape_text(row.output_shape)}, {row.params:,} parameters."
                 if row is not None else layer)
        write(layer_page(layer), "page.html", title=f"Layer {layer}", intro=intro, sections=sections, pager=pager)
    attributions = [f for f in figures if f["kind"] == "attributions"]
    if attributions:
        write("attributions.html", "page.html", title="Attributions", pager=None,
              intro="Which pixels each image's top class depends on, by several methods side by side. Each map is "
                    "the absolute attribution summed over colour channels, on its own scale; the caption gives "
                    "every method's raw range.",
              sections=[{"id": "attributions", "title": "Methods side by side", "text": "", "cards": attributions, "wide": True,
                         "tiles": [], "problems": [p for p in problems.get("", []) if p.startswith("attributions")]}])
    classes = [f for f in figures if f["kind"] == "class"]
    if classes:
        write("classes.html", "page.html", title="Class visualizations", pager=None,
              intro="For each class, an image optimised to raise its logit (the model's output before softmax).",
              sections=[{"id": "classes", "title": "Classes", "text": "", "cards": [], "tiles": classes, "wide": False,
                         "problems": [p for p in problems.get("", []) if p.startswith("classes")]}])
    # pages of an earlier run that this one does not write (other layers, no classes) would be
    # stale: they go
    written = {layer_page(layer) for layer in content.layers} | {"index.html"}
    written |= {"attributions.html"} if attributions else set()
    written |= {"classes.html"} if classes else set()
    for page in [*folder.glob("layer-*.html"), folder / "attributions.html", folder / "classes.html"]:
        if page.name not in written:
            files.remove_written(page)  # only pages the gallery wrote: a user's own page stays
    overview = [f for f in figures if f["kind"] == "histograms"]
    layer_notes = {layer: f"{sum(1 for f in by_layer.get(layer, []))} figures" for layer in content.layers}
    return write(
        "index.html", "index.html", title=f"What {manifest['model']['spec']} has learned",
        images={**manifest["images"], "first": [display_name(spec) for spec in manifest["images"]["first"]]},
        failed=manifest["failed"], overview=overview,
        layer_pages=[{**link, "note": layer_notes[link["label"]]} for link in layer_links],
        other_pages=others, table=_table(content), settings=_settings(content, manifest),
    )


def _shown(figure: dict) -> dict:
    low, high = figure["value_range"]
    text = "n/a" if low is None or high is None else f"{low:.3g} to {high:.3g}"
    return {**figure, "range_text": text}


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
    pages: dict[str, str] = {}  # a module's row links to its page (a module run twice: its first shown call)
    for layer in content.layers:
        pages.setdefault(layer.split("#")[0], layer_page(layer))
    body = []
    for row in rows:
        cells = [row.name, row.type, _shape_text(row.output_shape), row.calls, f"{row.params:,}"]
        cells += [row.receptive_field_text] if fields else []
        body.append({"cells": cells, "href": pages.get(row.name)})
    params = content.parameters
    footer = f"{len(rows)} layers, {params:,} parameters; the layers in bold have a page."
    if fields:
        footer += (" Receptive field: the input region one unit sees, its stride between neighbouring units "
                   "and the offset of its first pixel (global: every input pixel).")
    return {"columns": columns, "rows": body, "footer": footer}


def _settings(content, manifest: dict) -> list[tuple[str, str]]:
    settings = [("layers shown", ", ".join(content.layers)), ("images", str(manifest["images"]["count"]))]
    if manifest["images"]["skipped"]:
        settings.append(("files skipped (not images)", ", ".join(display_name(spec) for spec in manifest["images"]["skipped"])))
    if not content.class_count:
        settings.append(("attributions and classes", "none: the model's output is not one score per class"))
    for name, value in manifest["settings"].items():
        if name == "dream_image" and value is not None:
            value = display_name(value)
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        settings.append((name.replace("_", " "), "all" if value is None else str(value)))
    return settings

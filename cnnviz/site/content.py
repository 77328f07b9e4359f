"""What the gallery's pages are made of: the jobs' records and the choices of the run
(:class:`SiteContent`), the names of the pages, and how a render is judged against the real images.
Read by :mod:`cnnviz.site.pages` and :mod:`cnnviz.site.unit_pages`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cnnviz.core.references import split_call
from cnnviz.site.records import display_name, layer_stem


def number(value) -> str:
    """A value as a page shows it: three significant digits, ``n/a`` when unknown."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.3g}"


def layer_page(layer: str) -> str:
    return f"layer-{layer_stem(layer)}.html"


def unit_page(layer: str, channel: int) -> str:
    return f"units/{layer_stem(layer)}/{channel}.html"


def concepts_page(layer: str) -> str:
    return f"concepts-{layer_stem(layer)}.html"


ATTRIBUTIONS_PER_PAGE = 12  # images per attributions page (each with a figure per class asked)


def attribution_pages(images: int) -> list[str]:
    """The attributions pages of ``images`` attributed images: ``attributions.html``,
    ``attributions-2.html``, ..."""
    count = max(1, -(-images // ATTRIBUTIONS_PER_PAGE))
    return ["attributions.html"] + [f"attributions-{k}.html" for k in range(2, count + 1)]


def channels_in(row, call: int = 1) -> int:
    """The channels of a layer table row's output in its ``call``-th call (0 when unknown)."""
    shapes = row.output_shape if row is not None and row.output_shape else []
    shape = shapes[call - 1] if call - 1 < len(shapes) and shapes[call - 1] else ()
    return int(shape[0]) if shape else 0


def row_of(table, layer: str):
    """The layer table's row of a layer reference (``act#2``: the row of ``act``; ``None`` when
    the table has none). A module whose name holds ``#`` is its own row (``a#b``, ``a#2``)."""
    names = {row.name for row in table}
    module, _ = split_call(layer, names)
    return next((row for row in table if row.name == module), None)


@dataclass
class SiteContent:
    """What the pages show besides the manifest (the content makes it; the pages only read it).

    Attributes:
        folder: the gallery's folder; layers: the layers with a page, in order.
        records: each job's record (``job``, ``figures``, ``data``, ``error``, ...), by job name.
        table: the model's layer table (:class:`cnnviz.LayerTable`).
        settings: the run's :class:`cnnviz.GallerySettings`.
        parameters: the model's parameter count; class_count: its class scores (0: not a classifier).
        shown: per layer, the channels with a page (channel order); ranking: every channel of the
            layer, strongest first (the first of them are those shown).
        links: per pair of neighbouring layers, a :class:`cnnviz.Connection` or why there is none.
        class_names: the model's class names, or ``None``.
        caps: ``max_channels`` and ``unit_renders`` as the run took them (``"auto"`` made numbers).
    """

    folder: Path
    layers: list[str]
    records: dict[str, dict]
    table: list
    settings: object
    parameters: int
    class_count: int
    shown: dict[str, list[int]]
    ranking: dict[str, list[int]]
    links: list
    class_names: list[str] | None = None
    caps: dict | None = None

    def row_of(self, layer: str):
        """The layer table's row of a layer reference (``None`` when the table has none)."""
        return row_of(self.table, layer)

    def module_of(self, layer: str) -> str:
        """The module a layer reference names (``act#2``: ``act``; a module named ``a#b``: itself)."""
        return split_call(layer, {row.name for row in self.table})[0]

    def call(self, layer: str) -> int:
        """The call a layer reference names (``act#2``: 2; a module named ``a#2``: 1)."""
        return split_call(layer, {row.name for row in self.table})[1]

    def data(self, job: str) -> dict:
        """The data of a job's record (empty when the job has none or failed)."""
        return self.records.get(job, {}).get("data") or {}

    def render(self, layer: str, channel: int) -> dict | None:
        return self.data(f"maximize {layer}").get("units", {}).get(str(channel))

    def statistics(self, layer: str) -> dict:
        return self.data("statistics").get("layers", {}).get(layer, {})

    def activation_images(self) -> list[dict]:
        return [record["data"] for name, record in self.records.items()
                if name.startswith("activations ") and record.get("data")]

    def receptive_field(self, layer: str) -> str | None:
        row = self.row_of(layer)
        if row is None or not row.receptive_fields:
            return None
        call = self.call(layer) - 1
        fields = row.receptive_fields
        field = fields[call] if call < len(fields) else None
        return field.text if field is not None else None

    def channels(self, layer: str) -> int:
        """The channels of the layer's output (in the call the reference names)."""
        return channels_in(self.row_of(layer), self.call(layer)) or len(self.shown.get(layer, []))


def verdict(entry: dict | None, negative: bool = False) -> dict:
    """What a render's caption says of it against the real images: its value, the reference, and
    whether it beats it (``ok``: True, False, or None when not compared)."""
    if not entry:
        return {"ok": None, "text": "not rendered", "notes": [], "badge": None}
    value, reference, ok = entry.get("value"), entry.get("reference"), entry.get("succeeded")
    word = "lowest" if negative else "best"
    if reference is None:
        text = f"{number(value)} (not compared with real images)"
    else:
        text = f"{number(value)} {'beats' if ok else 'below'} the {word} real image's {number(reference)}"
    start = entry.get("start") or "noise"
    outcome = entry.get("outcome") or "render"
    if outcome == "photo":
        text = f"{number(value)}: the photograph it started again from, not a feature visualization"
    elif outcome == "flat":
        text = f"{number(value)}: a flat field (no pattern), not a feature visualization"
    if entry.get("steps"):
        text += f" ({entry['steps']} step{'' if entry['steps'] == 1 else 's'})"
    notes = []
    if start == "filter":
        notes.append("a linear filter of the input: its exact maximum in the valid range, measured at the centre "
                     "neuron (each pixel black or white, so it saturates: its kernel below shows the same pattern at "
                     "a fixed contrast)")
    elif start != "noise":
        notes.append(f"started again from the photograph {display_name(start)} (from noise it did not get past "
                     "the real images in time)" + {"photo": "; it ended near that photograph",
                                                   "render": "; it moved away from it"}.get(outcome, ""))
    badge = ("filter" if start == "filter" else "flat" if outcome == "flat" else "photo" if outcome == "photo"
             else "from photo" if start != "noise" else None)
    return {"ok": ok, "text": text, "notes": notes, "badge": badge}



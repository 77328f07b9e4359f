"""What a report is: :class:`Report`, a result turned into named figures, images, arrays and JSON,
and :class:`Item`, one figure or image of it with its caption and its value range.

A report is made once per result (by the functions of :mod:`cnnviz.reports`) and written by whoever
owns the folder: the ``cnnviz`` commands write it flat (:meth:`Report.write`, the item's ``file``
names); the gallery reads the same items and places them in its site (``figures/<layer>/...``) with
their captions in its manifest. Figures are drawn only when written.
"""
from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnviz.core import output as files
from cnnviz.core.references import Unit


@dataclass
class Item:
    """One figure (drawn on demand) or image (saved at its own size) of a report.

    Attributes:
        file: its name in a flat folder (what the command writes), e.g. ``kernels_features.0.png``.
        kind: what it shows (``kernels``, ``activations``, ``maximize``, ``class``, ``histograms``, ...).
        caption: one sentence that says what is shown and on what scale.
        layer: the layer it belongs to, or ``None`` for a figure of several.
        unit: the :class:`cnnviz.Unit` it shows, when one.
        value_range: the raw (min, max) of the values shown.
        value: a unit's objective value, when one.
        settings: what was used to make it.
        extra: further JSON fields (the image it was made on, the methods, ...).
        draw: makes the figure (a matplotlib ``Figure``), or ``None`` for an image.
        pixels: the image, ``3 x H x W`` in [0, 1], or ``None`` for a figure.
    """

    file: str
    kind: str
    caption: str
    layer: str | None = None
    unit: Unit | None = None
    value_range: tuple[float, float] = (math.nan, math.nan)
    value: float | None = None
    settings: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    draw: Callable | None = None
    pixels: torch.Tensor | None = None

    def save(self, path: str | os.PathLike, palette: bool = False) -> Path:
        """Write the figure or image to ``path`` (atomically); a figure in 256 colours with ``palette``."""
        if self.pixels is not None:
            return files.save_image(self.pixels, path)
        return files.save_figure(self.draw(), path, palette=palette)

    def to_dict(self) -> dict:
        """JSON-ready: the file, what it shows, its caption, value range and settings."""
        entry = {"file": self.file, "kind": self.kind, "layer": self.layer,
                 "unit": str(self.unit) if self.unit is not None else None, "caption": self.caption,
                 "value_range": [finite(self.value_range[0]), finite(self.value_range[1])],
                 "settings": self.settings}
        if self.value is not None:
            entry["value"] = finite(self.value)
        entry.update(self.extra)
        return entry


@dataclass
class Report:
    """A result as files: figures and images (:class:`Item`), arrays and a JSON summary.

    Attributes:
        name: the JSON's file stem (``kernels_features.0`` -> ``kernels_features.0.json``).
        data: the JSON summary (the result's ``to_dict()`` and what the report adds).
        items: the figures and images.
        arrays: file name -> an array (written as ``.npy``) or a dict of arrays (``.npz``); a name
            ending in ``.json`` is a further JSON file (its dict written as it is).
        notes: one-line remarks for the user (a cap that was applied, files that were skipped).
    """

    name: str
    data: dict
    items: list[Item] = field(default_factory=list)
    arrays: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def write(self, output: str | os.PathLike, **extra) -> list[Path]:
        """Write everything into the folder ``output``: the items by their ``file`` names, the arrays, and
        ``<name>.json`` (``data``, ``extra`` such as the model, and the list of figures). Every
        file is written atomically, and they appear together (:func:`cnnviz.core.staging.staged`:
        a failure leaves the folder as it was), while no other run writes into the folder
        (:func:`cnnviz.core.lock.locked`); returns the paths, the JSON last."""
        from cnnviz.core.staging import staged

        folder = files.output_folder(output)
        files.check_writable(self.targets(folder))  # a file in the way: refused before any is written
        with staged(folder):
            written = [item.save(folder / item.file) for item in self.items]
            written += [write_array(folder / name, content) for name, content in self.arrays.items()]
            summary = {**self.data, **extra, "figures": [item.to_dict() for item in self.items]}
            written.append(files.write_json(folder / f"{self.name}.json", summary))
        return written

    def targets(self, folder: str | os.PathLike) -> list[Path]:
        """The paths :meth:`write` writes in ``folder``."""
        folder = Path(folder).expanduser()
        return [*(folder / item.file for item in self.items), *(folder / name for name in self.arrays),
                folder / f"{self.name}.json"]

    def __iter__(self):
        return iter(self.items)

    def __repr__(self) -> str:
        return f"Report({self.name}: {len(self.items)} figures, {len(self.arrays)} array files)"


def write_array(path: Path, content) -> Path:
    """An array as ``.npy``, a dict of arrays as ``.npz``, a dict named ``*.json`` as JSON (atomically)."""
    if path.suffix == ".json":
        return files.write_json(path, content)
    if isinstance(content, dict):
        return files.write_npz(path, content)
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(content))
    return files.write_bytes(path, buffer.getvalue())


def finite(value) -> float | None:
    """A float for JSON (``None`` for NaN or infinity, which JSON cannot hold)."""
    value = float(value)
    return value if math.isfinite(value) else None


def value_range(tensor) -> tuple[float, float]:
    """The (min, max) of the finite values of a tensor or array, or (NaN, NaN) when there are none."""
    values = torch.as_tensor(np.asarray(tensor) if not isinstance(tensor, torch.Tensor) else tensor).detach()
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return (math.nan, math.nan)
    return (float(values.min()), float(values.max()))

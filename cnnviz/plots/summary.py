"""Figures of a model's layers (:func:`cnnviz.layer_table`)."""
from __future__ import annotations

from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure
from cnnviz.errors import CnnvizError


def layer_table(table, max_layers: int = 60) -> Figure:
    """The shape of the network by depth: for each layer with an output of ``C x H x W`` (its first
    call), its channels (bars, left axis) and its map's height (line, right axis, log scale), in
    run order of ``named_modules()``; the receptive field's size too when the table has it. The
    lecture's picture of a CNN: maps shrink while channels grow."""
    parents = {row.name.rsplit(".", 1)[0] for row in table if "." in row.name}
    rows = [row for row in table if row.output_shape and len(row.output_shape[0]) == 3
            and row.name not in parents][:max_layers]  # leaves: a container repeats its last child
    if not rows:
        raise CnnvizError("no layer of this table has a C x H x W output to draw")
    figure = ShownFigure(figsize=(max(6.0, 0.22 * len(rows) + 2), 4.2), layout="constrained")
    axis = figure.subplots()
    positions = range(len(rows))
    axis.bar(positions, [row.output_shape[0][0] for row in rows], color="#9ecae1", label="channels")
    axis.set_ylabel("channels")
    axis.set_xticks(positions, [row.name for row in rows], rotation=90, fontsize=6)
    side = axis.twinx()
    side.plot(positions, [row.output_shape[0][1] for row in rows], color="#de2d26", marker=".", label="map height")
    fields = [(i, row.receptive_fields[0].size[0]) for i, row in enumerate(rows)
              if row.receptive_fields and row.receptive_fields[0] is not None and row.receptive_fields[0].kind == "grid"]
    if fields:
        side.plot([i for i, _ in fields], [size for _, size in fields], color="#31a354", marker=".",
                  label="receptive field (px)")
    side.set_yscale("log", base=2)
    side.set_ylabel("pixels")
    handles = axis.get_legend_handles_labels()[0] + side.get_legend_handles_labels()[0]
    axis.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="upper left")
    shape = "x".join(str(s) for s in table.input_shape)
    axis.set_title(f"{len(table)} layers, {table.total_params:,} parameters, input {shape}", fontsize=9)
    return figure

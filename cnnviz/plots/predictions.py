"""Figures of predictions (:func:`cnnviz.predict`)."""
from __future__ import annotations

from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure
from cnnviz.errors import CnnvizError
from cnnviz.plots.style import grid_shape


def predictions(result, columns: int = 4, images: int = 16) -> Figure:
    """A bar chart per image (at most ``images``) of its top classes' probabilities, best on top,
    titled with the image's name."""
    shown = list(result)[:images]
    if not shown:
        raise CnnvizError("no predictions to draw")
    rows, columns = grid_shape(len(shown), columns)
    figure = ShownFigure(figsize=(3.2 * columns, 0.35 * max(len(p.classes) for p in shown) * rows + 0.9 * rows),
                         layout="constrained")
    for axis, prediction in zip(figure.subplots(rows, columns, squeeze=False).flat, shown):
        names = [str(name if name is not None else index) for index, name, _ in prediction.classes][::-1]
        values = [value for _, _, value in prediction.classes][::-1]
        axis.barh(range(len(values)), values, color="#4c72b0")
        axis.set_yticks(range(len(values)), names, fontsize=8)
        axis.set_xlim(0, 1)
        axis.set_xlabel("probability", fontsize=8)
        axis.set_title(prediction.source, fontsize=9)
    for axis in figure.axes[len(shown):]:
        axis.set_axis_off()
    return figure

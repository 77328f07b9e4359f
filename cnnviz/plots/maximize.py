"""Figures of maximal-response images (:func:`cnnviz.maximize`)."""
from __future__ import annotations


from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure

from cnnviz.plots.style import grid_shape


def maximize(rendering, columns: int = 8) -> Figure:
    """The images of a :class:`cnnviz.Rendering` as a grid, each titled with its unit and its final
    objective value."""
    images = rendering.display()
    rows, columns = grid_shape(len(images), columns)
    figure = ShownFigure(figsize=(1.7 * columns + 0.4, 1.9 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index < len(images):
            axis.imshow(images[index].permute(1, 2, 0).numpy(), interpolation="nearest")
            axis.set_title(f"{rendering.units[index]}\n{rendering.values[index]:.3g}", fontsize=6, pad=2)
    height, width = images.shape[2:]
    figure.suptitle(f"{rendering.objective}: {len(images)} images {height}x{width}, "
                    f"{rendering.settings.get('steps')} steps", fontsize=10)
    return figure

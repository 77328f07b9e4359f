"""Figures of maximal-response images (:func:`cnnviz.maximize`)."""
from __future__ import annotations

import textwrap

from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure

from cnnviz.plots.style import grid_shape

CAPTION_CHARACTERS = 26  # per line of a panel's caption (6 pt in a 1.7 in panel)
TITLE_CHARACTERS_PER_INCH = 11  # of the 10 pt title


def maximize(rendering, columns: int = 8) -> Figure:
    """The images of a :class:`cnnviz.Rendering` as a grid, each captioned with its unit and its
    final objective value (and ``photo`` / ``flat`` where it is not a render), under a title with
    the objective and the steps the images actually ran. Long names wrap, in the title and in
    each caption, so that no caption runs over its neighbours whatever the objective."""
    images = rendering.display()
    rows, columns = grid_shape(len(images), columns)
    height, width = images.shape[2:]
    figure_width = 1.7 * columns + 0.4
    title = textwrap.wrap(rendering.objective, max(30, int(figure_width * TITLE_CHARACTERS_PER_INCH)))
    title.append(f"{len(images)} images {height}x{width}, {rendering.steps_text()}")
    captions = [_caption(rendering, k) for k in range(len(images))]
    caption_lines = max((len(c) for c in captions), default=1)
    figure = ShownFigure(figsize=(figure_width, (1.75 + 0.1 * caption_lines) * rows + 0.2 * len(title) + 0.2),
                         layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index < len(images):
            axis.imshow(images[index].permute(1, 2, 0).numpy(), interpolation="nearest")
            axis.set_title("\n".join(captions[index]), fontsize=6, pad=2)
    figure.suptitle("\n".join(title), fontsize=10)
    return figure


def _caption(rendering, k: int) -> list[str]:
    """A panel's lines: what it shows (wrapped), its value and what it is when not a render."""
    unit = rendering.units[k]
    name = f"image {unit.channel + 1}" if unit.objective is not None and not unit.layer else str(unit)
    lines = textwrap.wrap(name, CAPTION_CHARACTERS, break_on_hyphens=False) or [""]
    value = f"{rendering.values[k]:.3g}"
    outcome = rendering.outcomes[k] if k < len(rendering.outcomes) else "render"
    if outcome in ("photo", "flat"):
        value += f" ({'the photograph it restarted from' if outcome == 'photo' else 'flat'})"
    return lines + textwrap.wrap(value, CAPTION_CHARACTERS)

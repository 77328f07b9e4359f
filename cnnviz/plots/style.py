"""What every figure shares: colour maps, grids of panels, mosaics, a figure's pixels.

Conventions (DESIGN.md, principle 5): images are shown de-normalised, in RGB; signed values use a
diverging colour map centred on zero; every heat map has a colour bar in raw units; the
normalisation scope (per map, per layer, global) is a parameter, never hidden.
"""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import torch
from matplotlib import colors
from matplotlib.figure import Figure


from cnnviz.errors import CnnvizError


DIVERGING = "RdBu_r"  # red positive, blue negative, white zero
SEQUENTIAL = "magma"
BACKGROUND = "#f0f0f0"


def grid_shape(count: int, columns: int) -> tuple[int, int]:
    columns = max(1, min(columns, count))
    return math.ceil(count / columns), columns


def mosaic(maps: list[list[np.ndarray]], pad: int = 1) -> np.ndarray:
    """Tile 2-D maps (rows of equal-size maps) into one array, NaN between them."""
    height, width = maps[0][0].shape
    rows, columns = len(maps), max(len(row) for row in maps)
    tiled = np.full((rows * (height + pad) - pad, columns * (width + pad) - pad), np.nan)
    for r, row in enumerate(maps):
        for c, value in enumerate(row):
            tiled[r * (height + pad):r * (height + pad) + height, c * (width + pad):c * (width + pad) + width] = value
    return tiled


def diverging_image(axis, tiled: np.ndarray, limit: float):
    colour_map = matplotlib.colormaps[DIVERGING].with_extremes(bad=BACKGROUND)
    return axis.imshow(tiled, cmap=colour_map, vmin=-limit, vmax=limit, interpolation="nearest")


def figure_pixels(figure: Figure) -> np.ndarray:
    """The rendered figure as an ``H x W x 4`` uint8 array (what a PNG of it holds, at its dpi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().float().numpy()


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CnnvizError(message)


SUPERSCRIPTS = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def power_of_ten(value: float, _position=None) -> str:
    """A log axis's tick as plain text, ``10⁵``, not mathtext: figures whose titles carry file and
    class names are drawn with mathematics off, and mathtext ticks would print as raw markup."""
    if value <= 0:
        return ""
    exponent = math.log10(value)
    if abs(exponent - round(exponent)) > 1e-9:
        return ""
    return "10" + str(round(exponent)).translate(SUPERSCRIPTS)


def log_axis(axis, which: str = "y") -> None:
    """A logarithmic axis labelled in plain text (:func:`power_of_ten`)."""
    from matplotlib import ticker

    getattr(axis, f"set_{which}scale")("log")
    target = axis.yaxis if which == "y" else axis.xaxis
    target.set_major_formatter(ticker.FuncFormatter(power_of_ten))
    target.set_minor_formatter(ticker.NullFormatter())


def value_scale(low: float, high: float):
    """A diverging map centred on zero for signed values, else a sequential one from zero."""
    if low < 0:
        limit = max(abs(low), abs(high), 1e-12)
        return DIVERGING, colors.Normalize(-limit, limit)
    return SEQUENTIAL, colors.Normalize(0, max(high, 1e-12))

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


def value_scale(low: float, high: float):
    """A diverging map centred on zero for signed values, else a sequential one from zero."""
    if low < 0:
        limit = max(abs(low), abs(high), 1e-12)
        return DIVERGING, colors.Normalize(-limit, limit)
    return SEQUENTIAL, colors.Normalize(0, max(high, 1e-12))

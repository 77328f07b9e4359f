"""The per-image figure of concepts (:func:`cnnviz.concepts`): each concept's coefficient over
each of the first images, one colour scale per concept (its colour bar in raw coefficient units)."""
from __future__ import annotations

import torch
from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure
from cnnviz.plots.style import DIVERGING, SEQUENTIAL, require

MAX_IMAGES = 8     # rows, at most
MAX_CONCEPTS = 16  # concept columns, at most


def concept_maps(result, images: int = MAX_IMAGES, concepts: list[int] | None = None,
                 attribution: bool = False) -> Figure:
    """One row per image (the first ``images`` of those whose maps were kept), one column per
    concept (default all, at most 16): the image, then each concept's coefficient at every
    position of the layer, upsampled and laid over the image. A concept's column has one colour
    scale over its rows, from 0 to its largest coefficient (the colour bar below it).

    With ``attribution``, each concept's attribution map instead: gradient x coefficient at every
    position (its contribution to the image's target there; red raises it, blue lowers it), on a
    scale symmetric about zero per concept, for the first images that have importance too."""
    chosen = list(range(min(result.k, MAX_CONCEPTS))) if concepts is None else list(concepts)
    require(bool(chosen) and all(0 <= j < result.k for j in chosen),
            f"concepts to draw: numbers from 0 to {result.k - 1}, got {concepts!r}")
    maps = result.attribution_maps if attribution else result.maps
    rows = min(images, len(maps), len(result.shown))
    require(rows > 0, "these concepts kept no attribution maps (maps=0 or importance_images=0)" if attribution
            else "these concepts kept no maps (maps=0): find them with maps=1 or more")
    columns = 1 + len(chosen)
    figure = ShownFigure(figsize=(1.3 * columns + 0.4, 1.3 * rows + 1.0), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for row in range(rows):
        picture = result.shown[row].permute(1, 2, 0).clamp(0, 1).numpy()
        axes[row, 0].imshow(picture)
        axes[row, 0].set_title(result.images[row][-18:], fontsize=7)
        size = tuple(result.shown[row].shape[1:])
        for column, concept in enumerate(chosen, start=1):
            axis = axes[row, column]
            strength = _upsampled(maps[row, concept], size)
            axis.imshow(picture, alpha=0.35)
            if attribution:
                limit = max(float(maps[:rows, concept].abs().max()), 1e-12)
                shown = axis.imshow(strength, cmap=DIVERGING, vmin=-limit, vmax=limit, alpha=0.75)
            else:
                top = float(maps[:rows, concept].max())
                shown = axis.imshow(strength, cmap=SEQUENTIAL, vmin=0, vmax=max(top, 1e-12), alpha=0.75)
            if row == 0:
                axis.set_title(f"concept {concept}", fontsize=8)
            if row == rows - 1:
                bar = figure.colorbar(shown, ax=axes[:, column], location="bottom", shrink=0.9, aspect=12)
                bar.ax.tick_params(labelsize=6)
    for axis in axes.flat:
        axis.set_axis_off()
    what = ("each concept's contribution to the image's target\n(gradient x coefficient; red raises it)"
            if attribution else "each concept's coefficient")
    figure.suptitle(f"{result.layer}: {what} over the first {rows} images\n(one scale per concept, in raw units)",
                    fontsize=9)
    return figure


def _upsampled(coefficient: torch.Tensor, size: tuple[int, int]):
    """A map (``h x w``) at the image's size (``H x W``), bilinear, as an array."""
    return torch.nn.functional.interpolate(coefficient[None, None].float(), size=size, mode="bilinear",
                                           align_corners=False)[0, 0].numpy()

"""Figures of concepts (:func:`cnnviz.concepts`): per concept, what it is made of, where it is
strongest, and its map over the first images."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure
from cnnviz.errors import CnnvizError


def concepts(result, concepts: list[int] | None = None, exemplars: int = 6, images: int = 3) -> Figure:
    """One row per concept (default all, at most 16): its share of the layer, importance and top
    channels; its strongest image regions (at most ``exemplars``); its coefficient over the first
    ``images`` images, overlaid on them (brighter where the concept is stronger)."""
    chosen = list(range(min(result.k, 16))) if concepts is None else list(concepts)
    if not chosen or any(not 0 <= j < result.k for j in chosen):
        raise CnnvizError(f"concepts to draw: numbers from 0 to {result.k - 1}, got {concepts!r}")
    crops = 0 if result.exemplar_crops is None else min(exemplars, result.exemplar_crops.shape[1])
    shown = min(images, len(result.shown), len(result.maps))
    columns = 1 + crops + shown
    figure = ShownFigure(figsize=(2.6 + 1.1 * (columns - 1), 1.25 * len(chosen) + 0.5), layout="constrained")
    axes = figure.subplots(len(chosen), columns, squeeze=False,
                           gridspec_kw={"width_ratios": [2.4] + [1] * (columns - 1)})
    importance = result.importance.mean(0) if len(result.importance) else None
    for row, concept in zip(axes, chosen):
        info = row[0]
        info.set_axis_off()
        channels = ", ".join(f"{c}" for c, _ in result.top_channels(concept, 4))
        lines = [f"concept {concept}", f"share {float(result.share[concept]):.0%}", f"channels {channels}"]
        if importance is not None:
            lines.append(f"importance {float(importance[concept]):.3g}")
        info.text(0, 0.5, "\n".join(lines), fontsize=8, va="center", transform=info.transAxes)
        for slot in range(crops):
            axis = row[1 + slot]
            axis.set_axis_off()
            if int(result.exemplar_images[concept, slot]) >= 0:
                axis.imshow(result.exemplar_crops[concept, slot].permute(1, 2, 0).numpy())
        top = float(result.maps[:shown, concept].max()) if shown else 0.0
        for number in range(shown):
            axis = row[1 + crops + number]
            axis.set_axis_off()
            axis.imshow(_overlaid(result.shown[number], result.maps[number, concept], top))
    for slot in range(crops):
        axes[0, 1 + slot].set_title("strongest" if slot == 0 else "", fontsize=8, loc="left")
    for number in range(shown):
        axes[0, 1 + crops + number].set_title(result.images[number][-18:], fontsize=7)
    figure.suptitle(f"{result.layer}: {result.k} concepts of {len(result.images)} images "
                    f"(reconstruction error {result.error:.2f})", fontsize=9)
    return figure


def _overlaid(image: torch.Tensor, coefficient: torch.Tensor, top: float) -> np.ndarray:
    """The image darkened where the concept is weak: its coefficient map, upsampled, as brightness."""
    height, width = image.shape[1:]
    strength = torch.nn.functional.interpolate(coefficient[None, None].float(), size=(height, width), mode="bilinear",
                                               align_corners=False)[0, 0]
    strength = (strength / top).clamp(0, 1) if top > 0 else torch.zeros_like(strength)
    shaded = image.float() * (0.15 + 0.85 * strength)
    return shaded.permute(1, 2, 0).clamp(0, 1).numpy()

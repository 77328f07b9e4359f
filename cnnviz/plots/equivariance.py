"""Figures of translation equivariance and pooling invariance (:func:`cnnviz.equivariance`)."""
from __future__ import annotations


import numpy as np
from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure



def equivariance(result) -> Figure:
    """Curves across depth, one figure: a column per transformation (translation, rotation,
    scale), the equivariance error on top and the invariance errors (of the layer's output, solid;
    of its spatial average, dashed) below, one line per magnitude."""
    import matplotlib

    transforms = [t for t in ("translation", "rotation", "scale") if result.magnitudes.get(t)]
    figure = ShownFigure(figsize=(4.2 * len(transforms), 6.5), layout="constrained")
    axes = figure.subplots(2, len(transforms), squeeze=False, sharex=True)
    positions = np.arange(len(result.layers))
    units = {"translation": "px", "rotation": "deg", "scale": "x"}
    for column, transform in enumerate(transforms):
        magnitudes = result.magnitudes[transform]
        colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.85, len(magnitudes)))
        for colour, magnitude in zip(colours, magnitudes):
            label = f"{magnitude:g} {units[transform]}"
            axes[0, column].plot(positions, result.equivariance_error[transform][magnitude], "o-", color=colour,
                                 markersize=3, label=label)
            axes[1, column].plot(positions, result.invariance_error[transform][magnitude], "o-", color=colour,
                                 markersize=3, label=label)
            axes[1, column].plot(positions, result.pooled_invariance_error[transform][magnitude], "--", color=colour)
        axes[0, column].set_title(f"{transform}: equivariance error", fontsize=9)
        axes[1, column].set_title(f"{transform}: invariance error (dashed: spatially averaged)", fontsize=9)
        axes[0, column].legend(fontsize=7)
        for row in range(2):
            axes[row, column].set_ylim(bottom=0)
            axes[row, column].grid(alpha=0.3)
        axes[1, column].set_xticks(positions)
        axes[1, column].set_xticklabels(result.layers, rotation=90, fontsize=6)
    axes[0, 0].set_ylabel("||f(Tx) - T'f(x)|| / ||f(x)||")
    axes[1, 0].set_ylabel("||f(Tx) - f(x)|| / ||f(x)||")
    figure.suptitle(f"equivariance and invariance across depth ({result.images} image(s); borders cropped)", fontsize=10)
    return figure

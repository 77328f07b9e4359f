"""The figure of a Deep Dream (:func:`cnnviz.dream`): the original beside the dreamed image."""
from __future__ import annotations

from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure
from cnnviz.inputs.images import rgb


def dream(result) -> Figure:
    """The original and the dreamed image of a :class:`cnnviz.Dream` side by side, titled with
    the layers raised and the objective before and after."""
    height, width = result.image.shape[1:]
    figure = ShownFigure(figsize=(2 * 3.2 * min(width / height, 2), 3.6), layout="constrained")
    for axis, image, title in zip(figure.subplots(1, 2), (result.original, result.image), ("original", "dreamed")):
        axis.imshow(rgb(image.detach().float().cpu().clamp(0, 1)).permute(1, 2, 0).numpy())
        axis.set_title(title, fontsize=8)
        axis.set_axis_off()
    figure.suptitle(f"Deep Dream of {', '.join(result.layers)}: objective {result.before:.3g} -> "
                    f"{result.after:.3g} (x{result.gain:.1f})", fontsize=9)
    return figure

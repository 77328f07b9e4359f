"""Figures of weight links between layers (:func:`cnnviz.connections`)."""
from __future__ import annotations

from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure
from cnnviz.errors import CnnvizError


def connections(links) -> Figure:
    """The strength matrix of each linked pair of a :class:`cnnviz.Connections` (or of one
    :class:`cnnviz.Connection`) as a heat map: a row per channel of the later layer, a column per
    channel of the earlier one, with a colour bar in the strength's own units (kernel L2 norms, or
    their products summed over paths). Pairs without a link are named in the title with why."""
    links = list(links) if isinstance(links, list) else [links]
    linked = [link for link in links if link.linked]
    if not linked:
        reasons = "; ".join(f"{link.source} -> {link.target}: {link.why}" for link in links) or "no pairs"
        raise CnnvizError(f"no linked pair to draw ({reasons})")
    figure = ShownFigure(figsize=(4.2 * len(linked), 4.2), layout="constrained")
    for axis, link in zip(figure.subplots(1, len(linked), squeeze=False)[0], linked):
        strength = link.strength.detach().float().cpu().numpy()
        shown = axis.imshow(strength, cmap="viridis", vmin=0, aspect="auto", interpolation="nearest")
        axis.set_title(f"{link.source} -> {link.target}", fontsize=9)
        axis.set_xlabel(f"{link.source} channel")
        axis.set_ylabel(f"{link.target} channel")
        figure.colorbar(shown, ax=axis, label="strength")
    skipped = [f"{link.source} -> {link.target}" for link in links if not link.linked]
    if skipped:
        figure.suptitle(f"not linked by weights: {', '.join(skipped)}", fontsize=8)
    return figure

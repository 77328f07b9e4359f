"""The figure of :class:`cnnviz.Faithfulness`: the deletion, insertion and ROAD curves of every
method beside the random map's, and the methods ranked."""
from __future__ import annotations

from matplotlib.figure import Figure

from cnnviz.core.display import ShownFigure
from cnnviz.errors import CnnvizError


def faithfulness(result, title: str | None = None) -> Figure:
    """Four panels (two by two, to fit a page 11 inches wide): the target's score as the most important pixels are removed (deletion) and put
    back into a blurred image (insertion), mean over the images, each method's AUC in its legend;
    ROAD's score after the most (solid) and least (dashed) relevant pixels are imputed, per
    percentile; and the methods ranked by insertion AUC less deletion AUC (mean, with the spread
    over the images as error bars). The random map is grey and dashed throughout."""
    if not result.methods:
        raise CnnvizError("no faithfulness to draw")
    means, spreads = result.summary(), result.spread()
    figure = ShownFigure(figsize=(11, 6.8), layout="constrained")
    axes = figure.subplots(2, 2).flatten()
    fractions = result.fractions.numpy()
    colours = {}
    for method in result.methods:
        style = {"color": "0.45", "linestyle": "--"} if method == "random" else {}
        curves = result.curves[method]
        line, = axes[0].plot(fractions, curves["deletion"].mean(dim=0).numpy(), **style,
                             label=f"{method} {means[method]['deletion_auc']:.3f}")
        colours[method] = line.get_color()
        axes[1].plot(fractions, curves["insertion"].mean(dim=0).numpy(), color=colours[method],
                     linestyle=style.get("linestyle", "-"), label=f"{method} {means[method]['insertion_auc']:.3f}")
        percentiles = list(result.percentiles)
        axes[2].plot(percentiles, curves["road_morf"].mean(dim=0).numpy(), marker="o", markersize=3,
                     color=colours[method], linestyle="-", label=f"{method} MoRF")
        axes[2].plot(percentiles, curves["road_lerf"].mean(dim=0).numpy(), marker="s", markersize=3,
                     color=colours[method], linestyle="--" if method != "random" else ":", alpha=0.8)
    kind = "probability" if set(result.score) == {"probability"} else "score"
    axes[0].set_title("deletion (AUC: lower is better)", fontsize=9)
    axes[1].set_title("insertion (AUC: higher is better)", fontsize=9)
    axes[2].set_title("ROAD: MoRF solid (lower better), LeRF dashed (higher better)", fontsize=8)
    for axis in axes[:2]:
        axis.set_xlabel("fraction of pixels removed" if axis is axes[0] else "fraction of pixels put back", fontsize=8)
        axis.set_ylabel(f"target {kind}", fontsize=8)
        axis.legend(fontsize=6, title="AUC", title_fontsize=6)
    axes[2].set_xlabel("% of pixels imputed", fontsize=8)
    axes[2].set_ylabel(f"target {kind}", fontsize=8)
    axes[2].legend(fontsize=6)
    ranking = result.ranking
    values = [means[m]["auc_difference"] for m in ranking]
    errors = [spreads[m]["auc_difference"] for m in ranking]
    axes[3].barh(range(len(ranking)), values, xerr=errors, color=[colours[m] for m in ranking], alpha=0.8,
                 error_kw={"elinewidth": 0.8, "ecolor": "0.3"})
    axes[3].set_yticks(range(len(ranking)), [f"{k}. {m}" for k, m in enumerate(ranking, start=1)], fontsize=7)
    axes[3].invert_yaxis()
    axes[3].axvline(means["random"]["auc_difference"], color="0.45", linestyle="--", linewidth=0.8)
    axes[3].set_title("ranked: insertion AUC - deletion AUC", fontsize=9)
    axes[3].set_xlabel("mean ± std over the images", fontsize=8)
    for axis in axes:
        axis.tick_params(labelsize=7)
    count = len(result.original)
    figure.suptitle(title or f"Faithfulness of the attributions ({count} image{'' if count == 1 else 's'}); "
                    f"best: {result.best}", fontsize=10)
    return figure

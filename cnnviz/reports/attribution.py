"""Reports of attributions: per method a figure per image and the raw maps; a panel of every
method side by side; the sanity checks when run."""
from __future__ import annotations

from cnnviz import plots
from cnnviz.reports.report import Item, Report, value_range


def attributions(results, checks: dict | None = None, panel_images: int = 4) -> Report:
    """Attributions by method (:class:`cnnviz.Attributions`): ``saliency_<method>[_<i>].png`` per
    image, ``saliency_<method>.npy`` (``N x C x H x W``), ``saliency_panel.png`` (the first
    ``panel_images`` images, every method) and ``saliency.json``; with ``checks`` (method ->
    :class:`cnnviz.SanityCheck`) also ``sanity_<method>.png`` and each check in the JSON; when the
    results carry their faithfulness (``attributions(..., faithfulness=True)``), ``faithfulness.png``
    (the curves and the ranking) and ``faithfulness.json`` (:meth:`cnnviz.Faithfulness.to_dict`)."""
    checks = checks or {}
    items, arrays, entries = [], {}, []
    for name, result in results.items():
        count = len(result.attribution)
        for index in range(count):
            suffix = "" if count == 1 else f"_{index}"
            target = result.targets[index]
            items.append(Item(
                f"saliency_{name}{suffix}.png", "attribution",
                f"{name} of {target} on {result.sources[index] if result.sources[index] else f'image {index}'}: "
                "the input, the signed and absolute maps, and the overlay",
                layer=result.layer, unit=target, value_range=value_range(result.attribution[index]),
                settings=result.settings, extra={"method": name},
                draw=lambda result=result, index=index: plots.attribution(result, index),
            ))
        arrays[f"saliency_{name}.npy"] = result.attribution.numpy()
        entry = result.to_dict()
        if name in checks:
            check = checks[name]
            items.append(Item(
                f"sanity_{name}.png", "sanity_check",
                f"Sanity check of {name}: the maps as the model's layers are randomised from the top, and their "
                "rank correlation with the original", value_range=value_range(check.maps), extra={"method": name},
                draw=lambda check=check: plots.sanity_check(check),
            ))
            entry["sanity_check"] = check.to_dict()
        entries.append(entry)
    if results:
        ranges = {name: list(value_range(r.attribution)) for name, r in results.items()}
        first = next(iter(results.values()))
        shown = min(panel_images, len(first.attribution))
        caption = ("Attributions of " + "; ".join(str(t) for t in first.targets[:shown]) + ", absolute maps; raw ranges: "
                   + ", ".join(f"{name} {low:.2g} to {high:.2g}" for name, (low, high) in ranges.items()))
        items.append(Item(
            "saliency_panel.png", "attributions", caption,
            value_range=(min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())),
            settings={"methods": list(results), "images": [s for s in first.sources[:shown]]},
            extra={"method": list(results), "method_ranges": ranges},
            draw=lambda: plots.attributions(results, images=panel_images),
        ))
    skipped = getattr(results, "not_applicable", {})
    if skipped and items and items[-1].kind == "attributions":
        items[-1].caption += "; n/a: " + "; ".join(f"{name} ({why})" for name, why in skipped.items())
    data = {"methods": entries, "not_applicable": [{"method": name, "why": why} for name, why in skipped.items()]}
    scores = getattr(results, "faithfulness", None)
    if scores is not None:
        means = scores.summary()
        items.append(Item(
            "faithfulness.png", "faithfulness",
            "Faithfulness: the target's score as the most important pixels are removed (deletion) and put back "
            "(insertion), ROAD's most and least relevant first, and the methods ranked (insertion AUC - deletion AUC); "
            "ranking: " + ", ".join(f"{m} {means[m]['auc_difference']:.3g}" for m in scores.ranking),
            settings=scores.settings, extra={"method": scores.methods},
            draw=lambda: plots.faithfulness(scores),
        ))
        arrays["faithfulness.json"] = scores.to_dict()
        data["faithfulness"] = {"file": "faithfulness.json", "ranking": scores.ranking, "best": scores.best}
    return Report("saliency", data, items, arrays=arrays, notes=[f"n/a: {name}: {why}" for name, why in skipped.items()])

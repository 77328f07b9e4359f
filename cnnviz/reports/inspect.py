"""Reports of what a model holds and computes on images: kernels, activations and statistics."""
from __future__ import annotations

import numpy as np

from cnnviz import plots
from cnnviz.core.output import safe_name
from cnnviz.inputs.batches import skipped_text
from cnnviz.reports.report import Item, Report, value_range


def kernels(result, scope: str = "layer") -> Report:
    """The kernels of one convolution: ``kernels_<layer>.png`` and ``kernels_<layer>.json``."""
    weight = result.weight
    # the range of what the figure shows: the chosen inputs' kernels, or the maps summed over inputs
    shown = {"pairs": lambda: weight[:, result.inputs], "outputs": result.maps}.get(result.view, lambda: weight)()
    shape = " x ".join(str(n) for n in (result.out_channels, result.in_channels // result.groups, *weight.shape[2:]))
    inputs = (f", the first {len(result.inputs)} of {weight.shape[1]} inputs" if result.view == "pairs"
              and len(result.inputs) < weight.shape[1] else "")
    outputs = _which(result.outputs, result.out_channels)
    caption = (f"Kernels of {result.layer} ({result.module_type}, {outputs}{inputs}, {result.view} view; "
               f"the layer's weights are {shape})")
    stem = f"kernels_{safe_name(result.layer)}"
    item = Item(f"{stem}.png", "kernels", caption, layer=result.layer, value_range=value_range(shown),
                settings={"view": result.view, "channels": len(result.outputs), "scope": scope},
                draw=lambda: plots.kernels(result, scope))
    return Report(stem, {**result.to_dict(), "scope": scope}, [item], notes=[f"{result.layer}: {n}" for n in result.notes])


def _which(shown: list[int], total: int) -> str:
    """``all 16 outputs``, ``the first 8 of 128 outputs`` or ``outputs 3, 9 and 12 of 128``."""
    if list(shown) == list(range(total)):
        return f"all {total} outputs"
    if list(shown) == list(range(len(shown))):
        return f"the first {len(shown)} of {total} outputs"
    listed = ", ".join(str(c) for c in shown[:-1]) + f" and {shown[-1]}" if len(shown) > 1 else str(shown[0])
    return f"outputs {listed} of {total}" if len(shown) <= 8 else f"{len(shown)} of {total} outputs"


def activations(result, scope: str = "layer", overlay: bool = False, max_maps: int = 64, source: str | None = None) -> Report:
    """The feature maps of one image: ``input.png``, ``activations_<layer>.png`` per layer and
    ``activations.json``. ``source`` names the image in captions (default the result's source)."""
    source = source or result.source
    height, width = result.image.shape[1:]
    items = [Item("input.png", "input", f"{source} as the model sees it ({height}x{width})",
                  value_range=(0.0, 1.0), draw=lambda: _input_figure(result, source))]
    for layer in result.layers:
        part = result[layer]
        shown = min(len(part.order), max_maps)
        scale = {"map": "each map on its own scale", "layer": "one scale over the layer",
                 "global": "one scale over every layer shown"}.get(scope, scope)
        caption = f"Activations of {layer} on {source} ({scale}; {shown} of {part.maps.shape[0]} channels, in showing order)"
        items.append(Item(
            f"activations_{safe_name(layer)}.png", "activations", caption, layer=layer, value_range=part.value_range(),
            settings={"image": result.source, "channels": part.order[:shown], "max_maps": max_maps, "scope": scope,
                      "overlay": overlay},
            extra={"image": result.source},
            draw=lambda layer=layer: plots.activations(result, layer, scope=scope, overlay=overlay, max_maps=max_maps),
        ))
    return Report("activations", {**result.to_dict(), "scope": scope, "overlay": overlay}, items)


def _input_figure(result, source: str):
    from cnnviz.core.display import ShownFigure

    figure = ShownFigure(figsize=(3, 3.2), layout="constrained")
    axis = figure.subplots()
    axis.imshow(result.image.permute(1, 2, 0).numpy(), interpolation="nearest")
    axis.set_axis_off()
    height, width = result.image.shape[1:]
    axis.set_title(f"{source} as the model sees it ({height}x{width})", fontsize=8)
    return figure


def statistics(result, *, channels=None) -> Report:
    """Statistics over images: ``histograms.png``, ``colorful_dimension.png``, per layer
    ``channels_<layer>.png`` and ``exemplars_<layer>.png``; ``stats.npz`` and ``stats.json``.

    ``channels`` chooses the channels of the exemplar figures (a spec such as ``"0-7,12"`` or
    ``"all"``, or indices; every layer must have them); by default the first 16, which the
    captions (and, when a layer has more, the notes) say."""
    from cnnviz.plots.statistics import channels_shown, exemplar_channels

    parts = result.layers.values()
    notes = []
    overall = (min(float(s.minimum.min()) for s in parts), max(float(s.maximum.max()) for s in parts))
    items = [
        Item("histograms.png", "histograms", f"Histograms of every shown layer's activations over {result.images} images",
             value_range=overall, settings={"images": result.images}, draw=lambda: plots.statistics(result)),
        Item("colorful_dimension.png", "colorful_dimension",
             "The colorful dimension: how many channels respond at each layer, over the images",
             value_range=overall, settings={"images": result.images}, draw=lambda: plots.colorful_dimension(result)),
    ]
    for layer in result.layers:
        part, stem = result[layer], safe_name(layer)
        items.append(Item(
            f"channels_{stem}.png", "channel_statistics",
            f"Per-channel statistics of {layer} over {result.images} images "
            f"({int(part.dead.sum())} of {part.channels} channels never positive)",
            layer=layer, value_range=(float(part.minimum.min()), float(part.maximum.max())),
            settings={"images": result.images}, draw=lambda layer=layer: plots.channel_statistics(result, layer),
        ))
        chosen = exemplar_channels(result, layer, channels)
        shown = channels_shown(chosen, part.channels)
        if channels is None and len(chosen) < part.channels:
            notes.append(f"exemplars_{stem}.png shows {shown}; channels=... chooses others")
        exemplar_values = part.exemplar_values[chosen]
        exemplar_values = exemplar_values[np.isfinite(exemplar_values)]
        items.append(Item(
            f"exemplars_{stem}.png", "exemplars",
            f"Dataset exemplars of {layer}, {shown}: for each channel, the crops of the images where it responds "
            "most, best first",
            layer=layer, value_range=value_range(exemplar_values) if exemplar_values.size else (0.0, 0.0),
            settings={"top_k": int(part.exemplar_values.shape[1]), "channels": chosen},
            draw=lambda layer=layer, chosen=chosen: plots.exemplars(result, layer, channels=chosen),
        ))
    if result.skipped:
        notes.insert(0, f"skipped {skipped_text(result.skipped)}")
    return Report("stats", result.to_dict(), items, arrays={"stats.npz": result.to_arrays()}, notes=notes)

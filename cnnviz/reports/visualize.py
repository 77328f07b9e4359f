"""Reports of images made by gradient ascent: maximal-response renderings and Deep Dream."""
from __future__ import annotations

from cnnviz import plots
from cnnviz.core.output import safe_name
from cnnviz.inputs.images import rgb
from cnnviz.reports.report import Item, Report, value_range


def maximize(rendering, name: str | None = None) -> Report:
    """Renderings: ``maximize_<unit>.png`` per unit at its own size, ``maximize_<name>_grid.png``
    and ``maximize_<name>.json`` (``name`` default: the units' layer). A class of the model's
    output is an item of kind ``class`` (captioned with its name and logit), any other unit
    ``maximize``."""
    units = rendering.units
    name = safe_name(name or (units[0].layer if units else "objective"))
    settings = {key: rendering.settings.get(key) for key in ("steps", "seed", "size", "param")}
    items = []
    diverse = rendering.settings.get("diverse", 1) or 1
    negative = rendering.settings.get("negative", False)
    neuron = rendering.settings.get("kind") == "neuron"
    for k, (image, shown, unit, value) in enumerate(zip(rendering.images, rendering.display(), units, rendering.values)):
        is_class = unit.layer == "logits" and unit.position is None and unit.channel is not None
        if is_class:
            label = unit.class_name if unit.class_name is not None else f"class {unit.channel}"
            caption = f"{label}: logit {value:.3g}"
        else:
            caption = f"{unit}: activation {value:.3g}" if neuron else f"{unit}: mean activation {value:.3g}"
        reference = rendering.reference[k] if k < len(rendering.reference) else None
        succeeded = rendering.succeeded[k] if k < len(rendering.succeeded) else None
        if reference is not None:
            word = "lowest" if negative else "best"
            caption += (f" ({'beats' if succeeded else 'BELOW'} the {word} real image's {reference:.3g})")
        start = rendering.starts[k] if k < len(rendering.starts) else "noise"
        outcome = rendering.outcomes[k] if k < len(rendering.outcomes) else "render"
        if outcome == "photo":
            caption += f"; the photograph {start} it started again from, not a feature visualization"
        elif outcome == "flat":
            caption += "; a flat field (no pattern)"
        elif start.startswith("sample:") or start not in ("noise", "filter"):
            caption += f"; restarted from {start}"
        if k < len(rendering.steps_taken) and outcome != "filter":
            taken = rendering.steps_taken[k]
            caption += f"; {taken} step{'' if taken == 1 else 's'}"
        stem = safe_name(unit.reference) + ("-negative" if negative else "") + (f"-{k % diverse}" if diverse > 1 else "")
        items.append(Item(
            f"maximize_{stem}.png", "class" if is_class else "maximize", caption,
            layer=unit.layer or None, unit=unit, value_range=value_range(image), value=value, settings=settings,
            extra={"channel": unit.channel, "reference": reference, "succeeded": succeeded, "start": start,
                   "outcome": outcome,
                   "steps_taken": rendering.steps_taken[k] if k < len(rendering.steps_taken) else None},
            pixels=shown,
        ))
    items.append(Item(f"maximize_{name}_grid.png", "maximize_grid", f"The {len(units)} renderings side by side",
                      value_range=value_range(rendering.images), settings=settings,
                      draw=lambda: plots.maximize(rendering)))
    return Report(f"maximize_{name}", rendering.to_dict(), items)


def dream(result, image: str) -> Report:
    """A dreamed image: ``dream_<layers>.png`` at the original's size and ``dream_<layers>.json``;
    ``image`` names the original in the caption."""
    stem = f"dream_{safe_name('-'.join(result.layers))}"
    layers = ", ".join(result.layers)
    caption = (f"Deep Dream of {layers} on {image}: the layer's mean squared activation "
               f"{result.before:.3g} -> {result.after:.3g} (x{result.gain:.1f})")
    item = Item(f"{stem}.png", "dream", caption, layer=result.layers[0] if len(result.layers) == 1 else None,
                value_range=value_range(result.image), settings={"image": image, **result.settings},
                extra={"image": image}, pixels=rgb(result.image))
    return Report(stem, {**result.to_dict(), "image": image}, [item])

"""What a render draws: per image its unit, seed, group and channel, and the objectives that
score them (the unit's own measure, and what the optimiser maximises), from a layer reference and
the options of :func:`cnnviz.maximize` (channels, negative, diverse, neuron, direction)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from cnnviz.analyses.feature_visualization import objectives as o
from cnnviz.core.model import preprocessing_of, unwrap
from cnnviz.core.probe import probe
from cnnviz.core.references import Unit, channel_list, layer_ref
from cnnviz.errors import CnnvizError

DIVERSITY = 0.5  # the weight of the similarity penalty, times the image's own |value|




@dataclass
class Plan:
    """What to render: per image its unit, seed, group (the unit it shows: ``diverse`` images of
    one unit share it) and channel; ``measure(rows, offset)`` is the objective of those images in
    the unit's own measure, ``build(rows, offset)`` what the optimiser maximises (the measure, plus
    the log-probability for a class, negated for a negative render, less the diversity penalty)."""

    units: list[Unit]
    seeds: list[int]
    description: str
    layers: tuple[str, ...]
    ref: object | None
    measure: Callable[[list[int], tuple[int, int]], o.Objective]
    groups: list[int] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    kind: str = "objective"
    negative: bool = False
    direction: torch.Tensor | None = None
    diverse: int = 1

    def build(self, rows: list[int], offset: tuple[int, int]) -> o.Objective:
        goal = self.measure(rows, offset)
        if self.kind == "class_logit" and not self.negative:
            # the logit and the class's log-probability: a logit alone can rise with its rivals'
            # (the pixel parameterisation's red_blob render was taken for a checkerboard)
            goal = goal + o.class_log_probability([self.channels[self.groups[row]] for row in rows])
        if self.negative:
            goal = -goal
        if self.diverse > 1:
            groups = [self.groups[row] for row in rows]
            similarity = o.diversity(self.layers[0], groups=groups)
            base = goal

            def penalised(activations, images):
                value = base(activations, images)
                return value - DIVERSITY * value.detach().abs() * similarity(activations, images)

            goal = o.Objective(penalised, base.layers, f"{base.description} - {DIVERSITY:g} |.| {similarity.description}")
        return goal


def plan(model, target, channels, objective, count, class_names, negative=False, diverse=1, neuron=False,
          direction=None) -> Plan:
    if objective is not None:
        if target is not None or channels is not None:
            raise CnnvizError("give either a layer (with channels) or an objective, not both")
        if not isinstance(objective, o.Objective):
            raise CnnvizError("objective must be a cnnviz.objectives.Objective")
        if negative or diverse > 1 or neuron or direction is not None:
            raise CnnvizError("negative, diverse, neuron and direction shape a layer's objective; with your own "
                              "objective write them into it (-objective, o.diversity, o.neuron, o.direction)")
        for name in objective.layers:
            layer_ref(model, name)  # unknown layers fail here, before any work
        return Plan([Unit("", i, objective=objective.description) for i in range(count)], list(range(count)),
                     objective.description, objective.layers, None, lambda rows, offset: objective,
                     groups=list(range(count)), channels=list(range(count)))
    if target is None:
        raise CnnvizError("name what to maximise: a layer with channels, a channel ('features.12:5') or a class")
    ref = layer_ref(model, target)
    layer_text = "logits" if ref.is_output else ref.layer_text
    if direction is not None:
        if ref.channel is not None or channels is not None:
            raise CnnvizError(f"a direction is over all channels of a layer: give the layer ({layer_text}), "
                              "not a channel or channels")
        vector = _direction(direction, channel_count(model, ref), layer_text)
        unit = Unit(layer_text, None, objective=f"direction({layer_text})")
        units = [unit] * diverse

        def measure(rows, offset):
            return o.direction(layer_text, vector)

        return Plan(units, [k for k in range(diverse)], f"direction({layer_text})", (layer_text,), ref, measure,
                     groups=[0] * diverse, channels=[0], kind="direction", negative=negative, direction=vector,
                     diverse=diverse)
    if ref.channel is not None:
        if channels is not None:
            raise CnnvizError(f"{target!r} already names a channel; drop channels=...")
        chosen = [ref.channel]
    else:
        if channels is None:
            raise CnnvizError(
                f"{layer_text} is a whole layer: name a channel ('{layer_text}:5') or give channels, "
                "e.g. channels='0-15'"
            )
        chosen = channel_list(channels, channel_count(model, ref), "channel",
                              names=class_names if ref.is_output else None)
    if ref.position is not None and len(ref.position) != 2:
        raise CnnvizError("a neuron of a 2-D map needs a row and a column, e.g. features.12:5@3,4")
    if neuron and ref.is_output:
        raise CnnvizError("a class has no map to take the centre of; drop neuron=True for logits")
    at_centre = neuron and ref.position is None
    groups = [g for g in range(len(chosen)) for _ in range(diverse)]
    per_image = [chosen[g] for g in groups]

    def measure(rows, offset):
        indices = [per_image[row] for row in rows]
        if ref.position is not None:  # a position on the saved image's map; shifted by the padding
            return o.neuron(layer_text, indices, ref.position[0] + offset[0], ref.position[1] + offset[1])
        if at_centre:
            return o.neuron(layer_text, indices)
        return o.class_logit(indices) if ref.is_output else o.channel(layer_text, indices)

    units = [Unit.of(ref, class_names, channel=index) for index in per_image]
    if at_centre:
        units = [dataclasses.replace(unit, objective="neuron at the centre") for unit in units]
    kind = "neuron" if ref.position is not None or at_centre else "class_logit" if ref.is_output else "channel"
    seeds = [chosen[g] if diverse == 1 else chosen[g] * 1_000 + k for g, k in zip(groups, [r % diverse for r in range(len(groups))])]
    description = f"{'-' if negative else ''}{kind}({layer_text})" + (f", {diverse} diverse images each" if diverse > 1 else "")
    return Plan(units, seeds, description, (layer_text,), ref, measure, groups=groups, channels=chosen, kind=kind,
                 negative=negative, diverse=diverse)


def _direction(direction, channels: int, layer: str) -> torch.Tensor:
    try:
        vector = torch.as_tensor(direction, dtype=torch.float32).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise CnnvizError(f"a direction is a sequence of {channels} numbers, one per channel of {layer}") from None
    if len(vector) != channels:
        raise CnnvizError(f"the direction has {len(vector)} values but {layer} has {channels} channels")
    if not torch.isfinite(vector).all() or not vector.abs().sum() > 0:
        raise CnnvizError("a direction needs finite values, not all zero")
    return vector


def channel_count(model, ref) -> int:
    module = ref.module
    for attribute in ("out_channels", "out_features", "num_features"):
        if not ref.is_output and isinstance(getattr(module, attribute, None), int):
            return getattr(module, attribute)
    _, class_names = unwrap(model)
    if ref.is_output and class_names:
        return len(class_names)
    preprocessing = preprocessing_of(model)
    with probe(model, [ref], store=False) as recorder:  # stops at the layer
        recorder.run(torch.zeros(1, preprocessing.channels, *preprocessing.input_size))
        shape = recorder.shapes[ref.layer][ref.call - 1]
    if shape is None:  # a list, tuple or dict (HRNet's stages, detection heads)
        inner = [name for name, _ in ref.module.named_children()][:6]
        offer = f"; name one of its submodules: {', '.join(f'{ref.layer_text}.{n}' for n in inner)}" if inner else ""
        raise CnnvizError(f"{ref.layer_text} returns a list or tuple, not one tensor, so it has no channels to render{offer}")
    if len(shape) < 2:
        raise CnnvizError(f"{ref.layer_text} outputs {tuple(shape)}: no channels to render")
    if len(shape) == 3 and not ref.is_output:
        raise CnnvizError(
            f"{ref.layer_text} outputs tokens ({'x'.join(map(str, shape))}: batch x tokens x features), not channel maps; "
            "maximize a convolutional layer's channel, a class, or write an objective for tokens (cnnviz.objectives)"
        )
    return shape[1]

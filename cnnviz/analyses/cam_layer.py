"""Which layer the CAM methods weigh, and whether it may be: the layer given (checked: it runs once,
outputs spatial maps, finishes before every target and every target depends on it) or the last
such layer (:func:`choose_cam_layer`). A given layer's check can be made inside the CAM pass
itself (:class:`LayerCheck`; :func:`cnnviz.analyses.cams.activations_and_gradients` does), so
that it costs no pass of its own; the full check here gives the same verdicts and lines.

Example::

    >>> import torch, torchvision
    >>> from cnnviz.analyses.cam_layer import choose_cam_layer
    >>> from cnnviz.core.references import layer_ref
    >>> model = torchvision.models.resnet18(weights=None).eval()
    >>> choose_cam_layer(model, None, torch.rand(1, 3, 64, 64), [layer_ref(model, "logits:3")], [0]).layer_text
    'layer4'
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from cnnviz.core.model import unwrap
from cnnviz.core.probe import probe
from cnnviz.core.references import LayerRef, layer_ref
from cnnviz.errors import CnnvizError, NotApplicable


class LayerCheck:
    """A given CAM layer's full check (:func:`choose_cam_layer`), run at most once: by the first CAM pass
    that cannot make it itself (:func:`cnnviz.analyses.cams.activations_and_gradients` can)."""

    def __init__(self, full) -> None:
        self.full, self.done = full, False

    def run(self) -> None:
        if not self.done:
            self.full()
            self.done = True


def given_cam_layer(model, layer) -> LayerRef:
    """A layer named for the CAM methods, checked for what the name alone tells."""
    ref = layer_ref(model, layer)
    if ref.channel is not None or ref.is_output:
        raise CnnvizError(f"the CAM methods need a layer with spatial maps, such as '{ref.layer_text}' without a channel")
    if ref.call != 1:
        raise CnnvizError(f"{ref.layer_text} is a later call; the CAM methods need a layer that runs once")
    return ref


def choose_cam_layer(model, layer, inputs: torch.Tensor, units: list[LayerRef], indices: list[int]) -> LayerRef:
    """The layer of the CAM methods: the one asked for, checked, or the last layer with spatial maps
    (more than 1 x 1) that runs once, finishes before every target and that every target depends on.

    One pass on the first image records every module (the given layer only, when there is one) and
    the units: their calls, shapes and outputs, with their graph; the dependence is read from it,
    deepest candidate first, one short backward pass per unit. Only a unit that shows no dependence
    there is tried again on its own first image."""
    module, _ = unwrap(model)
    given = given_cam_layer(model, layer) if layer is not None else None
    names = [given.layer] if given is not None and given.layer else [name for name, _ in module.named_modules() if name]
    example = inputs[:1].clone().requires_grad_(True)
    with probe(model, [*names, *units], early_exit=False, keep_graph=True, copy=False) as recorder, _reachable(model, names):
        recorder.run(example)
        order, shapes = recorder.order, recorder.shapes
        position = {entry: index for index, entry in enumerate(order)}
        deadline = min((position.get((u.layer, u.call), len(order)) for u in units if not u.is_output), default=len(order))

        def usable(name: str) -> str | None:
            calls = shapes.get(name, [])
            if len(calls) != 1:
                return f"{name} runs {len(calls)} times per forward pass; the CAM methods need a layer that runs once"
            shape = calls[0]
            if shape is None or len(shape) != 4 or shape[2] * shape[3] <= 1:
                return f"{name} outputs {shape and tuple(shape[1:])}, not spatial maps (C x H x W with H x W > 1)"
            if position[(name, 1)] >= deadline:
                return f"{name} does not run before the target, so the target does not depend on it; pick an earlier layer"
            return None

        if given is not None:
            ref = given
            problem = usable(ref.layer)
            if problem:
                raise CnnvizError(problem)
            candidates = [ref.layer]
        else:
            candidates = [name for name, call in order if call == 1 and usable(name) is None]
        chosen = _deepest_dependent(recorder, candidates, units)
    if chosen is None and candidates and any(indices.index(k) for k in range(len(units))):
        reached = _dependent(model, candidates, inputs, units, indices)  # each unit on its own first image
        chosen = next((name for name in reversed(candidates) if name in reached), None)
    if layer is not None:
        if chosen is None:
            raise CnnvizError(f"the target does not depend on {ref.layer} (another branch?); pick a layer on its path")
        return ref
    if chosen is None:
        raise NotApplicable("no layer with spatial maps that runs once lies on the target's path; no CAM method can be computed here")
    return layer_ref(model, chosen)


@contextmanager
def _reachable(model, names: list[str]):
    """Within it, the output of each named module that no graph reaches (the network before it ran
    under torch.no_grad, or was detached: a frozen backbone) starts one, so that whether the target
    depends on that output can be read all the same, as the CAM methods' own pass reads it. The
    values are unchanged; what ran under torch.no_grad is left as it is."""
    module, _ = unwrap(model)

    def start(layer, arguments, output):
        if isinstance(output, torch.Tensor) and output.is_floating_point() and not output.requires_grad and torch.is_grad_enabled():
            return output.detach().requires_grad_(True).clone()  # a clone: later in-place operations leave the start alone
        return None

    handles = []
    try:
        for name in names:
            layer = module.get_submodule(name)
            if not isinstance(layer, torch.jit.ScriptModule):
                handles.append(layer.register_forward_hook(start, prepend=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _deepest_dependent(recorder, candidates: list[str], units: list[LayerRef]) -> str | None:
    """The last of the candidates whose recorded output every unit's value depends on (a non-zero
    gradient on the recorded image), or ``None``."""
    values = [recorder[unit][0].sum() for unit in units]
    for name in reversed(candidates):
        output = recorder[name]
        for value in values:
            if not value.requires_grad:
                return None
            if not output.requires_grad:  # made under torch.no_grad: nothing downstream depends on it
                break
            (gradient,) = torch.autograd.grad(value, output, allow_unused=True, retain_graph=True)
            if gradient is None or not bool(gradient.abs().sum() > 0):
                break
        else:
            return name
    return None


def _dependent(model, candidates: list[str], inputs, units: list[LayerRef], indices: list[int]) -> set[str]:
    """The candidate layers whose output every target unit's value depends on (non-zero gradient),
    tried on one image per unit."""
    if not candidates:
        return set()
    examples = inputs[[indices.index(k) for k in range(len(units))]].clone().requires_grad_(True)
    with probe(model, [*candidates, *units], keep_graph=True, copy=False) as recorder, _reachable(model, candidates):
        recorder.run(examples)
        candidates = [name for name in candidates if recorder[name].requires_grad]  # the others ran under no_grad
        reached = set(candidates)
        outputs = [recorder[name] for name in candidates]
        # example k's unit only, all in one backward pass: the examples do not mix (eval mode), so
        # the gradient on example k is that of unit k
        total = sum(recorder[unit][k].sum() for k, unit in enumerate(units))
        if not total.requires_grad:
            return set()
        gradients = torch.autograd.grad(total, outputs, allow_unused=True)
        for name, gradient in zip(candidates, gradients):
            if gradient is None or not all(bool(gradient[k].abs().sum() > 0) for k in range(len(units))):
                reached.discard(name)
    return reached

"""The tracer: one forward pass of a random image during which a
:class:`torch.overrides.TorchFunctionMode` keeps, for every tensor, the :class:`~.boxes.Box` of
input pixels each of its elements depends on. Each operation goes through its rule
(:mod:`.rules`); an operation without one is treated as mixing all positions (and noted). Forward
hooks record the boxes of every layer's output (:func:`trace`).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode

from cnnviz.analyses.receptive_field.boxes import Box, Unhandled, empty_box, union
from cnnviz.analyses.receptive_field.operations import base_name, tensors
from cnnviz.analyses.receptive_field.results import Pair
from cnnviz.analyses.receptive_field.rules import Call, rule_for
from cnnviz.core.model import input_size_pair, preprocessing_of, unwrap
from cnnviz.core.probe import main_tensor, model_guard
from cnnviz.core.references import LayerRef
from cnnviz.errors import CnnvizError, first_line


class Tracer(TorchFunctionMode):
    """Follows the input box of every element of every tensor through a forward pass."""

    def __init__(self, virtual: bool) -> None:
        super().__init__()
        self.virtual = virtual
        self._boxes: dict[int, tuple[weakref.ref, Box]] = {}
        self.notes: list[str] = []
        self.paused = False

    def get(self, tensor) -> Box | None:
        if not isinstance(tensor, torch.Tensor):
            return None
        entry = self._boxes.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            return None
        return entry[1]

    def set(self, tensor: torch.Tensor, box: Box) -> None:
        key = id(tensor)
        boxes = self._boxes
        self._boxes[key] = (weakref.ref(tensor, lambda _ref, key=key: boxes.pop(key, None)), box)

    def box_or_empty(self, tensor) -> Box:
        box = self.get(tensor)
        return box if box is not None else empty_box(tensor.shape)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.paused:
            return result
        traced = [t for t in tensors(args, kwargs) if self.get(t) is not None]
        if not traced:
            return result
        outputs = [t for t in tensors((result,), {}) if t.is_floating_point() or t.dtype == torch.bool or not t.is_complex()]
        if not outputs:
            return result
        name = name_of(func)
        try:
            self._propagate(name, func, args, kwargs, result, traced)
        except Unhandled:
            self._fallback(name, traced, outputs)
        except (RuntimeError, TypeError, ValueError, IndexError) as error:
            self.note(f"{name}: {first_line(error)}")
            self._fallback(name, traced, outputs)
        return result

    def _fallback(self, name: str, traced, outputs) -> None:
        """Unknown operation: every output element depends on everything its inputs depend on."""
        self.note(f"{name} treated as mixing all positions (its regions may be overestimated)")
        boxes = [self.get(t) for t in traced]
        lows = [torch.minimum, torch.maximum, torch.minimum, torch.maximum]
        parts = []
        for k, reduce in enumerate(lows):
            values = [b.parts[k].amin() if k % 2 == 0 else b.parts[k].amax() for b in boxes]
            value = values[0]
            for other in values[1:]:
                value = reduce(value, other)
            parts.append(value)
        total = Box(*parts, tuple(max(b.jump[i] for b in boxes) for i in range(2)))
        for out in outputs:
            self.set(out, union([total], out.shape))

    def _propagate(self, name, func, args, kwargs, result, traced) -> None:
        """Apply the operation's rule (:data:`~.rules.RULES`); without one, fall back."""
        base = base_name(name)
        rule = rule_for(base)
        if rule is None:
            raise Unhandled(base)
        rule(self, Call(func, base, args, kwargs, result, traced))


def name_of(func) -> str:
    """The name of a traced function (a property's owner for ``__get__``)."""
    name = getattr(func, "__name__", None) or str(func)
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        return getattr(owner, "__name__", name) if owner is not None else name
    return name


@dataclass
class Traced:
    """What :func:`trace` found: per layer reference, the boxes and shape of its output; the input
    size; notes on operations handled conservatively."""

    boxes: dict[str, Box]
    shapes: dict[str, tuple[int, ...]]
    input_size: Pair
    notes: list[str] = field(default_factory=list)


def trace(model, input_size, refs: list[LayerRef] | None, batch: int = 1, virtual: bool = False) -> Traced:
    """One traced forward pass of a random input (``batch x C x H x W``, the model left as it
    was): the boxes of the outputs of the layers of ``refs`` (every layer for ``None``), with
    ``virtual`` boxes in the zero padding or exact ones."""
    module, _ = unwrap(model)
    if isinstance(module, torch.jit.ScriptModule):
        raise CnnvizError("receptive fields need the model's Python code (an nn.Module); a TorchScript model cannot be traced")
    preprocessing = preprocessing_of(model)
    size = input_size_pair(input_size) if input_size is not None else preprocessing.input_size
    height, width = size
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn((batch, preprocessing.channels, height, width), generator=generator)
    for tensor in (*module.parameters(), *module.buffers()):
        inputs = inputs.to(device=tensor.device, dtype=tensor.dtype if tensor.is_floating_point() else inputs.dtype)
        break
    rows = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1)
    columns = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width)
    tracer = Tracer(virtual)
    tracer.set(inputs, Box(rows, rows, columns, columns))
    boxes: dict[str, Box] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    counts: dict[str, int] = {}
    wanted = None if refs is None else {ref.layer for ref in refs}

    def hook_for(name):
        def hook(_module, _inputs, output):
            tracer.paused = True
            try:
                tensor = main_tensor(output)
                counts[name] = counts.get(name, 0) + 1
                box = tracer.get(tensor) if tensor is not None else None
                if box is not None:
                    call = counts[name]
                    key = (name or "logits") if call == 1 else f"{name or 'logits'}#{call}"
                    boxes[key] = box.map(lambda t: t.cpu())
                    shapes[key] = tuple(tensor.shape)
            finally:
                tracer.paused = False
        return hook

    handles = []
    with model_guard(module):
        try:
            for name, submodule in module.named_modules():
                if name and (wanted is None or name in wanted):
                    handles.append(submodule.register_forward_hook(hook_for(name)))
            with torch.no_grad(), tracer:
                try:
                    output = module(inputs)
                except CnnvizError:
                    raise
                except Exception as error:
                    raise CnnvizError(
                        f"the forward pass of {type(module).__name__} failed on an input of size "
                        f"{height}x{width} ({first_line(error)}); pass the size it expects with input_size=(H, W)"
                    ) from error
            if wanted is None or "" in wanted:
                main = main_tensor(output)
                box = tracer.get(main) if main is not None else None
                if box is not None:
                    boxes["logits"] = box
                    shapes["logits"] = tuple(main.shape)
        finally:
            for handle in handles:
                handle.remove()
    return Traced(boxes, shapes, (height, width), list(tracer.notes))

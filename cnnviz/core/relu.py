"""Changing the backward rule of a model's activations, without touching the model.

A ``TorchFunctionMode`` sees every call of a pointwise activation (``F.relu``, ``torch.relu``,
``Tensor.relu``, ``F.leaky_relu``, ``F.prelu``, ``F.elu``, ``F.gelu``, ``F.silu``, ...: an
``nn.ReLU``, ``nn.PReLU``, ``nn.SiLU``, ... module's included, in place or not); inside
:func:`relu_rule` each of them is computed with the same forward value and another backward rule.
With ``g`` the gradient arriving at the activation's output, ``x`` its input and ``f'(x)`` its
local derivative (what the plain gradient multiplies ``g`` by):

* ``"guided_backprop"``: ``max(g, 0) * max(f'(x), 0)``: only positive gradients, only where the
  activation passes a positive slope. For ReLU (``f' = [x > 0]``) this is Springenberg et al.'s
  rule exactly; for LeakyReLU/PReLU with slope ``a`` it lets ``a * max(g, 0)`` through where
  ``x < 0``; for SiLU, GELU, Mish, ELU, Hardswish... it keeps their own slope and drops the
  small region where it is negative.
* ``"deconvolution"``: the activation's rectification applied to the gradient, whatever the
  input (Zeiler and Fergus): ``max(g, 0)`` for ReLU and every smooth or saturating activation
  (SiLU, GELU, Mish, ELU, SELU, CELU, Hardswish, ReLU6 / Hardtanh, Softplus: their piecewise-linear
  limit is ReLU), and the activation itself for LeakyReLU/PReLU: ``g`` where ``g > 0``, ``a * g`` elsewhere.
* ``"redirect"`` (ReLU only): for images whose gradient through this ReLU is zero everywhere (the
  units are dead), let through the gradient that would raise the inputs, so that optimisation can
  start (the "redirected ReLU" published with Lucid, re-derived).

Gates (sigmoid, tanh, softmax) are left alone: they are not rectifiers. ``mode.calls`` counts
the rerouted calls, and ``mode.on_path``, after the backward pass, those on spatial maps (more
than one position) that the gradient reached (non-zero): the activations on the path to the
target. An activation that acts only on pooled ``N x C x 1 x 1`` tensors (a squeeze-excite gate)
does not lie on the feature maps' path, and guided backpropagation through such a model alone
would be the plain gradient.

An in-place call stays in place (the input is overwritten with the result and returned, as the
model expects); what the backward rule needs is taken before it is overwritten.

Example::

    with relu_rule("guided_backprop") as mode:
        score = model(x)[:, 3].sum()
    score.backward()          # x.grad is the guided backpropagation
    mode.calls                # how many activation calls were rerouted
"""
from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

RULES = ("guided_backprop", "deconvolution", "redirect")

RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_)
RELU_IN_PLACE = (torch.relu_, torch.Tensor.relu_)
#: activations whose negative side is a line through 0 (the deconvolution applies them to the gradient)
LEAKY = {F.leaky_relu: "negative_slope", F.prelu: "weight"}
#: every other pointwise activation that gets the rules, with the keyword of its in-place flag
SMOOTH = {
    F.elu: "inplace", F.selu: "inplace", F.celu: "inplace", F.gelu: None, F.silu: "inplace", F.mish: "inplace",
    F.hardswish: "inplace", F.relu6: "inplace", F.hardtanh: "inplace", F.softplus: None, F.leaky_relu: "inplace",
    F.prelu: None,
}
IN_PLACE_POSITION = {F.elu: 2, F.selu: 1, F.celu: 2, F.silu: 1, F.mish: 1, F.hardswish: 1, F.relu6: 1, F.hardtanh: 3,
                     F.leaky_relu: 2}
ACTIVATIONS = tuple(RELU_FUNCTIONS) + tuple(SMOOTH)


class ReluRule(TorchFunctionMode):
    """The mode behind :func:`relu_rule`; ``calls`` counts the rerouted activation calls,
    ``kinds`` their names, ``on_path`` those the backward pass reached on spatial maps."""

    def __init__(self, rule: str):
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"unknown activation rule {rule!r}")
        self.rule, self.calls, self.kinds = rule, 0, set()
        self.on_path = 0  # calls that a backward pass reached with a non-zero gradient, on spatial maps

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in RELU_FUNCTIONS:
            in_place = func in RELU_IN_PLACE or bool(kwargs.get("inplace") or (len(args) > 1 and args[1]))
            self._count("relu")
            if self.rule == "redirect":
                return _RedirectedReLU.apply(args[0], in_place)
            return _RuledActivation.apply(args[0], self, in_place, F.relu, (), {}, None)
        if self.rule != "redirect" and func in SMOOTH and args and isinstance(args[0], torch.Tensor):
            flag, position = SMOOTH[func], IN_PLACE_POSITION.get(func)
            in_place = bool(kwargs.get(flag)) if flag else False
            if flag and position is not None and len(args) > position:
                in_place = in_place or bool(args[position])
            rest = tuple(args[1:position] if position is not None and len(args) > position else args[1:])
            options = {k: v for k, v in kwargs.items() if k != flag}
            slope = _slope(func, rest, options)
            self._count(func.__name__)
            return _RuledActivation.apply(args[0], self, in_place, func, rest, options, slope)
        return func(*args, **kwargs)

    def _count(self, name: str) -> None:
        self.calls += 1
        self.kinds.add(name)


def relu_rule(rule: str) -> ReluRule:
    """A context manager under which every pointwise activation follows ``rule`` on the way back."""
    return ReluRule(rule)


def _slope(func, rest, options):
    """The negative-side slope of LeakyReLU (a number) or PReLU (its weight), else ``None``."""
    if func not in LEAKY:
        return None
    key = LEAKY[func]
    value = options.get(key, rest[0] if rest else 0.01)
    return value.detach() if isinstance(value, torch.Tensor) else float(value)


class _RuledActivation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, mode, in_place, func, rest, options, slope):
        with torch.enable_grad():  # the local derivative f'(x), elementwise
            x = inputs.detach().requires_grad_(True)
            y = func(x, *rest, **options)
            (derivative,) = torch.autograd.grad(y.sum(), x)
        ctx.save_for_backward(derivative)
        ctx.rule, ctx.slope, ctx.mode = mode.rule, slope, mode
        ctx.on_map = inputs.dim() >= 3 and inputs[0, 0].numel() > 1
        if ctx.slope is not None and isinstance(slope, torch.Tensor) and slope.numel() > 1:
            ctx.slope_shape = (1, -1) + (1,) * (inputs.dim() - 2)  # PReLU: one slope per channel
        else:
            ctx.slope_shape = None
        if in_place:
            ctx.mark_dirty(inputs)
            return inputs.copy_(y.detach())
        return y.detach()

    @staticmethod
    def backward(ctx, grad):
        (derivative,) = ctx.saved_tensors
        nothing = (None,) * 6
        if ctx.on_map and bool((grad != 0).any()):
            ctx.mode.on_path += 1
        if ctx.rule == "guided_backprop":
            return grad.clamp(min=0) * derivative.clamp(min=0).to(grad.dtype), *nothing
        if ctx.slope is not None:  # deconvolution through a leaky ReLU: the activation applied to g
            slope = ctx.slope
            if isinstance(slope, torch.Tensor):
                slope = slope.to(grad.device, grad.dtype)
                slope = slope.reshape(ctx.slope_shape) if ctx.slope_shape else slope.reshape(())
            return torch.where(grad > 0, grad, grad * slope), *nothing
        return grad.clamp(min=0), *nothing


class _RedirectedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, in_place):
        positive, negative = inputs > 0, inputs < 0
        ctx.save_for_backward(positive, negative)
        if in_place:
            ctx.mark_dirty(inputs)
            return inputs.clamp_(min=0)
        return inputs.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        # the usual gradient, except for images where it is zero everywhere; there, the gradient
        # passes wherever it does not push an inactive input further down (the loss is minimised,
        # so a positive gradient pushes down)
        positive, negative = ctx.saved_tensors
        usual = grad * positive.to(grad.dtype)
        if usual.dim() > 1:
            dead = usual.flatten(1).abs().amax(dim=1) == 0
            dead = dead.reshape((-1,) + (1,) * (grad.dim() - 1))
        else:
            dead = usual.abs().amax() == 0
        redirected = torch.where(negative & (grad > 0), torch.zeros_like(grad), grad)
        return torch.where(dead, redirected, usual), None

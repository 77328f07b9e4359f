"""Changing the backward rule of every ReLU of a model, without touching the model.

A ``TorchFunctionMode`` sees every ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` call, an
``nn.ReLU`` module's included, in place or not; inside :func:`relu_rule` each of them is computed by
a function with the same forward value and another backward rule:

* ``"guided_backprop"``: only positive gradients, only where the unit was active;
* ``"deconvolution"``: the ReLU applied to the gradient, whatever the unit's input;
* ``"redirect"``: for images whose gradient through this ReLU is zero everywhere (the units are
  dead), let through the gradient that would raise the inputs, so that optimisation can start
  (the "redirected ReLU" published with Lucid, re-derived).

An in-place call stays in place (the input is rectified and returned, as the model expects), and
the backward rule reads masks taken before the input was overwritten.

Example::

    with relu_rule("guided_backprop") as mode:
        score = model(x)[:, 3].sum()
    score.backward()          # x.grad is the guided backpropagation
    mode.calls                # how many ReLU calls were rerouted
"""
from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

RULES = ("guided_backprop", "deconvolution", "redirect")


class ReluRule(TorchFunctionMode):
    """The mode behind :func:`relu_rule`; ``calls`` counts the rerouted ReLU calls."""

    RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_)
    IN_PLACE = (torch.relu_, torch.Tensor.relu_)

    def __init__(self, rule: str):
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"unknown ReLU rule {rule!r}")
        self.rule, self.calls = rule, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.RELU_FUNCTIONS:
            self.calls += 1
            in_place = func in self.IN_PLACE or bool(kwargs.get("inplace") or (len(args) > 1 and args[1]))
            return _RuledReLU.apply(args[0], self.rule, in_place)
        return func(*args, **kwargs)


def relu_rule(rule: str) -> ReluRule:
    """A context manager under which every ReLU call follows ``rule`` on the way back."""
    return ReluRule(rule)


class _RuledReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, rule, in_place):
        positive, negative = inputs > 0, inputs < 0
        ctx.save_for_backward(positive, negative)
        ctx.rule = rule
        if in_place:
            ctx.mark_dirty(inputs)
            return inputs.clamp_(min=0)
        return inputs.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        positive, negative = ctx.saved_tensors
        active = positive.to(grad.dtype)
        if ctx.rule == "guided_backprop":
            return grad.clamp(min=0) * active, None, None
        if ctx.rule == "deconvolution":
            return grad.clamp(min=0), None, None
        # redirect: the usual gradient, except for images where it is zero everywhere; there, the
        # gradient passes wherever it does not push an inactive input further down (the loss is
        # minimised, so a positive gradient pushes down)
        usual = grad * active
        if usual.dim() > 1:
            dead = usual.flatten(1).abs().amax(dim=1) == 0
            dead = dead.reshape((-1,) + (1,) * (grad.dim() - 1))
        else:
            dead = usual.abs().amax() == 0
        redirected = torch.where(negative & (grad > 0), torch.zeros_like(grad), grad)
        return torch.where(dead, redirected, usual), None, None

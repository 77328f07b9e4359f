"""Models whose output is already a softmax (common in exported graphs).

Maximizing a probability instead of a logit gives poor images (a class's probability can grow by
lowering the others), and a softmax applied again to probabilities flattens them (0.731 for a
certainty). :func:`final_softmax` finds, by one dry run, whether the model's output *is* the result
of a ``softmax``/``log_softmax`` call (an ``nn.Softmax`` module's or a functional one), and which
call; :class:`SkipSoftmax` then runs the model with that one call returning its input, so the
output is the logits. :func:`as_probabilities` reads outputs that already are probabilities (or
log-probabilities) as they are.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from cnnviz.core.guard import model_guard, to_device_of

SOFTMAXES = (F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax)


class SkipSoftmax(TorchFunctionMode):
    """Count softmax calls; the ``skip``-th (from 1) returns its input instead. ``results`` holds
    each call's output (when ``record``), for finding the one that is the model's output."""

    def __init__(self, skip: int | None = None, record: bool = False) -> None:
        super().__init__()
        self.skip, self.record, self.count, self.results = skip, record, 0, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SOFTMAXES:
            self.count += 1
            if self.count == self.skip:
                return args[0]
            out = func(*args, **kwargs)
            if self.record:
                self.results.append(out)
            return out
        return func(*args, **kwargs)


def final_softmax(module, channels: int, size: tuple[int, int]) -> int | None:
    """Which softmax call (from 1) produces the model's output, or ``None`` (one dry run, batch 1,
    the model left as it was)."""
    mode = SkipSoftmax(record=True)
    try:
        with model_guard(module), torch.no_grad(), mode:
            output = module(to_device_of(torch.zeros(1, channels, *size), module))
    except Exception:
        return None
    if isinstance(output, Mapping):
        output = next((v for v in output.values() if isinstance(v, torch.Tensor)), None)
    elif isinstance(output, (tuple, list)):
        output = next((v for v in output if isinstance(v, torch.Tensor)), None)
    for index, result in enumerate(mode.results, start=1):
        if result is output:
            return index
    return None


def as_probabilities(scores: torch.Tensor) -> tuple[torch.Tensor, str]:
    """``N x K`` scores as probabilities, and how: outputs that already are probabilities (each row
    in [0, 1], summing to 1) or log-probabilities (``exp`` of each row sums to 1) are kept; one
    output is a binary logit (its sigmoid); others are logits (their softmax)."""
    scores = scores.float()
    if scores.shape[1] == 1:
        return scores.sigmoid(), "sigmoid"
    ones = torch.ones(len(scores), device=scores.device)
    if bool(((scores >= 0) & (scores <= 1)).all()) and torch.allclose(scores.sum(dim=1), ones, atol=1e-4):
        return scores, "as given (the model's outputs already are probabilities)"
    if bool((scores <= 0).all()) and torch.allclose(scores.exp().sum(dim=1), ones, atol=1e-4):
        return scores.exp(), "exp (the model's outputs are log-probabilities)"
    return scores.softmax(dim=1), "softmax"

"""Running a user's model without changing it: eval mode and frozen parameters for a block, restored on exit.

:func:`model_guard` is what the probe and every dry run (the input-size search, the receptive-field
tracer) use, so that a model is exactly as it was after any call, success or exception.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from cnnviz.errors import CnnvizError


@contextlib.contextmanager
def model_guard(module: nn.Module, *, freeze_parameters: bool = False) -> Iterator[nn.Module]:
    """Run a block with ``module`` in eval mode (and optionally its parameters frozen).

    The ``training`` flags are set directly, not through ``module.eval()``, so that a model's own
    ``train()`` override (which may fuse layers or freeze parameters) never runs. On exit, also
    after an exception, every submodule gets back its own ``training`` flag and every parameter
    its own ``requires_grad`` flag. Freezing keeps gradients from reaching the parameters, so a
    backward pass through the block never writes their ``.grad``.

    Raises:
        CnnvizError: the model has lazy parameters that a forward pass would materialise.
    """
    lazy = [name for name, p in module.named_parameters() if isinstance(p, nn.parameter.UninitializedParameter)]
    if lazy:
        raise CnnvizError(
            f"{type(module).__name__} has uninitialised (lazy) parameters ({lazy[0]}, ...); run it "
            "once on an input yourself so that they get their shapes, then use cnnviz"
        )
    modes = [(m, m.training) for m in module.modules()]
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for submodule, _ in modes:
            submodule.training = False
        if freeze_parameters:
            for parameter, _ in flags:
                parameter.requires_grad_(False)
        yield module
    finally:
        for parameter, flag in flags:
            if parameter.requires_grad != flag:  # an inference tensor's flag is set back in inference mode only
                with torch.inference_mode(parameter.is_inference()):
                    parameter.requires_grad_(flag)
        for submodule, flag in modes:
            submodule.training = flag


def to_device_of(inputs: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """The inputs on the model's device, and in its floating-point type (a float64 or half model
    takes inputs of its own type)."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return inputs.to(device=tensor.device, dtype=tensor.dtype)
        return inputs.to(device=tensor.device)
    return inputs

"""Principle 1 of DESIGN.md as a test helper: after any call the model is exactly as it was."""
from __future__ import annotations

import torch
from torch import nn


def fingerprint(model: nn.Module) -> dict:
    """Everything a call could change: values, flags, objects, gradients and hooks."""
    return {
        # parameters and every buffer, persistent or not
        "state": {k: _bytes(v) for k, v in [*model.named_parameters(), *model.named_buffers()]},
        "modules": {name: module for name, module in model.named_modules()},
        "parameters": {name: p for name, p in model.named_parameters()},
        "buffers": {name: b for name, b in model.named_buffers()},
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grads": {name: None if p.grad is None else _bytes(p.grad) for name, p in model.named_parameters()},
        "hooks": {name: _hook_counts(m) for name, m in model.named_modules()},
        "global_hooks": _global_hook_counts(),
    }


def assert_untouched(model: nn.Module, before: dict) -> None:
    after = fingerprint(model)
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), f"{key} changed"
    assert after["modules"].keys() == before["modules"].keys()
    for name, module in before["modules"].items():
        assert after["modules"][name] is module, f"module {name!r} was replaced"
    for name, parameter in before["parameters"].items():
        assert after["parameters"][name] is parameter, f"parameter {name!r} was replaced"
    assert after["buffers"].keys() == before["buffers"].keys()
    for name, buffer in before["buffers"].items():
        assert after["buffers"][name] is buffer, f"buffer {name!r} was replaced"
    assert after["training"] == before["training"], "training flags changed"
    assert after["requires_grad"] == before["requires_grad"], "requires_grad flags changed"
    for name, grad in before["grads"].items():
        now = after["grads"][name]
        assert (grad is None) == (now is None) and (grad is None or torch.equal(grad, now)), f"{name}.grad changed"
    assert after["hooks"] == before["hooks"], "hooks were left on the model"
    assert after["global_hooks"] == before["global_hooks"], "global module hooks were left behind"


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor, so that the comparison is bit for bit (NaN included)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).clone() if flat.numel() else flat.clone()


def _hook_counts(module: nn.Module) -> dict:
    return {
        name: len(value)
        for name, value in vars(module).items()
        if "hooks" in name and isinstance(value, dict)
    }


def _global_hook_counts() -> dict:
    from torch.nn.modules import module as module_module

    return {
        name: len(value)
        for name, value in vars(module_module).items()
        if name.startswith("_global") and "hook" in name and isinstance(value, dict)
    }

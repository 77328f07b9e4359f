"""The input size of a model that declares none, found by dry runs.

Many models take one size only: a LeNet flattens its last maps into ``Linear(400, 120)``, so only
32 x 32 inputs run. A model that declares no ``input_size`` gets the first size that runs, tried in
this order: 224 x 224 (a model with adaptive pooling takes any size), 112 x 112, then sizes near
the one that would give the first ``Linear`` its ``in_features`` (the square root of a flattened
``C x h x w`` width grows linearly with the side, so the widths at 224 and 112 place it), common
sizes first; last, sizes that are not square (an OCR model's 32 x 100 or 48 x 192: at each common
height, then each common width, the width that gives the ``Linear`` its features). Each dry run stops at the first ``nn.Linear`` that the forward pass reaches
(its input has the right width or not: the rest of the network never runs), runs in eval mode
and without gradients, and leaves the model as it was (:func:`cnnviz.core.guard.model_guard`).

The size found is cached per module and said once, as a :class:`cnnviz.CnnvizWarning`.
"""
from __future__ import annotations

import math
import warnings
import weakref

import torch
from torch import nn

from cnnviz.core.guard import model_guard, to_device_of
from cnnviz.errors import CnnvizWarning

DEFAULT = (224, 224)
COMMON = (224, 32, 28, 64, 48, 96, 112, 128, 160, 192, 227, 256, 299, 320, 384, 512, 12, 16, 20, 24, 36, 40, 56, 80)
MAX_TRIES = 40
_found: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Reached(BaseException):
    """Raised from the first Linear's pre-hook: the dry run has learnt what it needed."""

    def __init__(self, width: int, wanted: int) -> None:
        super().__init__()
        self.width, self.wanted = width, wanted


def inferred_input_size(module: nn.Module, channels: int) -> tuple[tuple[int, int], str]:
    """``((H, W), how)``: a size the module runs at, and how it was found (for the warning)."""
    key = (channels,)
    cached = _found.get(module, {}).get(key)
    if cached is not None:
        return cached
    result = _search(module, channels)
    try:
        _found.setdefault(module, {})[key] = result
    except TypeError:  # a module that cannot be weakly referenced is searched each time
        pass
    if result[0] != DEFAULT:
        warnings.warn(
            f"{type(module).__name__} declares no input size; using {result[0][0]}x{result[0][1]} ({result[1]}). "
            "Pass input_size=(H, W) to choose another",
            CnnvizWarning, stacklevel=4,
        )
    return result


def _search(module: nn.Module, channels: int) -> tuple[tuple[int, int], str]:
    if isinstance(module, torch.jit.ScriptModule):  # no hooks: whole dry runs
        return _search_whole(module, channels)
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return DEFAULT, "no Linear layer: any size large enough runs"
    first = _dry_run(module, channels, DEFAULT, linears)
    if first is True:
        return DEFAULT, "it runs at 224x224"
    estimate = None
    if first is not None:  # the flattened width is C x h x w, so its square root grows linearly with the side
        second = _dry_run(module, channels, (112, 112), linears)
        if second is True:
            return (112, 112), f"found by dry runs: the first Linear takes {first[1]} features"
        if second is not None and second[0] != first[0]:
            root_224, root_112, wanted = math.sqrt(first[0]), math.sqrt(second[0]), math.sqrt(first[1])
            estimate = 112 + (wanted - root_112) * 112 / (root_224 - root_112)
    tried = {224, 112}
    for side in _candidates(estimate):
        if side in tried:
            continue
        tried.add(side)
        if len(tried) > MAX_TRIES:
            break
        if _dry_run(module, channels, (side, side), linears) is True:
            if first is not None:
                return (side, side), f"found by dry runs: the first Linear takes {first[1]} features"
            return (side, side), "found by dry runs"
    if first is not None:
        found = _oblong(module, channels, linears, first[1])
        if found is not None:
            return found, f"found by dry runs: the first Linear takes {first[1]} features"
    return DEFAULT, "no size tried ran; the default"


HEIGHTS = (32, 48, 64, 24, 28, 40, 16, 96, 128)  # of text lines, spectrograms, strips: the common ones
OBLONG_TRIES = 120


def _oblong(module: nn.Module, channels: int, linears, wanted: int) -> tuple[int, int] | None:
    """A size that is not square (an OCR model's 32 x 100 or 48 x 192): for each common height
    (then each common width, for tall inputs), the flattened width at two widths places the
    width that gives the first Linear its ``wanted`` features (at a fixed height the flattened
    ``C x h x w`` width grows linearly with the input's width); the widths near it are tried."""
    tries = 0
    for tall in (False, True):
        for fixed in HEIGHTS:
            def size(free: int) -> tuple[int, int]:
                return (free, fixed) if tall else (fixed, free)

            narrow, wide = _dry_run(module, channels, size(128), linears), _dry_run(module, channels, size(256), linears)
            tries += 2
            for free, result in ((128, narrow), (256, wide)):
                if result is True:
                    return size(free)
            if tries > OBLONG_TRIES:
                return None
            if narrow is None or wide is None or narrow[0] == wide[0]:
                continue
            estimate = 128 + (wanted - narrow[0]) * 128 / (wide[0] - narrow[0])
            if not 8 <= estimate <= 4096:
                continue
            centre = round(estimate)
            for free in sorted(range(max(8, centre - 3), centre + 4), key=lambda f: abs(f - estimate)):
                tries += 1
                if _dry_run(module, channels, size(free), linears) is True:
                    return size(free)
    return None


def _candidates(estimate: float | None):
    """Sides to try: common ones near the estimate first, then every side nearest it."""
    if estimate is None:
        yield from COMMON
        yield from range(8, 513)
        return
    near = [s for s in COMMON if abs(s - estimate) <= max(2.0, 0.05 * estimate)]
    yield from sorted(near, key=lambda s: abs(s - estimate))
    centre = max(8, round(estimate))
    for distance in range(0, 512):
        for side in (centre - distance, centre + distance):
            if 8 <= side <= 1024:
                yield side


def _dry_run(module: nn.Module, channels: int, size: tuple[int, int], linears):
    """``True``: the pass reached a Linear with the right width (or ran through); ``(width, wanted)``:
    the first Linear got inputs ``width`` wide and takes ``wanted``; ``None``: it failed before."""

    def check(linear, args):
        if args and isinstance(args[0], torch.Tensor):
            width = int(args[0].shape[-1]) if args[0].dim() else 0
            if width != linear.in_features:
                raise _Reached(width, linear.in_features)
        raise _Reached(-1, -1)

    handles = [linear.register_forward_pre_hook(check) for linear in linears]
    try:
        with model_guard(module), torch.no_grad():
            module(to_device_of(torch.zeros(1, channels, *size), module))
        return True
    except _Reached as reached:
        return True if reached.width < 0 else (reached.width, reached.wanted)
    except Exception:
        return None
    finally:
        for handle in handles:
            handle.remove()


def _search_whole(module: nn.Module, channels: int) -> tuple[tuple[int, int], str]:
    """A TorchScript model cannot be hooked: whole dry runs of the common sizes."""
    for side in COMMON:
        try:
            with model_guard(module), torch.no_grad():
                module(to_device_of(torch.zeros(1, channels, side, side), module))
            return (side, side), "it runs at this size" if side == DEFAULT[0] else "found by dry runs"
        except Exception:
            continue
    return DEFAULT, "no size tried ran; the default"

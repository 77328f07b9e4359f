"""A copy of a model for many passes (a render's steps, Score-CAM's masked inputs, faithfulness's
perturbed ones), with each batch normalisation folded into the convolution before it: the same
function in eval mode, about a third less work per step (half on MobileNetV2's forward passes).

In eval mode a ``BatchNorm`` after a convolution is an affine map per channel, so the two are one
convolution with scaled weights and a bias. On MobileNetV2 to ``features.17`` (4 images of 184 px,
forward and input gradient, 2 CPU cores) a step took 86-111 ms with its 35 batch normalisations and
57-73 ms with them folded. Renders run hundreds of such steps.

The user's model is never changed: only the folded modules and their ancestors are new (shallow)
objects, with their own lists of children, parameters and hooks; every tensor, hook callable and
other module is the model's own (nothing is duplicated) but the folded convolutions' new weights
and biases. Folded batch normalisations are ``nn.Identity`` under their own names (a probe of
``features.3.conv.3`` still sees that module's output). A pair is folded only where nothing can
differ:

* the convolution is followed by the batch normalisation inside a plain ``nn.Sequential`` (whose
  forward feeds one child's output to the next), both stock torch classes (no subclass with its own
  forward: timm's ``BatchNormAct2d`` also applies an activation), with no hooks (forward or
  backward; nor global module hooks) and no parametrisation, each appearing once in the model, in
  float32 or float64;
* the batch normalisation uses running statistics (``track_running_stats``) and the convolution is
  not itself a probed layer (its own output changes);
* the pair runs before the probed layers are reached (what runs after them is not folded).

Then the folded copy is checked against the model on one random input: the probed layers' outputs
must agree to 1e-4 of their scale (5e-3 on a GPU whose convolutions run in TF32); where they do not
(a forward that uses a convolution's output elsewhere, a graph that calls the modules in another
order), the caller runs the model itself.
TorchScript models are run as they are.
"""
from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn
from torch.nn.utils import parametrize

from cnnviz.core.model import LoadedModel, unwrap
from cnnviz.core.probe import probe
from cnnviz.core.references import LayerRef, rebound, resolve_all
from cnnviz.errors import CnnvizError

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
TOLERANCE = 1e-4  # the folded copy's outputs may differ from the model's by this fraction of their scale
# on a GPU whose convolutions run in TF32 (cuDNN's default) both the model's and the copy's outputs
# carry rounding of about 1e-3 of their scale (not measured here: no GPU was lent)
TF32_TOLERANCE = 5e-3


def folded_copy(model, layers: list, shape: tuple[int, ...]):
    """``model`` (an ``nn.Module`` or :class:`LoadedModel`) or a copy with its convolution + batch
    normalisation pairs folded (see the module's text); ``layers`` are the probed layers (references:
    ``"logits"`` for the output, ``"features.3#2"``, ``LayerRef``), ``shape`` one input's ``C x H x W``.
    Returns the same kind of object it is given."""
    module, _ = unwrap(model)
    if isinstance(module, torch.jit.ScriptModule) or _global_hooks():
        return model
    try:
        refs = resolve_all(model, list(layers))  # (class names: a LoadedModel's)
    except CnnvizError:  # a reference the caller's own pass will explain
        return model
    pairs = _pairs(module, {ref.layer for ref in refs})
    if not pairs:
        return model
    try:
        twin, copied = _path_copy(module, [name for pair in pairs for name in pair])  # (the norm's parent too)
    except Exception:  # a module class that cannot be copied this way: render the model itself
        return model
    ran = _ran_before(twin, [copied[conv] for conv, _ in pairs], [rebound(twin, ref) for ref in refs], shape)
    folded = 0
    for conv_name, norm_name in pairs:
        conv = copied[conv_name]
        if id(conv) not in ran:
            continue
        parent_name, _, key = norm_name.rpartition(".")
        try:
            _fold(conv, copied[parent_name]._modules[key])
        except Exception:  # a device or a tensor type the arithmetic does not take: render the model itself
            return model
        copied[parent_name]._modules[key] = nn.Identity()
        folded += 1
    if not folded or not _agrees(model, twin, refs, shape):
        return model
    if isinstance(model, LoadedModel):
        return dataclasses.replace(model, module=twin)
    return twin


def _global_hooks() -> bool:
    """Whether hooks are registered for every module (they would see the folded copy's modules)."""
    state = torch.nn.modules.module
    return any(getattr(state, name, None) for name in (
        "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks"))


def _shallow(module: nn.Module) -> nn.Module:
    """A new module object of the same class sharing everything with ``module`` (tensors, hook
    callables, other attributes) but its own containers (children, parameters, buffers, hooks), so
    that changing the copy's containers leaves ``module`` as it is."""
    twin = object.__new__(type(module))
    state = {}
    for key, value in module.__dict__.items():
        if key.startswith("_") and isinstance(value, (dict, set)):
            value = copy.copy(value)
        state[key] = value
    twin.__dict__.update(state)
    return twin


def _path_copy(module: nn.Module, names: list[str]) -> tuple[nn.Module, dict[str, nn.Module]]:
    """A copy of ``module`` in which the modules ``names`` and each of their ancestors are new
    (shallow) objects and everything else is the model's own: nothing is duplicated. Returns the
    copy and its new modules by name."""
    copied = {"": _shallow(module)}

    def copy_of(name: str) -> nn.Module:
        if name not in copied:
            parent_name, _, key = name.rpartition(".")
            parent = copy_of(parent_name)
            copied[name] = parent._modules[key] = _shallow(parent._modules[key])
        return copied[name]

    for name in names:
        copy_of(name)
    return copied[""], copied


def _pairs(module: nn.Module, probed: set[str]) -> list[tuple[str, str]]:
    """``(convolution's name, norm's name)`` of each pair that may be folded: consecutive children
    of a plain ``nn.Sequential``, or in an ``fx.GraphModule`` a convolution whose one user is the norm."""
    counts = {}
    for _, sub in module.named_modules(remove_duplicate=False):
        counts[id(sub)] = counts.get(id(sub), 0) + 1
    modules = dict(module.named_modules())
    candidates = []
    for parent_name, parent in modules.items():
        if isinstance(parent, nn.Sequential) and type(parent).forward is nn.Sequential.forward:
            keys = [f"{parent_name}.{key}" if parent_name else key for key in parent._modules]
            candidates += zip(keys, keys[1:])
        if isinstance(parent, torch.fx.GraphModule):
            candidates += _graph_pairs(parent, parent_name)
    return [(conv, norm) for conv, norm in candidates
            if conv in modules and norm in modules and _foldable(modules[conv], modules[norm])
            and counts[id(modules[conv])] == 1 and counts[id(modules[norm])] == 1 and conv not in probed]


def _graph_pairs(graph_module: torch.fx.GraphModule, prefix: str) -> list[tuple[str, str]]:
    calls = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph_module.graph.nodes:
        users = list(node.users)
        if (node.op == "call_module" and calls[node.target] == 1 and len(users) == 1 and users[0].op == "call_module"
                and calls[users[0].target] == 1 and users[0].args[:1] == (node,) and len(users[0].args) == 1
                and not users[0].kwargs):
            pairs.append(tuple(f"{prefix}.{name}" if prefix else name for name in (node.target, users[0].target)))
    return pairs


def _foldable(conv, norm) -> bool:
    if not (isinstance(conv, CONVOLUTIONS) and isinstance(norm, NORMS)):
        return False
    if type(conv).forward is not _stock(conv).forward:
        return False
    if type(norm).forward is not nn.modules.batchnorm._BatchNorm.forward:
        return False
    if parametrize.is_parametrized(conv) or norm.running_mean is None or norm.running_var is None:
        return False
    if any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or getattr(m, "_backward_pre_hooks", None)
           for m in (conv, norm)):  # a hook on either would see (or change) what the folded pair hides
        return False
    if conv.weight.dtype not in (torch.float32, torch.float64) or conv.out_channels != norm.num_features:
        return False
    return conv.weight.device == norm.running_mean.device


def _stock(conv) -> type:
    return next(kind for kind in CONVOLUTIONS if isinstance(conv, kind))


def _ran_before(twin: nn.Module, convs: list[nn.Module], layers: list[LayerRef], shape) -> set[int]:
    """The ids of the convolutions among ``convs`` that run before the probed layers are reached."""
    ran = set()
    handles = [conv.register_forward_hook(lambda m, i, o: ran.add(id(m))) for conv in convs]
    try:
        with probe(twin, layers, store=False) as recorder, torch.no_grad():
            recorder.run(_input(twin, shape))
    except Exception:
        return set()
    finally:
        for handle in handles:
            handle.remove()
    return ran


def _fold(conv: nn.Module, norm: nn.Module) -> None:
    """Give the (copied) convolution the weights and bias of itself followed by ``norm`` in eval mode.
    Computed in float64 on the CPU (an MPS device has no float64), then put back on the model's device."""
    dtype, device = conv.weight.dtype, conv.weight.device

    def exact(tensor):
        return tensor.detach().to("cpu", torch.float64)

    with torch.inference_mode(False), torch.no_grad():  # normal tensors, also for a caller in inference mode
        running_mean, running_var = exact(norm.running_mean), exact(norm.running_var)
        scale = (exact(norm.weight) if norm.weight is not None else 1) / torch.sqrt(running_var + norm.eps)
        shift = exact(norm.bias) if norm.bias is not None else 0
        bias = exact(conv.bias) if conv.bias is not None else torch.zeros_like(running_mean)
        weight = exact(conv.weight) * scale.reshape(-1, *[1] * (conv.weight.dim() - 1))
        conv.weight = nn.Parameter(weight.to(device, dtype), requires_grad=False)
        conv.bias = nn.Parameter(((bias - running_mean) * scale + shift).to(device, dtype), requires_grad=False)


def _input(module: nn.Module, shape) -> torch.Tensor:
    tensor = next((t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()), None)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, *shape, generator=generator)
    return x.to(tensor.device, tensor.dtype) if tensor is not None else x


def _agrees(model, twin: nn.Module, layers: list[LayerRef], shape) -> bool:
    """Whether the folded copy gives the model's outputs at ``layers`` (resolved against the model)
    on one random input."""
    module, _ = unwrap(model)
    x = _input(module, shape)
    try:
        with torch.no_grad():
            with probe(model, layers) as original:
                original.run(x)
                expected = [original[layer] for layer in layers]
            on_twin = [rebound(twin, layer) for layer in layers]
            with probe(twin, on_twin) as folded:
                folded.run(x)
                got = [folded[layer] for layer in on_twin]
    except Exception:
        return False
    tf32 = x.device.type == "cuda" and x.dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    tolerance = TF32_TOLERANCE if tf32 else TOLERANCE
    for a, b in zip(expected, got):
        if a.shape != b.shape or not bool(torch.isfinite(b).all()):
            return False
        if a.numel() and float((a - b).abs().max()) > tolerance * max(float(a.abs().max()), 1e-6):
            return False
    return True

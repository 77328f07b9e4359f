"""Kernels: the weights of a convolution, ready to be looked at.

The lecture's first way to look under the hood: a first-layer kernel over RGB input is itself a
small colour image; deeper kernels are grids of 2-D weight maps, one per (output, input) channel
pair, or one per output channel. Signed weights are drawn on a scale centred on zero, and the
scale is a choice: per kernel (each output channel its own largest absolute weight), per layer,
or global (the largest absolute weight of every convolution of the model).

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> first = cnnviz.kernels(loaded, "features.0")
    >>> first.view, first.weight.shape
    ('colour', torch.Size([16, 3, 3, 3]))
    >>> figure = cnnviz.plots.kernels(first, scope="layer")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import nn

from cnnviz.core.display import Shows
from cnnviz.errors import CnnvizError
from cnnviz.core.model import unwrap
from cnnviz.core.references import Reference, channel_list, layer_ref

SCOPES = ("kernel", "layer", "global")
VIEWS = ("auto", "colour", "pairs", "outputs")


@dataclass
class Kernels(Shows):
    """The kernels of one convolution, and how to show them.

    Attributes:
        layer: the layer reference.
        module_type: the module's class name (``Conv2d``, ``ConvTranspose2d``, ...).
        weight: the chosen kernels in convolution layout, ``outputs x inputs-per-group x *kernel``
            (transposed convolutions are rearranged into that layout); a float32 CPU copy.
        outputs: the output channel of each row of ``weight``.
        inputs: the input channels shown in a pairs view (indices inside a group).
        groups: the convolution's groups (``inputs-per-group`` channels feed each output).
        in_channels, out_channels: of the whole convolution.
        view: ``"colour"`` (each kernel an RGB image), ``"pairs"`` (a map per output-input pair),
            ``"outputs"`` (a map per output: the kernel summed over its inputs, which is its
            response to an input equal in every channel), ``"curves"`` (1-D) or ``"slices"`` (3-D).
        layer_scale: the largest absolute weight of the whole layer (all channels).
        global_scale: the largest absolute weight of every convolution of the model.
        layer_map_scale, global_map_scale: the same for the maps of the outputs and slices views
            (kernels summed over their inputs), over the whole layer and over the whole model.
        inputs_summed: the inputs (inside a group) summed in the outputs and slices views.
        notes: what was left out (channels beyond the cap, ...).
    """

    layer: str
    module_type: str
    weight: torch.Tensor
    outputs: list[int]
    inputs: list[int]
    groups: int
    in_channels: int
    out_channels: int
    view: str
    layer_scale: float
    global_scale: float
    layer_map_scale: float = 0.0
    global_map_scale: float = 0.0
    inputs_summed: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def dims(self) -> int:
        """Spatial dimensions of the kernels: 1, 2 or 3."""
        return self.weight.dim() - 2

    def input_channel(self, output: int, local: int) -> int:
        """The model-wide input channel that local input ``local`` of ``output`` reads."""
        per_group_out = self.out_channels // self.groups
        return (output // per_group_out) * (self.in_channels // self.groups) + local

    def scales(self, scope: str) -> torch.Tensor:
        """The normalisation scale of each shown output channel (``len(outputs)``) for ``scope``:
        its own largest absolute weight (``"kernel"``), the layer's, or the model's."""
        check_scope(scope)
        if scope == "kernel":
            return self.weight.abs().flatten(1).amax(dim=1).clamp_min(1e-12)
        value = self.layer_scale if scope == "layer" else self.global_scale
        return torch.full((len(self.outputs),), max(value, 1e-12))

    def maps(self) -> torch.Tensor:
        """The maps of the outputs and slices views: each shown output's kernel summed over
        ``inputs_summed`` (its response to an input equal in those channels), ``outputs x *kernel``."""
        return self.weight[:, self.inputs_summed].sum(dim=1)

    def map_scales(self, scope: str) -> torch.Tensor:
        """Like :meth:`scales`, for :meth:`maps`."""
        check_scope(scope)
        maps = self.maps()
        if scope == "kernel":
            return maps.abs().flatten(1).amax(dim=1).clamp_min(1e-12)
        value = self.layer_map_scale if scope == "layer" else self.global_map_scale
        return torch.full((len(self.outputs),), max(value, 1e-12))

    def color_images(self, scope: str = "layer") -> torch.Tensor:
        """The kernels as RGB images in [0, 1], ``outputs x 3 x kH x kW``: ``w / (2 s) + 0.5`` with
        ``s`` the scale of ``scope``, so that mid-grey is a zero weight."""
        if self.weight.shape[1] != 3 or self.dims != 2:
            raise CnnvizError(f"{self.layer} does not read 3 input channels, so its kernels are not colour images")
        scale = self.scales(scope).reshape(-1, 1, 1, 1)
        return (self.weight / (2 * scale) + 0.5).clamp(0, 1)

    def to_dict(self) -> dict:
        """JSON-ready facts: shapes, scales and the chosen channels."""
        return {
            "layer": self.layer,
            "type": self.module_type,
            "view": self.view,
            "kernel_size": list(self.weight.shape[2:]),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "groups": self.groups,
            "outputs_shown": self.outputs,
            "inputs_shown": self.inputs if self.view == "pairs" else None,
            "weight_min": float(self.weight.min()),
            "weight_max": float(self.weight.max()),
            "layer_scale": self.layer_scale,
            "global_scale": self.global_scale,
            "notes": self.notes,
        }

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.weight.shape[2:])
        return (
            f"Kernels({self.layer!r}, {self.module_type}, {len(self.outputs)} of {self.out_channels} "
            f"outputs, {shape} kernels, view={self.view!r}, max |w| = {self.layer_scale:.3g})"
        )


def kernels(
    model,
    layer: Reference,
    *,
    channels=None,
    inputs=None,
    view: str = "auto",
    max_channels: int = 64,
    max_inputs: int = 16,
) -> Kernels:
    """The kernels of the convolution ``layer``.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (only read).
        layer: a convolution (``"features.0"``; ``"features.0:5"`` picks output channel 5).
        channels: output channels to show (``"0-15"``, a list, ``"all"``); default the first
            ``max_channels``.
        inputs: input channels (inside a group) for the pairs view; default the first ``max_inputs``.
        view: ``"auto"`` (colour for a convolution reading RGB input, one map per output for a
            depthwise convolution, pairs otherwise), ``"colour"``, ``"pairs"`` or ``"outputs"``.
            1-D kernels are always curves, 3-D kernels slices.
        max_channels, max_inputs: the caps when no channels are chosen.

    Raises:
        CnnvizError: the layer is not a convolution (the message lists the model's
            convolutions), an unknown view, channels out of range.
    """
    module, _ = unwrap(model)
    target = layer_ref(model, layer)
    conv = as_convolution(target.module)
    if conv is None:
        conv = target.module
        raise CnnvizError(
            f"{target.layer_text} is a {type(conv).__name__}, not a convolution; "
            f"{_list_convolutions(module)}"
        )
    if isinstance(conv.weight, nn.parameter.UninitializedParameter):
        raise CnnvizError(f"{target.layer_text} is a lazy convolution without weights yet; run the model once first")
    if view not in VIEWS:
        raise CnnvizError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")
    weight = conv.weight.detach().float().cpu()
    if conv.transposed:  # in x out/groups x k -> out x in/groups x k
        groups = conv.groups
        per_group_in = weight.shape[0] // groups
        weight = torch.cat([
            weight[g * per_group_in:(g + 1) * per_group_in].transpose(0, 1) for g in range(groups)
        ])
    weight = weight.clone()
    notes: list[str] = []
    if target.channel is not None:
        chosen = channel_list([target.channel], conv.out_channels, "output channel")
    elif channels is not None:
        chosen = channel_list(channels, conv.out_channels, "output channel")
    else:
        chosen = list(range(min(conv.out_channels, max_channels)))
        if conv.out_channels > max_channels:
            notes.append(f"showing the first {max_channels} of {conv.out_channels} output channels")
    per_group = weight.shape[1]
    if inputs is not None:
        chosen_inputs = channel_list(inputs, per_group, "input channel")
    else:
        chosen_inputs = list(range(min(per_group, max_inputs)))
    resolved = _resolve_view(view, weight, module, conv)
    if resolved == "pairs" and inputs is None and per_group > max_inputs:
        notes.append(f"showing the first {max_inputs} of {per_group} input channels of each kernel")
    summed = chosen_inputs if inputs is not None else list(range(per_group))
    return Kernels(
        layer=target.layer_text,
        module_type=getattr(target.module, "original_name", None) or type(target.module).__name__,
        weight=weight[chosen],
        outputs=chosen,
        inputs=chosen_inputs,
        groups=conv.groups,
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        view=resolved,
        layer_scale=float(weight.abs().max()),
        global_scale=_global_scale(module),
        layer_map_scale=float(weight[:, summed].sum(dim=1).abs().max()),
        global_map_scale=_global_scale(module, summed=True),
        inputs_summed=summed,
        notes=notes,
    )


def convolutions(model) -> list[str]:
    """The names of every convolution of a model, in module order (a TorchScript model's too)."""
    module, _ = unwrap(model)
    return [name for name, m in module.named_modules() if as_convolution(m) is not None]


_CONVOLUTIONS = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")


def as_convolution(module: nn.Module):
    """``module`` itself when it is a convolution; for a convolution inside a TorchScript model
    (scripted or traced: ``original_name`` says what it was, and a trace keeps only ``weight``
    and ``bias``), a stand-in with what the kernels need (its weight, channels, groups,
    transposition; a trace's groups are taken as 1); else ``None``."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module
    if not isinstance(module, torch.jit.ScriptModule) or getattr(module, "original_name", None) not in _CONVOLUTIONS:
        return None
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 3:
        return None
    transposed = module.original_name.startswith("ConvTranspose")
    groups = int(getattr(module, "groups", 1))
    ins, outs = (weight.shape[0], weight.shape[1] * groups) if transposed else (weight.shape[1] * groups, weight.shape[0])
    return SimpleNamespace(weight=weight, transposed=transposed, groups=groups,
                           in_channels=int(getattr(module, "in_channels", ins)),
                           out_channels=int(getattr(module, "out_channels", outs)))


def _resolve_view(view: str, weight: torch.Tensor, model: nn.Module, conv: nn.Module) -> str:
    dims = weight.dim() - 2
    if dims == 1:
        return "curves"
    if dims == 3:
        return "slices"
    if view == "colour" and (weight.shape[1] != 3 or conv.groups != 1):
        raise CnnvizError("the colour view needs kernels over 3 input channels; use the pairs or outputs view")
    if view != "auto":
        return view
    first = next((c for c in map(as_convolution, model.modules()) if c is not None), None)
    if first is not None and first.weight.data_ptr() == conv.weight.data_ptr() and first.weight.shape == conv.weight.shape and conv.in_channels == 3 and conv.groups == 1 and not conv.transposed:
        return "colour"
    if weight.shape[1] == 1:
        return "outputs"
    return "pairs"


def _global_scale(model: nn.Module, summed: bool = False) -> float:
    """The largest absolute weight of every convolution (or of every kernel summed over its inputs)."""
    scales = []
    for m in map(as_convolution, model.modules()):
        if m is not None and not isinstance(m.weight, nn.parameter.UninitializedParameter):
            weight = m.weight.detach()
            if summed:
                weight = weight.sum(dim=0 if m.transposed else 1)
            scales.append(float(weight.abs().max()))
    return max(scales) if scales else 0.0


def _list_convolutions(model: nn.Module) -> str:
    names = convolutions(model)
    if not names:
        return "this model has no convolutions"
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    return f"its convolutions are: {shown}"


def check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise CnnvizError(f"unknown normalisation scope {scope!r}; use one of {', '.join(SCOPES)}")

"""How strongly the channels of one layer feed the channels of a later one, by weight.

Between two layers joined by convolutions and per-channel operations only (batch norm,
activations, pooling, dropout), the channel ``i`` of the earlier layer reaches the channel ``o`` of
the later one through the kernel ``W[o, i]`` of each convolution. The strength of that link is the
kernel's size (its L2 norm over space); through several convolutions in a chain it is the sum over
every path of the products along it (the product of the strength matrices). This is what
OpenAI Microscope calls a unit's strongest inputs and outputs, for any model whose layers chain
this way.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> [link] = cnnviz.connections(loaded, ["features.0", "features.3"])
    >>> link.strength.shape                    # features.3's channels x features.0's
    torch.Size([16, 16])
    >>> len(link.strongest_inputs(5))          # [(channel of features.0, strength), ...], strongest first
    5
    >>> links = cnnviz.connections(loaded, ["features.0", "features.3", "features.12", "logits"])
    >>> links, links[-1].linked                # one Connection per neighbouring pair; why not: links[-1].why
    (Connections(3 pairs, 2 linked by weights), False)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cnnviz.core.display import Shows
from cnnviz.core.model import preprocessing_of, unwrap
from cnnviz.core.probe import probe
from cnnviz.core.references import Reference, resolve_all
from cnnviz.errors import CnnvizError
from cnnviz.analyses.kernels import as_convolution

# modules that act on each channel on its own (or leave channels as they are)
PER_CHANNEL = (
    nn.modules.batchnorm._NormBase, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.dropout._DropoutNd,
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardtanh, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.LogSigmoid,
    nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd, nn.modules.padding._ReplicationPadNd,
    nn.ZeroPad2d,
)


@dataclass(repr=False)
class Connection(Shows):
    """The links from the channels of ``source`` to the channels of ``target``.

    Attributes:
        source, target: the two layer references (``source`` runs first).
        strength: ``C_target x C_source``, non-negative: the L2 norm of the kernel that joins each
            pair, or over several convolutions the sum over paths of the products of those norms;
            ``None`` where the two layers are not linked by weights (``why`` says why).
        through: the convolutions whose weights make the links, in run order.
        why: the reason there is no link (a module between them mixes channels other than by a
            convolution, a side branch, ...), else ``None``.
    """

    source: str
    target: str
    strength: torch.Tensor | None
    through: list[str]
    why: str | None = None

    @property
    def linked(self) -> bool:
        """Whether the layers are linked by weights (else ``why`` says why not)."""
        return self.strength is not None

    def strongest_inputs(self, channel: int, count: int = 5) -> list[tuple[int, float]]:
        """The ``source`` channels that feed ``target`` channel ``channel`` most: ``(channel, strength)``, strongest first."""
        return _strongest(self._strength()[channel], count)

    def strongest_outputs(self, channel: int, count: int = 5) -> list[tuple[int, float]]:
        """The ``target`` channels that ``source`` channel ``channel`` feeds most: ``(channel, strength)``, strongest first."""
        return _strongest(self._strength()[:, channel], count)

    def _strength(self) -> torch.Tensor:
        if self.strength is None:
            raise CnnvizError(f"{self.source} and {self.target} are not linked by weights: {self.why}")
        return self.strength

    @property
    def how(self) -> str:
        if self.strength is None:
            return f"not linked: {self.why}"
        if len(self.through) == 1:
            return f"the L2 norm of {self.through[0]}'s kernel between the two channels"
        return (f"the sum over paths through {', '.join(self.through)} of the products of their kernels' "
                "L2 norms")

    def _summary(self) -> str:
        if self.strength is None:
            return f"{self.source} -> {self.target}: none, {self.why}"
        return f"{self.source} -> {self.target}: {tuple(self.strength.shape)} by {self.how}"

    def to_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "through": self.through, "how": self.how,
                "strength": None if self.strength is None else self.strength.tolist(), "why": self.why}


class Connections(Shows, list):
    """The :class:`Connection` of each pair of neighbouring layers given to :func:`connections`,
    in order; a pair without a link by weights has ``linked`` false and its reason in ``why``.
    Draws the strengths of the linked pairs side by side."""

    def to_dict(self) -> list[dict]:
        return [link.to_dict() for link in self]

    def _summary(self) -> str:
        linked = sum(link.linked for link in self)
        return f"{len(self)} pairs, {linked} linked by weights"


def connections(model, layers: Sequence[Reference]) -> Connections:
    """The weight links between each pair of neighbouring layers of ``layers``.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel` (left untouched).
        layers: two or more whole layers, in the order they run.

    Returns:
        :class:`Connections`, one :class:`Connection` per neighbouring pair; where the pair has no
        link by weights, its ``why`` says why (a module between them mixes channels other than by a convolution, such as a
        ``Linear``; what runs between them is not one chain, each module taking what the one before
        gave, as where a squeeze-excite gate or a residual shortcut branches off; the later layer
        is not reached through a convolution; a TorchScript model). An addition written in ``forward`` that joins
        a shortcut back after the chain is not seen: the links are those of the chain's weights.
    """
    module, _ = unwrap(model)
    refs = resolve_all(model, list(layers))
    if any(ref.channel is not None for ref in refs):
        raise CnnvizError("connections are between whole layers; give layers without a channel")
    pairs = list(zip(refs, refs[1:]))
    if isinstance(module, torch.jit.ScriptModule):
        why = "a TorchScript model's layers run outside Python, so what joins them is not known"
        return Connections(unlinked(str(source), str(target), why) for source, target in pairs)
    if not pairs:
        return Connections()
    order, shapes = _run_order(model, module)
    modules = dict(module.named_modules())
    links = Connections()
    for source, target in pairs:
        link = _link(source, target, order, shapes, modules)
        links.append(unlinked(str(source), str(target), link) if isinstance(link, str) else link)
    return links


def unlinked(source: str, target: str, why: str) -> Connection:
    """The :class:`Connection` of two layers that are not linked by weights, with the reason."""
    return Connection(source, target, None, [], why)


def _run_order(model, module: nn.Module):
    """The (module, call) pairs in the order they run on one input, with the shape of each call's
    input and output."""
    names = [name for name, _ in module.named_modules() if name]
    preprocessing = preprocessing_of(model)
    example = torch.zeros(1, preprocessing.channels, *preprocessing.input_size)
    with probe(model, names, store=False, early_exit=False) as recorder:
        recorder.run(example)
        outputs, inputs = recorder.shapes, recorder.input_shapes
        order = list(recorder.order)
    shapes = {(name, call + 1): (inputs[name][call], shape) for name, calls in outputs.items() if name in inputs
              for call, shape in enumerate(calls)}
    return order, shapes


def _link(source, target, order, shapes, modules) -> Connection | str:
    """The link of two layers: the chain of modules that runs from one to the other, each taking
    what the one before it gave (a side branch, such as a squeeze-excite gate or a shortcut,
    breaks the chain)."""
    if source.is_output or target.is_output:
        return "the model's output is not a layer of channels to link"
    start, end = (source.layer, source.call), (target.layer, target.call)
    if start not in order or end not in order or order.index(start) >= order.index(end):
        return f"{target.layer_text} does not run after {source.layer_text}"
    parents = {name.rsplit(".", 1)[0] for name in modules if "." in name}
    current = shapes[start][1]
    strength, through = None, []
    for name, call in order[order.index(start) + 1:order.index(end) + 1]:
        if name in parents or not name:
            continue  # a container: its leaves are in the order
        module = modules[name]
        convolution = as_convolution(module)
        if convolution is None and not isinstance(module, PER_CHANNEL):
            return (f"{name} ({type(module).__name__}) runs between {source.layer_text} and {target.layer_text} and "
                    "mixes channels other than by a convolution")
        taken, given = shapes[(name, call)]
        if taken != current or given is None:
            return (f"what runs between {source.layer_text} and {target.layer_text} is not one chain ({name} takes "
                    f"{_shape(taken)}, not the {_shape(current)} before it: a side branch or a shortcut)")
        if convolution is not None:
            step = kernel_norms(convolution)
            strength = step if strength is None else step @ strength
            through.append(name)
        current = given
    if not through or shapes[end][1] != current:
        return f"no convolution joins {source.layer_text}'s channels to {target.layer_text}'s"
    return Connection(source.layer_text, target.layer_text, strength, through)


def _shape(shape) -> str:
    return "x".join(str(n) for n in shape[1:]) if shape else "no tensor"


def kernel_norms(convolution) -> torch.Tensor:
    """``out_channels x in_channels``: the L2 norm of the kernel from each input channel to each
    output channel (zero between channels of different groups)."""
    weight = convolution.weight.detach().float().cpu()
    groups = int(getattr(convolution, "groups", 1))
    if getattr(convolution, "transposed", False):  # in x out/groups x ...: as out x in/groups
        ins = weight.shape[0]
        weight = weight.reshape(groups, ins // groups, *weight.shape[1:]).transpose(1, 2).flatten(0, 1)
    norms = weight.flatten(2).norm(dim=2)  # out x in/groups
    out_channels, per_group = norms.shape
    full = torch.zeros(out_channels, per_group * groups)
    per_output_group = out_channels // groups
    for group in range(groups):
        rows = slice(group * per_output_group, (group + 1) * per_output_group)
        full[rows, group * per_group:(group + 1) * per_group] = norms[rows]
    return full


def _strongest(row: torch.Tensor, count: int) -> list[tuple[int, float]]:
    values, indices = row.topk(min(count, len(row)))
    return [(int(i), float(v)) for v, i in zip(values, indices) if v > 0]

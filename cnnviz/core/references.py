"""Layer references: one way to name a unit, the same in Python and on the command line.

The grammar (DESIGN.md, principle 2)::

    features.10            the output of a module (its path in ``model.named_modules()``)
    layer1.0.relu#2        the second call of a module that runs several times per forward pass
    features.10:5          channel 5 of that output (N x H x W)
    features.10:5@7,3      the neuron at row 7, column 3 of channel 5 (N)
    logits                 the model's output (``output`` works too)
    logits:281             one output unit; with class names also ``logits:tabby`` or just ``tabby``

In Python a module object of the model works wherever a reference string does. A name that is not
a layer of the model fails with the three closest valid names; a channel, call or position out of
range fails with the valid range.

Example::

    >>> import torchvision, cnnviz
    >>> model = torchvision.models.resnet18()
    >>> ref = cnnviz.layer_ref(model, "layer1.0.relu#2:5@7,3")
    >>> ref.layer, ref.call, ref.channel, ref.position
    ('layer1.0.relu', 2, 5, (7, 3))
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Union

import torch
from torch import nn

from cnnviz.errors import CnnvizError, closest, did_you_mean
from cnnviz.core.model import unwrap

OUTPUT_NAMES = ("logits", "output")

Reference = Union[str, nn.Module, "LayerRef"]


@dataclass(frozen=True)
class LayerRef:
    """A reference resolved against one model.

    Attributes:
        layer: the module path in ``named_modules()``; ``""`` for the model's output (``logits``).
        module: the module object itself (the model for ``logits``).
        call: which call of the module, counted from 1 (modules may run several times).
        channel: the channel (second dimension of the output), or ``None`` for the whole output.
        position: the spatial index inside that channel (row, column for 2-D maps), or ``None``.
    """

    layer: str
    module: nn.Module = field(repr=False, compare=False)
    call: int = 1
    channel: int | None = None
    position: tuple[int, ...] | None = None

    @property
    def is_output(self) -> bool:
        """True when the reference names the model's output rather than an inner module."""
        return self.layer == ""

    def __str__(self) -> str:
        text = self.layer or "logits"
        if self.call != 1:
            text += f"#{self.call}"
        if self.channel is not None:
            text += f":{self.channel}"
        if self.position is not None:
            text += "@" + ",".join(str(p) for p in self.position)
        return text

    @property
    def layer_text(self) -> str:
        """The module part of the reference with its call, without channel or position."""
        text = self.layer or "logits"
        return text if self.call == 1 else f"{text}#{self.call}"

    def check(self, shape: Sequence[int]) -> None:
        """Raise :class:`CnnvizError` unless this reference's channel and position fit an output
        of ``shape`` (``N x C x ...``)."""
        shape = tuple(shape)
        if self.channel is None:
            return
        if len(shape) < 2:
            raise CnnvizError(
                f"{self.layer_text} has output shape {shape}, which has no channel "
                f"dimension; use {self.layer_text!r} without ':{self.channel}'"
            )
        channels = shape[1]
        if not 0 <= self.channel < channels:
            raise CnnvizError(
                f"channel {self.channel} is out of range for {self.layer_text}, which has "
                f"{channels} channels (valid: 0-{channels - 1})"
            )
        if self.position is None:
            return
        spatial = shape[2:]
        if not spatial:
            raise CnnvizError(f"{self.layer_text} has no spatial dimensions; drop '@...' from the reference")
        if len(self.position) != len(spatial):
            example = ",".join(str(s // 2) for s in spatial)
            raise CnnvizError(
                f"{self.layer_text} has {len(spatial)}-D maps of size {_size_text(spatial)}, so a "
                f"position needs {len(spatial)} numbers (e.g. '{self.layer_text}:{self.channel}@{example}')"
            )
        for index, size in zip(self.position, spatial):
            if not 0 <= index < size:
                ranges = ", ".join(f"0-{s - 1}" for s in spatial)
                raise CnnvizError(
                    f"position {','.join(map(str, self.position))} is out of range for "
                    f"{self.layer_text}, whose maps are {_size_text(spatial)} (valid: {ranges})"
                )

    def select(self, output: torch.Tensor) -> torch.Tensor:
        """Pick this reference's channel and position out of a module output.

        Args:
            output: the module's output, ``N x C x ...`` (``N x C x H x W`` for 2-D feature maps).

        Returns:
            ``output`` itself without a channel, ``N x H x W`` (``N x ...``) for a channel, ``N`` for
            a neuron.
        """
        self.check(output.shape)
        if self.channel is None:
            return output
        if self.position is None:
            return output[:, self.channel]
        return output[(slice(None), self.channel, *self.position)]


@dataclass(frozen=True)
class Unit:
    """A unit as results name it: structured, so nothing has to parse a display string back.

    Attributes:
        layer: the module path with its call (``features.3``, ``layer1.0.relu#2``), or ``logits``
            for the model's output.
        channel: the channel, or ``None`` for a whole layer.
        position: the spatial index inside that channel (row, column), or ``None``.
        class_name: the class of an output unit when the model's class names are known.
        objective: for images of a free objective (no single unit), its formula; ``layer`` is
            then ``""`` and ``channel`` the image's number. For a unit of a layer, what of it is
            meant (``neuron at the centre``), shown after its reference.

    ``unit.reference`` is the reference string (``features.3:5@7,3``, parsed by
    :func:`layer_ref`); ``str(unit)`` adds the class name for display (``logits:281 (tabby)``).
    """

    layer: str
    channel: int | None = None
    position: tuple[int, ...] | None = None
    class_name: str | None = None
    objective: str | None = None

    @classmethod
    def of(cls, ref: LayerRef, class_names: Sequence[str] | None = None, channel: int | None = None) -> Unit:
        """The unit a :class:`LayerRef` names (``channel`` replaces the reference's own)."""
        channel = ref.channel if channel is None else channel
        name = None
        if ref.is_output and class_names and channel is not None and 0 <= channel < len(class_names):
            name = class_names[channel]
        return cls(ref.layer_text, channel, ref.position, name)

    @property
    def reference(self) -> str:
        """The reference string: what :func:`layer_ref` and ``--target``/``--layer`` take."""
        if self.objective is not None and not self.layer:
            return f"{self.objective} #{self.channel}"
        text = self.layer
        if self.channel is not None:
            text += f":{self.channel}"
        if self.position is not None:
            text += "@" + ",".join(str(p) for p in self.position)
        return text

    def __str__(self) -> str:
        note = self.class_name if self.class_name is not None else self.objective if self.layer else None
        return self.reference + (f" ({note})" if note is not None else "")

    def to_dict(self) -> dict:
        """JSON-ready: the reference, its parts and the class name."""
        return {"unit": str(self), "reference": self.reference, "layer": self.layer, "channel": self.channel,
                "position": list(self.position) if self.position is not None else None,
                "class_name": self.class_name, "objective": self.objective}


def layer_ref(model: nn.Module, ref: Reference, class_names: list[str] | None = None) -> LayerRef:
    """Resolve a layer reference (string, module object or :class:`LayerRef`) against ``model``.

    Args:
        model: the network (an ``nn.Module`` or a :class:`cnnviz.LoadedModel`, whose class names
            are then used for ``logits:NAME``).
        ref: the reference, see the module docstring for the grammar.
        class_names: names of the output classes, for ``logits:tabby`` and bare class names.

    Raises:
        CnnvizError: the name is not a layer of the model (the message lists the closest names),
            or the channel is out of the module's known range.
    """
    return resolve_all(model, [ref], class_names)[0]


def rebound(model, ref: LayerRef) -> LayerRef:
    """``ref`` on ``model``, a copy with the same module names as the model it was resolved against
    (a folded copy), without reading any text again: the same layer, call, channel and position."""
    module, _ = unwrap(model)
    owner = module if ref.is_output else dict(module.named_modules()).get(ref.layer)
    if owner is None:
        raise CnnvizError(f"{ref.layer_text} is not a module of this {type(module).__name__}")
    return replace(ref, module=owner)


def unit_ref(model, unit: Unit) -> LayerRef:
    """The reference of a result's :class:`Unit` on ``model``: its channel is the index it is (never
    read again as a class name, which may be a number), and a unit with a class name is the output."""
    if unit.objective is not None and not unit.layer:
        raise CnnvizError(f"{unit} is an image of a free objective, not a unit of the model")
    module, _ = unwrap(model)
    base = LayerRef("", module) if unit.class_name is not None else layer_ref(model, unit.layer)
    return replace(base, channel=unit.channel, position=unit.position)


def resolve_all(model: nn.Module, refs, class_names: list[str] | None = None) -> list[LayerRef]:
    """:func:`layer_ref` for several references at once (the model's modules are listed once)."""

    module_model, loaded_names = unwrap(model)
    class_names = class_names if class_names is not None else loaded_names
    modules = dict(module_model.named_modules())
    return [_resolve(module_model, modules, ref, class_names) for ref in refs]


def _resolve(module_model: nn.Module, modules: dict, ref, class_names) -> LayerRef:
    if isinstance(ref, LayerRef):
        owner = module_model if ref.is_output else modules.get(ref.layer)
        if owner is not ref.module:
            raise CnnvizError(
                f"the reference {str(ref)!r} was resolved against another model; pass its text instead"
            )
        return ref
    if isinstance(ref, nn.Module):
        for name, candidate in modules.items():
            if candidate is ref:
                return LayerRef(name, candidate)
        raise CnnvizError(
            f"the module given ({type(ref).__name__}) is not part of this "
            f"{type(module_model).__name__}; pass one of its own modules or a layer name"
        )
    if not isinstance(ref, str):
        raise CnnvizError(
            f"a layer reference must be a string or a module of the model, not {type(ref).__name__}"
        )
    return _parse(ref.strip(), module_model, modules, class_names)


def _parse(text: str, model: nn.Module, modules: dict[str, nn.Module], class_names) -> LayerRef:
    if not text:
        raise CnnvizError("empty layer reference; name a layer such as 'features.0' or 'logits'")
    if text in modules and text != "":
        return _checked(LayerRef(text, modules[text]), class_names)
    prefix, colon, rest = text.partition(":")
    if colon and prefix.lower() in OUTPUT_NAMES and prefix not in modules:
        whole_name = _class_index(rest, class_names)  # class names may hold ':' or '@'
        if whole_name is not None:
            return LayerRef("", model, channel=whole_name)
    bare_class = _class_index(text, class_names)
    if bare_class is not None and text.lower() not in OUTPUT_NAMES:  # a class name, said alone
        return LayerRef("", model, channel=bare_class)
    head, call_text, channel_text, position_text = _split(text, modules)
    position = _parse_position(text, position_text) if position_text is not None else None
    call = 1
    if call_text is not None:
        call = _parse_int(call_text, f"the call number in {text!r}", example=f"{head}#2")
        if call < 1:
            raise CnnvizError(f"calls are counted from 1, so {text!r} has no call #{call}; use #1 or more")
    if head in modules and head != "":
        layer, module = head, modules[head]
    elif head.lower() in OUTPUT_NAMES:
        layer, module = "", model
    else:
        names = [n for n in modules if n] + ["logits"]
        classes = closest(text, class_names or [], 3) if channel_text is None and call_text is None else []
        layers = closest(head, names, 1)
        likeness = _likeness(text, classes[0]) if classes else 0.0
        if likeness >= 0.7 and (not layers or likeness > _likeness(head, layers[0])):  # a misspelt class name
            raise CnnvizError(
                f"{text!r} is neither a layer nor a class of {type(model).__name__}; did you mean the class "
                f"{' or '.join(repr(c) for c in classes)}? (or a layer: {did_you_mean(head, names) or 'cnnviz layers lists them'})"
            )
        raise CnnvizError(
            f"{type(model).__name__} has no layer {head!r}; {did_you_mean(head, names)} "
            "('cnnviz layers' lists them all)"
        )
    if position is not None and channel_text is None:
        raise CnnvizError(
            f"a position needs a channel: write '{head}:CHANNEL@{','.join(map(str, position))}'"
        )
    channel = None
    if channel_text is not None:
        channel = _parse_channel(channel_text, layer, class_names, text)
    return _checked(LayerRef(layer, module, call, channel, position), class_names)


def _likeness(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


SUFFIX = re.compile(r"(?:#([^:@]*))?(?::([^@]*))?(?:@(.*))?", re.S)  # what may follow a module name


def _split(text: str, modules) -> tuple[str, str | None, str | None, str | None]:
    """``text`` as (module name, call, channel, position) texts, ``None`` for parts not given.

    Any name ``named_modules`` gives is a layer, also one holding ``#``, ``:`` or ``@`` (onnx2torch
    names modules ``Conv@17``): the longest module name that the text starts with, followed by
    a suffix of the grammar (``#N``, ``:C``, ``@i,j``, in that order), wins. Otherwise the text is
    cut at its last ``@``, ``:`` and ``#``, for the error messages of a name that is no layer."""
    for cut in sorted((i for i, c in enumerate(text) if c in "#:@"), reverse=True):
        head = text[:cut]
        if head and head in modules:
            parts = _suffix(text[cut:])
            if parts is not None:
                return (head, *parts)
    head, call_text, channel_text, position_text = text, None, None, None
    if "@" in head:
        head, _, position_text = head.rpartition("@")
    if ":" in head:
        head, _, channel_text = head.rpartition(":")
    if "#" in head:
        head, _, call_text = head.rpartition("#")
    return head, call_text, channel_text, position_text


CALL = re.compile(r"(.+)#([0-9]+)", re.S)  # a module name and its call number, as layer_text writes them


def split_call(layer: str, names=()) -> tuple[str, int]:
    """The module name and the call of a layer reference with its call (``LayerRef.layer_text``):
    ``layer1.0.relu#2`` gives ``("layer1.0.relu", 2)``, ``features.3`` ``("features.3", 1)``.

    As for :func:`layer_ref`, a name that is itself a module's (one of ``names``, the module
    names of the model when known) is that module, also one holding ``#`` (``add_module("a#2",
    ...)``); otherwise only a trailing ``#`` and digits are a call, so ``a#b`` stays whole."""
    if layer in names:
        return layer, 1
    match = CALL.fullmatch(layer)
    return (match.group(1), int(match.group(2))) if match else (layer, 1)


def _suffix(rest: str) -> tuple[str | None, str | None, str | None] | None:
    """``#N``, ``:C`` and ``@i,j`` (each optional, in this order) of what follows a module name,
    or ``None`` when ``rest`` is not of that form."""
    match = SUFFIX.fullmatch(rest)
    return match.groups() if match else None


def _parse_channel(channel_text: str, layer: str, class_names, text: str) -> int:
    stripped = channel_text.strip()
    if stripped.lstrip("-").isdecimal() and stripped.lstrip("-").isascii():
        channel = int(stripped)
        if channel < 0:
            raise CnnvizError(f"channels are counted from 0, so {text!r} has no channel {channel}")
        return channel
    if layer == "":
        index = _class_index(stripped, class_names)
        if index is not None:
            return index
        if not class_names:
            raise CnnvizError(
                f"this model has no class names, so {stripped!r} cannot be looked up; "
                "give the output index instead, e.g. 'logits:3'"
            )
        raise CnnvizError(f"no class named {stripped!r}; {did_you_mean(stripped, class_names)}")
    raise CnnvizError(
        f"the channel in {text!r} must be a number, e.g. '{layer}:0'"
    )


def _parse_position(text: str, position_text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in position_text.split(",")]
    if not parts or not all(p.isdecimal() and p.isascii() for p in parts):
        raise CnnvizError(
            f"the position in {text!r} must be non-negative numbers separated by commas, "
            "e.g. '@7,3' for row 7, column 3"
        )
    return tuple(int(p) for p in parts)


def _parse_int(value: str, what: str, example: str) -> int:
    try:
        if not value.strip().isascii():
            raise ValueError(value)
        return int(value.strip())
    except ValueError:
        raise CnnvizError(f"{what} must be a whole number, e.g. '{example}'") from None


def _class_index(name: str, class_names) -> int | None:
    if not class_names:
        return None
    lowered = name.strip().lower()
    for index, candidate in enumerate(class_names):
        if str(candidate).lower() == lowered:
            return index
    return None


def _known_channels(ref: LayerRef, class_names) -> int | None:
    """The channel count knowable without running the model, or None."""
    if ref.is_output:
        return len(class_names) if class_names else None
    for attribute in ("out_channels", "out_features", "num_features"):
        value = getattr(ref.module, attribute, None)
        if isinstance(value, int):
            return value
    return None


def _checked(ref: LayerRef, class_names) -> LayerRef:
    if ref.channel is None:
        return ref
    known = _known_channels(ref, class_names)
    if known is not None and ref.channel >= known:
        what = "classes" if ref.is_output else "channels"
        raise CnnvizError(
            f"channel {ref.channel} is out of range for {ref.layer_text}, which has {known} "
            f"{what} (valid: 0-{known - 1})"
        )
    return ref


def _size_text(spatial: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in spatial)


def channel_list(spec, count: int, what: str = "channel", names: Sequence[str] | None = None) -> list[int]:
    """Channel indices from a spec: ``"all"``, ``"0-15"``, ``"3,5,9-11"``, an int or a list of ints;
    with ``names`` (class names), names work too: ``"chelsea,coffee"``.

    Raises:
        CnnvizError: malformed spec, or an index outside ``0 .. count-1`` (the message gives the range).
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(count))
    if isinstance(spec, int):
        spec = [spec]
    if isinstance(spec, str):
        indices: list[int] = []
        for part in spec.split(","):
            part = part.strip()
            by_name = _class_index(part, names)
            if by_name is not None:
                indices.append(by_name)
                continue
            low, dash, high = part.partition("-")
            if not low.isdecimal() or not low.isascii() or (dash and (not high.isdecimal() or not high.isascii())):
                raise CnnvizError(
                    f"{what}s {spec!r} must be 'all', numbers and ranges such as '0-15' or '3,5,9-11'"
                )
            first, last = int(low), int(high) if dash else int(low)
            if last < first:
                raise CnnvizError(f"the range {part!r} runs backwards; write {last}-{first}")
            indices.extend(range(first, last + 1))
    else:
        indices = []
        for item in spec:
            by_name = _class_index(item, names) if isinstance(item, str) else None
            try:
                indices.append(by_name if by_name is not None else int(item))
            except (TypeError, ValueError):
                raise CnnvizError(f"{what}s must be 'all', a range such as '0-15' or a list of numbers") from None
    outside = [i for i in indices if not 0 <= i < count]
    if outside:
        raise CnnvizError(
            f"{what} {outside[0]} is out of range: there are {count} {what}s (valid: 0-{count - 1})"
        )
    if not indices:
        raise CnnvizError(f"no {what}s chosen")
    return list(dict.fromkeys(indices))


def channel_spec(indices: Sequence[int]) -> str:
    """The spec that :func:`channel_list` reads back as ``indices``, runs written as ranges:
    ``[0, 1, 2, 3, 7, 9, 10]`` -> ``"0-3,7,9-10"`` (the order kept)."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in runs)

"""The probe: one context manager that records what chosen modules compute during a forward pass.

Every analysis in cnnviz (activations, statistics, objectives for maximization and Deep Dream,
receptive fields) reads a model through :func:`probe`. It

* hooks only the modules it is asked for and records every call of each, so ``layer1.0.relu#2``
  (the second call of a module that runs twice) works;
* copies what it records when a later in-place operation (``ReLU(inplace=True)``) could overwrite
  it, and never changes what the network itself computes;
* can keep the autograd graph (``keep_graph=True``) so that gradients flow from a recorded
  activation back to the input, without ever touching the parameters' ``.grad``;
* stops the forward pass as soon as the last module it needs has fired (early exit): the rest of
  the network never runs;
* runs the model in eval mode and restores it completely on exit, also after an exception: the
  same training flags, ``requires_grad`` flags and no hooks left behind.

Example::

    >>> import torch, torchvision, cnnviz
    >>> model = torchvision.models.resnet18()
    >>> x = torch.randn(2, 3, 224, 224)
    >>> with cnnviz.probe(model, ["layer1.0.relu", "layer1.0.relu#2"]) as p:
    ...     _ = p.run(x)            # stops right after the second call of layer1.0.relu
    ...     first, second = p["layer1.0.relu"], p["layer1.0.relu#2"]
    >>> first.shape
    torch.Size([2, 64, 56, 56])
    >>> cnnviz.capture(model, x, "layer1.0.conv1:5@7,3")["layer1.0.conv1:5@7,3"].shape
    torch.Size([2])
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from cnnviz.errors import CnnvizError, first_line
from cnnviz.core.guard import model_guard, to_device_of as _to_device_of
from cnnviz.core.model import unwrap
from cnnviz.core.references import LayerRef, Reference, resolve_all


class _EarlyExit(BaseException):
    """Raised from a hook to stop the forward pass; a BaseException so a model's own
    ``except Exception`` cannot swallow it."""


class Probe:
    """A context manager that records the outputs of the modules named by ``layer``.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel`; it is left exactly as it was.
        layer: layer references (strings such as ``"features.10:5"``, module objects); see
            :mod:`cnnviz.core.references`.
        keep_graph: record tensors with their autograd graph, for gradients with respect to the
            input. Parameters are frozen meanwhile, so their ``.grad`` is never written.
        early_exit: stop the forward pass once every referenced call has run (never when
            ``logits`` is referenced).
        store: keep the tensors; ``False`` records only shapes (cheap, used by ``layer_table``).
        copy: keep copies (the default), safe from later in-place operations; ``False`` keeps the
            very tensors the network goes on with, so that gradients with respect to them are the
            network's (their values may then be overwritten by a later in-place operation).
        also: more modules to record when they run before the pass stops, without waiting for
            them (for instance every module, to see all that runs up to a layer).

    Example::

        with cnnviz.probe(model, ["features.3", "features.8:12"]) as p:
            p.run(images)                 # images: N x C x H x W, already normalised
            maps = p["features.3"]        # N x C x H x W
            channel = p["features.8:12"]  # N x H x W

    Inside the ``with`` block, :meth:`run` runs the model on a batch and ``probe[ref]`` returns what
    a reference selected (the whole output ``N x C x H x W``, a channel ``N x H x W``, or a neuron
    ``N``). :meth:`outputs` gives every call of a module. Only passes started by :meth:`run` are
    recorded: calling the model some other way inside the block records nothing.
    """

    def __init__(
        self,
        model,
        layer: Reference | Iterable[Reference] = (),
        *,
        keep_graph: bool = False,
        early_exit: bool = True,
        store: bool = True,
        copy: bool = True,
        also: Iterable[Reference] = (),
    ) -> None:
        self.module, self.class_names = unwrap(model)
        self.copy = copy
        keys = [layer] if isinstance(layer, (str, nn.Module, LayerRef)) else list(layer)
        self._refs: dict = dict(zip(keys, resolve_all(model, keys)))
        watched = [r for r in resolve_all(model, list(also)) if not r.is_output]
        self.keep_graph = keep_graph
        self.early_exit = early_exit
        self.store = store
        self._inner = list(dict.fromkeys(
            [r.layer for r in self._refs.values() if not r.is_output] + [r.layer for r in watched]
        ))
        self._needs_output = any(r.is_output for r in self._refs.values())
        self._needed = {(r.layer, r.call) for r in self._refs.values() if not r.is_output}
        self._outputs: dict[str, list[torch.Tensor | None]] = {}
        self._shapes: dict[str, list[tuple[int, ...] | None]] = {}
        self._input_shapes: dict[str, list[tuple[int, ...] | None]] = {}
        self._seen: set[tuple[str, int]] = set()
        #: (layer, call) of every recorded call, in the order the calls finished
        self.order: list[tuple[str, int]] = []
        self._stack: contextlib.ExitStack | None = None
        self._running = False
        self._has_run = False
        self._inputs: torch.Tensor | None = None

    # -- context -------------------------------------------------------------------------------
    def __enter__(self) -> Probe:
        if self._stack is not None:
            raise CnnvizError("this probe is already active; create a new cnnviz.probe for a nested block")
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(model_guard(self.module, freeze_parameters=self.keep_graph))
            modules = dict(self.module.named_modules())
            for name in self._inner:
                stack.callback(register_hook(modules[name], name, self._hook(name)).remove)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc_info) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    # -- running -------------------------------------------------------------------------------
    def run(self, inputs: torch.Tensor):
        """Run the model on ``inputs`` (``N x C x H x W``), recording the probed modules.

        Inputs move to the model's device. Without ``keep_graph`` the pass runs under
        ``torch.no_grad()``. Returns the model's output, or ``None`` when the pass stopped early.
        A reference that did not fire (a module that did not run, a call number too high) raises
        when it is read with ``probe[ref]``.
        """
        if self._stack is None:
            raise CnnvizError("use the probe as a context manager: with cnnviz.probe(model, layer) as p: p.run(x)")
        if not isinstance(inputs, torch.Tensor):
            raise CnnvizError(f"the input must be a torch.Tensor (N x C x H x W), not {type(inputs).__name__}")
        if not inputs.is_floating_point():
            raise CnnvizError(
                f"the input is a {inputs.dtype} tensor; models take floating-point inputs, already "
                "normalised (e.g. preprocessing.normalize(images.float() / 255))"
            )
        inputs = _to_device_of(inputs, self.module)
        self._outputs, self._shapes, self._input_shapes, self._seen, self.order = {}, {}, {}, set(), []
        self._inputs, self._has_run = inputs, True
        grad_mode = torch.enable_grad() if self.keep_graph else torch.no_grad()
        output = None
        self._running = True
        try:
            with grad_mode:
                output = self.module(inputs)
        except _EarlyExit:
            output = None
        except CnnvizError:
            raise
        except Exception as error:
            raise CnnvizError(
                f"the forward pass of {type(self.module).__name__} failed on an input of shape "
                f"{tuple(inputs.shape)}: {first_line(error)}"
            ) from error
        finally:
            self._running, self._inputs = False, None
        if output is not None:
            main = main_tensor(output)
            self._outputs[""] = [main if self.store else None]
            self._shapes[""] = [tuple(main.shape) if main is not None else None]
        return output

    def __getitem__(self, ref: Reference) -> torch.Tensor:
        """What ``ref`` selects from the last run (``ref`` as given to the probe, or any other
        reference to a probed module)."""
        resolved = self._refs.get(ref) if _hashable(ref) else None
        if resolved is None:
            resolved = resolve_all(self.module, [ref], self.class_names)[0]
        self.check(resolved)
        tensor = self._outputs[resolved.layer][resolved.call - 1]
        if tensor is None:
            raise CnnvizError("this probe records shapes only (store=False); create it with store=True")
        return resolved.select(tensor)

    def outputs(self, layer: str) -> list[torch.Tensor]:
        """Every recorded call of the module ``layer`` (``"logits"`` for the model's output)."""
        resolved = resolve_all(self.module, [layer], self.class_names)[0]
        return list(self._outputs.get(resolved.layer, []))

    @property
    def shapes(self) -> dict[str, list[tuple[int, ...] | None]]:
        """Per probed module (``""`` for the model's output): the output shape of each call, or
        ``None`` for a call whose output was not a tensor."""
        return {name: list(shapes) for name, shapes in self._shapes.items()}

    @property
    def input_shapes(self) -> dict[str, list[tuple[int, ...] | None]]:
        """Per probed module: the shape of the first input of each call (``None`` when it was not
        a tensor)."""
        return {name: list(shapes) for name, shapes in self._input_shapes.items()}

    @property
    def references(self) -> Mapping:
        """The references given, each resolved to a :class:`cnnviz.LayerRef`."""
        return dict(self._refs)

    # -- internals -----------------------------------------------------------------------------
    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            if not self._running:  # the model run by someone else (another probe, the user)
                return
            outputs = self._outputs.setdefault(name, [])
            shapes = self._shapes.setdefault(name, [])
            first = inputs[0] if isinstance(inputs, tuple) and inputs else inputs
            self._input_shapes.setdefault(name, []).append(tuple(first.shape) if isinstance(first, torch.Tensor) else None)
            call = len(outputs) + 1
            self._seen.add((name, call))
            self.order.append((name, call))
            finishing = (
                self._running and self.early_exit and not self._needs_output and self._needed <= self._seen
            )
            if isinstance(output, torch.Tensor):
                shapes.append(tuple(output.shape))
                # A later in-place op would overwrite what we keep, unless nothing runs after us;
                # even then, an output that is the caller's input or the model's own parameter or
                # buffer is copied. clone() keeps the autograd graph when there is one.
                if not self.store:
                    kept = None
                elif not self.copy or (finishing and not self._owned_elsewhere(output)):
                    kept = output
                else:
                    kept = output.clone()
                outputs.append(kept)
            else:
                shapes.append(None)
                outputs.append(None)
            if finishing:
                raise _EarlyExit

        return hook

    def _owned_elsewhere(self, output: torch.Tensor) -> bool:
        """Whether ``output`` shares memory with the input or a parameter or buffer of the model."""
        storage = output.untyped_storage().data_ptr()
        tensors = [self._inputs, *self.module.parameters(), *self.module.buffers()]
        return any(t is not None and t.untyped_storage().data_ptr() == storage for t in tensors)

    def check(self, ref: LayerRef) -> None:
        """Raise :class:`cnnviz.CnnvizError` unless ``ref`` fired in the last run with a tensor
        whose shape fits its channel and position."""
        if not self._has_run:
            raise CnnvizError("nothing recorded yet: call p.run(inputs) before reading p[ref]")
        if ref.layer and ref.layer not in self._inner:
            raise CnnvizError(
                f"{ref.layer_text} was not probed; add it to the references given to cnnviz.probe"
            )
        calls = self._shapes.get(ref.layer, [])
        if not calls:
            if ref.is_output:
                raise CnnvizError("the model's output was not recorded; run the probe with p.run(x)")
            raise CnnvizError(
                f"{ref.layer} did not run during the forward pass (is it used only in training "
                "mode, or only by another branch?); pick a layer listed by 'cnnviz layers'"
            )
        if ref.call > len(calls):
            raise CnnvizError(
                f"{ref.layer or 'logits'} runs {len(calls)} time(s) per forward pass, so it has no "
                f"call #{ref.call} (valid: #1-#{len(calls)})"
            )
        if calls[ref.call - 1] is None:
            raise CnnvizError(
                f"{ref.layer_text} does not return a tensor; pick one of its submodules ('cnnviz layers' lists them)"
            )
        ref.check(calls[ref.call - 1])


def capture(
    model,
    inputs: torch.Tensor,
    layer: Reference | Iterable[Reference],
    *,
    keep_graph: bool = False,
) -> dict:
    """Run ``model`` on ``inputs`` once and return what each reference selects.

    Args:
        model: an ``nn.Module`` or :class:`cnnviz.LoadedModel`.
        inputs: ``N x C x H x W``, already normalised for the model.
        layer: one reference, or several.

    Returns:
        A dict from each reference (as given) to its tensor: ``N x C x H x W`` for a layer,
        ``N x H x W`` for a channel, ``N`` for a neuron.

    Example::

        maps = cnnviz.capture(model, images, ["features.3", "features.8:12"])
        maps["features.8:12"].shape     # N x H x W
    """
    with probe(model, layer, keep_graph=keep_graph) as recorder:
        recorder.run(inputs)
        return {key: recorder[key] for key in recorder.references}


def register_hook(module: nn.Module, name: str, hook):
    """``module.register_forward_hook(hook)``, or one line saying that a TorchScript model's layer
    (``name``) cannot be hooked."""
    if isinstance(module, torch.jit.ScriptModule):  # hooks on TorchScript modules never fire
        raise CnnvizError(
            f"{name} belongs to a TorchScript model, whose layers cannot be hooked; only "
            "'logits' can be read. Load the original nn.Module (e.g. spec='package.module:factory' "
            "with weights=...) to look inside"
        )
    return module.register_forward_hook(hook)


def every_output_shape(model, layers: Iterable[Reference], example: torch.Tensor) -> dict[str, list[tuple[int, ...] | None]]:
    """The output shapes of every module that runs in one pass of ``example`` up to ``layers`` (each
    call's, nothing stored, no gradients). Raises what the probe or the model raises."""
    module, _ = unwrap(model)
    names = [name for name, _ in module.named_modules() if name]
    with torch.no_grad(), Probe(model, list(layers), store=False, also=names) as recorder:
        recorder.run(example)
        return recorder.shapes


def failure_at(model, layers: Iterable[Reference], channels: int, size: tuple[int, int]) -> str | None:
    """Why the network cannot reach every one of ``layers`` from an input of ``size`` (a zero
    image, batch 1; the pass stops at the last of them), or ``None`` when it can."""
    try:
        with Probe(model, list(layers), store=False) as recorder:
            recorder.run(torch.zeros(1, channels, *size))
            for ref in recorder.references.values():
                recorder.check(ref)
        return None
    except CnnvizError as error:
        return str(error)


@dataclass(frozen=True)
class SizeCheck:
    """Whether an input size reaches some layers (:func:`check_size`).

    Attributes:
        runs: an input of the size reaches them.
        why: why it does not (``None`` when it does).
        input_size_runs: the model's own input size reaches them.
        fixed: the model's input size when that is the only size it takes (a flatten into a
            ``Linear``: its size runs and one 32 px larger does not) and the size asked does not
            run; ``None`` otherwise.
    """

    runs: bool
    why: str | None = None
    input_size_runs: bool = False
    fixed: tuple[int, int] | None = None


def check_size(model, layers: Iterable[Reference], channels: int, size: tuple[int, int],
               input_size: tuple[int, int]) -> SizeCheck:
    """Whether ``size`` reaches ``layers`` and, when not, whether the model takes its own input
    size only (see :class:`SizeCheck`): the one decision behind rendering a fixed-size model at
    its size (maximize crops each transformed canvas back; Deep Dream feeds tiles of that size)."""
    layers = list(layers)
    why = failure_at(model, layers, channels, size)
    if why is None:
        return SizeCheck(True)
    if tuple(size) == tuple(input_size) or failure_at(model, layers, channels, input_size) is not None:
        return SizeCheck(False, why)
    larger = (input_size[0] + 32, input_size[1] + 32)
    fixed = tuple(input_size) if failure_at(model, layers, channels, larger) is not None else None
    return SizeCheck(False, why, True, fixed)


def main_tensor(output) -> torch.Tensor | None:
    """The model's main output: itself, the first tensor of a tuple, or ``logits``/``out`` of a dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        for key in ("logits", "out", "output"):
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    return None


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


probe = Probe  # the entry point, named like a function: ``with cnnviz.probe(model, layer) as p``


class ChannelsLast:
    """Runs a probe on ``N x C x H x W`` inputs in channels-last memory format, where CPU
    convolutions are faster (MobileNetV2's depthwise ones several times: docs/benchmarks.md), the
    values the same within float rounding. A model that refuses the format (a ``view`` of a
    permuted tensor) gets contiguous inputs from then on."""

    def __init__(self) -> None:
        self.fast = True

    def run(self, recorder, inputs: torch.Tensor, before=None):
        if self.fast and inputs.dim() == 4:
            try:
                return recorder.run(inputs.contiguous(memory_format=torch.channels_last))
            except CnnvizError:
                self.fast = False
            if before is not None:
                before()
        return recorder.run(inputs.contiguous())

"""Principle 1 and the probe on real torchvision architectures (random weights, no download).

For each architecture: the model is untouched after ``layer_table``, after capturing every layer,
and after calls that raise deep inside the forward pass; and every captured activation of every
leaf module (each call of a reused module included), and of torchvision's blocks, equals an
independent reference computed by torch.fx on a copy whose in-place operations are all turned
off, so no later in-place ReLU can have altered the reference.
"""
from __future__ import annotations

import copy
import math
import operator
import re

import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz import CnnvizError

ARCHITECTURES = [
    "alexnet", "vgg11_bn", "resnet18", "resnet50", "densenet121", "googlenet", "inception_v3",
    "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1",
    "shufflenet_v2_x1_0", "regnet_y_400mf", "convnext_tiny",
]
SIZE = 96  # small enough to be quick, large enough for every architecture (inception needs 75)


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {"init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, **kwargs)
    # Non-trivial running statistics, a mix of training flags and a frozen parameter: all of it
    # must come back exactly.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    model.train()
    next(model.children()).eval()
    next(model.parameters()).requires_grad_(False)
    return model


def without_in_place(model: torch.nn.Module) -> torch.nn.Module:
    """An eval copy whose modules do nothing in place."""
    reference = copy.deepcopy(model).eval()
    for module in reference.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    return reference


def disable_in_place_calls(graph: torch.fx.Graph) -> None:
    """Functional in-place calls in a traced graph (F.relu(x, inplace=True), x += y) made pure."""
    for node in graph.nodes:
        if node.kwargs.get("inplace"):
            node.kwargs = {**node.kwargs, "inplace": False}
        if node.op == "call_function" and node.target is operator.iadd:
            node.target = operator.add


class LeafTracer(torch.fx.Tracer):
    """Traces through every module that has children; a module without children is one node."""

    def is_leaf_module(self, module, qualified_name):
        return not list(module.children())


class LeafRecorder(torch.fx.Interpreter):
    """Runs a plainly traced graph and keeps the output of every call of every torch.nn leaf."""

    def __init__(self, module):
        super().__init__(module)
        self.calls: dict[tuple[str, int], torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def call_module(self, target, args, kwargs):
        output = super().call_module(target, args, kwargs)
        self.counts[target] = self.counts.get(target, 0) + 1
        self.calls[(target, self.counts[target])] = output
        return output


def leaf_reference(model: torch.nn.Module, x: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
    """(module name, call) -> output of every call of every module without children, by
    torch.fx interpretation."""
    reference = without_in_place(model)
    tracer = LeafTracer(autowrap_modules=(math, torchvision.ops))
    graph = tracer.trace(reference)
    disable_in_place_calls(graph)
    recorder = LeafRecorder(torch.fx.GraphModule(reference, graph))
    with torch.no_grad():
        recorder.run(x)
    return recorder.calls


def block_reference(model: torch.nn.Module, x: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
    """(module name, call) -> activation, from torchvision's FX feature extractor, which also
    returns blocks such as Conv2dNormActivation as single nodes."""
    reference = without_in_place(model)
    module_names = {name for name, _ in reference.named_modules() if name}
    _, nodes = get_graph_node_names(reference)
    wanted = {}
    for node in nodes:
        if node in module_names:
            wanted[node] = (node, 1)
            continue
        match = re.fullmatch(r"(.+)_(\d+)", node)
        if match and match.group(1) in module_names:
            wanted[node] = (match.group(1), int(match.group(2)) + 1)
    extractor = create_feature_extractor(
        reference, train_return_nodes=list(wanted), eval_return_nodes=list(wanted)
    ).eval()
    disable_in_place_calls(extractor.graph)
    extractor.recompile()
    with torch.no_grad():
        outputs = extractor(x)
    return {wanted[node]: value for node, value in outputs.items() if isinstance(value, torch.Tensor)}


class FailAtConvolution(torch.overrides.TorchFunctionMode):
    """Makes the k-th convolution of a forward pass raise: a failure deep inside the model."""

    def __init__(self, k: int):
        super().__init__()
        self.k, self.seen = k, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.conv2d:
            self.seen += 1
            if self.seen == self.k:
                raise RuntimeError("simulated failure deep inside the forward pass")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing")
def test_untouched_and_equal_to_fx(name):
    model = build(name)
    before = fingerprint(model)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))

    table = cnnviz.layer_table(model, input_size=SIZE)
    assert_untouched(model, before)
    assert table[-1].name == "logits" and table[-1].output_shape == [(1000,)]

    # Capture every call of every module in one probe.
    references = [row.name if call == 1 else f"{row.name}#{call}" for row in table for call in range(1, row.calls + 1)]
    with cnnviz.probe(model, references) as recorder:
        recorder.run(x)
        captured = {ref: recorder[ref] for ref in references}
    assert_untouched(model, before)

    expected = {**block_reference(model, x), **leaf_reference(model, x)}
    compared = set()
    for (layer, call), value in expected.items():
        ref = layer if call == 1 else f"{layer}#{call}"
        if ref in captured:
            torch.testing.assert_close(captured[ref], value, rtol=1e-5, atol=1e-5, msg=f"{name} {ref}")
            compared.add(ref)
    modules = dict(model.named_modules())
    leaves = {ref for ref in captured if ref != "logits" and not list(modules[ref.split("#")[0]].children())}
    assert leaves <= compared, f"{name}: leaf calls not compared: {sorted(leaves - compared)[:5]}"
    torch.testing.assert_close(captured["logits"], expected_logits(model, x), rtol=1e-5, atol=1e-5)

    # Calls that raise deep inside the forward pass, after hooks have fired and copies were made,
    # with and without the autograd graph, leave the model untouched too.
    convolutions = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    for keep_graph in (False, True):
        with FailAtConvolution(k=max(2, convolutions // 2)), pytest.raises(CnnvizError, match="simulated failure"):
            with cnnviz.probe(model, references, keep_graph=keep_graph) as recorder:
                recorder.run(x.clone().requires_grad_(keep_graph))
        assert_untouched(model, before)
    with pytest.raises(CnnvizError):
        cnnviz.capture(model, torch.randn(1, 5, SIZE, SIZE), [references[-2]])
    assert_untouched(model, before)


def expected_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        return reference(x)


def test_in_place_relu_targets_keep_their_negative_values():
    # vgg11_bn: BatchNorm outputs are overwritten by ReLU(inplace=True) right after them.
    model = build("vgg11_bn")
    x = torch.randn(1, 3, 64, 64)
    bn = cnnviz.capture(model, x, "features.1")["features.1"]
    assert (bn < 0).sum() > 0.2 * bn.numel()


def test_reused_module_calls_on_resnet50():
    # Bottleneck's shared relu runs three times per block, each with a different output.
    model = build("resnet50")
    table = cnnviz.layer_table(model, input_size=64)
    row = table["layer1.0.relu"]
    assert row.calls == 3 and row.output_shape == [(64, 16, 16), (64, 16, 16), (256, 16, 16)]
    got = cnnviz.capture(model, torch.randn(1, 3, 64, 64), ["layer1.0.relu#2", "layer1.0.relu#3"])
    assert got["layer1.0.relu#2"].shape == (1, 64, 16, 16)
    assert got["layer1.0.relu#3"].shape == (1, 256, 16, 16)

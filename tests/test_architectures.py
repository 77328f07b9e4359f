"""Principle 1 and the probe on real torchvision architectures (random weights, no download).

For each architecture: the model is untouched after ``layer_table``, after capturing every layer,
and after a call that raises; and every captured activation (each call of a reused module
included) equals torchvision's FX feature extractor run on a copy whose in-place ops are turned
off, so no later in-place ReLU can have altered the reference.
"""
from __future__ import annotations

import copy
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


def fx_reference(model: torch.nn.Module, x: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
    """(module name, call) -> activation, from FX on an eval copy with in-place ops disabled."""
    reference = copy.deepcopy(model).eval()
    for module in reference.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
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
    # Functional in-place calls (DenseNet's F.relu(x, inplace=True)) are in the traced graph too.
    for node in extractor.graph.nodes:
        if node.kwargs.get("inplace"):
            node.kwargs = {**node.kwargs, "inplace": False}
    extractor.recompile()
    with torch.no_grad():
        outputs = extractor(x)
    return {wanted[node]: value for node, value in outputs.items() if isinstance(value, torch.Tensor)}


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

    expected = fx_reference(model, x)
    compared = 0
    for (layer, call), value in expected.items():
        ref = layer if call == 1 else f"{layer}#{call}"
        if ref in captured:
            torch.testing.assert_close(captured[ref], value, rtol=1e-5, atol=1e-5, msg=f"{name} {ref}")
            compared += 1
    assert compared >= 0.5 * len(expected) and compared >= 10, f"only {compared} layers compared"
    torch.testing.assert_close(captured["logits"], expected_logits(model, x), rtol=1e-5, atol=1e-5)

    # A call that raises, mid-forward, leaves the model untouched too.
    with pytest.raises(CnnvizError):
        cnnviz.capture(model, torch.randn(1, 5, SIZE, SIZE), references[-2])
    assert_untouched(model, before)


def expected_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        return reference(x)


def test_in_place_relu_targets_keep_their_negative_values():
    # vgg11_bn: BatchNorm outputs are overwritten by ReLU(inplace=True) right after them.
    model = build("vgg11_bn")
    x = torch.randn(1, 3, 64, 64)
    bn = cnnviz.capture(model, x, "features.1")
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

"""On a CUDA device, when this machine has one: the analyses give what they give on the CPU, the
model stays on its device and unchanged, and what a call allocates on the device is freed.

Skipped without CUDA. ``CNNVIZ_TEST_DEVICE=cpu`` runs the same checks with the CPU standing in for
the device (the model copy on the CPU too), which checks these tests' own logic on any machine.
"""
from __future__ import annotations

import copy
import json
import os

import pytest
import torch
import torchvision
from click.testing import CliRunner
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz.cli.main import main

DEVICE = os.environ.get("CNNVIZ_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no CUDA device here (CNNVIZ_TEST_DEVICE=cpu dry-runs these checks)")

METHODS = ("gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "guided_backprop", "gradcam",
           "guided_gradcam", "occlusion", "gradcam_plus_plus", "xgradcam", "layercam", "scorecam", "eigencam")


def allocated() -> int:
    return torch.cuda.memory_allocated() if torch.device(DEVICE).type == "cuda" else 0


@pytest.fixture(scope="module")
def models():
    """resnet18 with random weights (seed 0) on the CPU, and a copy on the device."""
    torch.manual_seed(0)
    cpu = torchvision.models.resnet18(weights=None).eval()
    return cpu, copy.deepcopy(cpu).to(DEVICE)


@pytest.fixture(scope="module")
def pictures():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def close(a: torch.Tensor, b: torch.Tensor, share: float = 2e-3) -> None:
    """Equal within ``share`` of the larger magnitude (cuDNN's kernels sum in other orders)."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    assert a.shape == b.shape
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-12)
    assert float((a - b).abs().max()) <= share * scale, (float((a - b).abs().max()), scale)


def test_every_attribution_method_and_faithfulness_as_on_the_cpu(models, pictures):
    cpu, device = models
    before, start = fingerprint(device), allocated()
    settings = cnnviz.FaithfulnessSettings(steps=4, percentiles=(50,), road=False)
    options = dict(methods=list(METHODS), layer="layer4", steps=8, samples=4, faithfulness=settings)
    on_cpu = cnnviz.attributions(cpu, pictures, [3, 7], **options)
    on_device = cnnviz.attributions(device, pictures, [3, 7], **options)
    assert_untouched(device, before)
    assert next(device.parameters()).device.type == torch.device(DEVICE).type
    assert list(on_device) == list(METHODS) and not on_device.not_applicable
    for method in METHODS:
        got = on_device[method].attribution
        assert got.device.type == "cpu" and bool(torch.isfinite(got).all())  # results come back to the CPU
        close(got, on_cpu[method].attribution, 2e-2 if method == "smoothgrad" else 2e-3)
    for method in on_cpu.faithfulness.methods:
        for metric in ("deletion_auc", "insertion_auc", "average_drop"):
            close(on_device.faithfulness.per_image[method][metric], on_cpu.faithfulness.per_image[method][metric], 1e-2)
    del on_device
    assert allocated() <= start + 1024**2  # at most 1 MiB left behind (the results live on the CPU)


def test_concepts_and_statistics_as_on_the_cpu(models, pictures):
    cpu, device = models
    before = fingerprint(device)
    images = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    on_cpu = cnnviz.concepts(cpu, images, "layer3", k=3, maps=1, exemplars=2)
    on_device = cnnviz.concepts(device, images, "layer3", k=3, maps=1, exemplars=2)
    close(on_device.directions, on_cpu.directions, 1e-2)
    close(on_device.image_weights, on_cpu.image_weights, 1e-2)
    assert abs(on_device.error - on_cpu.error) < 1e-3
    stats_cpu = cnnviz.statistics(cpu, images, ["layer2", "layer4"], exemplars=2)
    stats_device = cnnviz.statistics(device, images, ["layer2", "layer4"], exemplars=2)
    for layer in ("layer2", "layer4"):
        close(torch.as_tensor(stats_device[layer].mean), torch.as_tensor(stats_cpu[layer].mean))
    assert_untouched(device, before)


def test_the_command_line_on_the_device(tmp_path):
    result = CliRunner().invoke(main, ["saliency", "-m", "torchvision:resnet18", "--device", DEVICE, "-i", "sample:chelsea",
                                       "-M", "gradcam", "-M", "layercam", "--faithfulness", "--faithfulness-steps", "4",
                                       "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "faithfulness.json").read_text())
    assert {"gradcam", "layercam", "random"} <= set(written)

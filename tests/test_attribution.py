"""Attributions: parity with captum, correct guided backprop on every kind of ReLU, known answers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from captum.attr import Deconvolution, GuidedBackprop, LayerAttribution, LayerGradCam, Saliency
from click.testing import CliRunner
from conftest import FunctionalNet
from torch import nn
from torch.nn import functional as F
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz import CnnvizError
from cnnviz.cli.main import main
from cnnviz.models.zoo import patterns
from cnnviz.core.output import RECORD


@pytest.fixture(scope="module")
def photos():
    return cnnviz.load_model("builtin:photos")


@pytest.fixture(scope="module")
def batch(photos):
    return torch.cat([cnnviz.inputs.prepare(cnnviz.samples.image(n), photos.preprocessing) for n in ("chelsea", "coffee")])


def test_gradient_and_gradcam_equal_captum(photos, batch):
    before = fingerprint(photos.module)
    result = cnnviz.attributions(photos, batch, target=[3, 4], methods=["gradient", "gradcam"], layer="features.20")
    reference = Saliency(photos.module).attribute(batch.clone().requires_grad_(True), target=[3, 4], abs=False)
    torch.testing.assert_close(result["gradient"].attribution, reference, rtol=0, atol=0)
    layer = photos.module.features[20]
    cam = LayerGradCam(photos.module, layer).attribute(batch.clone().requires_grad_(True), target=[3, 4], relu_attributions=True)
    torch.testing.assert_close(result["gradcam"].layer_attribution, cam, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(result["gradcam"].attribution, LayerAttribution.interpolate(cam, (64, 64), "bilinear"),
                               rtol=1e-6, atol=1e-9)
    assert result["gradcam"].layer == "features.20" and result["gradcam"].attribution.shape == (2, 1, 64, 64)
    assert_untouched(photos.module, before)


def test_hand_computed_gradient_of_one_neuron():
    # unit = relu(w . x + b) at row 1, column 2 of channel 0: its input gradient is w there, zero elsewhere
    conv = nn.Conv2d(2, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[2.0]], [[-3.0]]]]))
        conv.bias.fill_(10.0)  # active, so the ReLU passes the gradient
    model = nn.Sequential(conv, nn.ReLU())
    x = torch.ones(1, 2, 3, 3)
    result = cnnviz.attributions(model, x, target="1:0@1,2", methods=["gradient", "gradient_x_input"])
    expected = torch.zeros(1, 2, 3, 3)
    expected[0, 0, 1, 2], expected[0, 1, 1, 2] = 2.0, -3.0
    assert torch.equal(result["gradient"].attribution, expected)
    assert torch.equal(result["gradient_x_input"].attribution, expected * x)
    # a channel target is the spatial mean: each position gets w / 9
    channel = cnnviz.saliency(model, x, target="1:0", method="gradient")
    torch.testing.assert_close(channel.attribution[0, 0], torch.full((3, 3), 2.0 / 9))


def test_guided_backprop_and_deconvolution_equal_captum_where_captum_is_right():
    # resnet18: in-place nn.ReLU modules, one of them reused twice per block
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    before = fingerprint(model)
    ours = cnnviz.attributions(model, x, target=[1, 7], methods=["guided_backprop", "deconvolution", "gradient"])
    torch.testing.assert_close(ours["guided_backprop"].attribution,
                               GuidedBackprop(model).attribute(x.clone().requires_grad_(True), target=[1, 7]))
    torch.testing.assert_close(ours["deconvolution"].attribution,
                               Deconvolution(model).attribute(x.clone().requires_grad_(True), target=[1, 7]))
    assert not torch.allclose(ours["guided_backprop"].attribution, ours["gradient"].attribution)
    assert_untouched(model, before)


def test_guided_backprop_on_densenet_differs_from_the_gradient():
    torch.manual_seed(0)
    model = torchvision.models.densenet121().eval()  # nn.ReLU modules and a functional in-place F.relu
    x = torch.randn(1, 3, 64, 64)
    result = cnnviz.attributions(model, x, target=5, methods=["guided_backprop", "gradient"])
    guided, plain = result["guided_backprop"].attribution, result["gradient"].attribution
    assert not torch.allclose(guided, plain, rtol=1e-3, atol=1e-6)


def test_functional_relus_get_the_guided_rule_too():
    torch.manual_seed(0)
    functional = FunctionalNet().eval()

    class ModuleNet(nn.Module):  # the same network with nn.ReLU modules, where captum is right
        def __init__(self, source):
            super().__init__()
            self.conv1, self.conv2, self.relu1, self.relu2 = source.conv1, source.conv2, nn.ReLU(), nn.ReLU()

        def forward(self, x):
            return self.relu2(self.conv2(self.relu1(self.conv1(x)))).mean(dim=(2, 3))

    x = torch.randn(3, 3, 12, 12)
    ours = cnnviz.attributions(functional, x, target=1, methods=["guided_backprop", "gradient"])
    reference = GuidedBackprop(ModuleNet(functional)).attribute(x.clone().requires_grad_(True), target=1)
    torch.testing.assert_close(ours["guided_backprop"].attribution, reference)
    # captum alone on the functional model silently returns the plain gradient
    captum_alone = GuidedBackprop(functional).attribute(x.clone().requires_grad_(True), target=1)
    torch.testing.assert_close(captum_alone, ours["gradient"].attribution)
    assert not torch.allclose(reference, captum_alone)


def test_no_rectifier_is_refused_rather_than_a_plain_gradient():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(cnnviz.NotApplicable, match="no pointwise activation .* runs before the target.*method 'gradient'"):
        cnnviz.saliency(model, torch.randn(1, 3, 8, 8), target=0, method="guided_backprop")
    # beside other methods it is skipped, with the reason, and the others are computed
    results = cnnviz.attributions(model, torch.randn(1, 3, 8, 8), target=0, methods=["gradient", "deconvolution"])
    assert list(results) == ["gradient"] and "no pointwise activation" in results.not_applicable["deconvolution"]


def test_gradcam_of_a_blob_class_peaks_inside_the_blob():
    model = cnnviz.load_model("builtin:patterns")
    hits = 0
    for colour, channel in (("red_blob", 0), ("green_blob", 1), ("blue_blob", 2)):
        images, _ = patterns.generate(6, seed=11, classes=[colour])
        # where the blob is: the pixel most of its colour, against the others
        purity = images[:, channel] - images.mean(dim=1)
        result = cnnviz.saliency(model, model.preprocessing.normalize(images), target=colour, method="gradcam")
        assert result.layer is not None
        for index in range(len(images)):
            blob = divmod(int(purity[index].argmax()), 48)
            peak = divmod(int(result.attribution[index, 0].argmax()), 48)
            hits += (abs(blob[0] - peak[0]) ** 2 + abs(blob[1] - peak[1]) ** 2) ** 0.5 <= 8
    assert hits >= 16, f"Grad-CAM peaked on the blob in only {hits} of 18 images"


def test_integrated_gradients_add_up_to_the_score_difference(photos, batch):
    result = cnnviz.saliency(photos, batch, target=[3, 4], method="integrated_gradients", steps=64, batch_size=8)
    logits = cnnviz.capture(photos, torch.cat([batch, torch.zeros_like(batch[:1])]), ["logits"])["logits"]
    differences = torch.stack([logits[0, 3] - logits[2, 3], logits[1, 4] - logits[2, 4]])
    totals = result.attribution.flatten(1).sum(dim=1)
    torch.testing.assert_close(totals, differences, rtol=0.05, atol=0.05)


def test_per_image_targets_and_unit_targets(photos, batch):
    together = cnnviz.saliency(photos, batch, target=["chelsea", "features.19:7"], method="gradient")
    assert [str(t) for t in together.targets] == ["logits:3 (chelsea)", "features.19:7"]
    assert together.targets[0].class_name == "chelsea" and together.targets[1].channel == 7
    first = cnnviz.saliency(photos, batch[:1], target=3, method="gradient")
    second = cnnviz.saliency(photos, batch[1:], target="features.19:7", method="gradient")
    torch.testing.assert_close(together.attribution, torch.cat([first.attribution, second.attribution]))
    default = cnnviz.saliency(photos, "sample:chelsea", method="gradient")
    assert [str(t) for t in default.targets] == ["logits:3 (chelsea)"] and default.sources == ["sample:chelsea"]


def test_every_method_runs_and_leaves_the_model_untouched(photos, batch):
    before = fingerprint(photos.module)
    results = cnnviz.attributions(photos, batch, methods=list(cnnviz.METHODS), steps=8, samples=4)
    for name, result in results.items():
        expected_channels = 1 if name in cnnviz.analyses.attribution_settings.CAM_METHODS else 3
        assert result.attribution.shape == (2, expected_channels, 64, 64), name
        assert torch.isfinite(result.attribution).all() and result.attribution.abs().sum() > 0, name
    assert_untouched(photos.module, before)


def test_occlusion_smoothgrad_and_integrated_gradients_equal_captum_on_the_plain_model(photos, batch):
    from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion

    ours = cnnviz.attributions(photos, batch[:1], target=3, methods=["occlusion", "smoothgrad", "integrated_gradients"],
                           steps=16, samples=4, window=8, stride=4)
    x = batch[:1].clone()
    occlusion = Occlusion(photos.module).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=0.0, target=3)
    torch.testing.assert_close(ours["occlusion"].attribution, occlusion, rtol=1e-4, atol=1e-5)
    ig = IntegratedGradients(photos.module).attribute(x.clone().requires_grad_(True), baselines=torch.zeros_like(x),
                                                      target=3, n_steps=16)
    torch.testing.assert_close(ours["integrated_gradients"].attribution, ig, rtol=1e-4, atol=1e-6)
    spread = 0.15 * float(x.max() - x.min())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        smooth = NoiseTunnel(Saliency(photos.module)).attribute(x.clone().requires_grad_(True), nt_type="smoothgrad",
                                                                nt_samples=4, stdevs=spread, target=3, abs=False)
    torch.testing.assert_close(ours["smoothgrad"].attribution, smooth, rtol=1e-4, atol=1e-7)


def test_each_image_is_attributed_as_if_alone(photos, batch):
    together = cnnviz.attributions(photos, batch, target=[3, 4], methods=["smoothgrad", "gradient"], samples=4, batch_size=1)
    alone = cnnviz.attributions(photos, batch[1:], target=4, methods=["smoothgrad", "gradient"], samples=4)
    for name in ("smoothgrad", "gradient"):
        torch.testing.assert_close(together[name].attribution[1:], alone[name].attribution)


def test_batches_are_bounded_by_batch_size(photos):
    sizes = []
    handle_model = photos.module
    recorder = []

    class Watch(nn.Module):
        def forward(self, x):
            recorder.append(len(x))
            return x

    watched = nn.Sequential(Watch(), handle_model)
    inputs = torch.zeros(10, 3, 64, 64)
    cnnviz.attributions(watched, inputs, target=1, methods=["gradient", "integrated_gradients", "occlusion"],
                    steps=8, batch_size=4, window=16)
    sizes = set(recorder)
    assert max(sizes) <= 4, sizes


def test_gradcam_layer_is_on_the_targets_path():
    torch.manual_seed(0)
    model = torchvision.models.googlenet(init_weights=True, aux_logits=False).eval()
    x = torch.randn(1, 3, 96, 96)
    # the first channels of inception4a come from its first branch: the branches that run after it
    # are not on their path
    branch = cnnviz.capture(model, x, ["inception4a.branch1"])["inception4a.branch1"]
    alive = int((branch[0].flatten(1).amax(1) > 0).nonzero()[0])
    result = cnnviz.saliency(model, x, target=f"inception4a:{alive}", method="gradcam")
    assert not result.layer.startswith(("inception4a.branch2", "inception4a.branch3", "inception4a.branch4"))
    assert result.attribution.abs().sum() > 0
    with pytest.raises(CnnvizError, match="does not depend on inception4a.branch4"):
        cnnviz.saliency(model, x, target=f"inception4a:{alive}", method="gradcam", layer="inception4a.branch4")


def test_a_model_without_an_input_gradient_gets_the_methods_that_need_none():
    class Detached(nn.Module):  # the whole network under no_grad (a frozen feature extractor)
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)

        def forward(self, x):
            with torch.no_grad():
                return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    model = Detached().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for method in ("gradient", "integrated_gradients", "guided_backprop", "smoothgrad"):
        with pytest.raises(cnnviz.NotApplicable, match="no gradient with respect to the input"):
            cnnviz.saliency(model, x, 0, method=method, samples=2, steps=2)
    results = cnnviz.attributions(model, x, 0, methods=["gradient", "occlusion"], window=4)
    assert list(results) == ["occlusion"] and "no gradient" in results.not_applicable["gradient"]
    assert results["occlusion"].attribution.abs().sum() > 0


def test_in_place_relus_whose_result_is_not_used_keep_the_forward_pass():
    class Unassigned(nn.Module):  # rectifies in place and goes on with the same tensor
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)

        def forward(self, x):
            x = self.conv1(x)
            x.relu_()
            y = self.conv2(x)
            F.relu(y, inplace=True)
            return y.mean(dim=(2, 3))

    class Modules(nn.Module):
        def __init__(self, source):
            super().__init__()
            self.conv1, self.conv2, self.relu1, self.relu2 = source.conv1, source.conv2, nn.ReLU(), nn.ReLU()

        def forward(self, x):
            return self.relu2(self.conv2(self.relu1(self.conv1(x)))).mean(dim=(2, 3))

    torch.manual_seed(0)
    model = Unassigned().eval()
    x = torch.randn(2, 3, 10, 10)
    ours = cnnviz.attributions(model, x, target=1, methods=["guided_backprop", "deconvolution"])
    reference = Modules(model)
    torch.testing.assert_close(ours["guided_backprop"].attribution,
                               GuidedBackprop(reference).attribute(x.clone().requires_grad_(True), target=1))
    torch.testing.assert_close(ours["deconvolution"].attribution,
                               Deconvolution(reference).attribute(x.clone().requires_grad_(True), target=1))


def test_figures_show_rgb_inputs_and_scales_centred_on_zero(photos, batch):
    result = cnnviz.attributions(photos, batch, target=[3, 4], methods=["gradient", "gradcam"])
    figure = cnnviz.plots.attribution(result["gradient"], index=1)
    shown = figure.axes[0].images[0].get_array()
    assert shown.shape == (64, 64, 3) and np.allclose(shown, result["gradient"].images[1].permute(1, 2, 0).numpy())
    low, high = figure.axes[1].images[0].get_clim()
    assert low == pytest.approx(-high) and high == pytest.approx(float(result["gradient"].signed_map()[1].abs().max()))
    cam_figure = cnnviz.plots.attribution(result["gradcam"], index=0)
    low, high = cam_figure.axes[1].images[0].get_clim()
    assert low == 0 and high == pytest.approx(float(result["gradcam"].attribution[0].max()))  # non-negative: from zero
    colour_bars = [axis for axis in figure.axes if axis.get_label() == "<colorbar>"]
    assert len(colour_bars) == 2


def test_sanity_check_attributions_change_with_the_weights(photos):
    before = fingerprint(photos.module)
    check = cnnviz.sanity_check(photos, ["sample:chelsea", "sample:coffee"], method="gradient", stages=4)
    assert len(check.correlations) == 4 and check.maps.shape == (5, 2, 64, 64)
    assert check.layers[-1] == "features.0"  # top down, down to the input
    assert check.correlations[-1] < 0.5 and check.correlations[-1] < check.correlations[0]
    assert_untouched(photos.module, before)
    every = cnnviz.sanity_check(photos, "sample:chelsea", method="gradcam", layer="features.13")
    assert every.layers == ["classifier.2", "features.24", "features.21", "features.17", "features.14",
                            "features.10", "features.7", "features.3", "features.0"]


def test_sanity_check_follows_the_order_layers_run_in():
    class HeadFirst(nn.Module):  # defined head first, but the head runs last
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 3)
            self.conv1 = nn.Conv2d(3, 4, 3)
            self.conv2 = nn.Conv2d(4, 4, 3)

        def forward(self, x):
            return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean(dim=(2, 3)))

    torch.manual_seed(0)
    check = cnnviz.sanity_check(HeadFirst(), torch.randn(1, 3, 12, 12), target=0, stages=10)
    assert check.layers == ["head", "conv2", "conv1"]  # more stages than layers: still every layer


def test_rank_correlation_with_ties_and_constant_maps():
    correlation = cnnviz.analyses.sanity.mean_rank_correlation
    a = torch.tensor([[[0.0, 0.0, 1.0, 2.0]]])
    b = torch.tensor([[[0.0, 0.0, 2.0, 1.0]]])
    # average ranks: a -> 1.5 1.5 3 4, b -> 1.5 1.5 4 3: Spearman 3.5 / 4.5 (as scipy.stats.spearmanr)
    assert correlation(a, b) == pytest.approx(7 / 9)
    assert correlation(a, a) == pytest.approx(1.0)
    assert np.isnan(correlation(a, torch.zeros_like(a)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "lime"}, "unknown method 'lime'"),
        ({"target": "features.5"}, "is a whole layer"),
        ({"target": [1, 2, 3]}, "3 targets for 1 images"),
        ({"target": "nothing"}, "no layer 'nothing'"),
        ({"target": "features.19:3", "method": "gradcam", "layer": "features.26"}, "does not run before the target"),
        ({"method": "gradcam", "layer": "features.1:3"}, "without a channel"),
        ({"method": "gradcam", "layer": "classifier.2"}, "not spatial maps"),
        ({"steps": 1, "method": "integrated_gradients"}, "steps must be at least 2"),
        ({"method": "occlusion", "window": 100}, "larger than the image"),
    ],
)
def test_errors(photos, kwargs, message):
    with pytest.raises(CnnvizError, match=message):
        cnnviz.saliency(photos, "sample:chelsea", **kwargs)


def test_cli_writes_figures_raw_arrays_and_json(tmp_path, photos):
    result = CliRunner().invoke(main, ["saliency", "-i", "sample:chelsea", "-i", "sample:coffee", "-M", "gradient",
                                       "-M", "gradcam", "--sanity", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    names = {p.name for p in tmp_path.iterdir()} - {RECORD}
    assert names == {"saliency_gradient_0.png", "saliency_gradient_1.png", "saliency_gradient.npy",
                     "saliency_gradcam_0.png", "saliency_gradcam_1.png", "saliency_gradcam.npy",
                     "sanity_gradient.png", "sanity_gradcam.png", "saliency_panel.png", "saliency.json"}
    saved = np.load(tmp_path / "saliency_gradient.npy")
    expected = cnnviz.saliency(photos, ["sample:chelsea", "sample:coffee"], method="gradient").attribution.numpy()
    np.testing.assert_array_equal(saved, expected)
    summary = json.loads((tmp_path / "saliency.json").read_text())
    assert [m["method"] for m in summary["methods"]] == ["gradient", "gradcam"]
    targets = summary["methods"][0]["targets"]
    assert [t["unit"] for t in targets] == ["logits:3 (chelsea)", "logits:4 (coffee)"]
    assert [(t["layer"], t["channel"], t["class_name"]) for t in targets] == [("logits", 3, "chelsea"), ("logits", 4, "coffee")]
    layers_with_weights = 9  # eight convolutions (each with its BatchNorm) and the linear layer
    assert len(summary["methods"][0]["sanity_check"]["rank_correlations"]) == layers_with_weights
    error = CliRunner().invoke(main, ["saliency", "-i", "sample:chelsea", "-t", "features.2"])
    assert error.exit_code == 2 and len(error.stderr.splitlines()) == 1 and "whole layer" in error.stderr

"""The CAM family (cnnviz/analyses/cams.py): parity with pytorch-grad-cam and torch-cam where they are
right, hand computations where they are not (in-place activations), any target, n/a rules, the
smoothing options, the sanity check, and the model left untouched."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchvision
from conftest import FunctionalNet, with_statistics
from torch import nn
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz import CnnvizError
from cnnviz.analyses.cams import projection

NEW = ("gradcam_plus_plus", "xgradcam", "layercam", "scorecam", "eigencam")
GRADIENTS = ("gradcam_plus_plus", "xgradcam", "layercam")


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def pictures():
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(3))


def _minmax(cams: torch.Tensor, eps: float) -> torch.Tensor:
    """``N x h x w`` maps scaled as the references do: minus the minimum, over the maximum plus eps."""
    shifted = cams - cams.amin(dim=(-2, -1), keepdim=True)
    return shifted / (shifted.amax(dim=(-2, -1), keepdim=True) + eps)


def _grad_cam_reference(kind, model, layer, x, classes, **options):
    """pytorch-grad-cam's map (min-max scaled, resized with cv2 to the input), N x H x W."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with getattr(pytorch_grad_cam, kind)(model, [layer]) as cam:
            return torch.from_numpy(cam(x, [ClassifierOutputTarget(c) for c in classes], **options))


def _as_grad_cam_does(layer_cams: torch.Tensor, size) -> torch.Tensor:
    """cnnviz's N x 1 x h x w maps scaled and resized the way pytorch-grad-cam does it: min-max scaled,
    resized with cv2, and min-max scaled again (its mean over target layers)."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    return torch.from_numpy(scale_cam_image(scale_cam_image(layer_cams[:, 0].numpy(), (size[1], size[0]))))


@pytest.mark.parametrize("method, kind", [("gradcam_plus_plus", "GradCAMPlusPlus"), ("xgradcam", "XGradCAM"),
                                          ("layercam", "LayerCAM")])
def test_gradient_cams_equal_pytorch_grad_cam(resnet, pictures, method, kind):
    ours = cnnviz.attributions(resnet, pictures, [3, 7], methods=[method], layer="layer4")[method]
    assert ours.layer == "layer4" and ours.layer_attribution.shape == (2, 1, 3, 3)
    assert ours.attribution.shape == (2, 1, 96, 96) and bool((ours.attribution >= 0).all())
    reference = _grad_cam_reference(kind, resnet, resnet.layer4, pictures, [3, 7])
    torch.testing.assert_close(_as_grad_cam_does(ours.layer_attribution, (96, 96)), reference, rtol=0, atol=2e-5)


@pytest.mark.parametrize("method, kind", [("xgradcam", "XGradCAM"), ("layercam", "LayerCAM")])
def test_gradient_cams_equal_torch_cam_on_mobilenet(method, kind):
    import torchcam.methods

    torch.manual_seed(1)
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    ours = cnnviz.attributions(model, x, [5, 9], methods=[method])[method]
    assert ours.layer == "features"  # the default: the last module with maps (features.18's output)
    with getattr(torchcam.methods, kind)(model, "features") as extractor:
        theirs = extractor([5, 9], model(x), **({"eps": 1e-7} if method == "xgradcam" else {}))[0]  # cnnviz's eps
    torch.testing.assert_close(_minmax(ours.layer_attribution[:, 0], 1e-8), theirs, rtol=0, atol=2e-5)


def test_scorecam_equals_torch_cam(resnet, pictures):
    import torchcam.methods

    x = pictures[:1]
    ours = cnnviz.attributions(resnet, x, [3], methods=["scorecam"], layer="layer1", batch_size=16)["scorecam"]
    with torchcam.methods.ScoreCAM(resnet, "layer1", batch_size=16) as extractor:
        with torch.no_grad():
            resnet(x)
        theirs = extractor([3])[0]
    torch.testing.assert_close(_minmax(ours.layer_attribution[:, 0], 1e-8), theirs, rtol=0, atol=1e-4)


def test_scorecam_on_mobilenet_equals_torch_cam_with_its_masked_passes_folded():
    """MobileNetV2's batch normalisations (running statistics made non-trivial) are folded into their
    convolutions for the masked passes: the values are torch-cam's, and the passes run no batch norm."""
    import torchcam.methods

    torch.manual_seed(2)
    model = with_statistics(torchvision.models.mobilenet_v2(weights=None), seed=5)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiled:
        ours = cnnviz.attributions(model, x, [3], methods=["scorecam"], layer="features.4", batch_size=4)["scorecam"]
    norm_calls = sum(event.count for event in profiled.key_averages() if event.key == "aten::batch_norm")
    # 24 masks, 6 passes of 4: the masked passes alone would make 312 batch norms on the model
    # itself; the layer check, the activations and the fold's checks (one image each) make 208
    assert norm_calls < 6 * len(norms), norm_calls
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with torchcam.methods.ScoreCAM(model, "features.4", batch_size=4) as extractor:
        with torch.no_grad():
            model(x)
        theirs = extractor([3])[0]
    torch.testing.assert_close(_minmax(ours.layer_attribution[:, 0], 1e-8), theirs, rtol=0, atol=1e-4)


class _NamedLogits(nn.Module):
    """A submodule named ``logits`` that is not the model's output (a temperature follows it)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.logits = nn.Linear(8, 5)

    def forward(self, x):
        return -30.0 * self.logits(self.features(x).mean(dim=(2, 3)))


def test_scorecam_scores_the_unit_asked_for_whatever_its_names():
    """The masked passes run on the folded copy: they read the very unit the reference named, not what
    its text would name again (class names that are numbers, a module called ``logits``)."""
    import torchcam.methods

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    net, named = with_statistics(net), with_statistics(_NamedLogits())
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    loaded = cnnviz.LoadedModel(net, class_names=["1", "10", "11", "2", "3"])  # ImageFolder's order: class "2" is index 3
    for model, module, target, layer, index in ((loaded, net, "logits:2", "3", 3), (named, named, "output:2", "features.3", 2)):
        ours = cnnviz.attributions(model, x, target, methods=["scorecam"], layer=layer, batch_size=4)["scorecam"]
        with torchcam.methods.ScoreCAM(module, layer, batch_size=4) as extractor:
            with torch.no_grad():
                module(x)
            theirs = extractor([index])[0]
        torch.testing.assert_close(_minmax(ours.layer_attribution[:, 0], 1e-8), theirs, rtol=0, atol=1e-5)


def test_scorecam_runs_one_blank_image_for_all_dead_channels():
    import torchcam.methods

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()
    with torch.no_grad():
        model[2].bias[:3] = -100.0  # channels 0-2 of the maps are dead (all zero) on every image
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    sizes = []
    handle = model[0].register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    try:
        ours = cnnviz.saliency(model, x, [0, 1, 2, 0], method="scorecam", layer="3", batch_size=8)
    finally:
        handle.remove()
    assert sizes[-2:] == [1, 8]  # one zero image for the 12 dead masks, then the 4 x 2 live ones
    with torchcam.methods.ScoreCAM(model, "3", batch_size=8) as extractor:
        with torch.no_grad():
            model(x)
        theirs = extractor([0, 1, 2, 0])[0]
    torch.testing.assert_close(_minmax(ours.layer_attribution[:, 0], 1e-8), theirs, rtol=0, atol=1e-5)


def test_eigencam_is_pytorch_grad_cams_projection_with_a_fixed_sign(resnet, pictures):
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    ours = cnnviz.attributions(resnet, pictures, [3, 7], methods=["eigencam"], layer="layer4")["eigencam"]
    activations = cnnviz.capture(resnet, pictures, ["layer4"])["layer4"]
    reference = torch.from_numpy(get_2d_projection(activations.numpy()))
    signs = torch.sign(((reference - reference.mean((1, 2), keepdim=True))
                        * (activations.sum(1) - activations.sum(1).mean((1, 2), keepdim=True))).sum((1, 2)))
    expected = (signs[:, None, None] * reference).clamp(min=0)
    torch.testing.assert_close(ours.layer_attribution[:, 0], expected, rtol=1e-4, atol=1e-4)
    # pytorch-grad-cam's whole pipeline agrees on the images where numpy's sign happens to be ours
    full = _grad_cam_reference("EigenCAM", resnet, resnet.layer4, pictures, [3, 7])
    same = _as_grad_cam_does(ours.layer_attribution, (96, 96))
    agreeing = [i for i in range(2) if signs[i] > 0]
    torch.testing.assert_close(full[agreeing], same[agreeing], rtol=0, atol=1e-4)
    # and the sign is a property of the activations, not of numpy: a flipped basis gives the same map
    torch.testing.assert_close(projection(activations), projection(activations.clone()))
    assert bool((ours.attribution.flatten(1).amax(1) > 0).all())


def test_eigen_smooth_equals_pytorch_grad_cam(resnet, pictures):
    ours = cnnviz.attributions(resnet, pictures[:1], [3], methods=["layercam"], layer="layer4", eigen_smooth=True)
    ours = ours["layercam"]
    reference = _grad_cam_reference("LayerCAM", resnet, resnet.layer4, pictures[:1], [3], eigen_smooth=True)
    mine = _as_grad_cam_does(ours.layer_attribution, (96, 96))
    if float((mine - reference).abs().max()) > 1e-3:  # numpy's sign was the other one: compare the projection
        plain = cnnviz.attributions(resnet, pictures[:1], [3], methods=["layercam"], layer="layer4")["layercam"]
        assert not torch.allclose(plain.layer_attribution, ours.layer_attribution)
        pytest.skip("numpy's SVD sign differs from cnnviz's on this image")
    torch.testing.assert_close(mine, reference, rtol=0, atol=1e-4)
    assert ours.settings["eigen_smooth"] is True


def _hand_resnet_block(model, x, target):
    """resnet18 written out by hand up to layer4.1.bn2, whose output then gets ``+= identity`` and an
    in-place ReLU: its activations (a clone) and the gradient of the class score with respect to them."""
    h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    h = model.layer4[0](model.layer3(model.layer2(model.layer1(h))))
    block = model.layer4[1]
    activations = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h))))).detach().clone().requires_grad_(True)
    out = torch.relu(activations + h)
    score = model.fc(torch.flatten(model.avgpool(out), 1))[:, target].sum()
    (gradient,) = torch.autograd.grad(score, activations)
    return activations.detach(), gradient


def test_in_place_activations_cnnviz_right_where_the_references_are_wrong(resnet, pictures):
    import torchcam.methods

    x = pictures[:1]
    with torch.no_grad():
        before_block = resnet.layer4[0](resnet.layer3(resnet.layer2(resnet.layer1(
            resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))))))
    activations, gradient = _hand_resnet_block(resnet, x, 3)
    assert not torch.allclose(activations, torch.relu(activations + before_block))  # the in-place ops matter
    hand = {
        "layercam": (gradient.clamp(min=0) * activations).sum(1).clamp(min=0),
        "xgradcam": ((gradient * activations).sum((2, 3)) / (activations.sum((2, 3)) + 1e-7))[:, :, None, None]
        .mul(activations).sum(1).clamp(min=0),
    }
    for method, expected in hand.items():
        ours = cnnviz.attributions(resnet, x, [3], methods=[method], layer="layer4.1.bn2")[method]
        # float32 through 18 layers in another memory layout (cnnviz runs channels-last): 1e-4 of the range
        torch.testing.assert_close(ours.layer_attribution[:, 0], expected, rtol=0, atol=1e-4 * float(expected.max()))
        kind = {"layercam": "LayerCAM", "xgradcam": "XGradCAM"}[method]
        grad_cam = _grad_cam_reference(kind, resnet, resnet.layer4[1].bn2, x, [3])
        assert float((grad_cam - _as_grad_cam_does(expected[:, None], (96, 96))).abs().max()) > 0.1
        with getattr(torchcam.methods, kind)(resnet, "layer4.1.bn2") as extractor:
            torch_cam = extractor([3], resnet(x))[0]
        assert float((torch_cam - _minmax(expected, 1e-8)).abs().max()) > 0.1
    # Eigen-CAM reads the activations as the layer returned them too
    eigen = cnnviz.attributions(resnet, x, [3], methods=["eigencam"], layer="layer4.1.bn2")["eigencam"]
    torch.testing.assert_close(eigen.layer_attribution[:, 0], projection(activations).clamp(min=0), rtol=1e-4, atol=1e-4)


def _hand_layercam(model, x, layer, unit_layer, pick):
    """LayerCAM by hand: the layer's output kept (a clone goes on), the unit's value picked by ``pick``."""
    kept = {}

    def keep(module, args, output):
        kept["a"] = output.detach().clone().requires_grad_(True)
        return kept["a"].clone()

    def unit(module, args, output):
        kept["u"] = output.clone()

    handles = [model.get_submodule(layer).register_forward_hook(keep),
               model.get_submodule(unit_layer).register_forward_hook(unit)]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    (gradient,) = torch.autograd.grad(pick(kept["u"]).sum(), kept["a"])
    return (gradient.clamp(min=0) * kept["a"]).sum(1).clamp(min=0).detach()


def test_channel_and_neuron_targets(resnet, pictures):
    x = pictures[:1]
    channel = cnnviz.attributions(resnet, x, "layer3.1.conv2:5", methods=list(NEW))
    layer = channel["layercam"].layer
    assert layer == "layer3.1.bn1" and all(result.layer == layer for result in channel.values())
    expected = _hand_layercam(resnet, x, layer, "layer3.1.conv2", lambda out: out[:, 5].mean((1, 2)))
    torch.testing.assert_close(channel["layercam"].layer_attribution[:, 0], expected, rtol=1e-4, atol=1e-6)
    neuron = cnnviz.attributions(resnet, x, "layer3.1.conv2:5@2,3", methods=["layercam", "gradcam_plus_plus"])
    expected = _hand_layercam(resnet, x, layer, "layer3.1.conv2", lambda out: out[:, 5, 2, 3])
    torch.testing.assert_close(neuron["layercam"].layer_attribution[:, 0], expected, rtol=1e-4, atol=1e-6)
    assert str(neuron["layercam"].targets[0]) == "layer3.1.conv2:5@2,3"
    # Eigen-CAM has no target: the same map whatever the unit
    torch.testing.assert_close(channel["eigencam"].layer_attribution,
                               cnnviz.saliency(resnet, x, 1, method="eigencam", layer=layer).layer_attribution)


def test_functional_relus_and_other_activations():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 12)
    results = cnnviz.attributions(FunctionalNet().eval(), x, 1, methods=list(NEW))
    assert list(results) == list(NEW) and all(r.layer == "conv2" for r in results.values())

    class Smooth(nn.Module):  # SiLU and tanh, no ReLU anywhere
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2, self.head = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 3), nn.Linear(6, 3)

        def forward(self, x):
            return self.head(torch.tanh(self.conv2(nn.functional.silu(self.conv1(x)))).mean((2, 3)))

    model = Smooth().eval()
    results = cnnviz.attributions(model, x, 2, methods=list(NEW))
    assert all(r.layer == "conv2" and r.attribution.shape == (2, 1, 12, 12) for r in results.values())
    expected = _hand_layercam(model, x, "conv2", "head", lambda out: out[:, 2])
    torch.testing.assert_close(results["layercam"].layer_attribution[:, 0], expected, rtol=1e-4, atol=1e-6)


def test_a_model_that_needs_contiguous_maps_falls_back_to_them():
    class Viewing(nn.Module):  # x.view(N, -1) fails on channels-last maps, which the CAM passes try first
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            return self.head(x.view(x.size(0), -1))

    torch.manual_seed(0)
    model = Viewing().eval()
    x = torch.randn(2, 3, 8, 8)
    results = cnnviz.attributions(model, x, 1, methods=list(NEW))
    assert list(results) == list(NEW)
    expected = _hand_layercam(model, x, "conv", "head", lambda out: out[:, 1])
    torch.testing.assert_close(results["layercam"].layer_attribution[:, 0], expected, rtol=1e-4, atol=1e-6)


def test_not_applicable_without_spatial_layers_and_for_reused_layers(tiny, images):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    for method in NEW:
        with pytest.raises(cnnviz.NotApplicable, match="no layer with spatial maps"):
            cnnviz.saliency(mlp, images, 0, method=method)
    results = cnnviz.attributions(mlp, images, 0, methods=["gradient", "layercam", "scorecam"])
    assert list(results) == ["gradient"] and set(results.not_applicable) == {"layercam", "scorecam"}
    with pytest.raises(CnnvizError, match="runs 2 times"):  # tiny.relu runs twice: which call would it be?
        cnnviz.saliency(tiny, images, 0, method="xgradcam", layer="relu")
    with pytest.raises(CnnvizError, match="does not run before the target"):
        cnnviz.saliency(tiny, images, "conv2:1", method="scorecam", layer="conv3")


class _TwoBranches(nn.Module):
    """A stem, then a branch the head reads and a branch it never reads."""

    def __init__(self):
        super().__init__()
        self.stem, self.used, self.unused = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        self.unused(x)
        return self.head(self.used(x).mean(dim=(2, 3)))


class _FrozenStem(nn.Module):
    """A stem run under torch.no_grad (a frozen backbone), then a layer and a head."""

    def __init__(self):
        super().__init__()
        self.stem, self.neck, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        with torch.no_grad():
            x = torch.relu(self.stem(x))
        return self.head(self.neck(x).mean(dim=(2, 3)))


class _Gate(nn.Module):
    """The head reads branch ``a`` only while the input's mean magnitude is below ``threshold``; both
    branches run, or with ``skip`` only the one read."""

    def __init__(self, threshold, skip=False):
        super().__init__()
        self.a, self.b, self.head, self.threshold = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3), threshold
        self.skip = skip

    def forward(self, x):
        first = x.abs().mean() < self.threshold
        if self.skip:
            return self.head((self.a(x) if first else self.b(x)).mean(dim=(2, 3)))
        a, b = self.a(x), self.b(x)
        return self.head((a if first else b).mean(dim=(2, 3)))


@pytest.mark.parametrize(("case", "target", "layer", "message"), [
    ("tiny", 0, "relu", "relu runs 2 times per forward pass"),
    ("tiny", 0, "fc", "not spatial maps"),
    ("tiny", 0, "pool", "not spatial maps"),
    ("tiny", "conv2:1", "conv3", "does not run before the target"),
    ("tiny", "conv3:1", "conv3", "does not run before the target"),  # the target's own layer
    ("tiny", 0, "conv1:2", "without a channel"),
    ("tiny", 0, "conv1#2", "later call"),
    ("branches", 1, "unused", "does not depend on unused"),
    ("scripted", 0, "conv2", "belongs to a TorchScript model"),
])
@pytest.mark.parametrize("method", [*NEW, "gradcam"])
def test_a_given_layer_is_checked_in_the_gradient_pass_as_on_its_own(tiny, images, case, target, layer, message, method):
    """A given layer's check is made within the CAM methods' own first pass (no pass of its own);
    it refuses what the full check refuses (captum's Grad-CAM, which has no such pass, shows that),
    with the same line, and leaves the model as it was."""
    model = {"tiny": tiny, "branches": _TwoBranches().eval(), "scripted": torch.jit.script(tiny)}[case]
    before = fingerprint(model)
    with pytest.raises(CnnvizError, match=message):
        cnnviz.attributions(model, images, target, methods=["gradient", method], layer=layer)
    assert_untouched(model, before)


def test_a_layer_after_a_frozen_stem_whatever_the_methods_order(images):
    """The stem runs under torch.no_grad (a frozen backbone): the target still depends on the layer
    after it, and every CAM method explains it there, given or found, in any order; Guided Grad-CAM,
    which needs the input's gradient, does not apply."""
    model = _FrozenStem().eval()
    before = fingerprint(model)
    reference = cnnviz.attributions(model, images, 0, methods=["gradcam", *NEW], layer="neck")
    for methods, layer in ((["gradcam", *NEW], None), ([*reversed(NEW), "gradcam"], "neck"), (["layercam", "guided_gradcam"], "neck")):
        results = cnnviz.attributions(model, images, 0, methods=methods, layer=layer)
        for method in results:
            assert results[method].layer == "neck"
            torch.testing.assert_close(results[method].layer_attribution, reference[method].layer_attribution)
    assert "no gradient with respect to the input" in results.not_applicable["guided_gradcam"]
    # Grad-CAM there by hand: the gradient of the class score with respect to the neck's output
    with torch.no_grad():
        stem = torch.relu(model.stem(images))
    neck = model.neck(stem).detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model.head(neck.mean(dim=(2, 3)))[:, 0].sum(), neck)
    expected = (gradient.mean(dim=(2, 3), keepdim=True) * neck).sum(dim=1, keepdim=True).clamp(min=0)
    torch.testing.assert_close(reference["gradcam"].layer_attribution, expected.detach(), rtol=1e-4, atol=1e-6)
    assert_untouched(model, before)


@pytest.mark.parametrize("method", [*NEW, "gradcam"])
def test_aug_smooth_checks_the_layer_on_the_images_themselves(images, method):
    """The first augmented copy (x 0.9) would take the other branch: the layer is still checked on
    the images as given, and refused as without the option."""
    x = images[:1]
    gate = _Gate(0.95 * float(x.abs().mean())).eval()
    for smooth in (False, True):
        with pytest.raises(CnnvizError, match="does not depend on a"):
            cnnviz.attributions(gate, x, 0, methods=[method], layer="a", aug_smooth=smooth)


@pytest.mark.parametrize("method", ["gradcam_plus_plus", "scorecam", "eigencam"])
def test_aug_smooth_names_the_copy_on_which_the_layer_does_not_run(images, method):
    """The images pass the check; their x1.1 copy skips the layer: one line that says so, and that
    the option is the cause."""
    x = images[:1]
    skip = _Gate(1.05 * float(x.abs().mean()), skip=True).eval()
    before = fingerprint(skip)
    assert cnnviz.attributions(skip, x, 0, methods=[method], layer="a")[method].layer == "a"
    with pytest.raises(CnnvizError) as caught:
        cnnviz.attributions(skip, x, 0, methods=[method], layer="a", aug_smooth=True)
    line = str(caught.value)
    assert "\n" not in line and line.startswith("aug_smooth: the x1.1 copy of the images fails (a did not run"), line
    assert line.endswith("run without aug_smooth"), line
    assert_untouched(skip, before)


class _BatchOfOne(nn.Module):
    """Takes one image at a time (``reshape(1, -1)``): Score-CAM's batches of masks fail on it."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2))
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc(self.features(x).reshape(1, -1))


def test_aug_smooth_says_an_error_of_the_images_themselves_as_it_is(images):
    """The failure is the images' own (any batch of masks fails): with aug_smooth it is the same line,
    not blamed on an augmented copy."""
    lines = []
    for smooth in (False, True):
        with pytest.raises(CnnvizError) as caught:
            cnnviz.attributions(_BatchOfOne().eval(), images[:1], 2, methods=["scorecam"], layer="features.2",
                                batch_size=4, aug_smooth=smooth)
        lines.append(str(caught.value))
    assert lines[0] == lines[1] and "aug_smooth" not in lines[1], lines


def test_the_check_in_the_pass_takes_each_target_on_its_first_image(tiny, images):
    """Two targets, each on its own image: the layer is checked within the first method's pass,
    and the maps are those of each image alone."""
    passes = []
    handle = tiny.register_forward_pre_hook(lambda module, inputs: passes.append(len(inputs[0])))
    try:
        together = cnnviz.attributions(tiny, images, [0, "conv3:2", 0], methods=[*GRADIENTS, "eigencam"], layer="conv2")
    finally:
        handle.remove()
    # the targets' channels checked on the first image, then one pass per method (the first one
    # checks the layer too: no pass of its own)
    assert passes == [1, 3, 3, 3, 3]
    for index, target in enumerate([0, "conv3:2", 0]):
        alone = cnnviz.attributions(tiny, images[index:index + 1], target, methods=list(GRADIENTS), layer="conv2")
        for method in GRADIENTS:
            torch.testing.assert_close(together[method].layer_attribution[index], alone[method].layer_attribution[0])


def test_model_untouched_also_in_train_mode_and_after_an_error(tiny, images):
    tiny.train()
    tiny.conv1.weight.grad = torch.ones_like(tiny.conv1.weight)
    tiny.fc.weight.requires_grad_(False)
    before = fingerprint(tiny)
    results = cnnviz.attributions(tiny, images, [0, 1, 2], methods=list(NEW), aug_smooth=True, eigen_smooth=True)
    assert list(results) == list(NEW)
    with pytest.raises(CnnvizError):
        cnnviz.attributions(tiny, images, 0, methods=["layercam"], layer="fc")
    assert_untouched(tiny, before)


def test_smoothing_changes_the_map_and_keeps_its_shape(resnet, pictures):
    x = pictures[:1]
    plain = cnnviz.attributions(resnet, x, [3], methods=["gradcam", *GRADIENTS, "eigencam"], layer="layer4")
    eigen = cnnviz.attributions(resnet, x, [3], methods=["gradcam", *GRADIENTS, "eigencam"], layer="layer4",
                                eigen_smooth=True)
    augmented = cnnviz.attributions(resnet, x, [3], methods=["gradcam", *GRADIENTS, "eigencam"], layer="layer4",
                                    aug_smooth=True)
    for name in plain:
        for smoothed in (eigen, augmented):
            assert smoothed[name].attribution.shape == plain[name].attribution.shape == (1, 1, 96, 96)
            assert smoothed[name].layer_attribution.shape == (1, 1, 3, 3)
        assert not torch.allclose(augmented[name].attribution, plain[name].attribution)
    for name in ("gradcam", *GRADIENTS):
        assert not torch.allclose(eigen[name].attribution, plain[name].attribution)
        assert eigen[name].settings["eigen_smooth"] is True
    # Eigen-CAM is a projection already: eigen_smooth does not apply (nor is it recorded)
    torch.testing.assert_close(eigen["eigencam"].attribution, plain["eigencam"].attribution)
    assert "eigen_smooth" not in eigen["eigencam"].settings and augmented["eigencam"].settings["aug_smooth"] is True
    # Grad-CAM without smoothing stays captum's; with aug_smooth, the mean of six passes
    flipped = cnnviz.attributions(resnet, x.flip(-1), [3], methods=["xgradcam"], layer="layer4")["xgradcam"]
    scaled = [cnnviz.attributions(resnet, x * f, [3], methods=["xgradcam"], layer="layer4")["xgradcam"] for f in (0.9, 1.1)]
    flipped_scaled = [cnnviz.attributions(resnet, x.flip(-1) * f, [3], methods=["xgradcam"], layer="layer4")["xgradcam"]
                      for f in (0.9, 1.1)]
    maps = [plain["xgradcam"].layer_attribution, *(m.layer_attribution for m in scaled),
            *(m.layer_attribution.flip(-1) for m in (flipped, *flipped_scaled))]
    mean = sum(maps) / 6
    torch.testing.assert_close(augmented["xgradcam"].layer_attribution, mean, rtol=1e-5, atol=1e-7)


def test_other_methods_ignore_the_smoothing_options(tiny, images):
    plain = cnnviz.attributions(tiny, images, 0, methods=["gradient", "guided_gradcam"])
    smoothed = cnnviz.attributions(tiny, images, 0, methods=["gradient", "guided_gradcam"], eigen_smooth=True,
                                   aug_smooth=True)
    for name in plain:
        torch.testing.assert_close(smoothed[name].attribution, plain[name].attribution)
        assert "eigen_smooth" not in smoothed[name].settings


def test_scorecam_batches_are_bounded_and_results_do_not_depend_on_them(tiny, images):
    sizes = []
    handle = tiny.conv1.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    try:
        small = cnnviz.saliency(tiny, images, [0, 1, 2], method="scorecam", layer="conv3", batch_size=5)
    finally:
        handle.remove()
    assert max(sizes) <= 5
    large = cnnviz.saliency(tiny, images, [0, 1, 2], method="scorecam", layer="conv3", batch_size=64)
    torch.testing.assert_close(small.attribution, large.attribution, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", NEW)
def test_sanity_check_for_every_new_method(method, tiny, images):
    before = fingerprint(tiny)
    check = cnnviz.sanity_check(tiny, images[:2], 1, method=method, stages=2)
    assert len(check.correlations) == 2 and check.maps.shape == (3, 2, 16, 16)
    assert check.original.method == method and check.original.layer is not None
    assert all(np.isfinite(c) or np.isnan(c) for c in check.correlations)
    assert_untouched(tiny, before)


def test_cli_saliency_takes_the_new_methods_and_options(tmp_path):
    import json

    from click.testing import CliRunner

    from cnnviz.cli.main import main

    result = CliRunner().invoke(main, ["saliency", "-i", "sample:chelsea", "-M", "layercam", "-M", "scorecam",
                                       "--eigen-smooth", "--aug-smooth", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "saliency.json").read_text())
    methods = {m["method"]: m for m in summary["methods"]}
    assert set(methods) == {"layercam", "scorecam"}
    assert methods["layercam"]["settings"]["eigen_smooth"] is True and methods["scorecam"]["settings"]["aug_smooth"] is True

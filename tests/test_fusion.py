"""The render's folded copy (cnnviz.core.fusion): the model's function at the probed layers, the
model itself untouched, and every pair that could differ left as it is."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cnnviz
from cnnviz.core.fusion import folded_copy
from conftest import with_statistics
from untouched import assert_untouched, fingerprint


def _outputs(model, layer: str, x: torch.Tensor) -> torch.Tensor:
    with cnnviz.probe(model, [layer]) as recorder, torch.no_grad():
        recorder.run(x)
        return recorder[layer]


def _identities(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Identity)]


def test_mobilenet_is_folded_up_to_the_layer_with_the_same_outputs_and_left_untouched():
    model = with_statistics(torchvision.models.mobilenet_v2(num_classes=10))
    model.train()  # the user's mode: renders run in eval mode, and the mode is the user's afterwards
    before = fingerprint(model)
    twin = folded_copy(model, ["features.5"], (3, 64, 64))
    assert twin is not model
    assert_untouched(model, before)
    folded = _identities(twin)
    # every norm of features.0 .. features.5 (1 + 2 + 4 * 3 convolution + norm pairs), none after the layer
    norms = [name for name, m in model.features[:6].named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert folded == [f"features.{name}" for name in norms] and len(folded) == 15
    assert isinstance(twin.features[6].conv[1][1], nn.BatchNorm2d)
    # parameters shared, not copied, except the folded convolutions' new ones
    assert twin.features[6].conv[0][0].weight is model.features[6].conv[0][0].weight
    assert twin.features[1].conv[0][0].weight is not model.features[1].conv[0][0].weight
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    expected = _outputs(model, "features.5", x)
    assert torch.allclose(_outputs(twin, "features.5", x), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    # a probe of a folded norm sees its module's output (the Identity under its name)
    norm = "features.2.conv.3"
    assert torch.allclose(_outputs(twin, norm, x), _outputs(model, norm, x), atol=1e-4)
    assert model.training and all(m.training for m in model.modules())


def test_a_probed_convolution_keeps_its_own_output():
    model = with_statistics(torchvision.models.mobilenet_v2(num_classes=10))
    twin = folded_copy(model, ["features.1.conv.1"], (3, 32, 32))
    assert isinstance(twin.features[1].conv[2], nn.BatchNorm2d)  # its own norm stays
    assert isinstance(twin.features[1].conv[0][1], nn.Identity)  # the pairs before it are folded
    twin = folded_copy(model, ["features.1.conv.2", "features.0.0"], (3, 32, 32))
    assert isinstance(twin.features[1].conv[2], nn.Identity)  # a probed norm is folded (its output is the same)
    assert isinstance(twin.features[0][1], nn.BatchNorm2d)  # features.0.0 is probed: its norm stays
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(_outputs(twin, "features.0.0", x), _outputs(model, "features.0.0", x))


class _SkipAround(nn.Module):
    """A forward that uses the convolution's output beside the norm: the Sequential is not run as one."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        raw = self.block[0](x)
        return self.head(self.block[2](self.block[1](raw)) + raw)


class _ActNorm(nn.BatchNorm2d):
    """A norm with its own forward (like timm's BatchNormAct2d): not folded."""

    def forward(self, x):
        return torch.relu(super().forward(x))


def test_pairs_that_could_differ_are_not_folded():
    # a forward that reads the convolution's output elsewhere: the check on a random input refuses
    skip = with_statistics(_SkipAround())
    assert folded_copy(skip, ["head"], (3, 16, 16)) is skip
    # a norm with its own forward, a norm without running statistics, a hooked convolution
    for block in (
        nn.Sequential(nn.Conv2d(3, 4, 3), _ActNorm(4), nn.Conv2d(4, 2, 1)),
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Conv2d(4, 2, 1)),
    ):
        block = with_statistics(block)
        assert folded_copy(block, ["2"], (3, 16, 16)) is block
    hooked = with_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)))
    handle = hooked[0].register_forward_hook(lambda *args: None)
    assert folded_copy(hooked, ["2"], (3, 16, 16)) is hooked
    handle.remove()
    assert isinstance(folded_copy(hooked, ["2"], (3, 16, 16))[1], nn.Identity)
    # TorchScript runs as it is
    scripted = torch.jit.trace(hooked, torch.randn(1, 3, 16, 16))
    assert folded_copy(scripted, ["2"], (3, 16, 16)) is scripted


class _Counter:
    """A user's hook object that counts the passes it sees."""

    def __init__(self):
        self.calls = 0

    def __call__(self, module, inputs, output):
        self.calls += 1


class _Gained(nn.Module):
    """A plain tensor attribute (not a buffer) used in the forward."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.gain = torch.full((1, 8, 1, 1), 2.0)

    def forward(self, x):
        return self.body(x) * self.gain


def test_backward_and_global_hooks_refuse_and_nothing_of_the_users_is_copied():
    with torch.random.fork_rng():  # weights whose unit 3:0 renders (other seeds give a dead unit: no steps)
        torch.manual_seed(0)
        block = with_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)))
    # a backward hook on the norm (here one that zeroes the gradient) would vanish with it
    handle = block[1].register_full_backward_hook(lambda module, grad_in, grad_out: (grad_in[0] * 0,))
    assert folded_copy(block, ["3"], (3, 16, 16)) is block
    handle.remove()
    handle = block[0].register_full_backward_pre_hook(lambda module, grad_out: None)
    assert folded_copy(block, ["3"], (3, 16, 16)) is block
    handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda module, inputs, output: None)
    try:
        assert folded_copy(block, ["3"], (3, 16, 16)) is block  # it would see other modules
    finally:
        handle.remove()
    # a hook object on a module that is not folded stays the user's: it sees every pass of a render
    counter = _Counter()
    handle = block[3].register_forward_hook(counter)
    twin = folded_copy(block, ["3"], (3, 16, 16))
    assert isinstance(twin[1], nn.Identity) and not isinstance(block[1], nn.Identity)
    assert twin[3] is block[3] and twin[2] is block[2]  # modules off the folded path are the model's own
    calls = counter.calls
    rendering = cnnviz.maximize(block, "3:0", size=16, steps=8, stop=False, reference=None)
    assert rendering.steps_taken == [8] and counter.calls - calls >= 8 + 7  # its 8 steps and 7 other passes
    handle.remove()
    # in inference mode, the copy's other tensors are the model's (no inference-tensor copies)
    model = with_statistics(_Gained())
    before = fingerprint(model)
    with torch.inference_mode():
        twin = folded_copy(model, ["body.3"], (3, 16, 16))
        rendering = cnnviz.maximize(model, "logits:0", size=32, steps=4, stop=False, reference=None)
    assert twin.gain is model.gain and isinstance(twin.body[1], nn.Identity)
    assert rendering.images.shape == (1, 3, 32, 32)
    assert_untouched(model, before)


def test_an_fx_graph_module_and_a_loaded_model_are_folded():
    model = with_statistics(torchvision.models.mobilenet_v2(num_classes=10))
    graph = torch.fx.symbolic_trace(model)  # its graph calls the leaf modules by name
    twin = folded_copy(graph, ["features.3.conv.3"], (3, 32, 32))
    assert twin is not graph and isinstance(twin.get_submodule("features.3.conv.3"), nn.Identity)
    x = torch.randn(1, 3, 32, 32)
    expected = _outputs(graph, "features.3.conv.3", x)
    assert torch.allclose(_outputs(twin, "features.3.conv.3", x), expected, atol=1e-4 * float(expected.abs().max()))
    loaded = cnnviz.LoadedModel(model, spec="test")
    twin = folded_copy(loaded, ["features.3"], (3, 32, 32))
    assert isinstance(twin, cnnviz.LoadedModel) and twin.module is not model and twin.spec == "test"
    # a class named by its name (the loaded model's), as Score-CAM's and faithfulness's passes read it
    named = cnnviz.LoadedModel(model, class_names=[f"class {i}" for i in range(10)])
    twin = folded_copy(named, ["logits:class 7"], (3, 32, 32))
    assert twin.module is not model and isinstance(twin.module.get_submodule("features.3.conv.3"), nn.Identity)
    assert folded_copy(named, ["logits:class 70"], (3, 32, 32)) is named  # the caller's own pass says what is wrong


def test_a_render_on_the_folded_copy_is_the_render_of_the_model(monkeypatch):
    """maximize on a model with batch norms renders (to float rounding) what it renders on the
    model itself, and leaves the model untouched."""
    with torch.random.fork_rng(devices=[]):  # seeded weights: an unseeded model's rounding varies from run to run
        torch.manual_seed(0)
        model = with_statistics(torchvision.models.mobilenet_v2(num_classes=10))
    before = fingerprint(model)
    settings = dict(channels=[0, 1], size=48, steps=16, stop=False, reference=None)
    folded = cnnviz.maximize(model, "features.4", **settings)
    assert_untouched(model, before)
    from cnnviz.analyses.feature_visualization import maximize as module

    monkeypatch.setattr(module, "folded_copy", lambda model, layers, shape: model)
    plain = cnnviz.maximize(model, "features.4", **settings)
    assert (folded.images - plain.images).abs().mean() < 1e-4
    assert folded.values == pytest.approx(plain.values, rel=0.02)


def test_a_dream_is_the_same_bytes_whatever_the_thread_count():
    """Deep Dream on the folded copy of the built-in model: one thread (as torchrun gives each
    process) and two give the same image, and the thread count is set back."""
    model = cnnviz.load_model("builtin:photos")
    image = cnnviz.samples.image("coffee")  # 600 x 400: a sum large enough for both threads
    threads = torch.get_num_threads()
    dreams = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            dreams.append(cnnviz.dream(model, image, "features.10", octaves=1, steps=2, seed=0))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(dreams[0].image, dreams[1].image)
    assert (dreams[0].image - dreams[0].original).abs().mean() > 1e-3  # it dreamed

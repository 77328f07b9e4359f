"""The probe: what it records, early exit, gradients, and that the model stays untouched."""
from __future__ import annotations

import pytest
import torch
from conftest import FunctionalNet, TinyNet
from torch import nn
from torch.nn import functional as F
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz import CnnvizError


def reference_activations(model: TinyNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The forward pass of TinyNet written out by hand, keeping every intermediate value."""
    with torch.no_grad():
        out = {}
        out["conv1"] = model.conv1(x)
        out["bn"] = F.batch_norm(
            out["conv1"], model.bn.running_mean, model.bn.running_var, model.bn.weight, model.bn.bias,
            training=False, eps=model.bn.eps,
        )
        out["act"] = F.relu(out["bn"])
        out["conv2"] = model.conv2(out["act"])
        out["relu"] = F.relu(out["conv2"] - 0.1)
        out["relu#2"] = F.relu(out["relu"] - 0.05)
        out["conv3"] = model.conv3(out["relu#2"])
        out["logits"] = model.fc(out["conv3"].mean(dim=(2, 3)))
    return out


def test_capture_equals_hand_computed_forward(tiny, images):
    expected = reference_activations(tiny, images)
    refs = ["conv1", "bn", "act", "conv2", "relu", "relu#2", "conv3", "logits"]
    got = cnnviz.capture(tiny, images, refs)
    assert list(got) == refs
    for ref in refs:
        torch.testing.assert_close(got[ref], expected[ref], rtol=1e-6, atol=1e-6)


def test_outputs_overwritten_in_place_are_kept_intact(tiny, images):
    # bn is followed by ReLU(inplace=True): without a copy its negative values would be zeroed.
    got = cnnviz.capture(tiny, images, ["bn", "logits"])
    assert (got["bn"] < 0).any()
    torch.testing.assert_close(got["bn"], reference_activations(tiny, images)["bn"])


def test_every_call_of_a_reused_module_is_recorded(tiny, images):
    with cnnviz.probe(tiny, ["relu", "relu#2"]) as p:
        p.run(images)
        calls = p.outputs("relu")
        first, second = p["relu"], p["relu#2"]
    assert len(calls) == 2
    assert torch.equal(calls[0], first) and torch.equal(calls[1], second)
    assert not torch.equal(first, second)
    with pytest.raises(CnnvizError, match=r"runs 2 time\(s\).*valid: #1-#2"):
        cnnviz.capture(tiny, images, "relu#3")["relu#3"]


def test_channel_and_neuron_selection(tiny, images):
    full = cnnviz.capture(tiny, images, "conv2")["conv2"]
    assert torch.equal(cnnviz.capture(tiny, images, "conv2:5")["conv2:5"], full[:, 5])
    neuron = cnnviz.capture(tiny, images, "conv2:5@7,3")["conv2:5@7,3"]
    assert neuron.shape == (3,)
    assert torch.equal(neuron, full[:, 5, 7, 3])
    logits = cnnviz.capture(tiny, images, "logits")["logits"]
    assert torch.equal(cnnviz.capture(tiny, images, "logits:2")["logits:2"], logits[:, 2])


def test_module_objects_work_as_references(tiny, images):
    got = cnnviz.capture(tiny, images, [tiny.conv2, "conv2"])
    assert torch.equal(got[tiny.conv2], got["conv2"])
    with pytest.raises(CnnvizError, match="not part of this TinyNet"):
        cnnviz.capture(tiny, images, nn.Conv2d(3, 3, 1))


def test_early_exit_does_not_run_later_modules(tiny, images):
    cnnviz.capture(tiny, images, "conv2")["conv2"]
    assert tiny.counter.count == 0, "the forward pass went on past the last probed module"
    cnnviz.capture(tiny, images, "relu#2")["relu#2"]
    assert tiny.counter.count == 0
    cnnviz.capture(tiny, images, "conv3")["conv3"]
    assert tiny.counter.count == 0
    cnnviz.capture(tiny, images, "logits")["logits"]
    assert tiny.counter.count == 1
    with cnnviz.probe(tiny, "conv2", early_exit=False) as p:
        output = p.run(images)
    assert tiny.counter.count == 2 and output.shape == (3, 4)


def test_early_exit_survives_a_model_that_catches_exceptions():
    class Careful(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Conv2d(3, 3, 1)
            self.second = nn.Conv2d(3, 3, 1)
            self.ran_second = False

        def forward(self, x):
            try:
                x = self.first(x)
            except Exception:  # a model's own broad except must not swallow the early exit
                pass
            self.ran_second = True
            return self.second(x)

    model = Careful()
    cnnviz.capture(model, torch.randn(1, 3, 4, 4), "first")["first"]
    assert not model.ran_second


def test_gradients_flow_to_the_input_but_never_to_parameters(tiny, images):
    x = images.clone().requires_grad_(True)
    before = fingerprint(tiny)
    neuron = cnnviz.capture(tiny, x, "conv2:1@4,4", keep_graph=True)["conv2:1@4,4"]
    neuron.sum().backward()
    # A hand-built gradient: the same unit computed from scratch with autograd.
    x2 = images.clone().requires_grad_(True)
    act = F.relu(F.batch_norm(
        tiny.conv1(x2), tiny.bn.running_mean, tiny.bn.running_var, tiny.bn.weight, tiny.bn.bias,
        training=False, eps=tiny.bn.eps,
    ))
    (expected,) = torch.autograd.grad(tiny.conv2(act)[:, 1, 4, 4].sum(), x2)
    torch.testing.assert_close(x.grad, expected)
    assert x.grad[:, :, 0, 0].abs().sum() == 0, "a 5x5 receptive field cannot reach the corner"
    assert_untouched(tiny, before)  # no .grad written, requires_grad restored


def test_keep_graph_gradient_matches_a_hand_computed_linear_unit():
    # y = w . x for a 1x1 conv: the input gradient of channel 0 at one position is w at that position.
    conv = nn.Conv2d(2, 1, 1, bias=False)
    model = nn.Sequential(conv, nn.ReLU())
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[2.0]], [[-3.0]]]]))
    x = torch.ones(1, 2, 3, 3, requires_grad=True)
    unit = cnnviz.capture(model, x, "0:0@1,2", keep_graph=True)["0:0@1,2"]
    unit.sum().backward()
    expected = torch.zeros(1, 2, 3, 3)
    expected[0, 0, 1, 2], expected[0, 1, 1, 2] = 2.0, -3.0
    assert torch.equal(x.grad, expected)


def test_model_runs_in_eval_mode_and_comes_back_in_its_own_modes(tiny, images):
    tiny.train()
    tiny.conv2.eval()  # a mix of flags must come back exactly
    tiny.fc.weight.requires_grad_(False)
    before = fingerprint(tiny)
    got = cnnviz.capture(tiny, images, "bn")["bn"]
    # Running statistics were used (eval mode), and not updated.
    torch.testing.assert_close(got, reference_activations(tiny, images)["bn"])
    assert_untouched(tiny, before)
    assert tiny.training and not tiny.conv2.training


def test_model_untouched_after_exceptions(tiny, images):
    before = fingerprint(tiny)
    with pytest.raises(CnnvizError, match="forward pass of TinyNet failed"):
        cnnviz.capture(tiny, torch.randn(1, 5, 8, 8), "conv2")["conv2"]
    assert_untouched(tiny, before)
    with pytest.raises(RuntimeError, match="user code"):
        with cnnviz.probe(tiny, ["conv1", "relu#2"], keep_graph=True) as p:
            p.run(images)
            raise RuntimeError("user code failed inside the block")
    assert_untouched(tiny, before)
    with pytest.raises(CnnvizError, match="no layer 'conv9'"):
        cnnviz.capture(tiny, images, ["conv1", "conv9"])
    assert_untouched(tiny, before)


def test_a_custom_train_override_cannot_leave_a_trace(images):
    class FreezesInEval(TinyNet):
        def train(self, mode=True):  # some models freeze parts of themselves in eval mode
            super().train(mode)
            self.conv1.weight.requires_grad_(mode)
            return self

    model = FreezesInEval().train()
    before = fingerprint(model)
    cnnviz.capture(model, images, "conv2")["conv2"]
    assert_untouched(model, before)


def test_hooks_only_on_the_asked_modules(tiny, images):
    with cnnviz.probe(tiny, ["conv2", "relu#2"]) as p:
        hooked = {name for name, m in tiny.named_modules() if m._forward_hooks}
        assert hooked == {"conv2", "relu"}
        p.run(images)
    assert not any(m._forward_hooks for m in tiny.modules())


def test_functional_relu_models_are_probed(images):
    model = FunctionalNet().eval()
    got = cnnviz.capture(model, images, ["conv1", "conv2", "logits"])
    expected_conv2 = model.conv2(F.relu(model.conv1(images)))
    torch.testing.assert_close(got["conv2"], expected_conv2)
    torch.testing.assert_close(got["logits"], F.relu(expected_conv2).mean(dim=(2, 3)))


def test_probe_errors_are_clear(tiny, images):
    with pytest.raises(CnnvizError, match="context manager"):
        cnnviz.probe(tiny, "conv1").run(images)
    with cnnviz.probe(tiny, "conv1") as p:
        p.run(images)
        with pytest.raises(CnnvizError, match="conv2 was not probed"):
            p["conv2"]
        with pytest.raises(CnnvizError, match="must be a torch.Tensor"):
            p.run(images.numpy())
        with pytest.raises(CnnvizError, match="torch.uint8 tensor; models take floating-point"):
            p.run((images * 255).to(torch.uint8))
    with pytest.raises(CnnvizError, match="channel 9 is out of range for conv1, which has 8 channels"):
        cnnviz.capture(tiny, images, "conv1:9")["conv1:9"]
    with pytest.raises(CnnvizError, match=r"position 16,0 is out of range for relu, whose maps are 16x16"):
        cnnviz.capture(tiny, images, "relu:0@16,0")["relu:0@16,0"]


def test_tuple_outputs_and_unused_modules():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(3, 4, 3)
            self.unused = nn.Linear(4, 2)
            self.lstm = nn.LSTM(4, 3, batch_first=True)

        def forward(self, x):
            features = self.body(x)
            sequence, _ = self.lstm(features.flatten(2).transpose(1, 2))
            return features.mean(dim=(2, 3)), sequence

    model = TwoHeads().eval()
    x = torch.randn(2, 3, 6, 6)
    logits = cnnviz.capture(model, x, "logits")["logits"]
    torch.testing.assert_close(logits, model.body(x).mean(dim=(2, 3)))
    with pytest.raises(CnnvizError, match="unused did not run"):
        cnnviz.capture(model, x, "unused")["unused"]
    with pytest.raises(CnnvizError, match="lstm does not return a tensor"):
        cnnviz.capture(model, x, "lstm")["lstm"]


def test_torchscript_models_give_their_output_and_refuse_inner_layers(tiny, images):
    scripted = torch.jit.trace(tiny, images)
    torch.testing.assert_close(cnnviz.capture(scripted, images, "logits")["logits"], tiny(images))
    with pytest.raises(CnnvizError, match="TorchScript"):
        cnnviz.capture(scripted, images, "conv1")["conv1"]


def test_inputs_move_to_the_model_device(tiny, images):
    # On CPU this only checks the path runs; on CUDA it moves the batch.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = TinyNet().to(device).eval()
    out = cnnviz.capture(model, images, "conv1")["conv1"]
    assert out.device.type == device


def test_a_probe_cannot_be_entered_twice(tiny, images):
    before = fingerprint(tiny)
    recorder = cnnviz.probe(tiny, "conv1")
    with recorder:
        with pytest.raises(CnnvizError, match="already active"):
            with recorder:
                pass
    assert_untouched(tiny, before)


def test_nested_probes_record_only_their_own_runs(tiny, images):
    with cnnviz.probe(tiny, "conv1") as outer:
        outer.run(images)
        for _ in range(3):
            with cnnviz.probe(tiny, "conv1") as inner:
                inner.run(images)
        tiny(images)  # the user's own call inside the block is not recorded either
        assert len(outer.outputs("conv1")) == 1
        with pytest.raises(CnnvizError, match=r"valid: #1-#1"):
            outer["conv1#2"]


def test_reading_before_running_says_so(tiny):
    with cnnviz.probe(tiny, "conv1") as recorder:
        with pytest.raises(CnnvizError, match="call p.run"):
            recorder["conv1"]


def test_what_is_returned_never_aliases_the_input_or_the_model():
    class ReturnsBuffer(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.arange(6.0).reshape(1, 6, 1, 1))

        def forward(self, x):
            return self.table

    model = nn.Sequential(nn.Identity(), ReturnsBuffer(), nn.Conv2d(6, 2, 1))
    before = fingerprint(model)
    x = torch.randn(2, 6, 3, 3)
    kept = x.clone()
    got = cnnviz.capture(model, x, ["0"])["0"]  # early exit right at the Identity
    got.zero_()
    assert torch.equal(x, kept)
    got = cnnviz.capture(model, x, ["1"])["1"]
    got.zero_()
    assert_untouched(model, before)


def test_train_and_eval_overrides_are_never_called(images):
    class Fuses(TinyNet):
        def train(self, mode=True):  # RepVGG-style: eval() fuses layers into a new submodule
            super().train(mode)
            if not mode:
                self.fused = nn.Conv2d(3, 8, 3)
            return self

    model = Fuses()
    model.training = True
    for module in model.modules():
        module.training = True
    before = fingerprint(model)
    cnnviz.capture(model, images, ["conv2"])
    assert_untouched(model, before)
    assert not hasattr(model, "fused")


def test_lazy_models_are_refused_and_left_alone(images):
    model = nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU())
    with pytest.raises(CnnvizError, match="uninitialised \\(lazy\\) parameters"):
        cnnviz.capture(model, images, ["0"])
    assert isinstance(model[0], nn.LazyConv2d)
    with pytest.raises(CnnvizError, match="lazy"):
        cnnviz.layer_table(model, input_size=16)
    assert isinstance(model[0], nn.LazyConv2d)


def test_layer_table_names_the_output_and_explains_torchscript(tiny, images):
    table = cnnviz.layer_table(tiny, input_size=16)
    assert [row.name for row in table][-3:] == ["pool", "fc", "logits"]
    assert table["relu"].calls == 2 and table["relu"].output_shape == [(8, 16, 16), (8, 16, 16)]
    assert table["logits"].params == sum(p.numel() for p in tiny.parameters())
    assert table.notes == []
    scripted = cnnviz.layer_table(torch.jit.trace(tiny, images), input_size=16)
    assert [row.name for row in scripted] == ["logits"] and "TorchScript" in scripted.notes[0]
    head = nn.Sequential()
    head.add_module("body", nn.Conv2d(3, 4, 3))
    head.add_module("logits", nn.Conv2d(4, 2, 1))
    names = [row.name for row in cnnviz.layer_table(head, input_size=8)]
    assert names == ["body", "logits", "output"]

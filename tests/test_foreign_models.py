"""Models nobody here wrote (issue: "your model, not ours"): a fixed-size LeNet with PReLU and no
declared input size, a model with SiLU/GELU/Hardswish only, a model whose only ReLU is a
squeeze-excite gate, an ``fx.GraphModule`` and a TorchScript trace (tests/foreign_models.py).
Every check asserts a property (sizes the network saw, scores, equalities with references), and
every model is checked untouched after each call."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.nn import functional as F

import cnnviz
import foreign_models
from cnnviz.cli.main import main
from cnnviz.core.relu import relu_rule
from untouched import assert_untouched, fingerprint as snapshot

FACTORY = str(Path(foreign_models.__file__))


def _sizes_seen(model):
    """A forward pre-hook recording the input size of every pass that builds a graph (the
    optimisation steps; cnnviz's dry runs and final scores run without gradients)."""
    seen = []
    handle = model.register_forward_pre_hook(
        lambda module, args: seen.append(tuple(args[0].shape[2:])) if torch.is_grad_enabled() else None)
    return seen, handle


def test_the_input_size_is_found_and_said():
    model = foreign_models.lenet()
    with pytest.warns(cnnviz.CnnvizWarning, match=r"LeNet declares no input size; using 32x32 .*400 features"):
        loaded = cnnviz.load_model(model)
    assert loaded.preprocessing.input_size == (32, 32) and "400 features" in loaded.preprocessing.size_from
    assert cnnviz.load_model(foreign_models.lenet(), input_size=(32, 32)).preprocessing.size_from == "declared"
    # a model with adaptive pooling runs at the default, and no warning is given
    with warnings.catch_warnings():
        warnings.simplefilter("error", cnnviz.CnnvizWarning)
        assert cnnviz.core.model.preprocessing_of(foreign_models.smooth()).input_size == (224, 224)
    # a flatten-then-Linear model that needs 48 x 48
    odd = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8 * 11 * 11, 10))
    with pytest.warns(cnnviz.CnnvizWarning, match="48x48"):
        assert cnnviz.core.model.preprocessing_of(odd).input_size == (48, 48)


def test_a_fixed_size_model_sees_its_size_on_every_step():
    model = foreign_models.lenet()
    loaded = cnnviz.load_model(model, input_size=32)
    before = snapshot(model)
    seen, handle = _sizes_seen(model)
    try:
        rendering = cnnviz.maximize(loaded, "logits", channels=[3, 7], steps=64, seed=1)
        assert seen and set(seen) == {(32, 32)}  # padded, jittered, scaled, rotated, then cropped back
        assert rendering.images.shape == (2, 1, 32, 32) and rendering.settings["cropped_back"]
        noise = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            scores = model(noise)
        for k, unit in enumerate((3, 7)):
            assert rendering.values[k] > float(scores[:, unit].max())  # the render beats every noise image
        seen.clear()
        inner = cnnviz.maximize(loaded, "conv2:4", steps=4)  # an inner layer takes the padded canvas
        assert inner.settings["network_input"] == [s + 24 for s in inner.images.shape[2:]]
        seen.clear()
        dreamed = cnnviz.dream(loaded, torch.rand(1, 50, 70), "fc1", steps=2, octaves=2)
        assert dreamed.image.shape == (1, 50, 70) and set(seen) == {(32, 32)}
        assert dreamed.settings["fixed_input_size"] == [32, 32] and dreamed.after > dreamed.before
        with pytest.raises(cnnviz.CnnvizError, match="takes 32x32 inputs only"):
            cnnviz.maximize(loaded, "logits:1", size=40, steps=2)
    finally:
        handle.remove()
    assert_untouched(model, before)


def test_activation_rules_against_hand_computed_values():
    x = torch.tensor([[-2.0, -0.5, 0.5, 2.0]])
    g = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    prelu = nn.PReLU(num_parameters=1, init=0.25)

    def backward(rule, fn):
        inputs = x.clone().requires_grad_(True)
        with relu_rule(rule):
            out = fn(inputs)
        (gradient,) = torch.autograd.grad(out, inputs, g)
        return gradient

    # guided: max(g, 0) * max(f'(x), 0); deconvolution: the activation applied to g (leaky), max(g, 0) (others)
    assert torch.allclose(backward("guided_backprop", F.relu), torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
    assert torch.allclose(backward("guided_backprop", prelu), torch.tensor([[0.25, 0.0, 1.0, 0.0]]))
    assert torch.allclose(backward("deconvolution", prelu), torch.tensor([[1.0, -0.25, 1.0, -0.25]]))
    assert torch.allclose(backward("deconvolution", nn.LeakyReLU(0.1)), torch.tensor([[1.0, -0.1, 1.0, -0.1]]))
    # SiLU: f'(x) = s(x) (1 + x (1 - s(x))), negative at x = -2
    s = torch.sigmoid(x)
    slope = s * (1 + x * (1 - s))
    assert slope[0, 0] < 0
    assert torch.allclose(backward("guided_backprop", F.silu), g.clamp(min=0) * slope.clamp(min=0))
    assert torch.allclose(backward("deconvolution", nn.GELU()), g.clamp(min=0))
    # ReLU6 is a hardtanh: slope 1 inside (0, 6)
    assert torch.allclose(backward("guided_backprop", nn.ReLU6()), torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
    # the forward values are the activation's own, in place too
    inputs = x.clone()
    with relu_rule("guided_backprop"):
        out = F.silu(inputs, inplace=True)
    assert out is inputs and torch.allclose(out, F.silu(x))


def test_saliency_on_models_without_relu_and_with_gates():
    smooth = foreign_models.smooth()
    before = snapshot(smooth)
    image = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))
    results = cnnviz.attributions(smooth, image, target=2, methods=["gradient", "guided_backprop", "deconvolution"])
    assert not results.not_applicable
    assert not torch.allclose(results["guided_backprop"].attribution, results["gradient"].attribution)
    assert_untouched(smooth, before)
    gated = foreign_models.gated()
    results = cnnviz.attributions(gated, image, target=1, methods=["gradient", "guided_backprop", "occlusion"])
    assert list(results) == ["gradient", "occlusion"]
    assert "pooled 1x1" in results.not_applicable["guided_backprop"] and results.to_dict()["not_applicable"][0]["method"] == "guided_backprop"
    with pytest.raises(cnnviz.NotApplicable, match="pooled 1x1"):  # asked alone, it is an error
        cnnviz.saliency(gated, image, target=1, method="guided_backprop")
    scripted = foreign_models.scripted()
    results = cnnviz.attributions(scripted, image, target=0, methods=["gradient", "guided_backprop", "gradcam"])
    assert list(results) == ["gradient"] and set(results.not_applicable) == {"guided_backprop", "gradcam"}
    assert "TorchScript" in results.not_applicable["guided_backprop"]


def test_fx_graph_module_layers_work():
    traced = foreign_models.traced()
    loaded = cnnviz.load_model(traced, input_size=32)
    before = snapshot(traced)
    table = cnnviz.layer_table(loaded)
    assert table["conv2"].name == "conv2" and "fc1" in [row.name for row in table]
    image = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0))
    acts = cnnviz.activations(loaded, image, layer="conv2")
    assert tuple(acts["conv2"].maps.shape) == (16, 10, 10)
    rendering = cnnviz.maximize(loaded, "logits:2", steps=8)
    assert rendering.images.shape == (1, 1, 32, 32)
    assert cnnviz.receptive_field(loaded, "conv2").stride == (2, 2)
    assert_untouched(traced, before)


def _cli(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("name, layer", [("lenet", "conv2"), ("smooth", "features.2"), ("traced", "conv2")])
def test_every_command_on_foreign_models(name, layer, tmp_path):
    spec = f"{FACTORY}:{name}"
    assert "Conv2d" in _cli("layers", "-m", spec)
    _cli("kernels", "-m", spec, "-l", layer, "-o", str(tmp_path / "k"))
    _cli("activations", "-m", spec, "-i", "sample:chelsea", "-l", layer, "-o", str(tmp_path / "a"))
    _cli("stats", "-m", spec, "-i", "sample:chelsea", "-i", "sample:coffee", "-l", layer, "-o", str(tmp_path / "s"))
    _cli("saliency", "-m", spec, "-i", "sample:chelsea", "--steps", "4", "--samples", "2", "-o", str(tmp_path / "g"))
    saliency = json.loads((tmp_path / "g" / "saliency.json").read_text())
    assert {m["method"] for m in saliency["methods"]} >= {"gradient", "guided_backprop"} and not saliency["not_applicable"]
    _cli("maximize", "-m", spec, "-l", f"{layer}:1", "--steps", "4", "-o", str(tmp_path / "m"))
    _cli("maximize", "-m", spec, "-l", "logits:1", "--steps", "4", "-o", str(tmp_path / "c"))
    rendered = json.loads((tmp_path / "c" / "maximize_logits-1.json").read_text())
    size = [32, 32] if name != "smooth" else [160, 160]  # its 224 px input, a class's canvas at most 160 px
    assert rendered["settings"]["size"] == size
    _cli("dream", "-m", spec, "-i", "sample:chelsea", "-l", layer, "--steps", "1", "--octaves", "2",
         "-o", str(tmp_path / "d"))
    predicted = _cli("predict", "-m", spec, "-i", "sample:chelsea")
    assert "chelsea" in predicted
    fields = _cli("rf", "-m", spec, "-o", str(tmp_path / "r"))
    assert layer in fields


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenetv3_small_050", "convnext_atto"])
def test_timm_families_with_random_weights(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    loaded = cnnviz.load_model(model, input_size=64)
    before = snapshot(model)
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    results = cnnviz.attributions(loaded, image, methods=["gradient", "guided_backprop", "deconvolution", "gradcam"])
    assert not results.not_applicable, results.not_applicable  # SiLU, Hardswish, GELU all have the rules
    # not equal (ConvNeXt's layer scale starts at 1e-6, so its branches barely move the gradient)
    assert not torch.equal(results["guided_backprop"].attribution, results["gradient"].attribution)
    # the stem's field (deeper ones are global: squeeze-excite gates pool the whole image)
    layer, stem = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    field = cnnviz.receptive_field(loaded, layer)
    assert field.stride == tuple(stem.stride) and field.size == tuple(stem.kernel_size)
    rendering = cnnviz.maximize(loaded, f"{layer}:0", steps=4, size=48)
    assert rendering.images.shape == (1, 3, 48, 48)
    assert_untouched(model, before)


@pytest.mark.parametrize("kind", ["module", "functional"])
def test_a_final_softmax_is_detected(kind):
    body = foreign_models.smooth()
    model = nn.Sequential(body, nn.Softmax(dim=1)) if kind == "module" else foreign_models.softmax_head()
    logits_of = body if kind == "module" else model.body
    loaded = cnnviz.load_model(model, input_size=48)
    before = snapshot(model)
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.softmax(logits_of(image), dim=1)[0]
    top = cnnviz.predict(loaded, image)[0].classes
    assert abs(top[0][2] - float(expected.max())) < 1e-5  # the model's own probability, not a softmax of it
    rendering = cnnviz.maximize(loaded, "logits:2", steps=8)
    assert rendering.settings["softmax_input"] and "final softmax" in rendering.objective
    with torch.no_grad():
        logit = float(logits_of(rendering.images)[0, 2])
    assert abs(rendering.values[0] - logit) < 1e-4  # the value is the logit, the softmax's input
    assert_untouched(model, before)


def test_dense_outputs_get_a_default_target():
    model = foreign_models.detector()
    before = snapshot(model)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = model(image)[0]  # 2 x 8 x 8
    k = int(maps.flatten(1).amax(dim=1).argmax())
    row, column = divmod(int(maps[k].argmax()), maps.shape[2])
    result = cnnviz.saliency(model, image)
    assert result.targets[0].reference == f"logits:{k}@{row},{column}"
    named = cnnviz.saliency(model, image, target=f"logits:{1 - k}@2,3")
    assert named.targets[0].reference == f"logits:{1 - k}@2,3"
    prediction = cnnviz.predict(model, image)[0]
    assert prediction.position == (row, column) and prediction.classes[0][0] == k
    assert f"at output position {row},{column}" in str(prediction)
    assert_untouched(model, before)


def test_gallery_of_a_fixed_size_model_has_every_page(tmp_path):
    out = tmp_path / "site"
    _cli("gallery", "-m", f"{FACTORY}:lenet", "--steps", "4", "--class-steps", "4", "--max-channels", "2",
         "--max-classes", "2", "--activation-images", "1", "--attribution-images", "1", "--dream-steps", "1",
         "--dream-octaves", "1", "-l", "conv2", "-o", str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failed"] == []
    kinds = {figure["kind"] for figure in manifest["figures"]}
    assert {"class", "maximize", "dream", "attributions", "kernels", "exemplars", "kernel"} <= kinds
    # its two strongest conv2 units have a page: renders at the one size it takes, exemplars, links
    units = sorted((out / "units" / "conv2").glob("*.html"))
    assert len(units) == 2 and "Strongest inputs" not in units[0].read_text()  # conv2 is the only layer shown
    assert [f["settings"]["size"] for f in manifest["figures"] if f["kind"] == "class"] == [[32, 32]] * 2  # its one size
    # named by what it is, not by the factory file's whole path
    index = (out / "index.html").read_text()
    assert "<title>What LeNet (foreign_models.py:lenet) has learned" in index and str(Path(FACTORY).parent) not in index


def test_nan_weights_are_named_in_a_warning():
    model = foreign_models.lenet()
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = float("nan")
    with pytest.warns(cnnviz.CnnvizWarning, match=r"parameter conv2.weight holds 1 non-finite value"):
        cnnviz.load_model(model, input_size=32)
    with pytest.raises(cnnviz.CnnvizError, match="not finite"):
        cnnviz.predict(cnnviz.load_model(model, input_size=32), torch.rand(1, 1, 32, 32))


def test_sigterm_ends_a_command_cleanly_and_stale_parts_go(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    arguments = ["cnnviz", "maximize", "-l", "features.5:1", "--steps", "100000", "--fixed-steps", "--size", "32",
                 "-o", str(out)]
    script = (f"import sys\nfrom cnnviz.cli.main import run\nsys.argv = {arguments!r}\n"
              "print('ready', flush=True)\nrun()\n")  # 'ready' once the slow imports are done
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    time.sleep(3)  # the command is rendering by now
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob(".cnnviz-*"))  # nor a stage or a lock
    # a part file a killed run left over a minute ago is removed by the next write of that file
    out.mkdir(exist_ok=True)
    stale = out / ".kernels.json.cnnviz-abc123xy.part"
    stale.write_text("half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = out / ".kernels.json.cnnviz-def456xy.part"
    fresh.write_text("being written")
    cnnviz.core.output.write_json(out / "kernels.json", {"a": 1})
    assert not stale.exists() and fresh.exists()


def test_a_size_that_is_not_square_is_found_and_images_are_resized_to_it(tmp_path):
    model = foreign_models.text_direction()
    with pytest.warns(cnnviz.CnnvizWarning, match="32x100"):
        loaded = cnnviz.load_model(model)
    assert loaded.preprocessing.input_size == (32, 100) and loaded.preprocessing.channels == 1
    # an image of the same shape is resized, not enlarged and cropped: all of it is seen
    line = torch.zeros(1, 64, 200)
    line[:, :, :40] = 1  # a white block at the left end
    x = cnnviz.inputs.prepare(line, loaded.preprocessing)
    assert x.shape == (1, 1, 32, 100) and float(x[0, 0, :, :18].mean()) > 0.9 and float(x[0, 0, :, 24:].max()) < 0.1
    before = snapshot(model)
    result = CliRunner().invoke(main, ["predict", "-m", f"{FACTORY}:text_direction", "-i", "sample:text"])
    assert result.exit_code == 0, result.stderr
    assert "32x100" in result.stderr and result.stdout.startswith("sample:text: ")
    assert_untouched(model, before)


def test_every_command_on_a_torchscript_trace(tmp_path):
    """Inside a TorchScript model nothing can be hooked or traced: what needs only the weights or
    the output works (kernels, output activations and statistics, saliency, classes, dream on
    the output, predict, the output's field measured from gradients, a gallery of those), and a
    layer inside is one clear error."""
    spec = f"{FACTORY}:scripted"
    original = foreign_models.smooth()
    _cli("kernels", "-m", spec, "-l", "features.2", "-o", str(tmp_path / "k"))
    shown = json.loads((tmp_path / "k" / "kernels_features.2.json").read_text())
    assert shown["out_channels"] == original.features[2].out_channels and shown["type"] == "Conv2d"
    assert torch.equal(cnnviz.kernels(foreign_models.scripted(), "features.2").weight,
                       cnnviz.kernels(original, "features.2").weight)
    _cli("activations", "-m", spec, "-i", "sample:chelsea", "-l", "logits", "-o", str(tmp_path / "a"))
    _cli("stats", "-m", spec, "-i", "sample:chelsea", "-i", "sample:coffee", "-l", "logits", "-o", str(tmp_path / "s"))
    assert json.loads((tmp_path / "s" / "stats.json").read_text())["images"] == 2
    _cli("saliency", "-m", spec, "-i", "sample:chelsea", "-M", "gradient", "-M", "guided_backprop", "-o", str(tmp_path / "g"))
    skipped = json.loads((tmp_path / "g" / "saliency.json").read_text())["not_applicable"]
    assert [entry["method"] for entry in skipped] == ["guided_backprop"] and "TorchScript" in skipped[0]["why"]
    _cli("maximize", "-m", spec, "-l", "logits:1", "--steps", "4", "--size", "64", "-o", str(tmp_path / "c"))
    _cli("dream", "-m", spec, "-i", "sample:chelsea", "-l", "logits", "--steps", "1", "--octaves", "1",
         "-o", str(tmp_path / "d"))
    assert _cli("predict", "-m", spec, "-i", "sample:chelsea").startswith("sample:chelsea: ")
    # the output's field, measured, equals the traced theory of the original module
    _cli("rf", "-m", spec, "--input-size", "64", "64", "-o", str(tmp_path / "r"))
    measured = json.loads((tmp_path / "r" / "receptive_fields.json").read_text())["layers"]
    assert [f["layer"] for f in measured] == ["logits"] and measured[0]["kind"] == "global"
    dense = foreign_models.detector()
    scripted_dense = torch.jit.trace(dense, torch.zeros(1, 3, 64, 64))
    theory = cnnviz.receptive_field(dense, "logits", input_size=64)
    field = cnnviz.receptive_field(scripted_dense, "logits", input_size=64)
    assert (field.size, field.stride, field.offset) == (theory.size, theory.stride, theory.offset) and field.notes
    # fields larger than the input: the step is measured where an edge is not clipped
    deep = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1) for i in range(12)], nn.Conv2d(4, 2, 1)).eval()
    measured = cnnviz.receptive_field(torch.jit.trace(deep, torch.zeros(1, 3, 16, 16)), "logits", input_size=16)
    assert measured.kind == "grid" and measured.stride == (1, 1) and measured.size == (16, 16) and not measured.covers_input
    refused = CliRunner().invoke(main, ["activations", "-m", spec, "-i", "sample:chelsea", "-l", "features.2"])
    assert refused.exit_code == 2 and "TorchScript" in refused.output
    _cli("gallery", "-m", spec, "-i", "sample:chelsea", "-i", "sample:coffee", "--steps", "2", "--class-steps", "2",
         "--max-channels", "1", "--max-classes", "2", "--methods", "gradient", "-o", str(tmp_path / "site"))
    manifest = json.loads((tmp_path / "site" / "manifest.json").read_text())
    kinds = {f["kind"] for f in manifest["figures"]}
    assert {"kernels", "class", "attributions"} <= kinds and manifest["layers"] == cnnviz.convolutions(original)


def test_every_command_on_a_timm_model(tmp_path):
    """timm:NAME through the command line: the preprocessing is the model's pretrained_cfg, the
    class names are ImageNet's, and every command exits 0 with its outputs."""
    timm = pytest.importorskip("timm")
    loaded = cnnviz.load_model("timm:mobilenetv3_small_050")
    config = loaded.module.pretrained_cfg
    assert loaded.preprocessing.mean == tuple(config["mean"]) and loaded.preprocessing.input_size == (224, 224)
    assert loaded.preprocessing.resize == int(224 / config["crop_pct"]) and loaded.class_names[281] == "tabby"
    # the same preprocessing for a timm model from a factory (or in a notebook); one built for grey
    # input keeps the default's 3-channel config, which is then not used
    assert cnnviz.core.model.preprocessing_of(timm.create_model("mobilenetv3_small_050")) == loaded.preprocessing
    assert cnnviz.core.model.preprocessing_of(timm.create_model("mobilenetv3_small_050", in_chans=1)).channels == 1
    spec, small = ["-m", "timm:mobilenetv3_small_050"], ["--input-size", "64", "64"]
    layer = "blocks.1"
    assert "blocks.1.0.conv_dw" in _cli("layers", *spec, *small)
    _cli("kernels", *spec, "-o", str(tmp_path / "k"))
    _cli("activations", *spec, *small, "-i", "sample:chelsea", "-l", layer, "-o", str(tmp_path / "a"))
    _cli("stats", *spec, *small, "-i", "sample:chelsea", "-i", "sample:coffee", "-l", layer, "-o", str(tmp_path / "s"))
    _cli("saliency", *spec, *small, "-i", "sample:chelsea", "--steps", "2", "--samples", "2", "-o", str(tmp_path / "g"))
    saliency = json.loads((tmp_path / "g" / "saliency.json").read_text())
    assert not saliency["not_applicable"] and {m["method"] for m in saliency["methods"]} >= {"guided_backprop", "gradcam"}
    _cli("maximize", *spec, *small, "-l", f"{layer}:0", "--steps", "2", "-o", str(tmp_path / "m"))
    _cli("maximize", *spec, *small, "-l", "tabby", "--steps", "2", "-o", str(tmp_path / "c"))
    assert json.loads((tmp_path / "c" / "maximize_tabby.json").read_text())["settings"]["size"] == [64, 64]
    _cli("dream", *spec, *small, "-i", "sample:chelsea", "-l", layer, "--steps", "1", "--octaves", "1",
         "-o", str(tmp_path / "d"))
    assert _cli("predict", *spec, *small, "-i", "sample:chelsea").startswith("sample:chelsea: ")
    fields = _cli("rf", *spec, *small, "-i", "sample:chelsea", "-o", str(tmp_path / "r"))
    assert "conv_stem" in fields
    _cli("gallery", *spec, *small, "-i", "sample:chelsea", "-i", "sample:coffee", "--layer", "conv_stem,blocks.1.0.conv_pw",
         "--steps", "2", "--class-steps", "2", "--max-channels", "1", "--max-classes", "1", "--methods", "gradient",
         "--activation-images", "1", "--attribution-images", "1", "--dream-octaves", "1", "--dream-steps", "1",
         "-o", str(tmp_path / "site"))
    manifest = json.loads((tmp_path / "site" / "manifest.json").read_text())
    assert not manifest["failed"] and {"kernels", "activation_map", "maximize", "exemplars", "dream", "class"} <= {
        f["kind"] for f in manifest["figures"]}
    assert {p.name for p in (tmp_path / "site" / "units" / "blocks.1.0.conv_pw").glob("*.html")} == {
        f"{f['unit'].split(':')[1]}.html" for f in manifest["figures"] if f["kind"] == "exemplars" and f["layer"] == "blocks.1.0.conv_pw"}


@pytest.mark.parametrize("name, layer", [("detector", "2"), ("softmax_head", "body.features.2"),
                                         ("text_direction", "features.3"), ("gated", "conv2")])
def test_every_command_on_more_foreign_models(name, layer, tmp_path):
    """The other kinds through the command line: dense class maps, a softmax head, a 32 x 100
    line model, a model whose only ReLU is a gate; each command exits 0 with what that kind
    calls for."""
    spec = ["-m", f"{FACTORY}:{name}"] + (["--input-size", "64", "64"] if name in ("detector", "softmax_head") else [])
    image = "sample:text" if name == "text_direction" else "sample:chelsea"
    assert "Conv2d" in _cli("layers", *spec)
    _cli("kernels", *spec, "-l", layer if name != "softmax_head" else "body.features.0", "-o", str(tmp_path / "k"))
    _cli("activations", *spec, "-i", image, "-l", layer, "-o", str(tmp_path / "a"))
    _cli("stats", *spec, "-i", image, "-i", "sample:coffee", "-l", layer, "-o", str(tmp_path / "s"))
    _cli("saliency", *spec, "-i", image, "--steps", "2", "--samples", "2", "-o", str(tmp_path / "g"))
    saliency = json.loads((tmp_path / "g" / "saliency.json").read_text())
    skipped = {entry["method"] for entry in saliency["not_applicable"]}
    assert skipped == ({"guided_backprop"} if name == "gated" else set()) and len(saliency["methods"]) + len(skipped) == 6
    _cli("maximize", *spec, "-l", f"{layer}:1", "--steps", "2", "-o", str(tmp_path / "m"))
    _cli("maximize", *spec, "-l", "logits:1", "--steps", "2", "-o", str(tmp_path / "c"))
    rendered = json.loads((tmp_path / "c" / "maximize_logits-1.json").read_text())
    assert rendered["settings"]["softmax_input"] == (name == "softmax_head")
    if name == "text_direction":
        assert rendered["settings"]["network_input"] == [32, 100]
    _cli("dream", *spec, "-i", image, "-l", layer, "--steps", "1", "--octaves", "1", "-o", str(tmp_path / "d"))
    predicted = _cli("predict", *spec, "-i", image)
    if name == "detector":
        assert "at output position" in predicted  # the position the classes are read at, stated
    fields = _cli("rf", *spec, "-i", image, "-o", str(tmp_path / "r"))
    assert layer in fields
    if name == "detector":  # its gallery explains and renders its class maps too
        _cli("gallery", *spec, "-i", image, "-i", "sample:coffee", "--steps", "2", "--class-steps", "2",
             "--max-channels", "1", "--max-classes", "2", "--methods", "gradient", "--activation-images", "1",
             "--attribution-images", "2", "--dream-octaves", "1", "--dream-steps", "1", "-o", str(tmp_path / "site"))
        manifest = json.loads((tmp_path / "site" / "manifest.json").read_text())
        explained = [f for f in manifest["figures"] if f["kind"] == "attributions"]
        assert not manifest["failed"] and len([f for f in manifest["figures"] if f["kind"] == "class"]) == 2
        # each image's strongest map at its arg-max, and the class page's renders of both maps
        assert len(explained) == 2 and all(re.search(r"logits:\d@\d+,\d+", f["caption"]) for f in explained)
        assert (tmp_path / "site" / "classes.html").is_file() and len(list((tmp_path / "site" / "units").rglob("*.html"))) >= 1

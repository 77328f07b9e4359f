"""Gradient methods whatever the caller's autograd mode (issue 29).

Inside ``torch.no_grad()`` and ``torch.inference_mode()``, and on inputs made in inference mode,
every analysis that takes input gradients gives exactly what it gives outside, and the caller's
mode and model are as they were afterwards. A model whose own tensors are inference tensors (built
or loaded inside ``torch.inference_mode()``), through which torch takes no gradients, is refused
with one line naming the fix; occlusion, which takes no gradients, still runs on it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
import torch
from conftest import TinyNet
from torch import nn
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz import CnnvizError


@dataclass
class Models:
    photos: cnnviz.LoadedModel
    scripted: torch.jit.ScriptModule  # its receptive field is measured from input gradients


def _models() -> Models:
    torch.manual_seed(0)
    small = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 2, 3)).eval()  # maps out
    return Models(cnnviz.load_model("builtin:photos"), torch.jit.script(small))


def _saliency(method: str):
    def call(models, images, _):
        # small settings: few steps and samples, a large occlusion window, Grad-CAM's layer given
        # (its search, by gradients too, runs in _attributions)
        layer = "features.20" if "gradcam" in method else None
        return cnnviz.saliency(models.photos, images, 3, method=method, layer=layer, steps=4, samples=2, window=32).attribution
    return call


def _attributions(models, images, _):
    result = cnnviz.attributions(models.photos, images, [3], methods=["gradient", "guided_backprop", "gradcam"])
    return torch.cat([a.attribution for a in result.values()], dim=1)


def _sanity_check(models, images, _):
    check = cnnviz.sanity_check(models.photos, images, 3, method="gradient", stages=2)
    return torch.cat([check.maps.flatten(), torch.tensor(check.correlations)])


def _effective_receptive_field(models, images, _):
    return cnnviz.effective_receptive_field(models.photos, images, "features.13").map


def _scripted_receptive_field(models, *_):
    field = cnnviz.receptive_field(models.scripted, "logits", input_size=16)
    return torch.tensor([*field.size, *field.stride, *field.offset])


def _dream(models, _, raw):
    return cnnviz.dream(models.photos, raw, "features.5", octaves=1, steps=2).image


def _maximize(models, *_):
    return cnnviz.maximize(models.photos, "features.5:1", steps=5, size=32, reference=None).images


def _maximize_filters(models, *_):  # a first-layer unit: found and rendered from its input gradient
    return cnnviz.maximize(models.photos, "features.0:2", steps=2, reference=None).images


CALLS = {
    **{f"saliency-{method}": _saliency(method) for method in cnnviz.METHODS if method != "occlusion"},
    "attributions": _attributions,
    "sanity_check": _sanity_check,
    "effective_receptive_field": _effective_receptive_field,
    "receptive_field-torchscript": _scripted_receptive_field,
    "dream": _dream,
    "maximize": _maximize,
    "maximize-filters": _maximize_filters,
}
# occlusion takes no gradients, but runs through the same code as the others
EVERY_CALL = {**CALLS, "saliency-occlusion": _saliency("occlusion")}
MODES = ("no_grad", "inference_mode", "inference_inputs")


@pytest.fixture(scope="module")
def models() -> Models:
    return _models()


@pytest.fixture(scope="module")
def inputs(models):
    images = cnnviz.inputs.prepare(cnnviz.samples.image("chelsea"), models.photos.preprocessing)  # 1 x 3 x 64 x 64
    raw = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))
    return images, raw


@pytest.fixture(scope="module")
def outside(models, inputs):
    """Each call's result in the ordinary mode, computed once."""
    results = {}

    def result(name: str) -> torch.Tensor:
        if name not in results:
            results[name] = EVERY_CALL[name](models, *inputs)
        return results[name]
    return result


def _mode(mode: str):
    return torch.no_grad() if mode == "no_grad" else torch.inference_mode() if mode == "inference_mode" else contextlib.nullcontext()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", EVERY_CALL)
def test_every_gradient_method_gives_the_same_values_in_any_mode(models, inputs, outside, name, mode):
    expected = outside(name)
    images, raw = inputs
    if mode != "no_grad":  # the inputs a notebook makes in inference mode are inference tensors
        with torch.inference_mode():
            images, raw = images.clone(), raw.clone()
        assert images.is_inference() and raw.is_inference()
    before = fingerprint(models.photos.module), fingerprint(models.scripted)
    with _mode(mode):
        result = EVERY_CALL[name](models, images, raw)
        # the caller's mode holds on after the call
        assert torch.is_grad_enabled() == (mode == "inference_inputs")
        assert torch.is_inference_mode_enabled() == (mode == "inference_mode")
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert not result.requires_grad
    assert result.shape == expected.shape and torch.equal(result, expected), f"{name} differs under {mode}"
    assert_untouched(models.photos.module, before[0])
    assert_untouched(models.scripted, before[1])


@pytest.fixture(scope="module")
def inference_models() -> Models:
    with torch.inference_mode():
        made = _models()
    assert next(made.photos.module.parameters()).is_inference()
    return made


@pytest.mark.parametrize("mode", ("plain", "inference_mode"))
@pytest.mark.parametrize("name", CALLS)
def test_a_model_made_in_inference_mode_is_refused_in_one_line(inference_models, inputs, name, mode):
    before = fingerprint(inference_models.photos.module), fingerprint(inference_models.scripted)
    with _mode(mode), pytest.raises(CnnvizError, match=r"is an inference tensor \(made inside torch.inference_mode\(\)\), "
                                    r"through which torch takes no gradients; build or load the model outside") as error:
        CALLS[name](inference_models, *inputs)
    assert "\n" not in str(error.value)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert_untouched(inference_models.photos.module, before[0])
    assert_untouched(inference_models.scripted, before[1])


@pytest.mark.parametrize("mode", ("plain", "inference_mode"))
def test_occlusion_needs_no_gradients_so_runs_on_a_model_made_in_inference_mode(inputs, outside, mode):
    with torch.inference_mode():  # a model of its own: its parameters' requires_grad flags as made
        made = _models()
    before = fingerprint(made.photos.module)
    assert all(p.requires_grad for p in made.photos.module.parameters())
    with _mode(mode):
        result = _saliency("occlusion")(made, *inputs)
    torch.testing.assert_close(result, outside("saliency-occlusion"), rtol=0, atol=0)
    assert_untouched(made.photos.module, before)


def test_a_buffer_made_in_inference_mode_is_refused_when_torch_refuses_it():
    torch.manual_seed(0)
    model = TinyNet().eval()
    with torch.inference_mode():  # eval-mode batch norm keeps its running statistics for the backward pass
        model.bn.running_var = model.bn.running_var.clone()
    before = fingerprint(model)
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(CnnvizError, match=r"^a tensor the model uses \(a buffer, a parameter\) is an inference tensor .*"
                                          r"build or load the model outside torch.inference_mode\(\)") as error:
        cnnviz.saliency(model, x, 0, method="gradient")
    assert "\n" not in str(error.value)
    assert_untouched(model, before)
    occluded = cnnviz.saliency(model, x, 0, method="occlusion", window=4)  # no gradient: no refusal
    assert occluded.attribution.shape == (1, 3, 8, 8) and bool(occluded.attribution.abs().sum() > 0)

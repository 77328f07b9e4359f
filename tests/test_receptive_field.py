"""Theoretical receptive fields: hand-checked values, and the same boxes as an independent
computation (the gradient support of a linearised copy) on torchvision's classification models.

The independent check: every element of a layer's output depends exactly on the input pixels where
its gradient is non-zero, once nothing can make a gradient vanish by accident. The copy's weights
are positive (scaled by their fan-in), its inputs positive, in float64; ReLU-like activations
become the identity, max pooling average pooling, and gates (sigmoid) a bounded function whose
slope never vanishes. The bounding box of the gradient's support must then equal the clipped box
that :func:`cnnviz.receptive_field` traces, element by element.

By default the 20 of ``FAMILIES`` (one or two per family) and every other architecture of at most
30M parameters run (45 of 80; left out are the large variants of families that are checked, such as
vgg16, vit_l_16, regnet_y_128gf, resnet101, efficientnet_b6, swin_s: the same code at a larger width
or depth, and most of the time); ``CNNVIZ_ALL_ARCHITECTURES=1`` checks all 80 (about 4 minutes more
on 2 cores), and ``CNNVIZ_FEW_ARCHITECTURES=1`` only the families, for a quick local run.
"""
from __future__ import annotations

import contextlib
import os

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torch.nn import init
from torch.overrides import TorchFunctionMode
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz import CnnvizError
from cnnviz.analyses.receptive_field import unit_boxes

ALL = torchvision.models.list_models(module=torchvision.models)
FAMILIES = [
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet", "inception_v3",
    "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_y_400mf", "resnet18", "resnext50_32x4d",
    "shufflenet_v2_x0_5", "squeezenet1_0", "swin_t", "vgg11_bn", "vit_b_32", "wide_resnet50_2", "maxvit_t",
]
# the families and every architecture of at most 30M parameters by default; CNNVIZ_ALL_ARCHITECTURES=1 checks all,
# CNNVIZ_FEW_ARCHITECTURES=1 one or more per family, for a quick local run
EVERY = os.environ.get("CNNVIZ_ALL_ARCHITECTURES") == "1"
FEW = os.environ.get("CNNVIZ_FEW_ARCHITECTURES") == "1"
SAMPLED = set(FAMILIES) | {name for name in ALL  # parameter counts from the weights' metadata (no download)
                           if torchvision.models.get_model_weights(name).DEFAULT.meta.get("num_params", 0) <= 30e6}


# -------------------------------------------------------------------------------------------
# hand-checked values


def chain(*layers):
    return nn.Sequential(*layers)


def architecture(name: str, **kwargs) -> nn.Module:
    """A torchvision architecture with zero weights (receptive fields do not depend on them)."""
    with skipped_init():
        model = torchvision.models.get_model(name, **kwargs)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    return model


def test_textbook_values():
    resnet = architecture("resnet50")
    layer4 = cnnviz.receptive_field(resnet, "layer4", input_size=64)  # the textbook numbers hold at any size
    assert (layer4.size, layer4.stride, layer4.offset) == ((427, 427), (32, 32), (-213, -213))
    assert layer4.kind == "grid" and layer4.is_global  # at 64 x 64, each unit sees all of it
    assert not cnnviz.receptive_field(resnet, "layer4", input_size=224).is_global
    vgg = architecture("vgg16")
    assert cnnviz.receptive_field(vgg, "features.29", input_size=64).size == (196, 196)  # conv5_3
    pool5 = cnnviz.receptive_field(vgg, "features.30", input_size=64)
    assert (pool5.size, pool5.stride) == ((212, 212), (32, 32))
    assert cnnviz.receptive_field(architecture("alexnet"), "features.12", input_size=96).size == (195, 195)


def test_formula_for_strides_padding_dilation_and_ceil_mode():
    model = chain(
        nn.Conv2d(1, 2, 3, padding=1),                    # r 3, j 1, start -1
        nn.Conv2d(2, 2, 3, stride=2, dilation=2),         # r 3 + 2*2 = 7, j 2, start -1
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),  # r 7 + 2*2 = 11, j 4, start -1 - 2 = -3
        nn.Conv2d(2, 2, (1, 3), padding=(0, 2)),          # r (11, 19), start (-3, -3 - 8 = -11)
    ).eval()
    fields = cnnviz.receptive_fields(model, input_size=20)
    assert [(f.size, f.stride, f.offset) for f in fields.values()][:4] == [
        ((3, 3), (1, 1), (-1, -1)), ((7, 7), (2, 2), (-1, -1)), ((11, 11), (4, 4), (-3, -3)),
        ((11, 19), (4, 4), (-3, -11)),
    ]
    assert fields["2"].uniform is False  # ceil mode adds a last window, cut short by the input's end
    boxes = unit_boxes(model, ["2", "3"], input_size=20)
    assert boxes["2"].shape == (1, 2, 5, 5, 4) and boxes["3"].shape == (1, 2, 5, 7, 4)
    assert boxes["2"][0, 0, 2, 2].tolist() == [5, 5, 15, 15]
    assert boxes["2"][0, 1, 4, 4].tolist() == [13, 13, 19, 19]  # rows 13..23 in theory; 19 is the last one seen
    assert boxes["3"][0, 0, 2, 0].tolist() == [5, 0, 15, 7]  # columns -11..7, clipped


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.long = chain(nn.Conv2d(4, 4, 5, padding=2), nn.ReLU(), nn.Conv2d(4, 4, 5, padding=2))
        self.short = nn.Identity()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.long(x) + self.short(x))
        return self.head(x.mean(dim=(2, 3)))


def test_residual_takes_the_largest_path_and_pooling_is_global():
    model = Residual().eval()
    fields = cnnviz.receptive_fields(model, input_size=32)
    assert fields["short"].size == (3, 3) and fields["long"].size == (11, 11)
    assert fields["logits"].kind == "global" and fields["logits"].size == (32, 32) and fields["logits"].stride is None
    assert fields["head"].is_global and "whole input" in str(fields)
    neuron = cnnviz.receptive_field(model, "long:1@0,5")
    assert neuron.box == (0, 0, 5, 10) and neuron.size == (11, 11) and neuron.offset == (-5, 0)


def test_untouched_and_errors():
    model = torchvision.models.resnet18()
    model.train()
    before = fingerprint(model)
    cnnviz.receptive_fields(model, input_size=64)
    cnnviz.receptive_field(model, "layer2.0.relu#2", input_size=64)
    assert_untouched(model, before)
    with pytest.raises(CnnvizError, match="did you mean"):
        cnnviz.receptive_field(model, "layer9")
    assert_untouched(model, before)
    with pytest.raises(CnnvizError, match="input_size"):
        cnnviz.receptive_fields(chain(nn.Conv2d(3, 3, 5)), input_size=2)
    scripted = torch.jit.script(chain(nn.Conv2d(3, 3, 3)))
    with pytest.raises(CnnvizError, match="TorchScript"):  # a layer inside cannot be traced
        cnnviz.receptive_field(scripted, "0")
    measured = cnnviz.receptive_fields(scripted, input_size=16)["logits"]  # the output's, from gradients
    assert (measured.size, measured.stride, measured.offset) == ((3, 3), (1, 1), (0, 0)) and measured.notes


def test_layer_table_column():
    table = cnnviz.layer_table(cnnviz.load_model("builtin:photos"), receptive_fields=True)
    assert table["features.0"].receptive_field_text == "3 /1 @-1"
    assert table["logits"].receptive_field_text == "global"
    assert "receptive field" in str(table).splitlines()[0]
    assert table.to_dict()[1]["receptive_field"][0]["size"] == [3, 3]


def test_effective_receptive_field():
    loaded = cnnviz.load_model("builtin:photos")
    erf = cnnviz.effective_receptive_field(loaded, "samples", "features.13", max_images=3)
    assert erf.map.shape == (64, 64) and erf.images == 3 and erf.unit == (8, 8)
    top, left, bottom, right = erf.theoretical.box
    inside = erf.map[top:bottom + 1, left:right + 1].sum()
    assert torch.isclose(inside, erf.map.sum())  # no gradient outside the theoretical region
    assert 0 < erf.radius_50 < erf.radius_95 <= erf.theoretical.size[0]
    figure = cnnviz.plots.effective_receptive_field(erf)
    assert "50%" in figure.axes[1].get_title()
    assert len(cnnviz.plots.receptive_field(cnnviz.receptive_fields(loaded), erf.image).axes[0].patches) >= 3


# -------------------------------------------------------------------------------------------
# the independent computation on torchvision's models


@contextlib.contextmanager
def skipped_init():
    """Build without torch.nn.init (slow on large models): every parameter is filled below."""
    saved = {n: getattr(init, n) for n in dir(init) if n.endswith("_") and not n.startswith("_")}
    try:
        for name in saved:
            setattr(init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, function in saved.items():
            setattr(init, name, function)


PATTERN = torch.rand(100_003, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5


def positive_copy(name: str, **kwargs) -> nn.Module:
    with skipped_init():
        model = torchvision.models.get_model(name, **kwargs)
    model = model.double().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            flat = parameter.view(-1)
            values = PATTERN.repeat(-(-flat.numel() // PATTERN.numel()))[:flat.numel()]
            fan_in = flat.numel() // parameter.shape[0] if parameter.dim() >= 2 else 1
            flat.copy_(values / fan_in)
    return model


IDENTITY = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "hardswish", "silu", "gelu", "leaky_relu", "elu", "mish"}
GATES = {"sigmoid", "hardsigmoid", "tanh"}


class Linearised(TorchFunctionMode):
    """Nothing that can make a gradient vanish: identity activations, average pooling, soft gates."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in IDENTITY:
            return args[0]
        if name in GATES:
            return 1 + args[0] / (1 + args[0].abs())
        if name in ("max_pool2d", "_max_pool2d"):
            def get(i, key, default):
                return kwargs.get(key, args[i] if len(args) > i else default)
            kernel, stride, padding = get(1, "kernel_size", None), get(2, "stride", None), get(3, "padding", 0)
            assert get(4, "dilation", 1) in (1, (1, 1), [1, 1])
            return F.avg_pool2d(args[0], kernel, stride or kernel, padding, ceil_mode=get(5, "ceil_mode", False))
        if name in ("adaptive_max_pool2d", "_adaptive_max_pool2d"):
            return F.adaptive_avg_pool2d(args[0], args[1] if len(args) > 1 else kwargs["output_size"])
        return func(*args, **kwargs)


def settings_for(name: str) -> tuple[int, dict]:
    if name.startswith("vit_"):
        size = 56 if name == "vit_h_14" else 64
        return size, {"image_size": size}
    if name == "maxvit_t":
        return 224, {}
    if name == "inception_v3":
        return 80, {"init_weights": False}
    if name == "googlenet":
        return 64, {"init_weights": False}
    return 64, {}


def spread(names: list[str], count: int) -> list[str]:
    if len(names) <= count:
        return names
    return list(dict.fromkeys(names[round(i * (len(names) - 1) / (count - 1))] for i in range(count)))


@pytest.mark.parametrize("name", ALL)
def test_boxes_equal_the_gradient_support(name):
    if FEW and name not in FAMILIES:
        pytest.skip("CNNVIZ_FEW_ARCHITECTURES=1: one or more architectures per family only")
    if not EVERY and not FEW and name not in SAMPLED:
        pytest.skip("a large variant of a family that is checked (CNNVIZ_ALL_ARCHITECTURES=1 checks all)")
    size, kwargs = settings_for(name)
    model = positive_copy(name, **kwargs)
    candidates = [n for n, m in model.named_modules() if n and not list(m.children())]
    layers = spread(candidates, 6)
    boxes = unit_boxes(model, layers, input_size=size)
    assert set(boxes) >= set(layers) - {n for n in layers if n not in boxes}
    units = []
    for layer in [n for n in layers if n in boxes]:
        count = boxes[layer][0].numel() // 4
        units += [(layer, index) for index in sorted({0, count // 2 + 1 if count > 2 else 0, count - 1})]
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(len(units), 3, size, size, generator=generator, dtype=torch.float64) + 0.5
    # one image per unit; at 224 px (maxvit_t) one pass per image: a float64 batch there costs more
    # than its images one by one (6 images: 7.7 s, one: 0.9 s)
    chunk = len(units) if size < 224 else 1
    gradients = []
    for start in range(0, len(units), chunk):
        part, piece = units[start:start + chunk], x[start:start + chunk].clone().requires_grad_(True)
        with Linearised(), cnnviz.probe(model, sorted({layer for layer, _ in part}), keep_graph=True) as recorder:
            recorder.run(piece)
            outputs = {layer: recorder[layer] for layer, _ in part}
        total = sum(outputs[layer].reshape(len(part), -1)[b, index] for b, (layer, index) in enumerate(part))
        gradients.append(torch.autograd.grad(total, piece)[0])
    gradient = torch.cat(gradients)
    assert torch.isfinite(gradient).all()
    support = gradient.abs().sum(dim=1) != 0
    for b, (layer, index) in enumerate(units):
        rows, columns = support[b].any(dim=1).nonzero().flatten(), support[b].any(dim=0).nonzero().flatten()
        found = [int(rows.min()), int(columns.min()), int(rows.max()), int(columns.max())] if rows.numel() else [0, 0, -1, -1]
        assert boxes[layer][0].reshape(-1, 4)[index].tolist() == found, (layer, index)


class PNet(nn.Module):
    """MTCNN's first stage: 3x3 convolutions with PReLU, a 2x2 ceil-mode pooling, dense heads."""

    def __init__(self):
        super().__init__()
        self.body = chain(nn.Conv2d(3, 10, 3), nn.PReLU(10), nn.MaxPool2d(2, 2, ceil_mode=True),
                          nn.Conv2d(10, 16, 3), nn.PReLU(16), nn.Conv2d(16, 32, 3), nn.PReLU(32))
        self.face = nn.Conv2d(32, 2, 1)

    def forward(self, x):
        return self.face(self.body(x))


def test_ceil_mode_pooling_keeps_a_regular_grid_and_names_the_short_units():
    # SqueezeNet 1.1's last Fire module: channels of a 1x1 and a 3x3 branch, the union is the field
    squeeze = cnnviz.receptive_field(architecture("squeezenet1_1"), "features.12", input_size=224)
    assert (squeeze.kind, squeeze.size, squeeze.stride, squeeze.offset) == ("grid", (207, 207), (16, 16), (-88, -88))
    google = cnnviz.receptive_fields(architecture("googlenet", init_weights=False, aux_logits=False), input_size=224)
    last = google["inception5b"]
    assert (last.kind, last.size, last.stride, last.offset) == ("grid", (379, 379), (32, 32), (-167, -167))
    assert last.overhang == (6, 6) and not last.uniform and "overhang" in last.text
    pool = google["maxpool1"]  # 112 rows pooled 3 by 2 with ceil: 56 windows, the last one past the edge
    assert (pool.size, pool.stride, pool.overhang) == ((11, 11), (4, 4), (1, 1))
    boxes = unit_boxes(architecture("googlenet", init_weights=False, aux_logits=False), ["maxpool1"], input_size=224)
    assert boxes["maxpool1"][0, 0, -1, -1].tolist()[2:] == [223, 223]  # the short unit ends at the input's edge
    assert "cut at the edge" in str(google)
    # a 12 x 12 face window every 2 pixels: MTCNN's P-Net, ceil-mode pooling at an odd size
    pnet = cnnviz.receptive_fields(PNet().eval(), input_size=(25, 31))
    assert (pnet["face"].size, pnet["face"].stride, pnet["face"].offset) == ((12, 12), (2, 2), (0, 0))
    assert pnet["body.2"].overhang == (1, 1) and pnet["face"].overhang == (1, 1)
    assert cnnviz.receptive_fields(PNet().eval(), input_size=(24, 30))["face"].overhang is None

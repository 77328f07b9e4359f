"""Kernels: the right weights, the right colours, every kind of convolution, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from matplotlib.backends.backend_agg import FigureCanvasAgg
from torch import nn
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz import CnnvizError


@pytest.fixture(scope="module")
def photos():
    return cnnviz.load_model("builtin:photos")


def rendered(figure) -> tuple[np.ndarray, FigureCanvasAgg]:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(float) / 255, canvas


@pytest.mark.parametrize("scope", ["kernel", "layer", "global"])
def test_first_layer_kernels_are_drawn_with_their_true_colours(photos, scope):
    # Reference: the raw weights, normalised here by hand: w / (2 s) + 0.5 with s the max |w|
    # over the kernel, the layer, or every convolution of the model.
    weight = photos.module.features[0].weight.detach()
    everything = max(m.weight.detach().abs().max() for m in photos.module.modules() if isinstance(m, nn.Conv2d))
    scale = {"kernel": weight.abs().flatten(1).amax(1)[:, None, None, None],
             "layer": weight.abs().max(), "global": everything}[scope]
    expected = (weight / (2 * scale) + 0.5).numpy()
    figure = cnnviz.plots.kernels(cnnviz.kernels(photos, "features.0"), scope=scope)
    pixels, _ = rendered(figure)
    height = pixels.shape[0]
    kernel_axes = [axis for axis in figure.axes if axis.images and axis.get_label() != "<colorbar>"][:16]
    assert len(kernel_axes) == 16
    for index, axis in enumerate(kernel_axes):
        box = axis.get_window_extent()
        size = weight.shape[-1]
        for row in range(size):
            for column in range(size):
                x = box.x0 + (column + 0.5) * box.width / size
                y = height - (box.y0 + box.height - (row + 0.5) * box.height / size)
                shown = pixels[int(y), int(x)]
                np.testing.assert_allclose(shown, expected[index, :, row, column], atol=1.5 / 255,
                                           err_msg=f"kernel {index} pixel ({row}, {column})")


def test_pairs_view_draws_the_raw_weights(photos):
    result = cnnviz.kernels(photos, "features.10", channels="2-5", inputs="0-3")
    assert result.view == "pairs" and result.outputs == [2, 3, 4, 5] and result.inputs == [0, 1, 2, 3]
    weight = photos.module.features[10].weight.detach()
    assert torch.equal(result.weight, weight[2:6])
    figure = cnnviz.plots.kernels(result, scope="layer")
    image = figure.axes[0].images[0]
    drawn = image.get_array()
    # the mosaic: 3x3 maps separated by one blank pixel
    assert np.allclose(drawn[0:3, 0:3], weight[2, 0].numpy()) and np.allclose(drawn[4:7, 8:11], weight[3, 2].numpy())
    assert np.ma.is_masked(drawn[3, 3]) or np.isnan(drawn[3, 3])
    low, high = image.get_clim()
    assert low == pytest.approx(-float(weight.abs().max())) and high == pytest.approx(float(weight.abs().max()))


def test_depthwise_grouped_transposed_1d_and_3d():
    mobilenet = torchvision.models.mobilenet_v2()
    depthwise = cnnviz.kernels(mobilenet, "features.1.conv.0.0")
    assert depthwise.view == "outputs" and depthwise.groups == 32 and depthwise.weight.shape == (32, 1, 3, 3)
    grouped = nn.Sequential(nn.Conv2d(8, 4, 3, groups=2))
    result = cnnviz.kernels(grouped, "0")
    assert result.weight.shape == (4, 4, 3, 3) and result.input_channel(3, 1) == 5
    transposed = nn.Sequential(nn.ConvTranspose2d(6, 4, 3, groups=2))
    result = cnnviz.kernels(transposed, "0")
    raw = transposed[0].weight.detach()  # 6 x 2 x 3 x 3: in x out/groups
    assert result.weight.shape == (4, 3, 3, 3)
    assert torch.equal(result.weight[3, 1], raw[3 + 1, 1])  # output 3 is in group 1: inputs 3-5
    curves = cnnviz.kernels(nn.Sequential(nn.Conv1d(2, 3, 5)), "0")
    assert curves.view == "curves"
    figure = cnnviz.plots.kernels(curves)
    assert len(figure.axes[0].lines) == 3  # two inputs and the zero line
    slices = cnnviz.kernels(nn.Sequential(nn.Conv3d(3, 2, (2, 3, 3))), "0")
    assert slices.view == "slices"
    drawn = cnnviz.plots.kernels(slices).axes[0].images[0].get_array()
    assert np.allclose(drawn[0:3, 4:7], slices.weight[0, :, 1].sum(0).numpy())
    for view in ("pairs", "outputs", "colour"):
        for scope in ("kernel", "layer", "global"):
            model = torchvision.models.alexnet()
            cnnviz.plots.kernels(cnnviz.kernels(model, "features.0", view=view, channels="0-3"), scope=scope)


def test_errors_name_the_fix(photos):
    with pytest.raises(CnnvizError, match="features.1 is a BatchNorm2d, not a convolution; its convolutions are: features.0, features.3"):
        cnnviz.kernels(photos, "features.1")
    with pytest.raises(CnnvizError, match=r"output channel 16 is out of range: there are 16 output channels \(valid: 0-15\)"):
        cnnviz.kernels(photos, "features.0", channels="10-16")
    with pytest.raises(CnnvizError, match="colour view needs kernels over 3 input channels"):
        cnnviz.kernels(photos, "features.3", view="colour")
    with pytest.raises(CnnvizError, match="unknown normalisation scope"):
        cnnviz.plots.kernels(cnnviz.kernels(photos, "features.0"), scope="image")
    with pytest.raises(CnnvizError, match="has no convolutions"):
        cnnviz.kernels(nn.Sequential(nn.Linear(2, 2)), "0")


def test_caps_and_single_channels(photos):
    wide = cnnviz.kernels(photos, "features.24")
    assert len(wide.outputs) == 64 and wide.notes and len(wide.inputs) == 16
    single = cnnviz.kernels(photos, "features.0:5")
    assert single.outputs == [5] and torch.equal(single.weight[0], photos.module.features[0].weight.detach()[5])


def test_the_model_is_untouched(photos):
    before = fingerprint(photos.module)
    for name in cnnviz.convolutions(photos):
        cnnviz.plots.kernels(cnnviz.kernels(photos, name, channels="0-3"), scope="global")
    assert_untouched(photos.module, before)


def test_colour_only_for_a_first_convolution_over_rgb_and_whole_layer_scales():
    grouped = nn.Sequential(nn.Conv2d(6, 8, 3, groups=2))
    assert cnnviz.kernels(grouped, "0").view == "pairs"  # three inputs per group, but not RGB
    with pytest.raises(CnnvizError, match="colour view needs kernels over 3 input channels"):
        cnnviz.kernels(grouped, "0", view="colour")
    depthwise = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4))
    with torch.no_grad():
        depthwise[0].weight.mul_(0.01)
        depthwise[0].weight[3].fill_(3.0)
    shown = cnnviz.kernels(depthwise, "0", channels="0-1")
    low, high = cnnviz.plots.kernels(shown, scope="layer").axes[0].images[0].get_clim()
    assert high == pytest.approx(3.0)  # the whole layer's largest weight (channel 3), not the two shown
    summed = cnnviz.kernels(nn.Sequential(nn.Conv2d(4, 2, 3)), "0", view="outputs", inputs="1,2")
    torch.testing.assert_close(summed.maps(), summed.weight[:, [1, 2]].sum(1))

"""Activations of one image: the right maps, order, scales, and any image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz import CnnvizError


@pytest.fixture(scope="module")
def photos():
    return cnnviz.load_model("builtin:photos")


def test_maps_equal_a_capture_of_the_prepared_image(photos):
    before = fingerprint(photos.module)
    result = cnnviz.activations(photos, "sample:chelsea", ["features.2", "features.10", "classifier.2"])
    x = cnnviz.inputs.prepare(cnnviz.samples.image("chelsea"), photos.preprocessing)
    expected = cnnviz.capture(photos, x, ["features.2", "features.10", "classifier.2"])
    for name in ("features.2", "features.10", "classifier.2"):
        assert torch.equal(result[name].maps, expected[name][0])
    assert_untouched(photos.module, before)
    # the input as the model saw it, de-normalised
    torch.testing.assert_close(result.image, photos.preprocessing.denormalize(x[0]).clamp(0, 1))
    assert result.source == "sample:chelsea"


def test_channels_ordered_by_mean_and_chosen(photos):
    result = cnnviz.activations(photos, "sample:coffee", "features.12", top=5)
    layer = result["features.12"]
    means = layer.maps.flatten(1).mean(1)
    assert layer.order == torch.argsort(means, descending=True)[:5].tolist()
    assert means[layer.order[0]] == means.max()
    indexed = cnnviz.activations(photos, "sample:coffee", "features.12", order="index", top=3)
    assert indexed["features.12"].order == [0, 1, 2]
    chosen = cnnviz.activations(photos, "sample:coffee", ["features.12:7"])
    assert chosen["features.12:7"].order == [7]
    picked = cnnviz.activations(photos, "sample:coffee", "features.12", channels="3,1")
    assert picked["features.12"].order == [3, 1]


@pytest.mark.parametrize("scope", ["map", "layer", "global"])
def test_figure_titles_and_colour_scales_in_raw_units(photos, scope):
    result = cnnviz.activations(photos, "sample:rocket", ["features.10", "features.2"], top=4)
    figure = cnnviz.plots.activations(result, "features.10", scope=scope)
    layer = result["features.10"]
    maps = [axis for axis in figure.axes if axis.images and axis.get_title()]
    assert len(maps) == 4
    for axis, channel in zip(maps, layer.order):
        low, high = layer.channel_range(channel)
        assert axis.get_title() == f"{channel} [{low:.3g}, {high:.3g}]"
        assert np.allclose(axis.images[0].get_array(), layer.maps[channel].numpy())
        reference = {"map": (low, high), "layer": layer.value_range(), "global": result.value_range()}[scope]
        limit = max(abs(reference[0]), abs(reference[1]))
        # features.10 is a convolution: signed values, a diverging scale centred on zero
        assert axis.images[0].get_clim() == pytest.approx((-limit, limit))
    colour_bars = [axis for axis in figure.axes if axis.get_label() == "<colorbar>"]
    assert len(colour_bars) == (4 if scope == "map" else 1)


def test_non_negative_maps_use_a_scale_from_zero_and_overlays(photos):
    result = cnnviz.activations(photos, "sample:rocket", "features.2", top=2)
    figure = cnnviz.plots.activations(result, scope="layer", overlay=True)
    axis = next(a for a in figure.axes if a.get_title())
    base, heat = axis.images
    assert base.get_array().shape == (64, 64, 3) and heat.get_array().shape == (64, 64)
    assert heat.get_clim() == pytest.approx((0, result["features.2"].value_range()[1]))


def test_any_image_mode_and_size_and_vectors(photos, tmp_path):
    Image.fromarray((np.random.default_rng(0).random((37, 91)) * 255).astype(np.uint8)).save(tmp_path / "grey.png")
    result = cnnviz.activations(photos, tmp_path / "grey.png", ["features.5", "classifier.2"])
    assert result["features.5"].maps.shape == (16, 64, 64)
    assert torch.allclose(result.image[0], result.image[1])  # greyscale shown as grey
    figure = cnnviz.plots.activations(result, "classifier.2")
    assert len(figure.axes[0].patches) == 15  # one bar per class
    patterns = cnnviz.load_model("builtin:patterns")
    assert cnnviz.activations(patterns, torch.rand(3, 100, 80), "features.0")["features.0"].maps.shape == (16, 48, 48)


def test_errors(photos):
    with pytest.raises(CnnvizError, match="no layer 'features.99'"):
        cnnviz.activations(photos, "sample:coffee", "features.99")
    with pytest.raises(CnnvizError, match="no sample image"):
        cnnviz.activations(photos, "sample:cofee", "features.2")
    with pytest.raises(CnnvizError, match="order must be"):
        cnnviz.activations(photos, "sample:coffee", "features.2", order="size")
    with pytest.raises(CnnvizError, match="batch of 2"):
        cnnviz.activations(photos, torch.zeros(2, 3, 64, 64), "features.2")
    result = cnnviz.activations(photos, "sample:coffee", "features.2")
    with pytest.raises(CnnvizError, match="unknown normalisation scope"):
        cnnviz.plots.activations(result, scope="image")
    with pytest.raises(CnnvizError, match="no activations for 'features.3'"):
        cnnviz.plots.activations(result, "features.3")

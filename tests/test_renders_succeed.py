"""Renders measured against real images: the stopping rule, restarts, linear filters, MACO and the
objectives of the CLI (negative, diverse, neuron, direction)."""
import json

import pytest
import torch
from click.testing import CliRunner

import cnnviz
from cnnviz.cli.main import main
from cnnviz.errors import CnnvizError
from untouched import assert_untouched, fingerprint


@pytest.fixture(scope="module")
def photos():
    return cnnviz.load_model("builtin:photos")


def sample_means(model, layer):
    inputs = torch.cat([cnnviz.inputs.prepare(cnnviz.samples.image(name), model.preprocessing)
                        for name in cnnviz.samples.names()])
    return cnnviz.capture(model, inputs, [layer])[layer].mean(dim=(2, 3))


def test_renders_beat_the_best_sample_image_and_stop_on_their_own(photos):
    before = fingerprint(photos.module)
    rendering = cnnviz.maximize(photos, "features.10", channels="0-7")
    assert_untouched(photos.module, before)
    means = sample_means(photos, "features.10")
    assert rendering.reference == pytest.approx([float(v) for v in means[:, :8].amax(dim=0)], rel=1e-4)
    # the value is the unit's response to the saved image, and it beats every sample photograph
    again = cnnviz.capture(photos, photos.preprocessing.normalize(rendering.images), ["features.10"])["features.10"]
    assert [float(again[k, k].mean()) for k in range(8)] == pytest.approx(rendering.values, rel=1e-3, abs=1e-4)
    assert all(rendering.succeeded) and rendering.summary().startswith("8/8 renders beat the best real image")
    assert max(rendering.steps_taken) < 256 and min(rendering.steps_taken) >= 16  # stopped early, not too early
    fixed = cnnviz.maximize(photos, "features.10", channels="0-1", steps=24, stop=False)
    assert fixed.steps_taken == [24, 24]


def test_a_unit_below_its_reference_is_flagged_and_named(photos):
    rendering = cnnviz.maximize(photos, "features.14", channels=[6], steps=2, stop=False)
    assert rendering.succeeded == [False] and rendering.below()[0].reference == "features.14:6"
    assert "0/1 renders beat" in rendering.summary() and "features.14:6" in rendering.summary()
    data = rendering.to_dict()
    assert data["units"][0]["succeeded"] is False and data["succeeded"] == 0 and data["measured"] == 1


def test_a_unit_that_starts_dead_restarts_from_the_real_image(photos):
    rendering = cnnviz.maximize(photos, "features.14", channels=[6])
    assert rendering.starts[0].startswith("sample:") and rendering.succeeded == [True]


def test_linear_filter_units_show_their_filter(photos):
    rendering = cnnviz.maximize(photos, "features.0", channels="0-3")
    assert rendering.starts == ["filter"] * 4 and all(rendering.succeeded)
    weight = photos.module.features[0].weight.detach()
    std = torch.tensor(photos.preprocessing.std).view(3, 1, 1)
    for k in range(4):
        image = rendering.images[k]
        top = image.shape[1] // 2 - 1  # the centre neuron of the map sees these 3 x 3 pixels
        patch = image[:, top:top + 3, top:top + 3]
        # the exact maximum in the valid range: white where the weight (per pixel) is positive, black where negative
        strong = (weight[k] / std).abs() > 0.1 * (weight[k] / std).abs().max()
        assert torch.equal((patch[strong] > 0.5), (weight[k][strong] > 0))
        outside = image.clone()
        outside[:, top:top + 3, top:top + 3] = 0.5
        assert torch.all(outside == 0.5)


@pytest.mark.parametrize("param", ["fft", "pixel"])  # MACO does not yet: see the README
def test_every_parameterisation_renders_the_grating_classes(param):
    patterns = cnnviz.load_model("builtin:patterns")
    rendering = cnnviz.maximize(patterns, "logits", channels="grating_0,grating_90", param=param, steps=96,
                                regularize=1.0, seed=0)
    for k, expected in enumerate([0, 90]):
        image = rendering.images[k]
        # horizontal stripes change from row to row, vertical ones from column to column (MACO keeps
        # a natural spectrum's magnitude, so the orientation is in the derivatives, not in one peak)
        down = (image[:, 1:] - image[:, :-1]).pow(2).mean()
        across = (image[:, :, 1:] - image[:, :, :-1]).pow(2).mean()
        assert (down > 1.5 * across) if expected == 0 else (across > 1.5 * down), (param, expected, down, across)


def test_class_renders_keep_their_class_under_shifts_and_scales():
    patterns = cnnviz.load_model("builtin:patterns")
    rendering = cnnviz.maximize(patterns, "logits", channels="all", steps=128, regularize=1.0)
    generator = torch.Generator().manual_seed(1)
    images = rendering.images
    for _ in range(4):
        shift = [int(v) for v in torch.randint(-3, 4, (2,), generator=generator)]
        scale = float(0.9 + 0.2 * torch.rand(1, generator=generator))
        moved = torch.roll(images, shifts=shift, dims=(2, 3))
        size = [round(s * scale) for s in images.shape[2:]]
        moved = torch.nn.functional.interpolate(moved, size=size, mode="bilinear", align_corners=False)
        moved = torch.nn.functional.interpolate(moved, size=images.shape[2:], mode="bilinear", align_corners=False)
        logits = cnnviz.capture(patterns, patterns.preprocessing.normalize(moved), ["logits"])["logits"]
        assert torch.equal(logits.argmax(dim=1), torch.arange(len(images)))


def test_negative_diverse_neuron_and_direction(photos):
    low = cnnviz.maximize(photos, "features.10", channels=[2], negative=True)
    means = sample_means(photos, "features.10")
    assert low.reference[0] == pytest.approx(float(means[:, 2].min()), rel=1e-4)
    assert low.values[0] < low.reference[0] and low.succeeded == [True]
    several = cnnviz.maximize(photos, "features.10", channels=[1, 3], diverse=3, steps=48)
    assert len(several.units) == 6 and [u.channel for u in several.units] == [1, 1, 1, 3, 3, 3]
    assert not torch.allclose(several.images[0], several.images[1], atol=0.05)
    centre = cnnviz.maximize(photos, "features.10", channels=[1], neuron=True, steps=48)
    maps = cnnviz.capture(photos, photos.preprocessing.normalize(centre.images), ["features.10"])["features.10"]
    assert centre.values[0] == pytest.approx(float(maps[0, 1, maps.shape[2] // 2, maps.shape[3] // 2]), rel=1e-3)
    vector = torch.zeros(photos.module.features[10].out_channels)
    vector[[1, 3]] = torch.tensor([1.0, -1.0])
    along = cnnviz.maximize(photos, "features.10", direction=vector, steps=48)
    maps = cnnviz.capture(photos, photos.preprocessing.normalize(along.images), ["features.10"])["features.10"]
    assert along.values[0] == pytest.approx(float((maps[0, 1] - maps[0, 3]).mean()), rel=1e-3, abs=1e-4)
    assert along.values[0] > along.reference[0]
    for kwargs, message in [({"channels": [1], "direction": [1.0]}, "over all channels"),
                            ({"direction": [1.0, 2.0]}, "channels"),
                            ({"channels": [1], "diverse": 0}, "diverse")]:
        with pytest.raises(CnnvizError, match=message):
            cnnviz.maximize(photos, "features.10", **kwargs)


def test_cli_says_how_many_renders_beat_the_real_images(tmp_path):
    result = CliRunner().invoke(main, ["maximize", "-l", "features.10", "-c", "0-3", "--param", "maco",
                                       "-o", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "maximize_features.10-0-3.json").read_text())
    assert data["settings"]["param"] == "maco" and data["measured"] == 4
    assert f"{data['succeeded']}/4 renders beat the best real image (17 sample images)" in result.stderr
    negative = CliRunner().invoke(main, ["maximize", "-l", "features.10:2", "--negative", "--diverse", "2",
                                         "--steps", "16", "-o", str(tmp_path / "n")])
    assert negative.exit_code == 0, negative.stderr
    assert {"maximize_features.10-2-negative-0.png", "maximize_features.10-2-negative-1.png"} <= {
        p.name for p in (tmp_path / "n").iterdir()}
    direction = CliRunner().invoke(main, ["maximize", "-l", "features.10", "--direction", "1,2", "-o", str(tmp_path)])
    assert direction.exit_code == 2 and "channels" in direction.stderr and len(direction.stderr.splitlines()) == 1

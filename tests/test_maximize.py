"""Maximal-response images and Deep Dream: known answers on the pattern model, batches equal
single renders, objectives, parameterisations, transformations, and the untouched model."""
from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from conftest import Counter, pixel_sum_unit
from torch import nn
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz import CnnvizError
from cnnviz import objectives as o
from cnnviz.cli.main import main
from cnnviz.analyses.feature_visualization.parameterization import COLOUR, image_parameters
from cnnviz.analyses.feature_visualization.optimizer import cpu_has_bf16
from cnnviz.analyses.feature_visualization.transforms import Robustness
from cnnviz.models.zoo import patterns


@pytest.fixture(scope="module")
def pattern_model():
    return cnnviz.load_model("builtin:patterns")


@pytest.fixture(scope="module")
def class_renders(pattern_model):
    before = fingerprint(pattern_model.module)
    # each class logit, with a total-variation penalty (without it, grating_135's image also
    # turns blue, and the model splits it between grating_135 and blue_blob)
    rendering = cnnviz.maximize(pattern_model, "logits", channels="all", steps=160, seed=0, regularize=1.0)
    assert_untouched(pattern_model.module, before)
    return rendering


def stripe_angle(image: torch.Tensor) -> float:
    """The dominant stripe orientation of an image, in degrees from the horizontal (0-180)."""
    centred = image - image.mean(dim=(1, 2), keepdim=True)
    power = (torch.fft.fft2(centred).abs() ** 2).sum(dim=0)
    power = torch.fft.fftshift(power)
    size = image.shape[-1]
    centre = size // 2
    rows, columns = torch.meshgrid(torch.arange(size) - centre, torch.arange(size) - centre, indexing="ij")
    radius = (rows**2 + columns**2).float().sqrt()
    power[(radius < 2) | (radius > size / 2)] = 0  # neither the mean nor the corners
    row, column = divmod(int(power.argmax()), size)
    wave = math.degrees(math.atan2(centre - row, column - centre))
    return (wave - 90) % 180


def test_class_renders_are_classified_as_their_class(pattern_model, class_renders):
    probabilities = cnnviz.capture(pattern_model, pattern_model.preprocessing.normalize(class_renders.images),
                                   ["logits"])["logits"].softmax(dim=1)
    for index, name in enumerate(patterns.CLASSES):
        assert probabilities[index, index] >= 0.9, (name, float(probabilities[index, index]))
    assert str(class_renders.units[0]) == "logits:0 (grating_0)" and class_renders.units[0].class_name == "grating_0" and class_renders.settings["size"] == [48, 48]


def test_grating_renders_have_the_classes_orientation(class_renders):
    for name, info in patterns.CLASS_INFO.items():
        if info["kind"] != "grating":
            continue
        angle = stripe_angle(class_renders.images[patterns.CLASSES.index(name)])
        expected = info["stripe_angle"]
        difference = min(abs(angle - expected), 180 - abs(angle - expected))
        assert difference <= 15, (name, angle)


def test_colour_renders_have_the_classes_colour(class_renders):
    for name, info in patterns.CLASS_INFO.items():
        if info["kind"] != "blob":
            continue
        image = class_renders.images[patterns.CLASSES.index(name)]
        excess = (image - image.mean(dim=0, keepdim=True)).flatten(1).mean(dim=1)  # colour beyond grey
        assert int(excess.argmax()) == info["color"].index(1.0), (name, excess.tolist())


def test_class_renders_keep_their_class_under_shifts_and_scales(pattern_model, class_renders):
    rendering = class_renders
    generator = torch.Generator().manual_seed(1)
    images = rendering.images
    for _ in range(4):
        shift = [int(v) for v in torch.randint(-3, 4, (2,), generator=generator)]
        scale = float(0.9 + 0.2 * torch.rand(1, generator=generator))
        moved = torch.roll(images, shifts=shift, dims=(2, 3))
        size = [round(s * scale) for s in images.shape[2:]]
        moved = torch.nn.functional.interpolate(moved, size=size, mode="bilinear", align_corners=False)
        moved = torch.nn.functional.interpolate(moved, size=images.shape[2:], mode="bilinear", align_corners=False)
        logits = cnnviz.capture(pattern_model, pattern_model.preprocessing.normalize(moved), ["logits"])["logits"]
        assert torch.equal(logits.argmax(dim=1), torch.arange(len(images)))


def test_a_batch_renders_what_single_renders_do():
    photos = cnnviz.load_model("builtin:photos")
    batched = cnnviz.maximize(photos, "features.12", channels=[1, 4, 7], steps=24, seed=5, size=48)
    for position, channel in enumerate([1, 4, 7]):
        single = cnnviz.maximize(photos, f"features.12:{channel}", steps=24, seed=5, size=48)
        # The same seed, transformations and steps; only the convolutions' last bits differ (their
        # algorithm depends on the batch size), which 24 steps grow to a few grey levels at most.
        difference = (batched.images[position] - single.images[0]).abs()
        assert float(difference.max()) <= 8 / 255 and float(difference.mean()) <= 1 / 255
        assert batched.values[position] == pytest.approx(single.values[0], rel=5e-3)
    assert len(set(tuple(v for v in batched.images[k].flatten()[:5].tolist()) for k in range(3))) == 3


def test_renders_are_deterministic_and_raise_their_unit():
    photos = cnnviz.load_model("builtin:photos")
    first = cnnviz.maximize(photos, "features.19:3", steps=32, size=48, seed=1)
    second = cnnviz.maximize(photos, "features.19:3", steps=32, size=48, seed=1)
    assert torch.equal(first.images, second.images)
    other = cnnviz.maximize(photos, "features.19:3", steps=32, size=48, seed=2)
    assert not torch.equal(first.images, other.images)
    noise = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(noise, (12,) * 4, value=0.5)
    baseline = cnnviz.capture(photos, photos.preprocessing.normalize(padded), ["features.19:3"])["features.19:3"]
    assert first.values[0] > 3 * float(baseline.mean(dim=(1, 2)).max())


def test_early_exit_and_the_untouched_model_even_when_interrupted():
    photos = cnnviz.load_model("builtin:photos")
    counter = Counter()
    model = nn.Sequential()
    for name, child in photos.module.features.named_children():
        model.add_module(name, child)
        if name == "12":
            model.add_module("counter", counter)
    before = fingerprint(model)
    cnnviz.maximize(model, "12:0", steps=3, size=32)
    assert counter.count == 0, "the network ran past the target layer"
    assert_untouched(model, before)

    def interrupt(done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cnnviz.maximize(model, "12:0", steps=10, size=32, progress=interrupt)
    assert_untouched(model, before)


def test_relu_redirection_revives_dead_units():
    # a unit that is dead on every image at the start, but reachable: all-white images give it
    # 27 - 20 = 7 > 0. Without redirection its gradient is zero and it stays dead.
    model = pixel_sum_unit(2, 20.0)
    # no reference: no restart from a photograph either (that too would revive it)
    stuck = cnnviz.maximize(model, "1:0", steps=80, size=16, redirect_steps=0, lr=0.1, reference=None)
    assert stuck.values[0] == 0.0
    revived = cnnviz.maximize(model, "1:0", steps=80, size=16, redirect_steps=40, lr=0.1, reference=None)
    assert revived.values[0] > 0.5
    assert float(revived.images[0].mean()) > float(stuck.images[0].mean()) + 0.05  # pushed towards white


def test_final_values_are_measured_on_the_saved_images():
    photos = cnnviz.load_model("builtin:photos")
    inputs = lambda r: photos.preprocessing.normalize(r.images)
    channels = cnnviz.maximize(photos, "features.12", channels=[2, 5], steps=6, size=40)
    maps = cnnviz.capture(photos, inputs(channels), ["features.12"])["features.12"]
    assert channels.values == pytest.approx(maps[[0, 1], [2, 5]].mean(dim=(1, 2)).tolist(), rel=1e-4, abs=1e-5)
    neuron = cnnviz.maximize(photos, "features.12:2@3,7", steps=6, size=40)
    assert neuron.values[0] == pytest.approx(float(cnnviz.capture(photos, inputs(neuron), ["features.12"])
                                                   ["features.12"][0, 2, 3, 7]), rel=1e-4, abs=1e-5)
    with pytest.raises(CnnvizError, match="outside the 20x20 maps"):
        cnnviz.maximize(photos, "features.12:2@25,3", steps=1, size=40)


def test_batch_size_splits_without_changing_the_result():
    photos = cnnviz.load_model("builtin:photos")
    whole = cnnviz.maximize(photos, "features.5", channels="0-2", steps=10, size=32, seed=3)
    split = cnnviz.maximize(photos, "features.5", channels="0-2", steps=10, size=32, seed=3, batch_size=1)
    assert whole.settings["batch_size"] >= 3 and split.settings["batch_size"] == 1
    difference = (whole.images - split.images).abs()  # only the convolutions' last bits differ
    assert float(difference.max()) <= 8 / 255 and float(difference.mean()) <= 1 / 255
    assert split.values == pytest.approx(whole.values, rel=5e-3, abs=1e-4)
    diverse = o.channel("features.5", 0) - 0.5 * o.diversity("features.5")
    with pytest.raises(CnnvizError, match="one batch of its 3 images"):
        cnnviz.maximize(photos, objective=diverse, count=3, batch_size=2, steps=1, size=32)
    with pytest.raises(CnnvizError, match="batch_size must be at least 1"):
        cnnviz.maximize(photos, "features.5:0", batch_size=0, steps=1, size=32)


def test_gradients_flow_whatever_the_callers_mode():
    photos = cnnviz.load_model("builtin:photos")
    free = cnnviz.maximize(photos, "features.5:1", steps=5, size=32)
    with torch.no_grad():
        quiet = cnnviz.maximize(photos, "features.5:1", steps=5, size=32)
    with torch.inference_mode():
        inferred = cnnviz.maximize(photos, "features.5:1", steps=5, size=32)
        dreamed = cnnviz.dream(photos, torch.rand(3, 48, 48), "features.5", octaves=1, steps=3)
    assert torch.equal(free.images, quiet.images) and torch.equal(free.images, inferred.images)
    assert dreamed.gain > 1


def test_models_of_other_types_and_channel_counts():
    photos = cnnviz.load_model("builtin:photos")
    double = nn.Sequential(*list(photos.module.features.children())[:6]).double()
    before = fingerprint(double)
    rendering = cnnviz.maximize(double, "4:3", steps=4, size=24)
    assert_untouched(double, before)
    assert rendering.images.dtype == torch.float32 and math.isfinite(rendering.values[0])
    two = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU())
    pair = cnnviz.maximize(two, "1", channels="0-1", steps=3, size=16)
    assert pair.images.shape == (2, 2, 16, 16) and pair.display().shape == (2, 3, 16, 16)
    assert torch.equal(pair.display()[:, 2], pair.images[:, 1])


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 instructions")
def test_bf16_renders_as_well_as_fp32():
    photos = cnnviz.load_model("builtin:photos")
    full = cnnviz.maximize(photos, "features.12", channels="0-3", steps=32, size=40, precision="fp32")
    half = cnnviz.maximize(photos, "features.12", channels="0-3", steps=32, size=40, precision="bf16")
    assert half.settings["precision"] == "bf16" and full.settings["precision"] == "fp32"
    noise = photos.preprocessing.normalize(torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(0)))
    baseline = cnnviz.capture(photos, noise, ["features.12"])["features.12"][:, :4].mean(dim=(2, 3)).max(dim=0).values
    for value, floor in zip(half.values, baseline.tolist()):
        assert value > floor + 0.5
    assert sum(half.values) > 0.7 * sum(full.values)


def test_progress_knows_its_total():
    import io

    from tqdm import tqdm

    photos = cnnviz.load_model("builtin:photos")
    with tqdm(file=io.StringIO()) as bar:
        cnnviz.maximize(photos, "features.5", channels="0-2", steps=4, size=24, progress=bar.update)
        assert bar.total == 12 and bar.n == 12
    with tqdm(file=io.StringIO()) as bar:
        cnnviz.dream(photos, torch.rand(3, 48, 48), "features.5", octaves=2, steps=3, progress=bar.update)
        assert bar.total == 6 and bar.n == 6


def test_objectives_compose_like_the_maths():
    activations = {"a": torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)}
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = activations["a"]
    assert torch.equal(o.channel("a", 1)(activations, images), maps[:, 1].mean(dim=(1, 2)))
    assert torch.equal(o.channel("a", [0, 2])(activations, images), torch.stack([maps[0, 0].mean(), maps[1, 2].mean()]))
    assert torch.equal(o.neuron("a", 2)(activations, images), maps[:, 2, 2, 2])
    assert torch.equal(o.neuron("a", 2, 1, 3)(activations, images), maps[:, 2, 1, 3])
    assert torch.allclose(o.layer("a")(activations, images), maps.pow(2).flatten(1).mean(dim=1))
    direction = torch.tensor([1.0, -2.0, 0.5])
    expected = (maps * direction[None, :, None, None]).sum(dim=1).flatten(1).mean(dim=1)
    assert torch.allclose(o.direction("a", direction)(activations, images), expected)
    variation = o.total_variation()(activations, images)
    manual = (images[:, :, 1:] - images[:, :, :-1]).abs().flatten(1).mean(1) + (images[..., 1:] - images[..., :-1]).abs().flatten(1).mean(1)
    assert torch.allclose(variation, manual)
    combined = 2 * o.channel("a", 1) - 0.5 * o.total_variation() + 3
    assert torch.allclose(combined(activations, images), 2 * maps[:, 1].mean(dim=(1, 2)) - 0.5 * manual + 3)
    assert combined.layers == ("a",)
    same = {"a": torch.ones(3, 2, 4, 4)}
    assert torch.allclose(o.diversity("a")(same, images[:1].expand(3, -1, -1, -1)), torch.ones(3))
    with pytest.raises(CnnvizError, match="multiplied by numbers"):
        o.channel("a", 1) * o.channel("a", 2)
    with pytest.raises(CnnvizError, match="2 units for a batch of 3"):
        o.channel("a", [0, 1])({"a": torch.zeros(3, 3, 2, 2)}, images)


def test_custom_objectives_with_diversity():
    photos = cnnviz.load_model("builtin:photos")
    plain = cnnviz.maximize(photos, objective=o.channel("features.12", 3), count=3, steps=24, size=48)
    diverse = cnnviz.maximize(photos, objective=o.channel("features.12", 3) - 20 * o.diversity("features.12"),
                              count=3, steps=24, size=48)
    assert plain.images.shape == diverse.images.shape == (3, 3, 48, 48)

    def similarity(images):  # the mean Gram-matrix similarity of the batch's images at the layer
        activations = cnnviz.capture(photos, photos.preprocessing.normalize(images), ["features.12"])
        return float(o.diversity("features.12")(activations, images).mean())

    assert similarity(diverse.images) < similarity(plain.images)
    with pytest.raises(CnnvizError, match="no layer 'nowhere'"):
        cnnviz.maximize(photos, objective=o.channel("nowhere", 0))


def test_parameterisations_shapes_and_ranges():
    def generators():
        return [torch.Generator().manual_seed(k) for k in range(2)]

    for kind in ("fft", "pixel"):
        for channels, size in ((3, (40, 56)), (1, (33, 20))):
            params = image_parameters(kind, generators(), channels, size)
            images = params.images()
            assert images.shape == (2, channels, *size) and 0 < images.min() and images.max() < 1
            assert torch.equal(images, image_parameters(kind, generators(), channels, size).images())
            assert not torch.equal(images[0], images[1])
    assert COLOUR.norm(dim=0).max() == pytest.approx(1.0)
    with pytest.raises(CnnvizError, match="unknown parameterisation"):
        image_parameters("wavelet", generators(), 3, (8, 8))


def test_one_channel_models_and_non_square_sizes():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
    rendering = cnnviz.maximize(model, "3", channels="0-3", steps=4, size=(24, 40), param="pixel")
    assert rendering.images.shape == (4, 1, 24, 40) and rendering.display().shape == (4, 3, 24, 40)


def test_transformations_draw_per_image_and_repeat_with_the_seed():
    images = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0)).expand(2, -1, -1, -1)
    robust = Robustness()
    out = robust(images, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    assert out.shape == (2, 3, 44, 44) and not torch.allclose(out[0], out[1])
    same = robust(images, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)])
    assert torch.equal(same[0], same[1])
    assert torch.equal(Robustness.none()(images, [None, None]), images)


def test_transformations_equal_torchs_affine_grid_on_the_padded_image():
    """The padding folded into the sampling gives what torch's own affine_grid and grid_sample
    give on the explicitly padded image, wherever that reads inside the padded canvas (outside,
    torch's reflection would bring image content back; ours reads the grey padding)."""
    from torch.nn import functional as F

    images = torch.rand(5, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    robust = Robustness()
    ours = robust(images, [torch.Generator().manual_seed(k) for k in range(5)])
    padded = F.pad(images, (12,) * 4, value=0.5)
    height, width = padded.shape[2:]
    draws = torch.stack([torch.rand(6, generator=torch.Generator().manual_seed(k)) for k in range(5)])
    angle = torch.deg2rad((draws[:, 0] * 2 - 1) * 10)
    scale = 0.9 + 0.2 * draws[:, 1]
    shift_x = (draws[:, 2] * 2 - 1) * 8 + (draws[:, 4] * 2 - 1) * 4
    shift_y = (draws[:, 3] * 2 - 1) * 8 + (draws[:, 5] * 2 - 1) * 4
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin * height / width, 2 * shift_x / width], dim=1),
                         torch.stack([sin * width / height, cos, 2 * shift_y / height], dim=1)], dim=1)
    grid = F.affine_grid(theta, padded.shape, align_corners=False)
    reference = F.grid_sample(padded, grid, align_corners=False, padding_mode="reflection")
    inside = (grid.abs() <= 1).all(dim=-1)[:, None].expand_as(reference)
    assert ours.shape == reference.shape == (5, 3, 64, 80) and inside.float().mean() > 0.7
    assert torch.allclose(ours[inside], reference[inside], atol=1e-5)
    assert torch.allclose(ours[~inside], torch.tensor(0.5), atol=1e-5)  # beyond the canvas: grey
    only_pad = Robustness(pad=4, jitter=0, scale=(1.0, 1.0), rotate=0.0, jitter_after=0)
    assert torch.equal(only_pad(images, [None] * 5), padded[:, :, 8:-8, 8:-8])
    # an exact identity through the sampling path: a scale range of one value, no shift or turn
    exact = Robustness(pad=4, jitter=0, scale=(1.0, 1.0 + 1e-12), rotate=0.0, jitter_after=0)
    assert torch.allclose(exact(images, [torch.Generator()] * 5), padded[:, :, 8:-8, 8:-8], atol=1e-5)


def test_adam_equals_torchs():
    from cnnviz.analyses.feature_visualization.optimizer import Adam

    generator = torch.Generator().manual_seed(0)
    start = [torch.randn(4, 5, generator=generator), torch.randn(3, generator=generator)]
    ours = [t.clone().requires_grad_(True) for t in start]
    theirs = [t.clone().requires_grad_(True) for t in start]
    mine, reference = Adam(ours, lr=0.05), torch.optim.Adam(theirs, lr=0.05, foreach=False)
    for step in range(6):
        gradients = [torch.randn(t.shape, generator=generator) for t in start]
        for tensors, optimizer in ((ours, mine), (theirs, reference)):
            optimizer.zero_grad()
            for tensor, gradient in zip(tensors, gradients):
                tensor.grad = gradient.clone()
            optimizer.step()
    for a, b, first in zip(ours, theirs, start):
        assert torch.allclose(a, b, rtol=0, atol=1e-6) and not torch.allclose(a, first)


def test_adam_rows_restarted_at_a_lower_rate_move_that_much_less():
    from cnnviz.analyses.feature_visualization.optimizer import Adam

    generator = torch.Generator().manual_seed(1)
    start = torch.randn(3, 4, generator=generator)
    gradients = [torch.randn(3, 4, generator=generator) for _ in range(7)]
    paths = []
    for rate in (1.0, 0.5):
        tensor = start.clone().requires_grad_(True)
        optimizer = Adam([tensor], lr=0.1)
        for step, gradient in enumerate(gradients):
            if step == 3:
                optimizer.reset([1, 2], rate)
                at_reset = tensor.detach().clone()
            if step == 5:  # row 0 leaves the batch: the rates go with their rows
                kept = tensor.detach()[1:].clone().requires_grad_(True)
                optimizer, tensor, at_reset = optimizer.select([kept], [1, 2]), kept, at_reset[1:]
            optimizer.zero_grad()
            tensor.grad = gradient[-len(tensor):].clone()
            optimizer.step()
        paths.append(tensor.detach() - at_reset)
    assert torch.allclose(paths[1], 0.5 * paths[0], rtol=1e-5, atol=1e-7) and paths[0].abs().min() > 0


def test_auto_size_follows_the_receptive_field():
    photos = cnnviz.load_model("builtin:photos")
    early = cnnviz.maximize(photos, "features.2:0", steps=1, filters=False)
    late = cnnviz.maximize(photos, "features.19:0", steps=1)
    assert early.settings["size"] == [48, 48]  # a 3x3 field: the smallest canvas
    assert late.settings["size"][0] > 48 and late.settings["size"][0] % 8 == 0
    assert cnnviz.maximize(photos, "chelsea", steps=1).settings["size"] == [64, 64]


def test_errors(pattern_model):
    for kwargs, message in [
        ({"layer": "features.4"}, "is a whole layer"),
        ({"layer": "features.4:3", "channels": "0-2"}, "already names a channel"),
        ({"layer": "features.4", "channels": "0-99"}, "valid: 0-47"),
        ({"layer": "purple_blob"}, "'purple_blob' is neither a layer nor a class.*the class 'red_blob'"),
        ({"layer": "features.4:1", "size": 4}, "at least 8 pixels"),
        ({"layer": "features.4:1", "precision": "fp8"}, "unknown precision"),
        ({"layer": "features.4:1", "param": "wavelet"}, "unknown parameterisation"),
        ({}, "name what to maximise"),
    ]:
        with pytest.raises(CnnvizError, match=message):
            cnnviz.maximize(pattern_model, steps=1, **kwargs)


def test_deep_dream_raises_the_layers_and_keeps_the_size():
    photos = cnnviz.load_model("builtin:photos")
    before = fingerprint(photos.module)
    result = cnnviz.dream(photos, "sample:coffee", ["features.12", "features.19"], weights=[1, 0.5],
                          octaves=3, steps=6)
    assert_untouched(photos.module, before)
    assert result.image.shape == result.original.shape == (3, 400, 600)
    assert result.gain > 2
    inputs = photos.preprocessing.normalize(torch.stack([result.original, result.image]))
    energy = cnnviz.capture(photos, inputs, ["features.12"])["features.12"].pow(2).flatten(1).mean(dim=1)
    assert energy[1] > 2 * energy[0]
    counter = Counter()
    counted = nn.Sequential(counter, *list(photos.module.features.children())[:13])
    calls = []
    for tile in (32, 512):
        counter.count = 0
        tiled = cnnviz.dream(counted, torch.rand(3, 70, 90), "12", octaves=2, steps=2, tile=tile)
        assert tiled.image.shape == (3, 70, 90)
        calls.append(counter.count)
    assert calls[0] > calls[1]  # 32-pixel tiles: several passes per step instead of one
    with pytest.raises(CnnvizError, match="too small"):
        cnnviz.dream(photos, torch.rand(3, 2, 2), "features.19")
    with pytest.raises(CnnvizError, match="raises whole layers"):
        cnnviz.dream(photos, "sample:coffee", "features.12:3")
    with pytest.raises(CnnvizError, match="2 weights for 1 layers"):
        cnnviz.dream(photos, "sample:coffee", "features.12", weights=[1, 2])


def test_cli_maximize_and_dream(tmp_path):
    stats = CliRunner().invoke(main, ["stats", "-i", "samples", "-l", "features.12", "-o", str(tmp_path / "stats")])
    assert stats.exit_code == 0, stats.stderr
    result = CliRunner().invoke(main, ["maximize", "-l", "features.12", "-c", "0-2", "--steps", "8",
                                       "--stats", str(tmp_path / "stats" / "stats.npz"), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    names = {p.name for p in tmp_path.iterdir() if p.is_file()}
    assert {"maximize_features.12-0.png", "maximize_features.12-2.png", "maximize_features.12-0-2_grid.png",
            "maximize_features.12-0-2.json"} <= names
    summary = json.loads((tmp_path / "maximize_features.12-0-2.json").read_text())
    assert [u["unit"] for u in summary["units"]] == ["features.12:0", "features.12:1", "features.12:2"]
    photos = cnnviz.load_model("builtin:photos")
    samples = torch.cat([cnnviz.inputs.prepare(cnnviz.samples.image(name), photos.preprocessing)
                           for name in cnnviz.samples.names()])
    means = cnnviz.capture(photos, samples, ["features.12"])["features.12"].double().mean(dim=(2, 3)).amax(dim=0)
    for unit in summary["units"]:
        channel = int(unit["unit"].split(":")[1])
        assert unit["reference"] == pytest.approx(float(means[channel]), rel=1e-4)
        assert unit["succeeded"] == (unit["value"] > unit["reference"])
    assert "statistics" in summary["reference_source"]
    assert f"{summary['succeeded']}/3 renders beat the best real image" in result.stderr
    sized = CliRunner().invoke(main, ["maximize", "-l", "features.12:1", "--size", "40", "56", "--steps", "2",
                                      "-o", str(tmp_path / "sized")])
    assert sized.exit_code == 0, sized.stderr
    assert json.loads((tmp_path / "sized" / "maximize_features.12-1.json").read_text())["settings"]["size"] == [40, 56]
    dream = CliRunner().invoke(main, ["dream", "-i", "sample:chelsea", "-l", "features.12", "--octaves", "2",
                                      "--steps", "2", "-o", str(tmp_path)])
    assert dream.exit_code == 0, dream.stderr
    from PIL import Image
    assert Image.open(tmp_path / "dream_features.12.png").size == (451, 300)
    for args, fragment in [
        (["maximize", "-l", "features.12"], "is a whole layer"),
        (["maximize", "-l", "features.12:1", "--size", "abc"], "--size"),
        (["maximize", "-l", "features.12:1", "--stats", str(tmp_path / "none.npz")], "does not exist"),
        (["dream", "-i", "sample:chelsea", "-l", "features.12", "--weight", "1", "--weight", "2"], "2 weights for 1 layers"),
    ]:
        error = CliRunner().invoke(main, args)
        assert error.exit_code == 2 and len(error.stderr.splitlines()) == 1 and fragment in error.stderr, error.stderr


def test_numbers_that_would_make_meaningless_images_are_refused(pattern_model):
    for kwargs, message in [
        ({"lr": float("nan")}, "lr a positive finite number"),
        ({"lr": float("inf")}, "lr a positive finite number"),
        ({"seed": 1180591620717411303424}, "seed must be a whole number from 0 to"),
        ({"seed": -1}, "seed must be a whole number"),
    ]:
        with pytest.raises(CnnvizError, match=message):
            cnnviz.maximize(pattern_model, "features.4:1", steps=1, **kwargs)
    for kwargs, message in [({"step": float("nan")}, "the step must be a positive finite number"),
                            ({"seed": 2**70}, "seed must be a whole number")]:
        with pytest.raises(CnnvizError, match=message):
            cnnviz.dream(pattern_model, "sample:chelsea", "features.4", octaves=1, steps=1, **kwargs)
    # the largest seed allowed still works (the per-image seeds stay in torch's range)
    assert cnnviz.maximize(pattern_model, "features.4:1", steps=1, size=16, seed=2**63 - 1).images.shape[0] == 1


def test_an_objective_with_a_channel_out_of_range_is_one_clear_error():
    from cnnviz import objectives as o

    photos = cnnviz.load_model("builtin:photos")
    with pytest.raises(CnnvizError, match=r"channel\(features.12, 99999\) does not fit .*size 32"):
        cnnviz.maximize(photos, objective=o.channel("features.12", 99999), steps=2)


def test_a_render_too_large_for_the_memory_is_refused_before_any_pass(pattern_model):
    # 100000 x 100000 would need terabytes: refused at once, naming a size that fits
    with pytest.raises(CnnvizError, match=r"needs about \d+\.\d GiB .* render at (\d+)x\1 or less") as refused:
        cnnviz.maximize(pattern_model, "features.4:1", steps=1, size=100_000)
    side = int(str(refused.value).rsplit("(size=", 1)[1].rstrip(")"))
    assert 1000 < side < 100_000
    with pytest.raises(CnnvizError, match="needs about"):
        cnnviz.maximize(pattern_model, "logits:0", steps=1, size=(8, 10**6))
    # a model that takes one size only is told so, not given a size that would not run
    lenet = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 14 * 14, 10))
    with pytest.raises(CnnvizError, match="takes 32x32 inputs only"):
        cnnviz.maximize(cnnviz.load_model(lenet, input_size=32), "logits:0", steps=1, size=100_000)

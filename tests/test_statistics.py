"""Statistics over a population: equal to a numpy reference, mergeable, any kind of input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz import CnnvizError
from cnnviz.models.zoo import patterns

LAYERS = ["features.0", "features.1", "features.4", "classifier.1"]  # signed conv, in-place ReLU, ReLU, logits


@pytest.fixture(scope="module")
def model():
    return cnnviz.load_model("builtin:patterns")


@pytest.fixture(scope="module")
def population(model):
    images, labels = patterns.generate(240, seed=77)
    inputs = model.preprocessing.normalize(images)
    inputs[:16] *= 0.05  # dim first images: the histogram range must grow later, exactly
    return inputs, labels


def activations(model, inputs: torch.Tensor, layer: str, batch: int) -> np.ndarray:
    """The layer's output for every image, computed in the same batches as the statistics (a
    convolution's last bits can depend on the batch size)."""
    return torch.cat([cnnviz.capture(model, chunk, [layer])[layer] for chunk in inputs.split(batch)]).double().numpy()


def reference(model, inputs: torch.Tensor, layer: str, bins: int, near_zero: float, batch: int) -> dict:
    """Everything computed at once over all activations, in numpy float64."""
    values = activations(model, inputs, layer, batch)
    if values.ndim == 2:
        values = values[:, :, None, None]
    n, channels, height, width = values.shape
    flat = values.transpose(1, 0, 2, 3).reshape(channels, -1)
    half_range = 2.0**-20
    while flat.max() > half_range or -flat.min() >= half_range:
        half_range *= 2
    inner = np.linspace(-half_range, half_range, bins + 1)[1:-1]
    histogram = np.stack([np.bincount(np.searchsorted(inner, row, side="left"), minlength=bins) for row in flat])
    peaks = values.reshape(n, channels, -1)
    best = peaks.max(axis=2).T  # C x N
    order = np.argsort(-best, axis=1, kind="stable")
    lowest = peaks.min(axis=2).T
    bottom_order = np.argsort(lowest, axis=1, kind="stable")
    return {
        "count": np.full(channels, flat.shape[1]), "mean": flat.mean(1), "std": flat.std(1),
        "minimum": flat.min(1), "maximum": flat.max(1), "positive": (flat > 0).sum(1),
        "near_zero": (np.abs(flat) <= near_zero).sum(1), "histogram": histogram, "half_range": half_range,
        "order": order, "best": best, "argmax": peaks.argmax(axis=2).T, "width": width,
        "bottom_order": bottom_order, "lowest": lowest, "argmin": peaks.argmin(axis=2).T,
    }


def test_statistics_equal_a_numpy_reference_on_240_images(model, population):
    inputs, _ = population
    before = fingerprint(model.module)
    loader = DataLoader(TensorDataset(inputs, torch.zeros(len(inputs))), batch_size=37)
    stats = cnnviz.statistics(model, loader, LAYERS, exemplars=5, near_zero=1e-3, batch_size=37)
    assert_untouched(model.module, before)
    assert stats.images == 240
    for layer in LAYERS:
        got, expected = stats[layer], reference(model, inputs, layer, got_bins := 128, 1e-3, batch=37)
        assert got.bins == got_bins
        np.testing.assert_array_equal(got.count, expected["count"])
        np.testing.assert_allclose(got.mean, expected["mean"], rtol=1e-6)
        np.testing.assert_allclose(got.std, expected["std"], rtol=1e-6)
        np.testing.assert_array_equal(got.minimum, expected["minimum"])
        np.testing.assert_array_equal(got.maximum, expected["maximum"])
        np.testing.assert_array_equal(got.positive, expected["positive"])
        np.testing.assert_array_equal(got.near_zero, expected["near_zero"])
        assert got.half_range == expected["half_range"]
        np.testing.assert_array_equal(got.histogram, expected["histogram"])
        np.testing.assert_array_equal(got.dead, expected["positive"] == 0)
        # exemplars: the top 5 images per channel and the bottom 5 (the smallest values, lowest
        # first), ties keeping the earlier image, and where in the map each value is
        for prefix, order, extreme, where in (("exemplar", "order", "best", "argmax"),
                                              ("bottom", "bottom_order", "lowest", "argmin")):
            picked = expected[order][:, :5]
            np.testing.assert_array_equal(getattr(got, f"{prefix}_images"), picked)
            np.testing.assert_array_equal(getattr(got, f"{prefix}_values"), np.take_along_axis(expected[extreme], picked, 1))
            position = np.take_along_axis(expected[where], picked, 1)
            np.testing.assert_array_equal(getattr(got, f"{prefix}_positions")[..., 0], position // expected["width"])
            np.testing.assert_array_equal(getattr(got, f"{prefix}_positions")[..., 1], position % expected["width"])
        assert (got.bottom_values[:, 0] == got.minimum).all()
        summary = got.layer_summary()
        everything = activations(model, inputs, layer, 37)
        assert summary["mean"] == pytest.approx(everything.mean(), rel=1e-6)
        assert summary["std"] == pytest.approx(everything.std(), rel=1e-6)
        assert sum(summary["histogram"]) == everything.size


def test_exemplar_crops_come_from_the_input_around_the_maximum(model, population):
    inputs, _ = population
    stats = cnnviz.statistics(model, inputs[:40], ["features.4"], exemplars=3)
    layer = stats["features.4"]
    side = layer.exemplar_crops.shape[-1]
    assert layer.map_size == (24, 24) and side == 16  # 48 px input, 24 x 24 maps: at least 16 px
    stride = 48 // 24
    channel = int(np.argmax(layer.exemplar_values[:, 0]))
    image, (row, column) = layer.exemplar_images[channel, 0], layer.exemplar_positions[channel, 0]
    shown = model.preprocessing.denormalize(inputs[image]).clamp(0, 1)
    centre_y, centre_x = int((row + 0.5) * stride), int((column + 0.5) * stride)
    top, left = min(max(0, centre_y - 8), 48 - 16), min(max(0, centre_x - 8), 48 - 16)
    expected = (shown[:, top:top + 16, left:left + 16] * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(layer.exemplar_crops[channel, 0], expected)
    assert layer.exemplar_name(channel, 0) == f"image {image}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_equals_streaming_everything_together(model, population, seed):
    inputs, _ = population
    generator = torch.Generator().manual_seed(seed)
    shuffled = inputs[torch.randperm(len(inputs), generator=generator)]
    cut = int(torch.randint(1, len(inputs) - 1, (1,), generator=generator))
    first_part, second_part = shuffled[:cut], shuffled[cut:]
    first_batches = first_part.split(int(torch.randint(1, 50, (1,), generator=generator)))
    second_batches = second_part.split(int(torch.randint(1, 50, (1,), generator=generator)))
    a = cnnviz.statistics(model, first_batches, LAYERS, exemplars=4)
    b = cnnviz.statistics(model, second_batches, LAYERS, exemplars=4)
    # The same batches streamed in one go: every per-batch float32 step is the same, so the merge
    # must agree to float64 rounding (accuracy against numpy is the reference test's job).
    together = cnnviz.statistics(model, [*first_batches, *second_batches], LAYERS, exemplars=4)
    merged = a.merge(b)
    assert merged.images == together.images == len(inputs)
    for layer in LAYERS:
        got, expected = merged[layer], together[layer]
        for exact in ("count", "minimum", "maximum", "positive", "near_zero", "histogram",
                      "exemplar_values", "exemplar_images", "exemplar_positions", "exemplar_crops",
                      "bottom_values", "bottom_images", "bottom_positions", "bottom_crops"):
            np.testing.assert_array_equal(getattr(got, exact), getattr(expected, exact), err_msg=f"{layer} {exact}")
        assert got.half_range == expected.half_range
        np.testing.assert_allclose(got.mean, expected.mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got.std, expected.std, rtol=1e-10)
        names = [[got.exemplar_name(c, k) for k in range(4)] for c in range(got.channels)]
        assert names == [[f"image {i}" for i in row] for row in expected.exemplar_images.tolist()]


def test_large_batches_are_split_and_dict_batches_read(model, population):
    inputs, _ = population
    whole = cnnviz.statistics(model, inputs, ["features.4"], batch_size=16)  # one tensor of 240
    split = cnnviz.statistics(model, inputs.split(16), ["features.4"])
    np.testing.assert_array_equal(whole["features.4"].histogram, split["features.4"].histogram)
    np.testing.assert_array_equal(whole["features.4"].mean, split["features.4"].mean)  # the same batches
    dicts = cnnviz.statistics(model, [{"pixel_values": b, "label": 0} for b in inputs.split(40)], ["features.4"], batch_size=16)
    np.testing.assert_array_equal(dicts["features.4"].histogram, split["features.4"].histogram)
    with pytest.raises(CnnvizError, match="dict with keys \\['label', 'pixels'\\]"):
        cnnviz.statistics(model, [{"pixels": inputs[:2], "label": 0}], ["features.4"])


def test_merging_statistics_taken_differently_is_refused(model, population):
    inputs, _ = population
    a = cnnviz.statistics(model, inputs[:8], ["features.4"], exemplars=3)
    b = cnnviz.statistics(model, inputs[8:16], ["features.4"], exemplars=4)
    with pytest.raises(CnnvizError, match="taken differently"):
        a.merge(b)
    smaller = torch.nn.functional.interpolate(inputs[:8], size=(40, 40))
    c = cnnviz.statistics(model, smaller, ["features.4"], exemplars=3)
    with pytest.raises(CnnvizError, match="taken differently"):
        a.merge(c)


def test_image_folders_samples_and_unreadable_files(model, tmp_path):
    folder = tmp_path / "population"
    (folder / "more").mkdir(parents=True)
    for name in ("coffee", "chelsea", "rocket"):
        cnnviz.samples.image(name).save(folder / f"{name}.png")
    cnnviz.samples.image("moon").save(folder / "more" / "moon.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    stats = cnnviz.statistics(model, folder, ["features.4"], batch_size=2)
    assert stats.images == 4 and sorted(stats.skipped) == sorted([str(folder / "notes.txt"), str(folder / "broken.png")])
    prepared = torch.cat([cnnviz.inputs.prepare(cnnviz.inputs.open_image(p), model.preprocessing)
                          for p in sorted([str(folder / "chelsea.png"), str(folder / "coffee.png"),
                                           str(folder / "more" / "moon.jpg"), str(folder / "rocket.png")])])
    direct = cnnviz.statistics(model, prepared, ["features.4"])
    np.testing.assert_array_equal(stats["features.4"].histogram, direct["features.4"].histogram)
    samples = cnnviz.statistics(model, "samples", ["classifier.1"])
    assert samples.images == len(cnnviz.samples.names())
    pil = cnnviz.statistics(model, [cnnviz.samples.image("coffee"), "sample:moon"], ["classifier.1"])
    assert pil.images == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnvizError, match="holds no files"):
        cnnviz.statistics(model, tmp_path / "empty", ["features.4"])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(CnnvizError, match="no image could be read"):
        cnnviz.statistics(model, tmp_path / "junk", ["features.4"])


def test_bad_arguments(model, population):
    inputs, _ = population
    with pytest.raises(CnnvizError, match="statistics are per layer"):
        cnnviz.statistics(model, inputs[:4], ["features.4:2"])
    with pytest.raises(CnnvizError, match="multiple of 4"):
        cnnviz.statistics(model, inputs[:4], ["features.4"], bins=30)
    with pytest.raises(CnnvizError, match="C x H x W"):  # a tensor that is neither an image nor a batch
        cnnviz.statistics(model, [torch.zeros(3, 3, dtype=torch.uint8)], ["features.4"])
    with pytest.raises(CnnvizError, match="normalised"):  # integer model inputs
        cnnviz.statistics(model, [torch.zeros(1, 3, 8, 8, dtype=torch.uint8)], ["features.4"])
    a = cnnviz.statistics(model, inputs[:4], ["features.4"])
    b = cnnviz.statistics(model, inputs[:4], ["features.1"])
    with pytest.raises(CnnvizError, match="different layers"):
        a.merge(b)


class HostileNames(torch.nn.Module):
    """Convolutions whose names a zip file mangles or that look escaped: ``a\\x00b`` (a zip file
    cuts a name at NUL, leaving ``a``, the name of another layer), ``a%00b`` and ``a\\b``."""

    NAMES = ("a\x00b", "a", "a%00b", "a\\b")

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Module()
        for index, name in enumerate(self.NAMES):
            self.body.add_module(name, torch.nn.Conv2d(3 if index == 0 else 4, 4, 3, padding=1))

    def forward(self, x):
        for name in self.NAMES:
            x = getattr(self.body, name)(x)
        return x.mean(dim=(2, 3))


def test_every_layer_name_has_arrays_of_its_own_in_the_files_written(tmp_path):
    from cnnviz.analyses.feature_visualization.real_images import load_statistics, real_responses
    from cnnviz.analyses.statistics_shards import restore_checkpoint, save_checkpoint
    from cnnviz.core.output import write_npz

    torch.manual_seed(0)
    model = cnnviz.load_model(HostileNames(), input_size=(12, 12))
    layers = [f"body.{name}" for name in HostileNames.NAMES]
    inputs = torch.randn(6, 3, 12, 12)
    stats = cnnviz.statistics(model, inputs, layers, exemplars=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Duplicate name" from zipfile
        write_npz(tmp_path / "stats.npz", cnnviz.reports.statistics(stats).arrays["stats.npz"])  # as the report does
    # a plain name as it always was; '%', NUL and '\\' as the %XX of their bytes
    keys = dict(zip(layers, ["body.a%00b", "body.a", "body.a%2500b", "body.a%5Cb"]))
    with np.load(tmp_path / "stats.npz") as saved:
        assert len(saved.files) == len(set(saved.files)) == 1 + 20 * len(layers)
        for layer, key in keys.items():
            for field in ("mean", "maximum", "mean_maximum", "histogram", "exemplar_crops"):
                np.testing.assert_array_equal(saved[f"{key}/{field}"], getattr(stats[layer], field), err_msg=f"{layer!r}")
    # read back as maximize reads a stats.npz: each layer's own dataset maxima
    maxima = load_statistics(tmp_path / "stats.npz")
    for layer in layers:
        responses = real_responses(model, layer, "channel", [0, 3], inputs[:1], statistics=maxima)
        assert responses.maxima == [float(stats[layer].mean_maximum[c]) for c in (0, 3)], layer
        assert responses.source == "6 images of the statistics"
    # and as a run goes on from its checkpoint
    path = tmp_path / "checkpoint" / "statistics.npz"
    save_checkpoint(path, "key", 6, stats, [])
    done, restored, _ = restore_checkpoint(path, "key")
    assert done == 6 and list(restored.layers) == layers
    for layer in layers:
        for field in ("mean", "m2", "histogram", "exemplar_values"):
            np.testing.assert_array_equal(getattr(restored[layer], field), getattr(stats[layer], field), err_msg=layer)


def test_array_keys_read_back_to_their_layer_names():
    from cnnviz.analyses.statistics_results import array_key, split_array_key

    for name in ("features.3", "a\x00b", "a%00b", "50%", "a\\b", "a/b", "Conv@17", "ü猫", "x\udc80y", "tab\there"):
        assert split_array_key(array_key(name, "mean")) == (name, "mean"), name
    assert array_key("features.3", "mean") == "features.3/mean" and array_key("ü猫", "dead") == "ü猫/dead"
    assert split_array_key("images") is None
    assert split_array_key("50%/mean") == ("50%", "mean") and split_array_key("a%zz/std") == ("a%zz", "std")  # older files

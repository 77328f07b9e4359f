"""Faithfulness of attributions (deletion/insertion AUC, ROAD, Average Drop / Increase): known
answers on a model that reads one region, agreement with Quantus, batching, errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import cnnviz
from cnnviz.analyses.faithfulness import area_under_curve, impute
from cnnviz.core.references import Unit, layer_ref
from untouched import assert_untouched, fingerprint

SIDE = 32
REGION = (slice(8, 16), slice(4, 12))  # 64 of the 1024 pixels


class RegionReader(nn.Module):
    """Class 0's logit is four times the mean of one 8 x 8 region (all channels); class 1's is zero."""

    def forward(self, x):
        region = x[:, :, REGION[0], REGION[1]].mean(dim=(1, 2, 3))
        return torch.stack([4 * region, torch.zeros_like(region)], dim=1)


def _images(count=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(count, 3, SIDE, SIDE, generator=generator)
    x[:, :, REGION[0], REGION[1]] += 1.0  # the region bright on a dark (zero-mean) ground
    return x


def _attribution(model, method, maps, inputs):
    """An Attribution of ``maps`` (N x H x W), as cnnviz.attributions makes them."""
    unit = Unit.of(layer_ref(model, "logits:0"))
    count = len(inputs)
    return cnnviz.Attribution(method=method, attribution=maps[:, None].float(), inputs=inputs, images=inputs.clamp(0, 1),
                              targets=[unit] * count, sources=[f"image {i}" for i in range(count)])


def _region_maps(count, seed=1):
    generator = torch.Generator().manual_seed(seed)
    right = 0.01 * torch.rand(count, SIDE, SIDE, generator=generator)
    right[:, REGION[0], REGION[1]] += 1
    wrong = 0.01 * torch.rand(count, SIDE, SIDE, generator=generator)
    wrong[:, 20:28, 20:28] += 1  # another region of the same size
    return right, wrong


@pytest.fixture(scope="module")
def region_result():
    model = RegionReader()
    inputs = _images()
    right, wrong = _region_maps(len(inputs))
    results = {"right": _attribution(model, "right", right, inputs), "wrong": _attribution(model, "wrong", wrong, inputs)}
    before = fingerprint(model)
    result = cnnviz.faithfulness(model, results, steps=16, percentiles=(20, 50, 80))
    assert_untouched(model, before)
    return result


def test_the_map_of_the_region_the_model_reads_scores_best_on_every_metric(region_result):
    means = region_result.summary()
    assert region_result.methods == ["right", "wrong", "random"]
    assert region_result.ranking[0] == "right" and region_result.ranking[-1] == "wrong"
    right, wrong, chance = means["right"], means["wrong"], means["random"]
    for metric, higher in cnnviz.analyses.faithfulness.METRICS.items():
        if metric == "average_increase":  # nothing raises the score here: 0 for every map
            continue
        if higher:
            assert right[metric] > chance[metric] > wrong[metric] or right[metric] > wrong[metric], metric
        else:
            assert right[metric] < wrong[metric], metric
    # the known values: the region is gone after 64 of 1024 pixels (2 of 16 steps) for the right map,
    # so its deletion curve is at sigmoid(0) = 0.5 from the second step on
    original = torch.sigmoid(4 * _images()[:, :, REGION[0], REGION[1]].mean(dim=(1, 2, 3))).double()
    assert torch.allclose(region_result.original.double(), original, atol=1e-6)
    deletion = region_result.curves["right"]["deletion"]
    assert torch.allclose(deletion[:, 2:], torch.full_like(deletion[:, 2:], 0.5), atol=1e-6)
    first_step = deletion[:, 1].double()  # half the region removed after the first step
    expected_auc = ((original + first_step) / 2 + (first_step + 0.5) / 2) / 16 + 0.5 * 14 / 16
    assert torch.allclose(region_result.per_image["right"]["deletion_auc"], expected_auc, atol=1e-6)
    # ROAD: the region imputed from its dark ground is gone at every percentile (MoRF) and kept by LeRF
    # (within the imputation's error at its residual, 0.02 here, and the noise)
    assert torch.allclose(region_result.curves["right"]["road_morf"], torch.full((3, 3), 0.5), atol=0.025)
    assert bool((region_result.curves["right"]["road_lerf"] > 0.9).all())
    assert bool((region_result.curves["wrong"]["road_morf"] > 0.9).all())
    # Average Drop: the right map keeps the region (no drop); the wrong one masks it out
    assert right["average_drop"] < 1 and wrong["average_drop"] > 40
    assert region_result.beats_random() == {"right": True, "wrong": False}
    assert region_result.score == ["probability"] * 3


def test_the_result_shows_draws_and_serialises(region_result):
    data = region_result.to_dict()
    json.dumps(data)
    for method in ("right", "wrong", "random"):
        entry = data[method]
        assert {"deletion_auc", "insertion_auc", "road_morf", "road_lerf", "road_combined", "average_drop",
                "average_increase", "rank", "std"} <= set(entry)
        assert math.isclose(entry["deletion_auc"], float(region_result.per_image[method]["deletion_auc"].mean()), abs_tol=1e-6)
    assert data["right"]["rank"] == 1 and data["_about"]["ranking"][0] == "right"
    table = region_result.table()
    assert table.splitlines()[2].split()[:2] == ["1", "right"]
    assert "<table" in region_result._repr_html_()
    figure = region_result.plot()
    assert len(figure.axes) == 4 and "best: right" in figure._suptitle.get_text()
    png = region_result._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "right, random, wrong" in repr(region_result)


def test_batches_do_not_change_the_numbers():
    model = RegionReader()
    inputs = _images(2)
    right, wrong = _region_maps(2)
    results = {"right": _attribution(model, "right", right, inputs), "wrong": _attribution(model, "wrong", wrong, inputs)}
    one = cnnviz.faithfulness(model, results, steps=4, percentiles=(30,), batch_size=1)
    many = cnnviz.faithfulness(model, results, steps=4, percentiles=(30,), batch_size=100)
    for method in one.methods:
        for metric in one.per_image[method]:
            assert torch.allclose(one.per_image[method][metric], many.per_image[method][metric], atol=1e-5, equal_nan=True)


def test_auc_of_known_curves():
    fractions = torch.linspace(0, 1, 5, dtype=torch.float64)
    assert torch.allclose(area_under_curve(torch.ones(1, 5), fractions), torch.tensor([1.0], dtype=torch.float64))
    assert torch.allclose(area_under_curve(fractions[None], fractions), torch.tensor([0.5], dtype=torch.float64))


def test_imputation_equals_quantus_and_keeps_the_kept_pixels():
    perturb = pytest.importorskip("quantus.functions.perturb_func")
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 20, 24, generator=generator, dtype=torch.float64)
    removed = torch.rand(2, 20, 24, generator=generator) < 0.5
    removed[1, 3:17, 2:20] = True  # one large hole
    filled = impute(images, removed, tolerance=1e-10)
    for n in range(2):
        indices = np.flatnonzero(removed[n].numpy().ravel())
        expected = perturb.noisy_linear_imputation(images[n].numpy(), indices, noise=0.0)
        assert np.abs(filled[n].numpy() - expected).max() < 1e-6
    kept = ~removed[:, None].expand_as(images)
    assert torch.equal(filled[kept], images[kept])
    constant = impute(torch.full((1, 1, 16, 16), 0.3), removed[:1, :16, :16])
    assert torch.allclose(constant, torch.full_like(constant, 0.3), atol=1e-5)


class OneChannelNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(6 * 16 * 16, 3)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def test_deletion_and_road_agree_with_quantus():
    quantus = pytest.importorskip("quantus")
    from quantus.functions.perturb_func import noisy_linear_imputation

    model = OneChannelNet().eval()
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(4, 1, 16, 16, generator=generator)
    maps = torch.rand(4, 16, 16, generator=generator)  # no ties: one order
    with torch.no_grad():
        labels = model(inputs).argmax(dim=1)
    unit_of = [Unit.of(layer_ref(model, f"logits:{int(k)}")) for k in labels]
    attribution = cnnviz.Attribution(method="some", attribution=maps[:, None], inputs=inputs, images=inputs.clamp(0, 1),
                                     targets=unit_of, sources=["a", "b", "c", "d"])
    percentiles = (20, 40, 60, 80)
    ours = cnnviz.faithfulness(model, attribution, steps=8, percentiles=percentiles, noise=0.0)
    flipping = quantus.PixelFlipping(features_in_step=16 * 16 // 8, perturb_baseline=0.0, normalise=False, abs=False,
                                     disable_warnings=True, display_progressbar=False)
    curves = flipping(model=model, x_batch=inputs.numpy(), y_batch=labels.numpy(), a_batch=maps[:, None].numpy(),
                      device="cpu", softmax=True)
    ours_curve = ours.curves["some"]["deletion"][:, 1:].numpy()
    assert np.abs(np.array(curves) - ours_curve).max() < 1e-5
    # Quantus's AUC is the trapezoidal area over step numbers; ours over fractions from the unperturbed image
    assert np.allclose(np.trapezoid(np.array(curves), axis=1) / 8,
                       area_under_curve(ours.curves["some"]["deletion"][:, 1:], torch.linspace(1 / 8, 1, 8, dtype=torch.float64)))
    # ROAD: the most relevant pixels imputed as Quantus imputes them (noise off), then scored
    order = np.argsort(-maps.flatten(1).numpy(), axis=1)
    for column, percentile in enumerate(percentiles):
        imputed = np.stack([noisy_linear_imputation(inputs[n].numpy(), order[n, :int(256 * percentile / 100)], noise=0.0)
                            for n in range(4)])
        with torch.no_grad():
            probabilities = model(torch.from_numpy(imputed).float()).softmax(dim=1)[torch.arange(4), labels]
        assert torch.allclose(ours.curves["some"]["road_morf"][:, column], probabilities, atol=1e-4)


def test_attributions_measure_faithfulness_when_asked():
    photos = cnnviz.load_model("builtin:photos")
    before = fingerprint(photos.module)
    settings = cnnviz.FaithfulnessSettings(steps=4, percentiles=(50,))
    results = cnnviz.attributions(photos, ["sample:chelsea", "sample:coffee"], methods=["gradient", "gradcam"],
                                  faithfulness=settings)
    assert_untouched(photos.module, before)
    scores = results.faithfulness
    assert isinstance(scores, cnnviz.Faithfulness) and scores.methods == ["gradient", "gradcam", "random"]
    assert scores.curves["gradcam"]["deletion"].shape == (2, 5) and scores.fractions.tolist() == [0, 0.25, 0.5, 0.75, 1]
    # the ends are the same for every map: the image, then the emptied one (deletion); blurred, then the image
    for method in scores.methods:
        assert torch.equal(scores.curves[method]["deletion"][:, 0], scores.original)
        assert torch.equal(scores.curves[method]["insertion"][:, -1], scores.original)
    assert cnnviz.attributions(photos, "sample:chelsea", methods=["gradient"]).faithfulness is None


def test_a_unit_target_is_scored_by_its_value():
    photos = cnnviz.load_model("builtin:photos")
    results = cnnviz.attributions(photos, "sample:chelsea", "features.7:3", methods=["gradient"])
    scores = cnnviz.faithfulness(photos, results, steps=2, percentiles=(50,))
    assert scores.score == ["value"]
    with cnnviz.probe(photos, "features.7:3") as recorder:
        recorder.run(results["gradient"].inputs)
        value = recorder["features.7:3"].mean()
    assert torch.allclose(scores.original, value[None], atol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"steps": 1}, "steps must be at least 2"),
    ({"percentiles": (0, 50)}, "strictly between 0 and 100"),
    ({"percentiles": ()}, "strictly between 0 and 100"),
    ({"bogus": 1}, "has no option 'bogus'"),
    ({"percentiles": 50}, "percentiles must be a list of whole numbers, not 50"),
    ({"steps": 2.5}, "steps must be a whole number, not 2.5"),
    ({"seed": None}, "seed must be a whole number, not None"),
    ({"noise": "0.1"}, "noise must be a number, not '0.1'"),
])
def test_bad_settings_are_one_line(options, message):
    model = RegionReader()
    inputs = _images(1)
    right, _ = _region_maps(1)
    with pytest.raises(cnnviz.CnnvizError, match=message):
        cnnviz.faithfulness(model, _attribution(model, "right", right, inputs), **options)


def test_bad_inputs_are_one_line():
    model = RegionReader()
    inputs = _images(2)
    right, wrong = _region_maps(2)
    other = _attribution(model, "wrong", wrong, _images(2, seed=5))
    with pytest.raises(cnnviz.CnnvizError, match="other images or targets"):
        cnnviz.faithfulness(model, {"right": _attribution(model, "right", right, inputs), "wrong": other})
    with pytest.raises(cnnviz.CnnvizError, match="baseline map"):
        cnnviz.faithfulness(model, {"random": _attribution(model, "random", right, inputs)})
    with pytest.raises(cnnviz.CnnvizError, match="not a list"):
        cnnviz.faithfulness(model, [1, 2])
    with pytest.raises(cnnviz.CnnvizError, match="faithfulness= takes True"):
        cnnviz.attributions(cnnviz.load_model("builtin:photos"), "sample:chelsea", methods=["gradient"], faithfulness="yes")


def test_bad_settings_are_refused_before_any_method_runs():
    photos = cnnviz.load_model("builtin:photos")
    calls = []
    handle = photos.module.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    try:
        with pytest.raises(cnnviz.CnnvizError, match="percentiles must be a list of whole numbers"):
            cnnviz.attributions(photos, "sample:chelsea", methods=["gradient"],
                                faithfulness=cnnviz.FaithfulnessSettings(percentiles=50))
    finally:
        handle.remove()
    assert calls == []


def test_a_map_with_no_information_scores_as_no_information():
    """A constant map (an all-zero Grad-CAM, say) ranks its pixels in the seeded random order of
    ties, whatever its value, and Average Drop masks the whole image with it (nothing stands out)."""
    model = RegionReader()
    inputs = _images()
    right, _ = _region_maps(len(inputs))
    zero, five = torch.zeros_like(right), torch.full_like(right, 5.0)
    maps = {"right": _attribution(model, "right", right, inputs), "zero": _attribution(model, "zero", zero, inputs),
            "five": _attribution(model, "five", five, inputs)}
    result = cnnviz.faithfulness(model, maps, steps=8, percentiles=(50,))
    for metric in cnnviz.analyses.faithfulness.METRICS:  # ROAD's noise is drawn for each method: close, not equal
        torch.testing.assert_close(result.per_image["zero"][metric], result.per_image["five"][metric],
                                   atol=2e-3 if metric.startswith("road") else 0, rtol=0, msg=metric)
    blank = torch.sigmoid(torch.zeros(3)).double()  # the whole image masked: the region reads 0
    original = result.original.double()
    assert torch.allclose(result.per_image["zero"]["average_drop"], 100 * (original - blank) / original, atol=1e-4)
    # pixels removed in a random order: the deletion curve falls about linearly, far above the right map's
    chance = result.per_image["zero"]["deletion_auc"]
    assert bool((chance > result.per_image["right"]["deletion_auc"] + 0.05).all())
    assert torch.allclose(chance, result.per_image["random"]["deletion_auc"], atol=0.05)


def test_road_noise_of_a_method_does_not_depend_on_the_others():
    model = RegionReader()
    inputs = _images()
    right, wrong = _region_maps(len(inputs))
    one = cnnviz.faithfulness(model, {"right": _attribution(model, "right", right, inputs)}, steps=4,
                              percentiles=(30, 60), noise=0.5)
    two = cnnviz.faithfulness(model, {"wrong": _attribution(model, "wrong", wrong, inputs),
                                      "right": _attribution(model, "right", right, inputs)}, steps=4,
                              percentiles=(30, 60), noise=0.5)
    for method in ("right", "random"):
        for order in ("road_morf", "road_lerf"):
            torch.testing.assert_close(one.curves[method][order], two.curves[method][order])


def test_the_json_keeps_small_numbers():
    """Seven significant digits, not six decimals: scores of a unit with small values stay apart."""
    from cnnviz.analyses.faithfulness import significant

    assert significant(7.3456789e-9) == 7.345679e-9 and significant(-2.8e-9) == -2.8e-9 and significant(0.123456789) == 0.1234568


def test_cli_writes_the_faithfulness_json_figure_and_table(tmp_path):
    from click.testing import CliRunner

    from cnnviz.cli.main import main

    result = CliRunner().invoke(main, ["saliency", "-i", "sample:chelsea", "-i", "sample:coffee", "-M", "gradient", "-M",
                                       "gradcam", "--faithfulness", "--faithfulness-steps", "4", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert {"faithfulness.json", "faithfulness.png", "saliency.json"} <= {p.name for p in tmp_path.iterdir()}
    data = json.loads((tmp_path / "faithfulness.json").read_text())
    assert [k for k in data if not k.startswith("_")] == ["gradient", "gradcam", "random"]
    for entry in (data["gradient"], data["gradcam"], data["random"]):
        assert 0 <= entry["deletion_auc"] <= 1 and 0 <= entry["insertion_auc"] <= 1
        assert len(entry["deletion_curve"]) == 5
    assert data["_about"]["images"] == ["sample:chelsea", "sample:coffee"]
    summary = json.loads((tmp_path / "saliency.json").read_text())
    assert summary["faithfulness"]["ranking"] == data["_about"]["ranking"]
    ranked = [line.split()[1] for line in result.stdout.splitlines() if line[:1].isdigit()]
    assert ranked == data["_about"]["ranking"]
    without = CliRunner().invoke(main, ["saliency", "-i", "sample:chelsea", "-M", "gradient", "-o", str(tmp_path / "plain")])
    assert without.exit_code == 0 and not (tmp_path / "plain" / "faithfulness.json").exists()
    error = CliRunner().invoke(main, ["saliency", "-i", "sample:chelsea", "--faithfulness-steps", "1"])
    assert error.exit_code == 2 and "faithfulness-steps" in error.stderr


def test_records_join_into_the_result_of_all_images(region_result):
    record = region_result.to_record()
    json.dumps(record)
    joined = cnnviz.Faithfulness.from_records([record, record])
    assert len(joined.original) == 6 and joined.sources == region_result.sources * 2
    for method in region_result.methods:
        for metric, values in region_result.per_image[method].items():
            assert torch.allclose(joined.per_image[method][metric], torch.cat([values, values]), equal_nan=True)
    for method, means in region_result.summary().items():
        assert joined.summary()[method] == pytest.approx(means, nan_ok=True)
    assert joined.ranking == region_result.ranking and [str(t) for t in joined.targets[:3]] == [str(t) for t in region_result.targets]


def test_without_road_the_other_metrics_are_the_same():
    model = RegionReader()
    inputs = _images(2)
    right, wrong = _region_maps(2)
    results = {"right": _attribution(model, "right", right, inputs), "wrong": _attribution(model, "wrong", wrong, inputs)}
    full = cnnviz.faithfulness(model, results, steps=4, percentiles=(30,))
    quick = cnnviz.faithfulness(model, results, steps=4, road=False)
    for method in full.methods:
        for metric in ("deletion_auc", "insertion_auc", "average_drop"):
            assert torch.allclose(full.per_image[method][metric], quick.per_image[method][metric], equal_nan=True)
        assert bool(quick.per_image[method]["road_morf"].isnan().all())
    assert quick.percentiles == () and quick.to_dict()["right"]["road_morf"] is None
    assert quick.plot().axes and "nan" in quick.table()


def test_a_class_whose_name_is_a_number_is_scored_as_that_class():
    """Class names in ImageFolder's order ("1", "10", "11", "2", "3"): the image's target, class
    "2", is index 3; its score is that class's probability, not that of class "3" (index 4)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 5)).eval()
    loaded = cnnviz.LoadedModel(net, class_names=["1", "10", "11", "2", "3"])
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    result = cnnviz.attributions(loaded, x, "logits:2", methods=["gradient"])
    assert [t.channel for t in result["gradient"].targets] == [3, 3]
    scores = cnnviz.faithfulness(loaded, result, steps=4, road=False)
    with torch.no_grad():
        expected = net(x).softmax(dim=1)[:, 3]
    torch.testing.assert_close(scores.original.float(), expected, rtol=1e-5, atol=1e-6)

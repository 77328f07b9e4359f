"""Reports (cnnviz/reports/): a result as named figures, images, arrays and JSON, the same for the
commands and the gallery."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import cnnviz
from cnnviz.reports import Item, Report

from untouched import assert_untouched, fingerprint


@pytest.fixture(scope="module")
def photos():
    return cnnviz.load_model("builtin:photos")


def _png(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_kernels_report_names_ranges_and_writes(photos, tmp_path):
    result = cnnviz.kernels(photos, layer="features.0")
    report = cnnviz.reports.kernels(result)
    (item,) = report.items
    assert item.file == "kernels_features.0.png" and item.kind == "kernels" and item.layer == "features.0"
    # the value range is the raw range of the weights drawn (colour view: all of them)
    assert item.value_range == (float(result.weight.min()), float(result.weight.max()))
    assert "Kernels of features.0 (Conv2d" in item.caption
    written = report.write(tmp_path, model="builtin:photos")
    assert [p.name for p in written] == ["kernels_features.0.png", "kernels_features.0.json"]
    pixels = _png(written[0])
    assert pixels.shape[0] > 100 and pixels.std() > 10  # a drawn figure, not a blank
    summary = json.loads(written[1].read_text())
    assert summary["model"] == "builtin:photos" and summary["scope"] == "layer"
    assert summary["figures"] == [item.to_dict()] and summary["figures"][0]["file"] == "kernels_features.0.png"
    assert not list(tmp_path.glob(".*.part"))  # written atomically, nothing left over


def test_kernel_captions_state_the_layers_shape_and_the_outputs_shown(photos):
    # features.21 is 128 x 64 x 3 x 3; a cap of 64 outputs shows the first 64 of them
    deep = cnnviz.kernels(photos, "features.21", channels="0-63")
    (item,) = cnnviz.reports.kernels(deep)
    assert "the first 64 of 128 outputs" in item.caption and "the layer's weights are 128 x 64 x 3 x 3" in item.caption
    title = cnnviz.plots.kernels(deep)._suptitle.get_text()
    assert "64 of 128 kernels of 3x3" in title
    some = cnnviz.kernels(photos, "features.3", channels=[2, 5])
    assert "outputs 2 and 5 of 16" in cnnviz.reports.kernels(some).items[0].caption
    everything = cnnviz.reports.kernels(cnnviz.kernels(photos, "features.0")).items[0].caption
    assert "all 16 outputs" in everything and "16 x 3 x 3 x 3" in everything


def test_figures_are_drawn_only_when_written(photos):
    drawn = []
    item = Item("x.png", "test", "a caption", draw=lambda: drawn.append(1))
    report = Report("x", {"a": 1}, [item])
    assert repr(report) == "Report(x: 1 figures, 0 array files)" and list(report) == [item]
    assert not drawn


def test_maximize_report_units_are_structured(tmp_path):
    # class names that a display string would break: ':' and ' (' inside the name
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    torch.manual_seed(0)
    names = ["cat: tabby (striped)", "dog", "a:b"]
    loaded = cnnviz.LoadedModel(model, cnnviz.Preprocessing(input_size=(16, 16)), names)
    before = fingerprint(model)
    rendering = cnnviz.maximize(loaded, "logits", channels=[0, 2], steps=2, size=16)
    report = cnnviz.reports.maximize(rendering)
    classes = [item for item in report if item.kind == "class"]
    assert [item.unit.class_name for item in classes] == ["cat: tabby (striped)", "a:b"]
    assert [item.unit.channel for item in classes] == [0, 2]
    assert classes[0].caption.startswith("cat: tabby (striped): logit ")
    assert [item.value for item in classes] == rendering.values
    assert [item.file for item in report] == ["maximize_logits-0.png", "maximize_logits-2.png", "maximize_logits_grid.png"]
    written = report.write(tmp_path)
    assert _png(written[0]).shape == (16, 16, 3)  # each rendering at its own size
    entries = json.loads((tmp_path / "maximize_logits.json").read_text())
    assert [e["channel"] for e in entries["figures"][:2]] == [0, 2]
    assert [u["class_name"] for u in entries["units"]] == ["cat: tabby (striped)", "a:b"]
    assert_untouched(model, before)


def test_channel_report_is_maximize_kind(photos):
    rendering = cnnviz.maximize(photos, "features.3", channels=[1], steps=1, size=16)
    (unit_item, grid) = cnnviz.reports.maximize(rendering).items
    assert unit_item.kind == "maximize" and unit_item.unit == cnnviz.Unit("features.3", 1)
    word = "beats" if rendering.succeeded[0] else "BELOW"
    assert unit_item.caption == (f"features.3:1: mean activation {rendering.values[0]:.3g} "
                                 f"({word} the best real image's {rendering.reference[0]:.3g}); 1 step")
    assert rendering.succeeded[0] == (rendering.values[0] > rendering.reference[0])
    assert grid.kind == "maximize_grid" and grid.unit is None


def test_statistics_report_arrays_round_trip(photos, tmp_path):
    stats = cnnviz.statistics(photos, "samples", layer=["features.3"], batch_size=8)
    report = cnnviz.reports.statistics(stats)
    assert [item.kind for item in report] == ["histograms", "colorful_dimension", "channel_statistics", "exemplars"]
    assert report.items[2].file == "channels_features.3.png"
    report.write(tmp_path)
    with np.load(tmp_path / "stats.npz") as saved:
        for key, value in stats.to_arrays().items():
            np.testing.assert_array_equal(saved[key], value)
    assert json.loads((tmp_path / "stats.json").read_text())["images"] == stats.images


def test_attributions_report_with_sanity_check(photos, tmp_path):
    results = cnnviz.attributions(photos, ["sample:chelsea", "sample:coffee"], methods=["gradient"])
    check = cnnviz.sanity_check(photos, results["gradient"].inputs, method="gradient", stages=1)
    report = cnnviz.reports.attributions(results, {"gradient": check})
    assert [item.file for item in report] == [
        "saliency_gradient_0.png", "saliency_gradient_1.png", "sanity_gradient.png", "saliency_panel.png"]
    assert report.items[0].unit == results["gradient"].targets[0]
    report.write(tmp_path)
    np.testing.assert_array_equal(np.load(tmp_path / "saliency_gradient.npy"), results["gradient"].attribution.numpy())
    summary = json.loads((tmp_path / "saliency.json").read_text())
    assert summary["methods"][0]["sanity_check"] == check.to_dict()


def test_gallery_and_command_write_the_same_captions(photos, tmp_path):
    """The gallery places the report's items: its manifest carries the captions and ranges the
    command writes for the same result."""
    from click.testing import CliRunner

    from cnnviz.cli.main import main

    result = CliRunner().invoke(main, ["kernels", "--layer", "features.3", "-o", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    command = json.loads((tmp_path / "cli" / "kernels_features.3.json").read_text())["figures"][0]
    site = cnnviz.gallery(photos, "sample:chelsea", layer=["features.3"], output=tmp_path / "site", max_channels=None,
                          unit_renders=0, steps=1,
                          activation_images=1, attribution_images=1, methods=("gradient",), dream_steps=1,
                          dream_octaves=1, max_classes=1, class_steps=1)
    entry = next(f for f in site.figures if f["kind"] == "kernels")
    assert entry["caption"] == command["caption"] and entry["value_range"] == command["value_range"]
    assert entry["file"] == "figures/features.3/kernels.png" and command["file"] == "kernels_features.3.png"


def test_image_and_lecture_reports(photos, tmp_path):
    seen = cnnviz.activations(photos, "sample:chelsea", layer=["features.3", "features.10"], top=4)
    report = cnnviz.reports.activations(seen, scope="map")
    assert [item.file for item in report] == ["input.png", "activations_features.3.png", "activations_features.10.png"]
    assert report.items[1].value_range == seen["features.3"].value_range()
    assert "each map on its own scale; 4 of 16 channels" in report.items[1].caption
    assert report.items[1].settings["channels"] == seen["features.3"].order[:4]

    dreamed = cnnviz.dream(photos, "sample:chelsea", layer="features.3", octaves=1, steps=1)
    (item,) = cnnviz.reports.dream(dreamed, "sample:chelsea").items
    assert item.file == "dream_features.3.png" and f"x{dreamed.gain:.1f}" in item.caption
    written = cnnviz.reports.dream(dreamed, "sample:chelsea").write(tmp_path)
    assert _png(written[0]).shape == (*dreamed.image.shape[1:], 3)

    fields = cnnviz.receptive_fields(photos)
    erf = cnnviz.effective_receptive_field(photos, "samples", "features.13", max_images=2)
    report = cnnviz.reports.receptive_fields(fields, erf.image, {"features.13": erf})
    assert [item.file for item in report] == ["receptive_fields.png", "effective_rf_features.13.png"]
    assert report.data["layers"] == [field.to_dict() for field in fields.values()]
    assert report.data["effective"] == [erf.to_dict()]


def test_the_grid_of_a_composed_objective_has_readable_captions_and_the_steps_run():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from cnnviz import objectives as o

    photos = cnnviz.load_model("builtin:photos")
    goal = o.channel("features.12", 3) - 20 * o.diversity("features.12") - 0.5 * o.total_variation()
    rendering = cnnviz.maximize(photos, objective=goal, count=4, steps=200, size=48)
    figure = cnnviz.plots.maximize(rendering)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    page = figure.bbox
    title = figure._suptitle
    boxes = [axis.title.get_window_extent(renderer) for axis in figure.axes if axis.title.get_text()]
    assert len(boxes) == 4
    for box in [title.get_window_extent(renderer), *boxes]:  # nothing clipped at the figure's edges
        assert box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y1 <= page.y1 + 1
    for left, right in zip(boxes, boxes[1:]):  # no caption over its neighbour
        assert left.x1 <= right.x0, (left, right)
    taken = sorted(set(rendering.steps_taken))
    text = title.get_text()
    assert rendering.steps_text() in text and str(taken[-1]) in text
    # the steps in words: the range the images ran, and the most only where some stopped sooner
    made = cnnviz.Rendering(torch.zeros(2, 3, 8, 8), [cnnviz.Unit("a", 0), cnnviz.Unit("a", 1)], [1.0, 2.0], "x",
                            {"steps": 256}, steps_taken=[120, 256], starts=["noise"] * 2,
                            outcomes=["render", "render"])
    assert made.steps_text() == "120-256 steps (at most 256)"
    made.steps_taken = [256, 256]
    assert made.steps_text() == "256 steps"
    made.steps_taken, made.outcomes = [0, 64], ["filter", "render"]
    assert made.steps_text() == "64 steps (at most 256)" and made.to_dict()["steps_taken"] == {"min": 64, "max": 64}

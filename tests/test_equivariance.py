"""Equivariance and invariance measurements, and the lecture commands on the command line."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz import CnnvizError
from cnnviz.cli.main import main
from cnnviz.core.output import RECORD


def test_circular_convolution_is_exactly_equivariant_to_circular_shifts():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), nn.ReLU(),
                          nn.Conv2d(4, 4, 5, padding=2, padding_mode="circular")).eval()
    before = fingerprint(model)
    images = torch.randn(2, 3, 24, 24)
    result = cnnviz.equivariance(model, images, ["0", "1", "2"], shifts=(1, 3, 7), angles=(90,), scales=(0.5,), border=0)
    assert result.strides == [(1, 1)] * 3 and result.images == 2
    for shift in (1.0, 3.0, 7.0):
        assert max(result.equivariance_error["translation"][shift]) < 1e-6
        assert min(result.invariance_error["translation"][shift]) > 0.1  # equivariant, not invariant
        assert max(result.pooled_invariance_error["translation"][shift]) < 1e-6  # a global average is invariant
    assert min(result.equivariance_error["scale"][0.5]) > 0.1
    assert_untouched(model, before)
    zero_padded = nn.Conv2d(3, 4, 3, padding=1).eval()
    result = cnnviz.equivariance(zero_padded, images, ["logits"], shifts=(1,), angles=(), scales=(), border=0)
    assert result.equivariance_error["translation"][1.0][0] > 1e-3  # the zero border breaks it


def test_max_pooling_is_invariant_to_shifts_inside_one_cell():
    pool = nn.Sequential(nn.MaxPool2d(4)).eval()
    images = torch.zeros(1, 1, 16, 16)
    images[0, 0, 4, 4] = 1.0  # top-left pixel of cell (1, 1): shifts of 1-3 pixels stay inside it
    inside = cnnviz.equivariance(pool, images, ["0"], shifts=(1, 2, 3), angles=(), scales=(), border=0)
    for shift in (1.0, 2.0, 3.0):
        assert inside.invariance_error["translation"][shift] == [0.0]
    across = cnnviz.equivariance(pool, images, ["0"], shifts=(4,), angles=(), scales=(), border=0)
    assert across.invariance_error["translation"][4.0][0] > 1.0  # a whole cell further: another unit


def test_builtin_model_curves_and_errors():
    loaded = cnnviz.load_model("builtin:photos")
    result = cnnviz.equivariance(loaded, "samples", ["features.0", "features.6", "logits"], shifts=(1, 2),
                                 angles=(15,), scales=(0.9,), max_images=2)
    assert result.layers == ["features.0", "features.6", "logits"] and result.strides[1] == (2, 2)
    assert result.equivariance_error["translation"][1.0][0] < 1e-5  # stride 1 and circular shifts
    assert torch.isnan(torch.tensor(result.equivariance_error["rotation"][15.0][2]))  # logits: no map
    figure = cnnviz.plots.equivariance(result)
    assert len(figure.axes) == 6
    assert json.dumps(result.to_dict())
    with pytest.raises(CnnvizError, match="whole numbers"):
        cnnviz.equivariance(loaded, "samples", shifts=(0.5,))
    with pytest.raises(CnnvizError, match="did you mean"):
        cnnviz.equivariance(loaded, "samples", ["featurez.0"])


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_cli_commands_write_their_figures(tmp_path):
    result = invoke("conv-matrix", "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "[[122.0, 148.0], [126.0, 134.0]]" in result.stdout and "autograd gradient (g = 1, 2, ...): True" in result.stdout
    assert json.loads((tmp_path / "conv_matrix.json").read_text())["backward_matches_autograd"] is True
    result = invoke("conv-arithmetic", "-n", "5", "5", "-k", "3", "3", "-s", "2", "2", "-p", "1", "1", "-o", str(tmp_path))
    assert result.exit_code == 0 and "output 3x3" in result.stdout
    result = invoke("rf", "--layer", "features.13", "--max-images", "2", "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "features.13  16    4       -6" in result.stdout and "features.27" not in result.stdout  # the layer asked
    summary = json.loads((tmp_path / "receptive_fields.json").read_text())
    assert summary["effective"][0]["unit"] == [8, 8] and [field["layer"] for field in summary["layers"]] == ["features.13"]
    result = invoke("equivariance", "-l", "features.0", "-l", "logits", "--shifts", "1", "--angles", "10",
                    "--scales", "0.9", "--max-images", "2", "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert {p.name for p in tmp_path.iterdir()} - {RECORD} == {
        "conv_matrix.png", "conv_matrix.json", "conv_arithmetic.png", "conv_arithmetic.json", "receptive_fields.png",
        "effective_rf_features.13.png", "receptive_fields.json", "equivariance.png", "equivariance.json"}
    result = invoke("layers", "--rf")
    assert result.exit_code == 0 and "receptive field" in result.stdout.splitlines()[0]


@pytest.mark.parametrize(("args", "fragment"), [
    (["conv-matrix", "-k", "1,a"], "is not numbers"),
    (["conv-matrix", "-k", "1,2,3,4,5", "-x", "1,2"], "does not fit"),
    (["conv-arithmetic", "-n", "2", "2", "-k", "5", "5"], "does not fit"),
    (["rf", "--layer", "features.99"], "did you mean"),
    (["rf", "--layer", "logits"], "not a spatial map"),
    (["equivariance", "--shifts", "1.5"], "whole numbers"),
])
def test_cli_errors_are_one_line(args, fragment, tmp_path):
    result = invoke(*args, "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1

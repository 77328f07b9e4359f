"""cnnviz kernels / activations / stats: PNGs and a JSON summary under -o, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import cnnviz
from cnnviz.cli.main import main
from cnnviz.core.output import RECORD


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def written(result) -> list[str]:
    return [line.removeprefix("wrote ") for line in result.stdout.splitlines()]


def test_a_layer_given_twice_is_drawn_once(tmp_path):
    result = invoke("kernels", "-l", "features.0", "-l", "features.0", "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert written(result) == [str(tmp_path / "kernels_features.0.png"), str(tmp_path / "kernels_features.0.json")]


def test_kernels_command(tmp_path):
    result = invoke("kernels", "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert written(result) == [str(tmp_path / "kernels_features.0.png"), str(tmp_path / "kernels_features.0.json")]
    summary = json.loads((tmp_path / "kernels_features.0.json").read_text())
    weight = cnnviz.load_model("builtin:photos").module.features[0].weight.detach()
    assert summary["view"] == "colour" and summary["layer_scale"] == pytest.approx(float(weight.abs().max()))
    assert Image.open(tmp_path / "kernels_features.0.png").size[0] > 300
    result = invoke("kernels", "-l", "features.10", "-l", "features.3", "-c", "0-3", "--scope", "kernel", "-o", str(tmp_path))
    assert result.exit_code == 0 and len(written(result)) == 4
    assert "showing the first 16 of 32 input channels" in result.stderr


def test_activations_command(tmp_path):
    result = invoke("activations", "-i", "sample:chelsea", "-l", "features.2", "-l", "features.12:3",
                    "--overlay", "--scope", "map", "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in tmp_path.iterdir() if p.name != RECORD)
    assert names == ["activations.json", "activations_features.12-3.png", "activations_features.2.png", "input.png"]
    summary = json.loads((tmp_path / "activations.json").read_text())
    assert summary["image"] == "sample:chelsea" and summary["layers"][1]["shown_channels"] == [3]
    assert len(summary["layers"][0]["shown_channels"]) == 16  # --top 32, but the layer has 16


def test_stats_command(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("coffee", "rocket", "moon"):
        cnnviz.samples.image(name).save(folder / f"{name}.png")
    (folder / "readme.md").write_text("# not an image")
    out = tmp_path / "out"
    result = invoke("stats", "-m", "builtin:patterns", "-i", str(folder), "-l", "features.1", "-l", "classifier.1",
                    "--top-k", "2", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert "skipped 1 file(s)" in result.stderr
    expected = {"stats.npz", "stats.json", "histograms.png", "colorful_dimension.png",
                "channels_features.1.png", "exemplars_features.1.png", "channels_classifier.1.png", "exemplars_classifier.1.png"}
    assert {p.name for p in out.iterdir()} == expected | {RECORD}
    summary = json.loads((out / "stats.json").read_text())
    assert summary["images"] == 3 and summary["skipped"] == [str(folder / "readme.md")]
    arrays = np.load(out / "stats.npz")
    assert arrays["features.1/mean"].shape == (16,) and int(arrays["images"]) == 3
    assert summary["layers"][0]["per_channel"][0]["mean"] == pytest.approx(float(arrays["features.1/mean"][0]))
    assert not list(out.glob("*.part"))  # no temporary files left


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["kernels", "-l", "features.2"], "not a convolution; its convolutions are"),
        (["kernels", "-c", "0-99"], "valid: 0-15"),
        (["activations", "-i", "sample:chelsea"], "Missing option '--layer'"),
        (["activations", "-i", "nothing.png", "-l", "features.2"], "does not exist"),
        (["activations", "-i", "sample:chelsea", "-l", "features.2", "-c", "x"], "'0-15'"),
        (["stats", "-i", "samples", "-l", "features.2:1"], "statistics are per layer"),
        (["stats", "-i", "{empty}", "-l", "features.2"], "holds no files"),
        (["stats", "-i", "samples", "-l", "features.2", "--bins", "30"], "multiple of 4"),
        (["kernels", "-o", "{file}"], "is a file"),
        (["activations", "-i", "sample:chelsea", "-l", "features.12:999"], "valid: 0-31"),
        (["activations", "-i", "sample:chelsea", "-l", "features.12:5@99,99"], "position 99,99 is out of range"),
        (["stats", "-i", "samples", "-l", "features.2", "--top-k", "100000"], "--top-k"),
        (["maximize", "-l", "features.3:1", "--steps", "1", "--lr", "nan"], "lr a positive finite number"),
        (["maximize", "-l", "features.3:1", "--steps", "1", "--seed", "1180591620717411303424"], "seed must be"),
        (["dream", "-i", "sample:chelsea", "-l", "features.3", "--step", "nan"], "step must be a positive"),
        (["rf", "-l", "bogus"], "no layer 'bogus'"),
        (["conv-arithmetic", "-n", "100000", "100000"], "at most 64 cells"),
        (["conv-matrix", "-x", ";".join([",".join(["1"] * 150)] * 150)], "too large to build"),
    ],
)
def test_errors_are_one_line(tmp_path, args, fragment):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    args = [a.format(empty=tmp_path / "empty", file=tmp_path / "file") for a in args]
    result = invoke(*args, *([] if "-o" in args else ["-o", str(tmp_path / "out")]))
    assert result.exit_code == 2, result.stdout
    assert len(result.stderr.splitlines()) == 1 and fragment in result.stderr, result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()  # nothing written


def test_the_users_files_are_never_overwritten_nor_read_back(tmp_path):
    # the photo is named like the figure activations writes: refused, nothing written, photo intact
    folder = tmp_path / "userdir"
    folder.mkdir()
    cnnviz.samples.image("chelsea").save(folder / "input.png")
    photo = (folder / "input.png").read_bytes()
    result = invoke("activations", "-i", str(folder / "input.png"), "-l", "features.0", "-o", str(folder))
    assert result.exit_code == 2 and "cnnviz did not write it" in result.stderr
    assert (folder / "input.png").read_bytes() == photo and sorted(p.name for p in folder.iterdir()) == ["input.png"]
    # the user's own stats.json in the images folder: refused before anything is written
    (folder / "stats.json").write_text('{"mine": true}')
    result = invoke("stats", "-i", str(folder), "-l", "features.0", "-o", str(folder))
    assert result.exit_code == 2 and "stats.json" in result.stderr and "cnnviz did not write it" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["input.png", "stats.json"]
    # without it, re-runs into the images folder never read their own figures as images
    (folder / "stats.json").unlink()
    counts = []
    for _ in range(2):
        result = invoke("stats", "-i", str(folder), "-l", "features.0", "-o", str(folder))
        assert result.exit_code == 0, result.stderr
        counts.append(json.loads((folder / "stats.json").read_text())["images"])
    assert counts == [1, 1] and len(list(folder.glob("*.png"))) > 1
    # a folder holding nothing but cnnviz's outputs says so
    (folder / "input.png").rename(tmp_path / "input.png")
    result = invoke("stats", "-i", str(folder), "-l", "features.0", "-o", str(tmp_path / "other"))
    assert result.exit_code == 2 and "only files cnnviz wrote" in result.stderr

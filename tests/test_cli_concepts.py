"""cnnviz concepts: concepts.json, the figures and one render per concept under -o; the numbers are
cnnviz.concepts's; each bad input is one line and writes nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import cnnviz
import foreign_models
from cnnviz.cli.main import main
from cnnviz.core.output import RECORD
from untouched import assert_untouched, fingerprint

FACTORY = str(Path(foreign_models.__file__))
QUICK = ("-m", "builtin:patterns", "-l", "features.4", "-k", "3", "--steps", "8", "--importance-images", "2")


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def written(result) -> list[str]:
    return [line.removeprefix("wrote ") for line in result.stdout.splitlines() if line.startswith("wrote ")]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype=np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for name in ("coffee", "rocket", "moon", "brick"):
        cnnviz.samples.image(name).save(folder / f"{name}.png")
    return folder


def test_concepts_writes_its_json_figures_and_renders(folder, tmp_path):
    out = tmp_path / "out"
    result = invoke("concepts", *QUICK, "-i", str(folder), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    files = ["concepts_features.4.png", "concept_maps_features.4.png", "concept_attribution_features.4.png",
             *(f"concept_{j}_features.4.png" for j in range(3)), "concepts.json"]
    assert written(result) == [str(out / name) for name in files]
    assert sorted(p.name for p in out.iterdir() if p.name != RECORD) == sorted(files)
    # the summary: a headline, a header and one line per concept, before the files
    lines = result.stdout.splitlines()
    assert lines[0].startswith("features.4: 3 concepts of 4 images; reconstruction error ")
    assert lines[1].split() == ["concept", "share", "top", "channels", "importance", "deletion", "random"]
    assert [line.split()[0] for line in lines[2:5]] == ["0", "1", "2"]

    summary = json.loads((out / "concepts.json").read_text())
    same = cnnviz.concepts(cnnviz.load_model("builtin:patterns"), str(folder), "features.4", k=3, importance_images=2)
    names = [str(folder / f"{name}.png") for name in ("brick", "coffee", "moon", "rocket")]  # the folder's order
    assert [entry["image"] for entry in summary["images"]] == names == same.images
    weights = np.array([entry["weights"] for entry in summary["images"]])
    directions = np.array(summary["directions"])
    assert weights.shape == (4, 3) and (weights >= 0).all() and weights.sum() > 0
    assert directions.shape == (3, 48) and (directions >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1, atol=1e-4)
    np.testing.assert_allclose(weights, same.image_weights.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(directions, same.directions.numpy(), atol=1e-5)
    assert [c["share"] for c in summary["concepts"]] == pytest.approx(same.share.tolist(), abs=1e-5)
    assert summary["model"] == "builtin:patterns" and summary["k"] == 3 and summary["shift"] is None
    assert summary["targets"] == same.targets and len(summary["targets"]) == 2
    # the figures: listed in the JSON as written, each a PNG with something in it
    assert [figure["file"] for figure in summary["figures"]] == files[:-1]
    assert [figure["kind"] for figure in summary["figures"]] == ["concepts", "concept_maps", "concept_attribution"] + [
        "concept_render"] * 3
    for name in files[:-1]:
        image = pixels(out / name)
        assert image.std() > 5, name  # not one flat colour
    assert pixels(out / "concepts_features.4.png").shape[1] > 500
    assert [render["concept"] for render in summary["renders"]] == [0, 1, 2]
    assert all(render["steps_taken"] == 8 and np.isfinite(render["value"]) for render in summary["renders"])
    assert [figure["value"] for figure in summary["figures"][3:]] == [r["value"] for r in summary["renders"]]


def test_images_are_named_as_given_and_renders_can_be_left_out(folder, tmp_path):
    out = tmp_path / "out"
    moon = str(folder / "moon.png")
    result = invoke("concepts", *QUICK, "-i", "sample:chelsea", "-i", moon, "--no-renders", "--score", "3",
                    "--exemplars", "2", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert [Path(path).name for path in written(result)] == ["concepts_features.4.png", "concept_maps_features.4.png",
                                                             "concept_attribution_features.4.png", "concepts.json"]
    summary = json.loads((out / "concepts.json").read_text())
    assert [entry["image"] for entry in summary["images"]] == ["sample:chelsea", moon]
    assert summary["renders"] == [] and summary["settings"]["score"] == "3"
    assert all(target.startswith("logits:3 ") for target in summary["targets"])  # --score 3: class 3
    assert all(len(concept["exemplars"]) <= 2 for concept in summary["concepts"])


@pytest.mark.parametrize("args, fragment", [
    (("-k", "0"), "-k"),
    (("-k", "49"), "-k 49 is more than the 48 channels of features.4"),
    (("-l", "classifier.1"), "spatial maps"),
    (("-l", "features.4:3"), "give 'features.4', not 'features.4:3'"),
    (("-l", "features.1", "-l", "features.4"), "one layer"),
    (("--score", "features.1:0"), "comes before features.4"),
    (("-i", "EMPTY"), "holds no files"),
    (("-i", "MISSING"), "does not exist"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, fragment):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [{"EMPTY": str(empty), "MISSING": str(tmp_path / "missing")}.get(arg, arg) for arg in args]
    layer = [] if "-l" in args else ["-l", "features.4"]
    out = tmp_path / "out"
    result = invoke("concepts", "-m", "builtin:patterns", *layer, "--steps", "2", "--importance-images", "1",
                    *args, "-o", str(out))
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert result.stdout == "" and not out.exists()


def test_a_model_we_did_not_write_with_negative_activations(tmp_path):
    """SiLU, GELU and Hardswish, no declared preprocessing: the layer goes negative, so the concepts
    are of its positive and negative parts side by side (--signed shift: of the shifted activations);
    the command says so in concepts.json and the model is untouched."""
    out = tmp_path / "out"
    result = invoke("concepts", "-m", f"{FACTORY}:smooth", "-i", "sample:chelsea", "-i", "sample:coffee",
                    "-l", "features.3", "-k", "2", "--steps", "4", "--importance-images", "1", "--signed", "shift",
                    "-o", str(out))
    assert result.exit_code == 0, result.stderr
    summary = json.loads((out / "concepts.json").read_text())
    assert summary["signed"] == "shift" and min(summary["shift"]) >= 0 and max(summary["shift"]) > 0
    assert len(summary["directions"]) == 2 and len(summary["directions"][0]) == 16
    assert (out / "concept_1_features.3.png").exists() and "preprocessing" in result.stderr  # assumed: a note
    model = foreign_models.smooth()
    before = fingerprint(model)
    found = cnnviz.concepts(model, ["sample:chelsea", "sample:coffee"], "features.3", k=2, importance_images=1,
                            signed="shift")
    assert_untouched(model, before)
    shift = torch.tensor(summary["shift"])
    assert torch.allclose(found.shift, shift, atol=1e-5) and found.image_weights.min() >= 0
    split = cnnviz.concepts(model, ["sample:chelsea", "sample:coffee"], "features.3", k=2, importance_images=1)
    assert_untouched(model, before)
    assert split.signed == "split" and split.factors.shape == (2, 32) and bool((split.directions < 0).any())
    report = cnnviz.reports.concepts(found)
    assert [item.file for item in report.items] == ["concepts_features.3.png", "concept_maps_features.3.png",
                                                    "concept_attribution_features.3.png"]


def test_under_torchrun_rank_0_writes_the_concepts_of_every_image(folder, tmp_path):
    """Two processes share the images and the renders (dealt out, each rendered whole by one rank,
    every rank at the same exchanges: no deadlock); rank 0 alone writes and speaks. Each rank samples
    its own images' positions, so the directions are one process's within the sampling's difference."""
    arguments = ["concepts", "-m", "builtin:patterns", "-i", str(folder), "-l", "features.4", "-k", "2", "--steps", "4",
                 "--importance-images", "1", "--batch-size", "2", "-o", str(tmp_path / "out")]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                          "cnnviz", *arguments], capture_output=True, text=True, env=environment, cwd=tmp_path,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    files = ["concepts_features.4.png", "concept_maps_features.4.png", "concept_attribution_features.4.png",
             "concept_0_features.4.png", "concept_1_features.4.png", "concepts.json"]
    assert [line.removeprefix("wrote ") for line in run.stdout.splitlines() if line.startswith("wrote ")] == [
        str(tmp_path / "out" / name) for name in files]  # once: rank 0 alone says it
    assert run.stdout.count("features.4: 2 concepts of 4 images") == 1
    summary = json.loads((tmp_path / "out" / "concepts.json").read_text())
    one = cnnviz.concepts(cnnviz.load_model("builtin:patterns"), str(folder), "features.4", k=2, importance_images=1,
                          batch_size=2)
    assert [entry["image"] for entry in summary["images"]] == one.images
    directions = torch.tensor(summary["directions"])
    assert (directions * one.directions).sum(1).min() > 0.99  # the same directions (cosine)
    weights = torch.tensor([entry["weights"] for entry in summary["images"]])
    torch.testing.assert_close(weights, one.image_weights, rtol=0.05, atol=0.05)
    assert [render["concept"] for render in summary["renders"]] == [0, 1]

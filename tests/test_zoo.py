"""The built-in models: they load offline, safely, from the installed package, and they work."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz import CnnvizError, zoo
from cnnviz.cli.main import main
from cnnviz.models.zoo import patterns, photos

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = {"patterns": 0.95, "photos": 0.85}
TEST_SEED = 20261125  # never used in training (training seeds are 0..1e5 x steps, validation 1000003)


@pytest.mark.parametrize("name", ["patterns", "photos"])
def test_held_out_accuracy_on_fresh_data(name):
    loaded = cnnviz.load_model(f"builtin:{name}")
    before = fingerprint(loaded.module)
    images, labels = zoo.validation_data(name, seed=TEST_SEED)
    inputs = loaded.preprocessing.normalize(images)
    predicted = torch.cat([
        cnnviz.capture(loaded, inputs[start:start + 500], ["logits"])["logits"].argmax(1)
        for start in range(0, len(inputs), 500)
    ])
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy >= THRESHOLDS[name], f"builtin:{name} held-out accuracy {accuracy:.3f}"
    # Every class is learned, not only most of them.
    for label in labels.unique():
        assert (predicted[labels == label] == label).float().mean() >= 0.5, loaded.class_names[label]
    assert_untouched(loaded.module, before)


def test_builtin_models_carry_their_metadata():
    loaded = cnnviz.load_model("builtin:patterns")
    assert loaded.class_names == patterns.CLASSES
    assert loaded.preprocessing.input_size == (48, 48) and loaded.preprocessing.known
    assert zoo.info("patterns")["class_info"]["grating_90"]["stripe_angle"] == 90
    loaded = cnnviz.load_model("builtin:photos")
    assert loaded.class_names == photos.CLASSES and "chelsea" in loaded.class_names
    assert loaded.preprocessing.input_size == (64, 64) and loaded.preprocessing.channels == 3
    assert loaded.preprocessing.mean == pytest.approx(photos.channel_statistics()[0])
    assert not loaded.module.training
    # VGG-like: four blocks of (conv-BN-ReLU) x 2 and a max-pool.
    kinds = [type(m).__name__ for m in loaded.module.features]
    assert kinds == (["Conv2d", "BatchNorm2d", "ReLU"] * 2 + ["MaxPool2d"]) * 4


@pytest.mark.parametrize("name", ["patterns", "photos"])
def test_weights_files_are_small_and_load_with_weights_only(name):
    path = zoo.weights_path(name)
    assert path.stat().st_size <= 5 * 1024 * 1024
    content = torch.load(path, map_location="cpu", weights_only=True)
    assert set(content) == {"state_dict", "meta"}
    assert content["meta"]["held_out_accuracy"] >= THRESHOLDS[name]
    assert content["meta"]["training_seconds"] <= 15 * 60


def test_the_wheel_contains_the_weights(tmp_path):
    # Build the wheel from a clean copy of the sources (no stale build folder), offline.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".venv*", ".pytest_cache", "test-artifacts"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("cnnviz-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in ("patterns", "photos"):
            member = f"cnnviz/models/zoo/weights/{name}.pt"
            assert member in names
            assert archive.read(member) == zoo.weights_path(name).read_bytes()
        assert "cnnviz/cli/main.py" in names and not any(n.startswith("cli/") for n in names)


def test_installed_package_finds_its_weights():
    # Whatever the install, the package loads its weights from its own files.
    from importlib import resources

    weights = resources.files("cnnviz.models.zoo").joinpath("weights")
    assert {entry.name for entry in weights.iterdir() if entry.name.endswith(".pt")} >= {"patterns.pt", "photos.pt"}


def test_unknown_builtin_names_and_damaged_files(tmp_path):
    with pytest.raises(CnnvizError, match="no built-in model 'photo'; did you mean 'photos'"):
        cnnviz.load_model("builtin:photo")
    with pytest.raises(CnnvizError, match="no built-in model 'nope'"):
        zoo.info("nope")
    damaged = tmp_path / "photos.pt"
    damaged.write_bytes(zoo.weights_path("photos").read_bytes()[:1000])
    with pytest.raises(CnnvizError, match="is damaged .*reinstall cnnviz"):
        zoo.read_weights_file(damaged, "photos")
    with pytest.raises(CnnvizError, match="missing from this installation"):
        zoo.read_weights_file(tmp_path / "none.pt", "photos")


def test_metadata_is_a_copy():
    zoo.info("photos")["classes"].append("not a class")
    assert len(cnnviz.load_model("builtin:photos").class_names) == len(photos.CLASSES)


def test_cli_default_model_and_models_listing():
    result = CliRunner().invoke(main, ["layers"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[2].split()[:3] == ["features", "Sequential", "128x4x4"]
    assert lines[-1].endswith("parameters, input 3x64x64")
    assert result.stderr == ""  # a known model: no notes
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0
    assert result.stdout.startswith("builtin:photos (default): VGG-like")
    assert "builtin:patterns" in result.stdout and "torchvision:NAME" in result.stdout
    listing = CliRunner().invoke(main, ["models", "--json"])
    rows = {row["spec"]: row for row in __import__("json").loads(listing.stdout)}
    assert rows["builtin:patterns"]["classes"] == 11 and rows["builtin:photos"]["input"] == "3x64x64"


def test_patterns_are_deterministic_and_balanced():
    first, labels = patterns.generate(110, seed=3)
    second, same_labels = patterns.generate(110, seed=3)
    assert torch.equal(first, second) and torch.equal(labels, same_labels)
    assert torch.bincount(labels).tolist() == [10] * 11
    assert first.shape == (110, 3, 48, 48) and 0 <= first.min() and first.max() <= 1
    other, _ = patterns.generate(110, seed=4)
    assert not torch.equal(first, other)


def test_grating_classes_have_their_orientation():
    # The meaning of a class is in its images: the spectrum of a grating peaks perpendicular to
    # its stripes (within the +-5 degree jitter of the generator).
    for name in ("grating_0", "grating_45", "grating_90", "grating_135"):
        images, _ = patterns.generate(20, seed=5, classes=[name])
        centred = images - images.mean(dim=(2, 3), keepdim=True)
        # Power summed over colour channels (two colours can have the same grey level).
        spectrum = torch.fft.fftshift((torch.fft.fft2(centred).abs() ** 2).sum(dim=1), dim=(1, 2))
        size = images.shape[-1]
        centre = size // 2
        for power in spectrum:
            row, column = divmod(int(power.argmax()), size)
            wave_angle = torch.rad2deg(torch.atan2(torch.tensor(float(centre - row)), torch.tensor(float(column - centre))))
            stripe_angle = (float(wave_angle) - 90) % 180
            expected = patterns.CLASS_INFO[name]["stripe_angle"]
            difference = min(abs(stripe_angle - expected), 180 - abs(stripe_angle - expected))
            assert difference <= 10, (name, stripe_angle)


def test_photo_splits_are_disjoint_and_cover_each_photograph():
    for name in photos.CLASSES:
        full = cnnviz.samples.tensor(name).expand(3, -1, -1)
        train, validation = photos.region(name, "train"), photos.region(name, "validation")
        axis = 2 if full.shape[2] >= full.shape[1] else 1
        assert validation.shape[axis] == full.shape[axis] - round(full.shape[axis] * 0.75)
        assert torch.equal(torch.cat([train, validation], dim=axis), full)

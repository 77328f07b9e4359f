"""Sample photographs, image specs, preparing images for a model, and predictions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from skimage import data

import cnnviz
from cnnviz import CnnvizError, images, samples
from cnnviz.cli.main import main


def test_every_sample_is_the_real_photograph():
    assert len(samples.names()) >= 15
    for name in samples.names():
        expected = getattr(data, name)()
        image = samples.image(name)
        assert np.array_equal(np.asarray(image), expected), name
        pixels = samples.tensor(name)
        assert pixels.shape == ((3,) if expected.ndim == 3 else (1,)) + expected.shape[:2]
        assert pixels.dtype == torch.float32 and 0 <= pixels.min() and pixels.max() <= 1
        assert torch.allclose(pixels[0], torch.from_numpy(expected[..., 0] if expected.ndim == 3 else expected) / 255)
    with pytest.raises(CnnvizError, match="no sample image 'chelsee'; did you mean 'chelsea'"):
        samples.image("chelsee")


def test_image_specs(tmp_path):
    assert images.image_sources("samples") == [f"sample:{n}" for n in samples.names()]
    assert images.image_sources("sample:coffee") == ["sample:coffee"]
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    Image.new("RGB", (8, 6), (255, 0, 0)).save(folder / "b.png")
    Image.new("L", (5, 5)).save(folder / "nested" / "a.jpg")
    Image.new("L", (5, 5)).save(folder / ".hidden" / "c.png")
    assert images.image_sources(folder) == [str(folder / "b.png"), str(folder / "nested" / "a.jpg")]
    assert images.open_image(folder / "b.png").size == (8, 6)
    (tmp_path / "empty").mkdir()
    for spec, message in [
        (tmp_path / "empty", "holds no files"),
        (tmp_path / "missing", "does not exist"),
        ("sample:nope", "no sample image 'nope'"),
    ]:
        with pytest.raises(CnnvizError, match=message):
            images.image_sources(spec)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(CnnvizError, match="cannot read .*notes.txt.* as an image"):
        images.open_image(tmp_path / "notes.txt")
    with pytest.raises(CnnvizError, match="is a folder"):
        images.open_image(folder)
    with pytest.raises(CnnvizError, match="sample:NAME"):
        images.open_image("samples")


def test_prepare_converts_any_mode_and_size_with_the_models_preprocessing():
    rgb = cnnviz.Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=(32, 48), known=True)
    grey = cnnviz.Preprocessing(mean=(0.5,), std=(0.25,), input_size=(16, 16), known=True)
    red = Image.new("RGB", (100, 50), (255, 0, 0))
    x = images.prepare(red, rgb)
    assert x.shape == (1, 3, 32, 48)
    assert torch.allclose(x[0, :, 10, 10], torch.tensor([1.0, -1.0, -1.0]))
    assert images.prepare(red, grey).shape == (1, 1, 16, 16)
    assert torch.allclose(images.prepare(Image.new("L", (20, 30), 255), rgb)[0, :, 5, 5], torch.ones(3))
    rgba = Image.new("RGBA", (20, 20), (0, 0, 255, 128))
    assert torch.allclose(images.prepare(rgba, rgb)[0, :, 3, 3], torch.tensor([-1.0, -1.0, 1.0]))
    deep = Image.fromarray(np.linspace(0, 65535, 400).reshape(20, 20).astype(np.uint16))
    prepared = images.prepare(deep, grey)
    assert prepared.min() < -1.5 and prepared.max() > 1.5  # the 16-bit range is kept, not clipped
    assert images.prepare(torch.rand(1, 40, 40), rgb).shape == (1, 3, 32, 48)
    with pytest.raises(CnnvizError, match="the model takes 4 input channels"):
        images.prepare(red, cnnviz.Preprocessing(mean=(0,) * 4, std=(1,) * 4))


def test_predict_with_the_default_model():
    loaded = cnnviz.load_model("builtin:photos")
    result = cnnviz.predict(loaded, ["sample:chelsea", "sample:coffee", samples.image("rocket")], top=3)
    assert [p.classes[0][1] for p in result] == ["chelsea", "coffee", "rocket"]
    assert [p.source for p in result] == ["sample:chelsea", "sample:coffee", "image 2"]
    for prediction in result:
        probabilities = [p for _, _, p in prediction.classes]
        assert probabilities == sorted(probabilities, reverse=True) and probabilities[0] > 0.5


def test_predict_skips_unreadable_files_in_a_folder(tmp_path):
    samples.image("chelsea").save(tmp_path / "cat.png")
    (tmp_path / "readme.txt").write_text("hello")
    result = cnnviz.predict(cnnviz.load_model("builtin:photos"), tmp_path, top=1)
    assert [p.source for p in result] == [str(tmp_path / "cat.png")]
    assert result.skipped == [str(tmp_path / "readme.txt")]
    with pytest.raises(CnnvizError, match="cannot read"):
        cnnviz.predict(cnnviz.load_model("builtin:photos"), tmp_path / "readme.txt")


def test_cli_predict_samples_and_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["predict", "--image", "sample:chelsea", "--top", "2"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("sample:chelsea: chelsea 0.")
    result = runner.invoke(main, ["predict", "-m", "builtin:patterns", "-i", "samples", "--json", "-k", "1"])
    assert result.exit_code == 0
    rows = __import__("json").loads(result.stdout)
    assert len(rows) == len(samples.names()) and rows[0]["top"][0]["class"] in cnnviz.zoo.patterns.CLASSES
    result = runner.invoke(main, ["samples"])
    assert result.exit_code == 0 and result.stdout.splitlines()[0].startswith("sample:astronaut")
    for args, fragment in [
        (["predict", "-i", "sample:chelsee"], "did you mean 'chelsea'"),
        (["predict", "-i", str(tmp_path / "nothing.png")], "does not exist"),
        (["predict", "-i", str(tmp_path)], "holds no files"),
        (["predict"], "Missing option '--image'"),
        (["predict", "-i", "sample:chelsea", "--top", "0"], "--top"),
    ]:
        result = runner.invoke(main, args)
        assert result.exit_code == 2 and result.stdout == ""
        assert len(result.stderr.splitlines()) == 1 and fragment in result.stderr, result.stderr

"""cnnviz.predict: top-k classes with probabilities, on any images, from Python and the CLI."""
from __future__ import annotations


import pytest
import torch
from click.testing import CliRunner

import cnnviz
from cnnviz import CnnvizError, samples
from cnnviz.cli.main import main


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


def test_single_output_models_give_a_sigmoid_probability():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with torch.no_grad():
        model[0].weight.fill_(0.0)
        model[0].bias.fill_(2.0)
    [prediction] = cnnviz.predict(model, "sample:coffee")
    assert prediction.classes == [(0, None, pytest.approx(float(torch.sigmoid(torch.tensor(2.0)))))]
    with pytest.raises(CnnvizError, match="no images given"):
        cnnviz.predict(model, [])


def _head(outputs: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(4, outputs))


def test_class_names_and_input_size_declared_on_a_plain_module_are_used():
    model = _head()
    model.class_names, model.input_size = ["c1", "c2", "c3"], (24, 24)
    (prediction,) = cnnviz.predict(model, "sample:chelsea", top=3).predictions
    assert sorted(name for _, name, _ in prediction.classes) == ["c1", "c2", "c3"]
    result = cnnviz.saliency(model, "sample:chelsea", target="c3")
    assert result.targets[0].class_name == "c3" and result.attribution.shape == (1, 3, 24, 24)


def test_wrong_class_name_count_and_non_finite_outputs_are_refused():
    wrong = cnnviz.LoadedModel(_head(), cnnviz.Preprocessing(input_size=(24, 24)), ["a", "b"])
    with pytest.raises(CnnvizError, match="2 class names but 3 outputs"):
        cnnviz.predict(wrong, "sample:chelsea")
    broken = _head()
    with torch.no_grad():
        broken[3].bias[1] = float("nan")
    with pytest.raises(CnnvizError, match="not finite"):
        cnnviz.predict(cnnviz.LoadedModel(broken, cnnviz.Preprocessing(input_size=(24, 24))), "sample:chelsea")

"""The command line says what it does (issue 30, "one API"): `rf --layer` is about the layers named,
`stats` says which channels its exemplar figures show and takes --channels, every command's JSON
ends with `figures`, the library's messages name Python keywords and the command line names its
options, and what a model's loading prints never reaches stdout."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from click.testing import CliRunner

import cnnviz
from cnnviz.cli.main import main
from cnnviz.cli.messages import cli_syntax
from cnnviz.errors import CnnvizError, CnnvizWarning

IMAGE = ["-i", "sample:chelsea"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and result.stdout == "", result.stderr
    return lines[0]


# -- 1. rf --layer: the table and the figure are about the layers named ---------------------------------


def table_layers(stdout: str) -> list[str]:
    """The layer column of the table `cnnviz rf` prints (before its "wrote" lines)."""
    lines = [line for line in stdout.splitlines() if line and not line.startswith("wrote ")]
    assert lines[0].split() == ["layer", "size", "stride", "offset", "sees"] and set(lines[1]) <= {"-", " "}
    return [line.split()[0] for line in lines[2:]]


def test_rf_with_layers_prints_and_draws_those_layers(tmp_path):
    result = invoke("rf", "--layer", "features.13", "--layer", "features.6", *IMAGE, "--max-images", "1",
                    "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert table_layers(result.stdout) == ["features.13", "features.6"]  # the layers asked, in that order
    assert "features.13  16    4       -6" in result.stdout
    summary = json.loads((tmp_path / "receptive_fields.json").read_text())
    assert [field["layer"] for field in summary["layers"]] == ["features.13", "features.6"]
    boxes = next(figure for figure in summary["figures"] if figure["file"] == "receptive_fields.png")
    assert boxes["settings"]["layers"] == ["features.13", "features.6"]
    assert "of features.13, features.6," in boxes["caption"]
    assert {figure["file"] for figure in summary["figures"]} == {
        "receptive_fields.png", "effective_rf_features.13.png", "effective_rf_features.6.png"}

    as_json = invoke("rf", "--layer", "features.13", *IMAGE, "--max-images", "1", "--json", "-o", str(tmp_path))
    assert as_json.exit_code == 0, as_json.stderr
    assert [field["layer"] for field in json.loads(as_json.stdout)] == ["features.13"]


def test_rf_without_layers_still_prints_every_layer(tmp_path):
    result = invoke("rf", *IMAGE, "--max-images", "1", "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    shown = table_layers(result.stdout)
    assert {"features.0", "features.13", "features.27", "classifier.2", "logits"} <= set(shown) and len(shown) > 30
    boxes = json.loads((tmp_path / "receptive_fields.json").read_text())["figures"][0]
    assert boxes["settings"]["layers"] is None and "of several layers" in boxes["caption"]


def test_the_receptive_field_figure_draws_the_layers_asked():
    photos = cnnviz.load_model("builtin:photos")
    fields = cnnviz.receptive_fields(photos)
    report = cnnviz.reports.receptive_fields(fields, None, layers=["features.27"])
    (item,) = report.items
    legend = item.draw().axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["features.27: 76x76, stride 16"]


# -- 2. stats: which exemplar channels, and --channels ------------------------------------------------------


def exemplar_figure(folder, layer: str) -> dict:
    summary = json.loads((folder / "stats.json").read_text())
    return next(figure for figure in summary["figures"] if figure["kind"] == "exemplars" and figure["layer"] == layer)


def test_stats_says_which_exemplar_channels_it_shows_and_takes_channels(tmp_path):
    result = invoke("stats", *IMAGE, "-l", "features.16", "--top-k", "1", "-o", str(tmp_path / "default"))
    assert result.exit_code == 0, result.stderr
    figure = exemplar_figure(tmp_path / "default", "features.16")
    assert "Dataset exemplars of features.16, channels 0-15 of 64:" in figure["caption"]
    assert figure["settings"]["channels"] == list(range(16))
    assert ("note: exemplars_features.16.png shows channels 0-15 of 64; --channels chooses others"
            in result.stderr.splitlines())

    result = invoke("stats", *IMAGE, "-l", "features.16", "-l", "features.2", "--channels", "0-3,12", "--top-k", "1",
                    "-o", str(tmp_path / "chosen"))
    assert result.exit_code == 0, result.stderr
    figure = exemplar_figure(tmp_path / "chosen", "features.16")
    assert "features.16, channels 0-3,12 of 64:" in figure["caption"] and figure["settings"]["channels"] == [0, 1, 2, 3, 12]
    assert "channels 0-3,12 of 16" in exemplar_figure(tmp_path / "chosen", "features.2")["caption"]
    assert "exemplars_" not in result.stderr  # channels chosen: no note

    # a channel one layer lacks: refused before any image is read, naming the layer
    refused = invoke("stats", *IMAGE, "-l", "features.16", "-l", "features.2", "--channels", "20",
                     "-o", str(tmp_path / "refused"))
    line = one_line_error(refused)
    assert "features.2" in line and "channel 20 is out of range" in line and "valid: 0-15" in line
    assert not (tmp_path / "refused" / "stats.json").exists()


def test_the_exemplar_figure_title_says_which_channels():
    photos = cnnviz.load_model("builtin:photos")
    stats = cnnviz.statistics(photos, "sample:chelsea", ["features.16"], exemplars=1)
    title = cnnviz.plots.exemplars(stats, "features.16")._suptitle.get_text()
    assert title.startswith("features.16, channels 0-15 of 64: top 1 of 1 images per channel")
    title = cnnviz.plots.exemplars(stats, "features.16", channels="60-63,7")._suptitle.get_text()
    assert title.startswith("features.16, channels 60-63,7 of 64:")
    assert cnnviz.plots.exemplars(stats, "features.16", channels="all")._suptitle.get_text().startswith(
        "features.16, all 64 channels:")
    report = cnnviz.reports.statistics(stats)
    assert report.notes == ["exemplars_features.16.png shows channels 0-15 of 64; channels=... chooses others"]


# -- 3. conv-arithmetic and conv-matrix: JSON that ends with its figures ------------------------------------


def test_conv_arithmetic_and_conv_matrix_write_json_ending_with_figures(tmp_path):
    result = invoke("conv-arithmetic", "-n", "5", "5", "-k", "3", "3", "-s", "2", "2", "-p", "1", "1",
                    "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["output 3x3", f"wrote {tmp_path / 'conv_arithmetic.png'}",
                                          f"wrote {tmp_path / 'conv_arithmetic.json'}"]
    summary = json.loads((tmp_path / "conv_arithmetic.json").read_text())
    assert list(summary)[-1] == "figures"
    assert summary["output_size"] == [3, 3] and summary["stride"] == [2, 2] and summary["units"] == [[0, 0], [0, 1], [0, 2]]
    (figure,) = summary["figures"]
    assert figure["file"] == "conv_arithmetic.png" and figure["kind"] == "conv_arithmetic"
    assert figure["layer"] is None and figure["unit"] is None and figure["value_range"] == [None, None]
    assert "3x3 kernel" in figure["caption"] and "5x5 input" in figure["caption"] and "3x3 output" in figure["caption"]

    result = invoke("conv-matrix", "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    summary = json.loads((tmp_path / "conv_matrix.json").read_text())
    assert list(summary)[-1] == "figures" and summary["backward_matches_autograd"] is True
    assert summary["output"] == [[122.0, 148.0], [126.0, 134.0]]  # the worked example, as before
    (figure,) = summary["figures"]
    assert figure["file"] == "conv_matrix.png" and figure["kind"] == "conv_matrix"
    assert figure["value_range"] == [0.0, 4.0] and figure["settings"] == {"stride": 1, "padding": 0, "dilation": 1}
    assert "U (4 x 16, 36 non-zero)" in figure["caption"] and "3 x 3 kernel on a 4 x 4 input" in figure["caption"]


def test_conv_arithmetic_too_large_to_draw_writes_nothing(tmp_path):
    line = one_line_error(invoke("conv-arithmetic", "-n", "100000", "100000", "-o", str(tmp_path / "out")))
    assert "at most 64 cells" in line and not (tmp_path / "out").exists()


# -- 4. messages: Python keywords in the library, options on the command line --------------------------------


def test_random_weights_warning_python_and_command_line():
    with pytest.warns(CnnvizWarning) as caught:
        cnnviz.load_model("torchvision:resnet18")
    message = " ".join(str(w.message) for w in caught)
    assert "pass weights='DEFAULT' for the pretrained ones" in message and "--weights" not in message

    result = invoke("layers", "-m", "torchvision:resnet18", "--json")
    assert result.exit_code == 0, result.stderr
    assert "pass --weights DEFAULT for the pretrained ones" in result.stderr and "weights=" not in result.stderr


def test_a_channel_named_twice_python_and_command_line(tmp_path):
    photos = cnnviz.load_model("builtin:photos")
    with pytest.raises(CnnvizError) as raised:
        cnnviz.maximize(photos, "features.3:2", channels="0-2", steps=1)
    assert str(raised.value).endswith("already names a channel; drop channels=...") and "--" not in str(raised.value)

    line = one_line_error(invoke("maximize", "-l", "features.3:2", "-c", "0-2", "--steps", "1", "-o", str(tmp_path)))
    assert line.endswith("already names a channel; drop --channels") and "channels=" not in line


def test_a_pickled_model_python_and_command_line(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), path)
    with pytest.raises(CnnvizError) as raised:
        cnnviz.load_model(str(path))
    assert "pass trusted=True" in str(raised.value) and "--trust-pickle" not in str(raised.value)

    line = one_line_error(invoke("layers", "-m", str(path)))
    assert "pass --trust-pickle" in line and "trusted=" not in line


def test_cli_syntax_writes_keywords_as_the_commands_options():
    layers, maximize, gallery = main.commands["layers"], main.commands["maximize"], main.commands["gallery"]
    assert cli_syntax("pass weights='DEFAULT' or weights='PATH'", layers) == "pass --weights DEFAULT or --weights PATH"
    assert cli_syntax("Pass input_size=(H, W) to choose another", layers) == "Pass --input-size H W to choose another"
    assert cli_syntax("pass mean=(0.5, 0.5, 0.5) and trusted=True", layers) == "pass --mean 0.5,0.5,0.5 and --trust-pickle"
    assert cli_syntax("as the model (spec='/a b/x.pt')", layers) == "as the model (--model '/a b/x.pt')"
    assert cli_syntax("drop neuron=True; size='auto' or size=(64, 64)", maximize) == (
        "drop --neuron; --size auto or --size 64 64")
    assert cli_syntax("or reference=None to render without", maximize) == "or --reference none to render without"
    assert cli_syntax("name the layers with layer=...", gallery) == "name the layers with --layer"
    # keywords the command has no option for, and Python calls, stay as they are
    assert cli_syntax("torch.load(path, weights_only=True); sparse=True", layers) == (
        "torch.load(path, weights_only=True); sparse=True")
    assert cli_syntax("pass weights='DEFAULT'", None) == "pass weights='DEFAULT'"
    # messages that say both: the option once
    assert cli_syntax("pass it with --input-size H W (input_size=(H, W) in Python)", layers) == (
        "pass it with --input-size H W")
    assert cli_syntax("with input_size=(H, W) (--input-size H W)", layers) == "with --input-size H W"
    assert cli_syntax("the unit (target=..., --target on the command line)", main.commands["saliency"]) == (
        "the unit (--target)")


# -- 5. what loading a model prints goes to stderr ---------------------------------------------------------


NOISY_FACTORY = '''
import torch.nn as nn

print("Downloading: the module's own line")


def make():
    print("Downloading: weights, said by the factory")
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
'''


def test_what_loading_prints_goes_to_stderr_and_json_stays_json(tmp_path):
    (tmp_path / "noisy.py").write_text(NOISY_FACTORY)
    result = invoke("layers", "-m", f"{tmp_path / 'noisy.py'}:make", "--input-size", "16", "16", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)  # stdout is the JSON and nothing else
    assert [row["name"] for row in rows][:2] == ["0", "1"]
    assert "Downloading: the module's own line" in result.stderr.splitlines()
    assert "Downloading: weights, said by the factory" in result.stderr.splitlines()
    assert "Downloading" not in result.stdout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CnnvizWarning)
        assert cnnviz.load_model(f"{tmp_path / 'noisy.py'}:make") is not None  # the library itself prints as the factory does

"""The command line: help, version, `cnnviz layers`, and one-line errors with exit code 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torchvision
from click.testing import CliRunner
from conftest import TinyNet

from cnnviz.cli.main import main


def run(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_version_and_help():
    import cnnviz

    result = run("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"cnnviz {cnnviz.__version__}"
    result = run("--help")
    assert result.exit_code == 0 and "layers" in result.stdout and "Example" in result.stdout
    result = run()
    assert result.exit_code == 0 and "Commands:" in result.stdout


def test_every_command_has_help_with_an_example():
    for name in main.commands:
        result = run(name, "--help")
        assert result.exit_code == 0
        assert "Example" in result.stdout and f"cnnviz {name} " in result.stdout, name


def test_layers_table():
    result = run("layers", "--model", "torchvision:resnet18")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["layer", "type", "output", "shape", "calls", "params"]
    relu = next(line for line in lines if line.startswith("layer1.0.relu "))
    assert relu.split() == ["layer1.0.relu", "ReLU", "64x56x56", "(x2)", "2", "0"]
    assert lines[-1] == "68 layers, 11,689,512 parameters, input 3x224x224"
    assert "random weights" in result.stderr  # the warning, as a note


def test_layers_json_and_selected_layers():
    result = run("layers", "-m", "torchvision:resnet18", "--input-size", "64", "64", "--json",
                 "--layer", "layer1.0.relu#2:5@7,3", "--layer", "fc")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == ["layer1.0.relu", "fc"]
    assert rows[0] == {"name": "layer1.0.relu", "type": "ReLU", "output_shape": [[64, 16, 16], [64, 16, 16]],
                       "calls": 2, "params": 0}
    assert rows[1]["params"] == 513000


@pytest.fixture
def files(tmp_path):
    model = TinyNet().eval()
    torch.save(model.state_dict(), tmp_path / "state.pt")
    torch.save(torchvision.models.resnet18(), tmp_path / "pickled.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage" * 50)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n"
        "def lenet():\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 5), nn.Flatten(), nn.Linear(4 * 24 * 24, 10))\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["layers", "--model"], ["Option '--model' requires an argument", "cnnviz layers --help"]),
        (["layers", "-m", "torchvision:resnt18"], ["did you mean 'resnet18'"]),
        (["layers", "-m", "torchvison:resnet18"], ["did you mean 'torchvision:resnet18'"]),
        (["layers", "-m", "{tmp}/missing.pt"], ["does not exist"]),
        (["layers", "-m", "{tmp}/corrupt.pt"], ["is it corrupt"]),
        (["layers", "-m", "{tmp}/empty.pt"], ["the file is empty"]),
        (["layers", "-m", "{tmp}/pickled.pt"], ["--trust-pickle"]),
        (["layers", "-m", "{tmp}/state.pt"], ["state dict", "--weights"]),
        (["layers", "-m", "torchvision:resnet18", "-w", "{tmp}/state.pt"], ["do not fit torchvision:resnet18"]),
        (["layers", "-m", "torchvision:resnet18", "-w", "IMAGENET1K_V7"], ["available: IMAGENET1K_V1"]),
        (["layers", "-m", "torchvision:resnet18", "--mean", "a,b"], ["Invalid value for '--mean'"]),
        (["layers", "-m", "torchvision:resnet18", "--mean", ""], ["Invalid value for '--mean'"]),
        (["layers", "-m", "torchvision:resnet18", "--std", "-1"], ["std greater than 0"]),
        (["layers", "-m", "torchvision:resnet18", "--mean", "nan"], ["finite"]),
        (["layers", "-m", "torchvision:resnet18", "--device", "mps"], ["not usable here"]),
        (["layers", "-m", "torchvision:resnet18", "--input-size", "100000", "100000"], ["from 1 to 16384"]),
        (["layers", "-m", "torchvision:resnet18", "--layer", "fc:\u00b2"], ["must be a number"]),
        (["layers", "-m", "nets.py"], ["nets.py:FUNCTION"]),
        (["layers", "-m", "{tmp}/state.pt", "-w", "{tmp}/state.pt"], ["state dict"]),
        (["layers", "-m", "torchvision:resnet18", "--mean", "0.1,0.2"], ["mean has 2 values"]),
        (["layers", "-m", "torchvision:resnet18", "--input-size", "0", "3"], ["--input-size"]),
        (["layers", "-m", "torchvision:resnet18", "--device", "tpu"], ["unknown device 'tpu'"]),
        (["layers", "-m", "nets:lenet", "--input-size", "30", "30"], ["dry run on one 1x30x30 image failed", "--input-size H W"]),
        (["layers", "-m", "nets:lenet2"], ["did you mean 'lenet'"]),
        (["layers", "-m", "nosuch.module:make"], ["cannot import 'nosuch.module'"]),
        (["layers", "-m", "torchvision:resnet18", "--layer", "layer1.0.conv"], ["did you mean 'layer1.0.conv1'"]),
        (["layers", "-m", "torchvision:resnet18", "--layer", "layer1.0.relu#3"], ["valid: #1-#2"]),
        (["layers", "-m", "torchvision:resnet18", "--layer", "layer1.0.relu:64"], ["valid: 0-63"]),
        (["layers", "-m", "torchvision:resnet18", "--layer", "layer1.0.relu:1@56,2"], ["valid: 0-55, 0-55"]),
        (["layers", "-m", "torchvision:resnet18", "--layer", "logits:tabbby"], ["did you mean 'tabby'"]),
        (["layers", "--modle", "x"], ["No such option '--modle'", "--model"]),
        (["layrs"], ["No such command 'layrs'"]),
        (["activations", "-i", "sample:chelsea", "-i", "sample:coffee", "-l", "features.0"], ["takes one image", "give -i once"]),
        (["dream", "-i", "sample:chelsea", "-i", "sample:coffee", "-l", "features.0"], ["takes one image"]),
    ],
)
def test_errors_are_one_line_with_exit_code_2(files, monkeypatch, args, fragments):
    monkeypatch.chdir(files)
    before = {path.name: path.read_bytes() for path in files.iterdir() if path.is_file()}
    result = run(*[arg.format(tmp=files) for arg in args])
    assert_one_line_error(result, *fragments)
    after = {path.name: path.read_bytes() for path in files.iterdir() if path.is_file()}
    assert after == before  # nothing written, nothing changed


def test_no_cuda_is_a_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_one_line_error(run("layers", "-m", "torchvision:resnet18", "--device", "cuda"), "CUDA is not available")


def test_trusted_pickle_and_factory_with_size(files, monkeypatch):
    monkeypatch.chdir(files)
    result = run("layers", "-m", str(files / "pickled.pt"), "--trust-pickle", "--input-size", "64", "64")
    assert result.exit_code == 0 and "layer4.1.conv2" in result.stdout
    assert "preprocessing of" in result.stderr and "is unknown" in result.stderr
    result = run("layers", "-m", "nets:lenet", "--input-size", "28", "28")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "4 layers, 23,154 parameters, input 1x28x28"


def test_debug_shows_the_traceback():
    result = run("--debug", "layers", "-m", "torchvision:resnt18")
    assert result.exit_code == 1 and result.exception is not None
    assert "resnt18" in str(result.exception)


def test_real_processes_console_script_and_module():
    # The installed console script and `python -m cnnviz`, as a user runs them.
    bin_dir = os.path.dirname(sys.executable)
    script = os.path.join(bin_dir, "cnnviz")
    done = subprocess.run([script, "layers", "-m", "torchvision:resnet18", "--json", "--layer", "fc"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["output_shape"] == [[1000]]
    done = subprocess.run([sys.executable, "-m", "cnnviz", "layers", "-m", "torchvision:nope"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_hostile_and_garbage_model_files_are_one_line_without_torchs_warnings(tmp_path):
    class Hostile:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'it-ran'}",)

    torch.save(Hostile(), tmp_path / "hostile.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x04garbage, not a checkpoint" * 8)  # torch warns of its protocol
    system = f"{os.system.__module__}.system"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, model, fragments in [
            ("hostile.pt", "{path}", [f"cnnviz refused {{path}}: loading it would call {system}", "torch.jit.save"]),
            ("hostile.pt", "torchvision:resnet18", [f"would call {system}", "model.state_dict()"]),
            ("garbage.pt", "{path}", ["cannot read {path}: it is not a file written by torch.save or torch.jit.save "
                                      "(unreadable pickle: Unsupported operand 103); is it corrupt or of another format?"]),
            ("garbage.pt", "torchvision:resnet18", ["(unreadable pickle: Unsupported operand 103)"]),
        ]:
            path = str(tmp_path / name)
            arguments = ["layers", "-m", model.format(path=path)] + (["-w", path] if "{path}" not in model else [])
            assert_one_line_error(run(*arguments), *[fragment.format(path=path) for fragment in fragments])
    assert [str(w.message) for w in caught] == []
    assert not (tmp_path / "it-ran").exists()


def test_nan_weights_are_named_by_the_error_of_a_command_that_fails_on_them(tmp_path):
    import cnnviz

    state = cnnviz.load_model("builtin:photos").module.state_dict()
    state["features.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    weights = ["-m", "builtin:photos", "-w", str(tmp_path / "nan.pt")]
    result = run("layers", *weights)  # succeeds, with the note
    assert result.exit_code == 0 and "note: builtin:photos: parameter features.0.weight holds 1 non-finite" in result.stderr
    assert_one_line_error(run("predict", *weights, "--image", "sample:chelsea"),
                          "output for sample:chelsea is not finite", "parameter features.0.weight holds 1 non-finite value(s)")
    assert_one_line_error(run("stats", *weights, "-i", "sample:chelsea", "-l", "features.3", "-o", str(tmp_path / "out")),
                          "features.3 produced a non-finite value", "parameter features.0.weight holds 1 non-finite value(s)")


def test_a_list_of_images_naming_missing_files_says_they_do_not_exist(tmp_path):
    import cnnviz

    cnnviz.samples.image("chelsea").save(tmp_path / "cat.png")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "list.txt").write_text("cat.png\ngone.png\nsub/lost.jpg\nnotes.png\n")
    result = run("predict", "--image", str(tmp_path / "list.txt"))
    assert result.exit_code == 0 and result.stdout.startswith(f"{tmp_path / 'cat.png'}: chelsea"), result.stderr
    assert result.stderr.splitlines() == [
        f"note: skipped 3 file(s): 2 that do not exist ({tmp_path / 'gone.png'}, {tmp_path / 'sub' / 'lost.jpg'}) "
        f"and 1 that is not an image (e.g. {tmp_path / 'notes.png'})"]
    (tmp_path / "missing.txt").write_text("cat.png\ngone.png\n")
    result = run("predict", "--image", str(tmp_path / "missing.txt"))
    assert result.exit_code == 0 and result.stderr == f"note: skipped 1 file(s) that do not exist: {tmp_path / 'gone.png'}\n"
    (tmp_path / "bad.txt").write_text("gone.png\nnotes.png\n")
    assert_one_line_error(run("predict", "--image", str(tmp_path / "bad.txt")),
                          f"no image could be read (skipped 2 file(s): 1 that does not exist ({tmp_path / 'gone.png'}) "
                          f"and 1 that is not an image (e.g. {tmp_path / 'notes.png'}))")

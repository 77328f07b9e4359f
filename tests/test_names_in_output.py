"""Names a file system or a terminal cannot take as they are: a layer name of 300 bytes becomes a
short, unique file name in every command; control characters and escape sequences in names are
printed escaped, never sent raw to the terminal."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cnnviz.cli.main import main
from cnnviz.cli.options import printable
from cnnviz.core.output import NAME_LENGTH, safe_name

LONG = "layer_" + "x" * 294  # 300 bytes: a file name holds 255

FACTORY = f'''
import torch.nn as nn


class Long(nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module("{LONG}", nn.Conv2d(3, 4, 3, padding=1))
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        return self.head(self.relu(getattr(self, "{LONG}")(x)))


def make():
    return Long().eval()
'''


@pytest.fixture(scope="module")
def long_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    (folder / "long.py").write_text(FACTORY)
    return f"{folder / 'long.py'}:make"


@pytest.mark.parametrize("command", [
    ["stats", "-i", "sample:chelsea", "-l", LONG],
    ["kernels", "-l", LONG],
    ["activations", "-i", "sample:chelsea", "-l", LONG],
    ["maximize", "-l", LONG, "-c", "0", "--steps", "2", "--size", "16", "--reference", "none"],
    ["dream", "-i", "sample:chelsea", "-l", LONG, "--octaves", "1", "--steps", "1"],
    ["rf", "-i", "sample:chelsea", "-l", LONG, "--max-images", "1"],
], ids=lambda command: command[0])
def test_a_300_byte_layer_name_gets_a_short_unique_file_name(command, long_model, tmp_path):
    done = CliRunner().invoke(main, [*command, "-m", long_model, "--input-size", "32", "32", "-o", str(tmp_path)])
    assert done.exit_code == 0, done.output
    written = [path for path in tmp_path.iterdir() if not path.name.startswith(".")]
    assert written and all(len(path.name.encode()) <= NAME_LENGTH + 40 for path in written)
    assert any("layer_xxxx" in path.name for path in written)  # readable still: the name's start, and a hash
    summary = json.loads(next(path for path in written if path.suffix == ".json").read_text())
    assert LONG in json.dumps(summary)  # the JSON names the layer in full


def test_long_names_stay_apart_and_plain_names_stay_as_they_are():
    first, second = safe_name(LONG), safe_name(LONG[:-1] + "y")
    assert first != second and len(first) <= NAME_LENGTH and first.startswith("layer_xxx")
    assert safe_name("features.10") == "features.10" and safe_name("x" * NAME_LENGTH) == "x" * NAME_LENGTH


def test_control_characters_are_printed_escaped(tmp_path):
    from PIL import Image

    name = "cat\x1b[2J\x07\u202egnp.png"  # clears the screen, rings, turns the line around
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / name)
    done = CliRunner().invoke(main, ["predict", "-i", str(tmp_path / name)])
    assert done.exit_code == 0, done.output
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout and "\u202e" not in done.stdout
    assert "cat\\x1b[2J\\x07\\u202egnp.png:" in done.stdout
    missing = CliRunner().invoke(main, ["kernels", "-l", "no\x1b[31mlayer", "-o", str(tmp_path / "out")])
    assert missing.exit_code == 2 and "\x1b" not in missing.stderr and "\\x1b[31m" in missing.stderr
    assert printable("a\tb\nc\x00d\x9be") == "a\tb\nc\\x00d\\x9be"

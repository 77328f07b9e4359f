"""The README tells the truth: CI runs its install and test commands, and its quick start and the
command line's layer table (docs/cli.md) match the real output. Every other example of the README
and docs/ runs in tests/test_docs_examples.py."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from cnnviz.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CLI = (ROOT / "docs" / "cli.md").read_text()


def first_code_block(section: str) -> list[str]:
    body = README.split(f"## {section}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", body, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_exactly_the_readme_install_and_test_commands():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in first_code_block("Install") + first_code_block("Test"):
        assert command in ci, f"{command!r} is in the README but not in .ci/run"
    assert "set -euo pipefail" in ci and any("venv" in line for line in ci)


def test_quick_start_is_the_gallery_and_prints_what_the_readme_shows(tmp_path, monkeypatch):
    (command,) = first_code_block("Quick start")
    assert command == "cnnviz gallery"
    monkeypatch.chdir(tmp_path)
    # the README's command, with small settings so that the suite stays fast (the full run is
    # what the gallery tests and the README's timing are about)
    small = ["--layer", "features.0", "--max-channels", "1", "--steps", "2", "--max-classes", "1",
             "--class-steps", "2", "--activation-images", "1", "--attribution-images", "1",
             "--methods", "gradient", "--dream-octaves", "1", "--dream-steps", "1", "-i", "sample:chelsea"]
    result = CliRunner().invoke(main, command.split()[1:] + small)
    assert result.exit_code == 0, result.stderr
    section = README.split("## Quick start", 1)[1]
    shown = re.search(r"\n```\n(wrote .*?)```", section, re.S).group(1).splitlines()
    real = result.stdout.splitlines()
    for line in shown:
        if line != "...":
            pattern = re.sub(r"\\d\+|\d+", r"\\d+", re.escape(line))
            assert any(re.fullmatch(pattern, printed) for printed in real), (line, real)
    assert (tmp_path / "cnnviz-gallery" / "index.html").is_file()


def test_layer_table_example_matches_the_real_output():
    section = CLI.split("## `cnnviz layers`", 1)[1]
    (command,) = [line for line in first_code_block_of(section) if "# the table below" in line]
    result = CliRunner().invoke(main, command.split("#")[0].split()[1:])
    assert result.exit_code == 0, result.stderr
    shown = re.search(r"\n```\n(layer .*?)```", section, re.S).group(1).splitlines()
    real = result.stdout.splitlines()
    for line in shown:
        if line != "...":
            assert line in real, f"docs/cli.md shows {line!r}, the command prints otherwise"


def first_code_block_of(text: str) -> list[str]:
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_benchmark_script_runs():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_probe.py"), "--quick"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"capture layer1 \(early exit\)\s+[\d.]+ ms\s+[\d.]+ x plain to layer1", done.stdout)

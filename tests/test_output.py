"""Writing results: atomic, readable like any file, and clear errors for folders that cannot be written."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from matplotlib.figure import Figure

from cnnviz import CnnvizError, output


def test_files_are_complete_and_readable_by_others(tmp_path):
    figure = Figure()
    figure.subplots().plot([0, 1], [1, 0])
    written = [
        output.save_figure(figure, tmp_path / "deep" / "figure.png"),
        output.write_json(tmp_path / "summary.json", {"value": np.float32(1.5), "array": np.arange(3)}),
        output.write_npz(tmp_path / "arrays.npz", {"a": np.ones(4)}),
    ]
    umask = os.umask(0)
    os.umask(umask)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert json.loads((tmp_path / "summary.json").read_text()) == {"value": 1.5, "array": [0, 1, 2]}
    assert (tmp_path / "deep" / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.load(tmp_path / "arrays.npz")["a"].tolist() == [1, 1, 1, 1]
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    output.write_json(target, {"old": True})
    with pytest.raises(TypeError):
        output.write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs a folder where nobody can create files")
def test_unwritable_folder_is_a_clear_error():
    # /proc exists and is a folder, but no file can be created in it, not even by root
    with pytest.raises(CnnvizError, match="cannot write into '/proc'"):
        output.write_json("/proc/cnnviz-test.json", {})


def test_output_paths_that_are_files_and_safe_names(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CnnvizError, match="is a file"):
        output.output_folder(tmp_path / "file")
    with pytest.raises(CnnvizError, match="cannot create the output folder"):
        output.output_folder(tmp_path / "file" / "below")
    assert output.safe_name("layer1.0.relu#2:5@7,3") == "layer1.0.relu-2-5-7-3"


def test_json_never_holds_bare_nan(tmp_path):
    path = output.write_json(tmp_path / "values.json", {
        "nan": float("nan"), "inf": [1.0, np.float32("inf")], "array": np.array([2.0, -np.inf]), "int": np.int64(3)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "inf": [1.0, None], "array": [2.0, None], "int": 3}

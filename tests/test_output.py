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
    assert not list(tmp_path.rglob("*.part"))  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    output.write_json(target, {"old": True})
    with pytest.raises(TypeError):
        output.write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.RECORD, "summary.json"]


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


def test_a_file_cnnviz_did_not_write_is_never_overwritten(tmp_path):
    mine = tmp_path / "stats.json"
    mine.write_text('{"mine": 1}')
    with pytest.raises(CnnvizError, match="cnnviz did not write it"):
        output.write_json(mine, {"theirs": 2})
    assert mine.read_text() == '{"mine": 1}'
    with pytest.raises(CnnvizError, match="cnnviz did not write it"):
        output.check_writable([tmp_path / "new.png", mine])
    assert not (tmp_path / "new.png").exists()
    # what cnnviz wrote it may write again; once the user changes it, it is theirs
    ours = output.write_json(tmp_path / "ours.json", {"run": 1})
    output.write_json(ours, {"run": 2})
    assert json.loads(ours.read_text()) == {"run": 2} and output.written_by_cnnviz(ours)
    ours.write_text('{"edited": true}')
    assert not output.written_by_cnnviz(ours)
    with pytest.raises(CnnvizError, match="cnnviz did not write it"):
        output.write_json(ours, {"run": 3})
    assert ours.read_text() == '{"edited": true}'
    # removal is only of files cnnviz wrote, unchanged
    again = output.write_bytes(tmp_path / "sub" / "a.bin", b"abc")
    assert not output.remove_written(ours) and ours.exists() and not output.remove_written(mine)
    assert output.remove_written(again) and not again.exists()
    assert not (tmp_path / "sub" / output.RECORD).exists()  # the record goes with the last file
    with pytest.raises(CnnvizError, match="two outputs"):
        output.check_writable([tmp_path / "x.png", tmp_path / "." / "x.png"])


def test_a_rewrite_of_the_same_bytes_leaves_the_file_alone(tmp_path):
    path = output.write_bytes(tmp_path / "page.html", b"<p>same</p>")
    before = path.stat().st_mtime_ns
    os.utime(path, ns=(before - 10**9, before - 10**9))  # as if written a second earlier...
    output._append_record(tmp_path, [path.name, *output.file_state(path)])  # ...by cnnviz
    output.write_bytes(path, b"<p>same</p>")
    assert path.stat().st_mtime_ns == before - 10**9
    output.write_bytes(path, b"<p>new</p>")
    assert path.read_bytes() == b"<p>new</p>"


def test_a_cut_or_edited_record_is_read_safely(tmp_path):
    path = output.write_bytes(tmp_path / "a.txt", b"1")
    with open(tmp_path / output.RECORD, "a") as record:
        record.write('["b.txt", 1, \n{"not": "a list"}\n[3]\n')
    assert output.written_in(tmp_path) == {"a.txt"} and output.written_by_cnnviz(path)


def test_file_names_of_different_layers_never_collide():
    names = ["a-b", "a b", "a\nb", "ü猫", "", "Conv@17:2", "layer1.0.relu#2:5"]
    stems = [output.safe_name(name) for name in names]
    assert len(set(stems)) == len(names)
    assert stems[-1] == "layer1.0.relu-2-5" and stems[0] == "a-b"
    assert all(set(stem) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") for stem in stems)

"""Every command against faults in its output folder: a full disk at the k-th write, a kill at the
k-th write, a second run at the same time. After each, the folder holds either the complete old
result or the complete new one, byte for byte, and a re-run completes it.

The faults are injected by :mod:`faults` (``os.write``/``os.fsync``/``os.replace`` into the folder;
the files are real). Full disks run in this process, kills in a child process killed by SIGKILL.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from faults import Injector

from cnnviz.cli.main import main
from cnnviz.core import output
from cnnviz.core.lock import LOCK
from cnnviz.core.staging import PREFIX, staged, writing_into

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="the faults find files through /proc")

FAULTS = Path(__file__).with_name("faults.py")
IMAGE = ["-i", "sample:chelsea"]
# each command: a first run (the old result) and a second one that changes its files (the new)
COMMANDS = {
    "kernels": (["kernels", "-l", "features.0"], ["kernels", "-l", "features.0", "--channels", "0-3"]),
    "activations": (["activations", *IMAGE, "-l", "features.2"], ["activations", "-i", "sample:coffee", "-l", "features.2"]),
    "stats": (["stats", *IMAGE, "-l", "features.2"], ["stats", *IMAGE, "-i", "sample:coffee", "-l", "features.2"]),
    "maximize": (["maximize", "-l", "features.5", "-c", "0-1", "--steps", "4", "--size", "32", "--reference", "none"],
                 ["maximize", "-l", "features.5", "-c", "0-1", "--steps", "4", "--size", "32", "--reference", "none",
                  "--seed", "1"]),
    "dream": (["dream", *IMAGE, "-l", "features.2", "--octaves", "1", "--steps", "2"],
              ["dream", *IMAGE, "-l", "features.2", "--octaves", "1", "--steps", "2", "--seed", "1"]),
    "saliency": (["saliency", *IMAGE, "-M", "gradient"], ["saliency", "-i", "sample:coffee", "-M", "gradient"]),
    "rf": (["rf", *IMAGE, "-l", "features.2"], ["rf", *IMAGE, "-l", "features.5"]),
    "equivariance": (["equivariance", *IMAGE, "-l", "features.2", "--shifts", "1", "--angles", "5", "--scales", "0.9",
                      "--max-images", "1"],
                     ["equivariance", *IMAGE, "-l", "features.2", "--shifts", "2", "--angles", "5", "--scales", "0.9",
                      "--max-images", "1"]),
    "conv-matrix": (["conv-matrix"], ["conv-matrix", "--stride", "2"]),
    "conv-arithmetic": (["conv-arithmetic"], ["conv-arithmetic", "-s", "2", "2"]),
}


def run(args, folder):
    return CliRunner().invoke(main, [*args, "-o", str(folder)])


def content(folder: Path) -> dict[str, bytes]:
    """The result in a folder: every file but cnnviz's own hidden bookkeeping."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)}


def leftovers(folder: Path) -> list[str]:
    """What a run must never leave: temporary files, staging folders, its lock."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".part") or p.name.startswith(PREFIX)
                  or p.name == LOCK)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Each command's old result (its folder, kept pristine), and the new result written over it
    (both complete), and the writes the second run made."""
    made = {}
    for name, (first, second) in COMMANDS.items():
        folder = tmp_path_factory.mktemp(name) / "old"
        done = run(first, folder)
        assert done.exit_code == 0, done.output
        old = content(folder)
        over = tmp_path_factory.mktemp(name) / "new"
        shutil.copytree(folder, over)
        writes = Injector(over, "count")
        with writes.active():
            done = run(second, over)
        assert done.exit_code == 0, done.output
        new = content(over)
        assert old != new and old.keys() <= new.keys(), name
        made[name] = (old, new, writes.count, folder)
    return made


def with_old_result(name: str, results, folder: Path) -> Path:
    """``folder`` holding the command's old result, as its first run left it (its record too)."""
    shutil.copytree(results[name][3], folder)  # modification times kept: the record still knows the files
    assert content(folder) == results[name][0]
    return folder


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_full_disk_at_any_write_leaves_the_old_result_and_a_rerun_completes_it(name, results, tmp_path):
    old, new, count, _ = results[name]
    # the lock's note of who holds it, n staged files, the record's lines, the list of moves (written,
    # renamed), n renames
    staged = (count - 4) // 2
    assert count == 2 * staged + 4 and staged == len(set(new.items()) - set(old.items()))
    for k in (1, 2, staged + 2, staged + 3):  # the lock, a staged file, the record's lines, the list of moves
        folder = with_old_result(name, results, tmp_path / f"k{k}")
        with Injector(folder, "ENOSPC", k).active():
            failed = run(COMMANDS[name][1], folder)
        assert failed.exit_code == 2 and "No space left on device" in failed.stderr, (k, failed.output)
        assert len(failed.stderr.splitlines()) == 1 and "wrote" not in failed.stdout  # nothing said written
        assert content(folder) == old, f"k={k}"
        assert leftovers(folder) == [], k
    # the folder is as the old run left it (its record may know files that never came): a re-run
    again = run(COMMANDS[name][1], folder)
    assert again.exit_code == 0, again.output
    assert content(folder) == new and leftovers(folder) == []


KILLS = {  # (command, the write killed at: from the first, or from the last when negative): what it leaves
    ("activations", 2): "old",  # a staged file (1: the lock's note)
    ("conv-matrix", 4): "old",  # the record's lines
    ("conv-matrix", 6): "old",  # the list of moves, as it is renamed into place (the commit point)
    ("kernels", -1): "moving",  # among the renames: the list is there, the next run finishes it
    ("maximize", -1): "moving",
}


@pytest.mark.parametrize("name,k", sorted(KILLS))
def test_a_kill_at_a_write_leaves_old_or_new_and_a_rerun_completes_it(name, k, results, tmp_path):
    old, new, count, _ = results[name]
    folder = with_old_result(name, results, tmp_path / "out")
    child = subprocess.run([sys.executable, str(FAULTS), "kill", str(k if k > 0 else count + 1 + k), str(folder), "--",
                            *COMMANDS[name][1], "-o", str(folder)], capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    if KILLS[name, k] == "moving":
        # killed after the commit point: its list of moves is there, and any cnnviz run into the
        # folder finishes them before anything else (here: entering it as every command does)
        assert content(folder) not in (old, new) and list(folder.glob(f"{PREFIX}*/moves.json"))
        with writing_into(folder):
            pass
        assert content(folder) == new and leftovers(folder) == []
    else:
        assert content(folder) == old
    again = run(COMMANDS[name][1], folder)
    assert again.exit_code == 0, again.output
    assert content(folder) == new and leftovers(folder) == []


@pytest.fixture(scope="module")
def holder():
    """Another process that holds the lock of each folder it is sent (one line each), until it is
    sent the next."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def hold(folder: Path) -> int:
        process.stdin.write(f"{folder}\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "held"
        return process.pid

    yield hold
    process.kill()
    process.wait()


HOLDER = """
import contextlib, sys
from cnnviz.core.lock import locked
with contextlib.ExitStack() as held:
    for line in sys.stdin:
        held.close()
        held.enter_context(locked(line.strip(), "cnnviz stats --layer x"))
        print("held", flush=True)
"""


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_second_run_into_a_busy_folder_is_refused_in_one_line(name, results, holder, tmp_path):
    folder = with_old_result(name, results, tmp_path / "out")
    pid = holder(folder)
    refused = run(COMMANDS[name][1], folder)
    holder(tmp_path)  # lets go of the folder
    assert refused.exit_code == 2 and refused.stdout == "", refused.output
    line, = refused.stderr.splitlines()
    assert line.startswith(f"error: another cnnviz run (process {pid}, 'cnnviz stats --layer x', since ")
    assert "choose another folder (--output)" in line
    assert content(folder) == results[name][0] and leftovers(folder) == []


def test_a_gallery_into_a_busy_folder_is_refused_before_any_work(holder, tmp_path):
    """The gallery's own faults (a kill, a full disk) are in test_gallery.py; a second run here."""
    pid = holder(tmp_path)
    refused = run(["gallery", "-l", "features.0"], tmp_path)
    holder(tmp_path.parent)
    assert refused.exit_code == 2 and refused.stdout == "", refused.output
    line, = refused.stderr.splitlines()
    assert line.startswith(f"error: another cnnviz run (process {pid}, ") and "choose another folder (--output)" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_two_real_runs_at_once_never_mix_and_a_killed_holder_frees_the_folder(results, tmp_path):
    folder = with_old_result("kernels", results, tmp_path / "out")
    command = [sys.executable, "-m", "cnnviz", *COMMANDS["kernels"][1], "-o", str(folder)]
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from cnnviz.core.lock import locked\n"
                               "with locked(sys.argv[1], 'cnnviz test'):\n print('held', flush=True); time.sleep(600)",
                               str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2 and f"process {holder.pid}, 'cnnviz test'" in refused.stderr, refused.stderr
    finally:
        holder.kill()  # SIGKILL: its lock goes with it, the stale file stays
        holder.wait()
    assert (folder / LOCK).exists()
    # two different runs at once (all kernels; four of them): the same file names, other bytes
    both = [subprocess.Popen([sys.executable, "-m", "cnnviz", *arguments, "-o", str(folder)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for arguments in COMMANDS["kernels"]]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in both]
    assert sorted(code for code, _ in outcomes)[0] == 0, outcomes
    for code, error in outcomes:
        assert code == 0 or (code == 2 and "another cnnviz run" in error), outcomes
    assert content(folder) in results["kernels"][:2] and leftovers(folder) == []  # one run's, whole


def test_a_symlinked_or_hard_linked_record_is_never_written_through(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for link in (os.symlink, os.link):
        folder = tmp_path / link.__name__
        folder.mkdir()
        link(notes, folder / output.RECORD)
        refused = run(["kernels", "-l", "features.0"], folder)
        assert refused.exit_code == 2, refused.output
        assert len(refused.stderr.splitlines()) == 1 and ".cnnviz-written" in refused.stderr
        assert "choose another folder (--output)" in refused.stderr
        assert notes.read_text() == "my notes\n"
        assert sorted(p.name for p in folder.iterdir()) == [output.RECORD]  # nothing placed, nothing left
    folder = tmp_path / "symlink"
    (folder / "own.json").write_text("{}")  # a record read through a link proves nothing cnnviz's
    notes.write_text('["own.json", 2, %d]\n' % (folder / "own.json").stat().st_mtime_ns)
    assert not output.written_by_cnnviz(folder / "own.json")


def test_a_users_part_file_is_never_removed(tmp_path):
    from cnnviz.site.records import remove_partial_files

    mine = [tmp_path / ".stats.json.mine.part", tmp_path / ".stats.json.abcdefgh.part", tmp_path / "figures" / ".x.part"]
    for path in mine:
        path.parent.mkdir(exist_ok=True)
        path.write_text("mine")
        os.utime(path, (time.time() - 3600,) * 2)  # old: what the stale-part cleanup looks for
    stale = tmp_path / f".stats.json{output.PART_MARK}k2j4_x9q.part"  # one of cnnviz's, left by a kill
    stale.write_text("half")
    os.utime(stale, (time.time() - 3600,) * 2)
    output.write_json(tmp_path / "stats.json", {"a": 1})
    assert all(path.read_text() == "mine" for path in mine) and not stale.exists()
    remove_partial_files(tmp_path)
    assert all(path.read_text() == "mine" for path in mine)
    assert output.is_part_name(stale.name) and not output.is_part_name(mine[0].name)


def test_a_record_line_that_cannot_be_written_places_no_file_and_a_rerun_completes(tmp_path):
    """The gallery's case: the file renamed into place but its record line lost to a full disk;
    the next run then took it for the user's file, for ever. Now the line comes first."""
    target = tmp_path / "classes.jpg"
    with Injector(tmp_path, "ENOSPC", 2).active():  # 1: the file's fsync; 2: the record line
        with pytest.raises(output.CnnvizError, match="No space left on device"):
            output.write_bytes(target, b"new")
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    output.write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and output.written_by_cnnviz(target)


def test_a_gallery_into_a_folder_it_cannot_write_fails_before_any_work(tmp_path):
    import cnnviz

    stages = []

    def progress(stage, total):
        stages.append(stage)
        return lambda amount: None

    # /proc/self is a folder in which nobody, not even root, can create a file (as an immutable one)
    with pytest.raises(cnnviz.CnnvizError, match="cannot write into '/proc/self'"):
        cnnviz.gallery("builtin:photos", "sample:chelsea", output="/proc/self", progress=progress)
    assert stages == []  # refused before the first job
    folder = tmp_path / "site"
    (folder / "figures" / "features.0").mkdir(parents=True)
    (folder / "figures" / "features.0").chmod(0o555)  # an earlier gallery's folder, now read-only
    try:
        if os.access(folder / "figures" / "features.0", os.W_OK):
            return  # as root, permissions do not stop writes (the /proc case above is the same check)
        with pytest.raises(cnnviz.CnnvizError, match="cannot write into .*features.0.*make it writable"):
            cnnviz.gallery("builtin:photos", "sample:chelsea", output=folder, progress=progress)
        assert stages == [] and not (folder / LOCK).exists()
    finally:
        (folder / "figures" / "features.0").chmod(0o755)


def test_a_folder_the_lock_created_for_a_failed_run_is_removed(tmp_path):
    refused = run(["kernels", "-l", "no.such.layer"], tmp_path / "new")
    assert refused.exit_code == 2 and not (tmp_path / "new").exists()


def test_a_long_record_is_compacted_without_losing_a_commit(tmp_path):
    # a record past its limit, of files long gone: the commit's lines must survive its compaction
    lines = "".join(json.dumps([f"gone{i}.png", 1, i]) + "\n" for i in range(output.RECORD_LIMIT // 20))
    (tmp_path / output.RECORD).write_text(lines)
    with staged(tmp_path):
        output.write_json(tmp_path / "a.json", {"a": 1})
        output.write_json(tmp_path / "b.json", {"b": 2})
    assert output.written_by_cnnviz(tmp_path / "a.json") and output.written_by_cnnviz(tmp_path / "b.json")
    assert (tmp_path / output.RECORD).stat().st_size < output.RECORD_LIMIT
    output.write_json(tmp_path / "a.json", {"a": 3})  # still cnnviz's: rewritten, not refused


def test_an_interrupt_during_the_renames_finishes_them(tmp_path, monkeypatch):
    with staged(tmp_path):
        for name in ("a", "b", "c"):
            output.write_json(tmp_path / f"{name}.json", {"run": 1})
    real_replace, interrupted = os.replace, []

    def replace(source, target, **kwargs):  # Ctrl-C (or SIGTERM, which cnnviz turns into an exit) at a rename
        if str(target).endswith("b.json") and not interrupted:
            interrupted.append(target)
            raise KeyboardInterrupt
        return real_replace(source, target, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        with staged(tmp_path):
            for name in ("a", "b", "c"):
                output.write_json(tmp_path / f"{name}.json", {"run": 2})
    assert interrupted and [json.loads((tmp_path / f"{n}.json").read_text())["run"] for n in "abc"] == [2, 2, 2]
    assert leftovers(tmp_path) == []


def test_a_planted_list_of_moves_changes_nothing_of_yours(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("mine")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine too")
    (folder / "link").symlink_to(home)
    planted = folder / f"{PREFIX}evil"
    planted.mkdir()
    for name in ("00000.part", "00001.part"):
        (planted / name).write_text("evil")
    (planted / "00002.part").symlink_to(home / "thesis.tex")
    (planted / "moves.json").write_text(json.dumps([
        ["00000.part", "link/thesis.tex"], ["00001.part", "notes.txt"], ["00002.part", "new.txt"],
        ["00000.part", "."], ["00001.part", ".cnnviz-written"], ["00001.part", "../escaped.txt"]]))
    with writing_into(folder):  # what every command does first: finish what a killed run left
        pass
    assert (home / "thesis.tex").read_text() == "mine" and (folder / "notes.txt").read_text() == "mine too"
    assert not (folder / "new.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not planted.exists() and not (folder / output.RECORD).exists()  # nothing recorded as cnnviz's
    with writing_into(folder):  # and the folder is not stuck
        pass

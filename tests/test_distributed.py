"""Statistics and renders shared between processes (torch.distributed, gloo, started by torchrun):
every rank's result equals one process's, whatever the number of ranks, and the command line
writes once."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cnnviz
from cnnviz.cli.main import main
from cnnviz.core.distributed import part, share
from cnnviz.inputs.batches import shard_images
from distributed_worker import BATCH, LAYERS, OBJECTIVE, RENDERS, Photos, cases

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def photos():
    return cnnviz.load_model("builtin:photos")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six photographs (PNG), a file that is not an image, and a list of some of them."""
    folder = tmp_path_factory.mktemp("images")
    for name in cnnviz.samples.names()[:6]:
        cnnviz.samples.image(name).save(folder / f"{name}.png")
    (folder / "notes.png").write_text("not an image")
    (folder / "list.txt").write_text("# a list\ncamera.png\n\nmissing.png\nsample:coffee\n"
                                     f"{folder / 'notes.png'}\n")
    return folder


def torchrun(processes: int, *arguments, cwd=None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={processes}", *arguments],
                          capture_output=True, text=True, env=environment, cwd=cwd, timeout=600)


def assert_same_statistics(arrays, names, reference, whole_batches=True):
    """Equal to one process's statistics: counts, histograms and exemplars identical, float64
    moments within rounding. Where the ranks' batches are not one process's (``whole_batches``
    False), a float32 activation can round to the other side of a bin edge: each value then lies at
    most one bin away (the cumulative counts differ by at most 2)."""
    expected = reference.to_arrays()
    assert sorted(arrays.files) == sorted(expected)
    for key, value in expected.items():
        got = arrays[key]
        if key.endswith("/histogram") and not whole_batches:
            assert np.array_equal(got.sum(axis=1), value.sum(axis=1)), key
            assert np.abs(np.cumsum(got, axis=1) - np.cumsum(value, axis=1)).max() <= 2, key
        elif np.issubdtype(value.dtype, np.floating) and not key.endswith("/edges"):
            assert np.allclose(got, value, rtol=1e-5, atol=1e-6, equal_nan=True), key
        else:  # counts, histograms, exemplar images, positions and crops: identical
            assert np.array_equal(got, value), key
    assert names["skipped"] == reference.skipped
    assert names["sources"] == {layer: reference[layer].exemplar_sources for layer in LAYERS}


def test_shares_are_contiguous_and_cover_everything():
    for count in (0, 1, 2, 17):
        for size in (1, 2, 3, 5):
            for batch in (1, 2, 4):
                shares = [share(count, rank, size, batch) for rank in range(size)]
                assert [k for one in shares for k in one] == list(range(count))
                if -(-count // batch) >= size:  # whole batches: each share starts at a batch
                    assert all(one.start % batch == 0 for one in shares)
    assert [part(5, rank, 3) for rank in range(3)] == [range(0, 1), range(1, 3), range(3, 5)]
    images = torch.zeros(9, 3, 4, 4)
    assert [len(shard_images(images, rank, 2, batch_size=4)) for rank in range(2)] == [4, 5]
    assert [len(shard_images(images, rank, 3, batch_size=4)) for rank in range(3)] == [4, 4, 1]
    assert [len(shard_images(images, rank, 4, batch_size=4)) for rank in range(4)] == [2, 2, 2, 3]


def test_image_label_pairs_stay_whole_in_shares(photos):
    image = cnnviz.samples.image("chelsea")
    pairs = [(image, label) for label in range(4)]
    shares = [shard_images(pairs, rank, 2, batch_size=2) for rank in range(2)]
    assert shares == [pairs[:2], pairs[2:]]
    parts = [cnnviz.statistics(photos, one, ["features.3"], batch_size=2) for one in shares]
    assert [p.images for p in parts] == [2, 2]


def test_a_dataloader_cannot_be_shared(photos):
    loader = torch.utils.data.DataLoader(Photos(photos), batch_size=4)
    with pytest.raises(cnnviz.CnnvizError, match="give .*the Dataset itself"):
        shard_images(loader, 0, 2)


def test_a_text_file_lists_images(photos, folder):
    stats = cnnviz.statistics(photos, str(folder / "list.txt"), ["features.3"])
    # camera and coffee are read; the missing file and the non-image are skipped and counted
    assert stats.images == 2 and len(stats.skipped) == 2
    assert any("missing.png" in name for name in stats.skipped)
    not_a_list = folder / "readme.txt"  # a text file that is not a list: said so, not skipped silently
    not_a_list.write_text("hello\n")
    try:
        with pytest.raises(cnnviz.CnnvizError, match="none of its 1 entries is an existing file"):
            cnnviz.statistics(photos, str(not_a_list), ["features.3"])
    finally:
        not_a_list.unlink()
    prose = folder / "notes.txt"  # a line longer than a file name may be
    prose.write_text("x" * 400 + "\n")
    try:
        with pytest.raises(cnnviz.CnnvizError, match="none of its 1 entries"):
            cnnviz.statistics(photos, str(prose), ["features.3"])
    finally:
        prose.unlink()
    with pytest.raises(cnnviz.CnnvizError, match="names no images"):
        empty = folder / "empty.txt"
        empty.write_text("# nothing\n")
        try:
            cnnviz.statistics(photos, str(empty), ["features.3"])
        finally:
            empty.unlink()


def test_decoding_workers_give_the_same_statistics(photos, folder):
    alone = cnnviz.statistics(photos, str(folder), LAYERS, batch_size=4, top_k=3)
    helped = cnnviz.statistics(photos, str(folder), LAYERS, batch_size=4, top_k=3, workers=2)
    assert alone.skipped == helped.skipped and len(helped.skipped) == 2  # notes.png, list.txt
    for key, value in alone.to_arrays().items():
        assert np.array_equal(value, helped.to_arrays()[key], equal_nan=True), key  # the same batches: bitwise
    with pytest.raises(cnnviz.CnnvizError, match="is it an image file"):  # named on its own: an error
        cnnviz.statistics(photos, [str(folder / "camera.png"), str(folder / "notes.png")], LAYERS, workers=1)


@pytest.mark.parametrize("processes", [2, 3])
def test_every_rank_gets_one_process_statistics(photos, folder, tmp_path, processes):
    out = tmp_path / "out"
    out.mkdir()
    run = torchrun(processes, str(HERE / "distributed_worker.py"), str(out), str(folder))
    assert run.returncode == 0, run.stderr[-3000:]
    for case, images in cases(photos, folder).items():
        if case == "failing":
            for rank in range(processes):
                error = (out / f"{case}.rank{rank}.error").read_text()
                assert error == (f"RankFailed: rank {processes - 1} of {processes} failed: "
                                 f"ValueError: item {len(cnnviz.samples.names()) - 1} is broken"), error
            continue
        reference = cnnviz.statistics(photos, images, LAYERS, batch_size=BATCH, top_k=3)
        for rank in range(processes):
            assert not (out / f"{case}.rank{rank}.error").exists(), (out / f"{case}.rank{rank}.error").read_text()
            with np.load(out / f"{case}.rank{rank}.npz") as arrays:
                names = json.loads((out / f"{case}.rank{rank}.json").read_text())
                # the list skips a file amid its images, and two images are fewer than the ranks
                assert_same_statistics(arrays, names, reference, whole_batches=case in ("folder", "dataset"))
    # the renders: each rank made its share of the 5 units, every rank has them all
    alone = cnnviz.maximize(photos, "features.10", **RENDERS)
    for rank in range(processes):
        shared = torch.load(out / f"maximize.rank{rank}.pt")
        assert shared["steps"] == alone.steps_taken and shared["succeeded"] == alone.succeeded
        assert torch.allclose(shared["images"], alone.images, atol=2e-3)
        assert shared["values"] == pytest.approx(alone.values, rel=1e-3, abs=1e-4)
        # an objective is one batch (its diversity term compares the images): rendered whole
        together = cnnviz.maximize(photos, None, **OBJECTIVE)
        assert torch.allclose(shared["objective"], together.images, atol=1e-3)  # shared out, it differed by 0.06


def test_the_command_under_torchrun_writes_once(photos, folder, tmp_path):
    single, shared = tmp_path / "single", tmp_path / "shared"
    arguments = ["stats", "-i", str(folder), "-l", "features.3", "-l", "features.10", "--batch-size", "4"]
    result = CliRunner().invoke(main, arguments + ["-o", str(single)])
    assert result.exit_code == 0, result.output
    run = torchrun(2, "-m", "cnnviz", *arguments, "-o", str(shared), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote") == result.output.count("wrote")  # rank 0 alone says (and writes)
    assert sorted(p.relative_to(shared) for p in shared.rglob("*")) == sorted(p.relative_to(single) for p in single.rglob("*"))
    with np.load(single / "stats.npz") as one, np.load(shared / "stats.npz") as two:
        for key in one.files:
            if np.issubdtype(one[key].dtype, np.floating):
                assert np.allclose(one[key], two[key], rtol=1e-5, atol=1e-6, equal_nan=True), key
            else:
                assert np.array_equal(one[key], two[key]), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared", "single"]  # nothing else written


def test_a_mistake_under_torchrun_is_one_line_and_writes_nothing(tmp_path):
    run = torchrun(2, "-m", "cnnviz", "stats", "-i", "samples", "-l", "features.99", "-o", str(tmp_path / "out"),
                   cwd=tmp_path)
    assert run.returncode != 0  # torchrun's own code (1) for a rank's 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "features.99" in errors[0], run.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_maximize_under_torchrun_writes_one_processs_renders(tmp_path):
    single, shared = tmp_path / "single", tmp_path / "shared"
    arguments = ["maximize", "-l", "features.10", "-c", "0-2", "--steps", "8", "--size", "32", "--fixed-steps"]
    result = CliRunner().invoke(main, arguments + ["-o", str(single)])
    assert result.exit_code == 0, result.output
    run = torchrun(3, "-m", "cnnviz", *arguments, "-o", str(shared), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote") == result.output.count("wrote")
    files = sorted(p.relative_to(single) for p in single.rglob("*"))
    assert sorted(p.relative_to(shared) for p in shared.rglob("*")) == files
    one, two = (json.loads(next(folder.glob("*.json")).read_text()) for folder in (single, shared))
    assert [u["value"] for u in two["units"]] == pytest.approx([u["value"] for u in one["units"]], rel=1e-3, abs=1e-4)
    assert [u["succeeded"] for u in two["units"]] == [u["succeeded"] for u in one["units"]]


def test_commands_that_do_not_share_their_work_refuse_torchrun(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(main, ["dream", "-i", "sample:chelsea", "-l", "features.3", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "does not share its work between processes" in result.output
    assert not (tmp_path / "x").exists()

"""Statistics and renders shared between processes (torch.distributed, gloo, started by torchrun):
every rank's result equals one process's, whatever the number of ranks, and the command line
writes once."""
import json
import os
import re
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
from cnnviz.core.executor import Executor
from cnnviz.inputs.batches import shard_images
from distributed_worker import BATCH, CONCEPTS, GALLERY, LAYERS, OBJECTIVE, RENDERS, Photos, cases, recorder

HERE = Path(__file__).parent
# each torchrun test runs one group size by default (3: shares of unequal size; the gallery 2, for
# time); CNNVIZ_ALL_TESTS=1 runs both sizes in each
EVERY = os.environ.get("CNNVIZ_ALL_TESTS") == "1"


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
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONFAULTHANDLER": "1"}
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
    assert [len(Executor(rank, 2).share(images, 4, shard_images).items) for rank in range(2)] == [4, 5]
    assert [len(Executor(rank, 3).share(images, 4, shard_images).items) for rank in range(3)] == [4, 4, 1]
    assert [len(Executor(rank, 4).share(images, 4, shard_images).items) for rank in range(4)] == [2, 2, 2, 3]


def test_jobs_are_dealt_largest_first_to_the_least_loaded_process():
    sizes = {"a": 5, "b": 1, "c": 3, "d": 3, "e": 1}
    dealt = [Executor(rank, 2).deal(list(sizes), size=sizes.get) for rank in range(2)]
    # a (5) to 0; c (3) and d (3) to 1, then the least loaded; b (1) to 0 (5 < 6); e (1) to 0 (6 = 6: the lowest)
    assert dealt[0].parts == dealt[1].parts == [["a", "b", "e"], ["c", "d"]]
    assert [one.mine for one in dealt] == [["a", "b", "e"], ["c", "d"]]
    assert dealt[0].rounds() == [["a", "c"], ["b", "d"], ["e"]]
    assert Executor().deal(list(sizes), size=sizes.get).mine == ["a", "c", "d", "b", "e"]


def test_image_label_pairs_stay_whole_in_shares(photos):
    image = cnnviz.samples.image("chelsea")
    pairs = [(image, label) for label in range(4)]
    shares = [Executor(rank, 2).share(pairs, 2, shard_images).items for rank in range(2)]
    assert shares == [pairs[:2], pairs[2:]]
    parts = [cnnviz.statistics(photos, one, ["features.3"], batch_size=2) for one in shares]
    assert [p.images for p in parts] == [2, 2]


def test_a_dataloader_cannot_be_shared(photos):
    loader = torch.utils.data.DataLoader(Photos(photos), batch_size=4)
    with pytest.raises(cnnviz.CnnvizError, match="give .*the Dataset itself"):
        Executor(0, 2).share(loader, 1, shard_images)


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
    alone = cnnviz.statistics(photos, str(folder), LAYERS, batch_size=4, exemplars=3)
    helped = cnnviz.statistics(photos, str(folder), LAYERS, batch_size=4, exemplars=3, workers=2)
    assert alone.skipped == helped.skipped and len(helped.skipped) == 2  # notes.png, list.txt
    for key, value in alone.to_arrays().items():
        assert np.array_equal(value, helped.to_arrays()[key], equal_nan=True), key  # the same batches: bitwise
    with pytest.raises(cnnviz.CnnvizError, match="is it an image file"):  # named on its own: an error
        cnnviz.statistics(photos, [str(folder / "camera.png"), str(folder / "notes.png")], LAYERS, workers=1)


@pytest.mark.parametrize("processes", [2, 3] if EVERY else [3])
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
        reference = cnnviz.statistics(photos, images, LAYERS, batch_size=BATCH, exemplars=3)
        for rank in range(processes):
            assert not (out / f"{case}.rank{rank}.error").exists(), (out / f"{case}.rank{rank}.error").read_text()
            with np.load(out / f"{case}.rank{rank}.npz") as arrays:
                names = json.loads((out / f"{case}.rank{rank}.json").read_text())
                # the list skips a file amid its images, and two images are fewer than the ranks
                assert_same_statistics(arrays, names, reference, whole_batches=case in ("folder", "dataset"))
    # a run that failed on the last rank's last image went on from every rank's checkpoints: only
    # that image was read again, the result is one process's and the checkpoints are gone
    reference = cnnviz.statistics(photos, Photos(photos), LAYERS, batch_size=BATCH, exemplars=3)
    last = len(cnnviz.samples.names()) - 1
    for rank in range(processes):
        error = (out / f"resumed.rank{rank}.error").read_text()
        assert error == f"rank {processes - 1} of {processes} failed: ValueError: item {last} is broken", error
        with np.load(out / f"resumed.rank{rank}.npz") as arrays:
            names = json.loads((out / f"resumed.rank{rank}.json").read_text())
            assert_same_statistics(arrays, names, reference)
        assert names["read"] == ([last] if rank == processes - 1 else []), names["read"]
        assert names["resumed"] == last and names["left"] is None
        assert names["progress"] == (last + 1 if rank == 0 else 0)  # rank 0 shows every rank's images
    # the renders: each rank made its share of the 5 units, every rank has them all
    steps: list[int] = []
    alone = cnnviz.maximize(photos, "features.10", progress=steps.append, **RENDERS)
    for rank in range(processes):
        shared = torch.load(out / f"maximize.rank{rank}.pt")
        assert shared["progress"] == (sum(steps) if rank == 0 else 0)
        assert shared["steps"] == alone.steps_taken and shared["succeeded"] == alone.succeeded
        assert torch.allclose(shared["images"], alone.images, atol=2e-3)
        assert shared["values"] == pytest.approx(alone.values, rel=1e-3, abs=1e-4)
        # an objective is one batch (its diversity term compares the images): rendered whole
        together = cnnviz.maximize(photos, None, **OBJECTIVE)
        assert torch.allclose(shared["objective"], together.images, atol=1e-3)  # shared out, it differed by 0.06
    # concepts: each rank expressed its share of the images on directions fitted once on every share's
    # positions; every rank got all of them, in order, and one process expressing the same images on
    # those directions gives the same weights (and the same strongest images)
    shared = [torch.load(out / f"concepts.rank{rank}.pt") for rank in range(processes)]
    for one in shared[1:]:
        assert all(torch.equal(one[key], shared[0][key]) for key in ("directions", "weights", "exemplars"))
    assert shared[0]["images"] == [f"sample:{name}" for name in cnnviz.samples.names()]
    assert [one["progress"] for one in shared] == [len(cnnviz.samples.names())] + [0] * (processes - 1)
    fitted = cnnviz.concepts(photos, "samples", "features.10", **CONCEPTS)
    for key in ("directions", "shift", "factors", "signed"):  # the group's
        setattr(fitted, key, shared[0][key])
    alone = cnnviz.concepts(photos, "samples", "features.10", directions=fitted, **CONCEPTS)
    torch.testing.assert_close(shared[0]["weights"], alone.image_weights, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(shared[0]["importance"], alone.importance, atol=1e-4, rtol=1e-3)
    assert torch.equal(shared[0]["exemplars"], alone.exemplar_images)
    assert abs(shared[0]["error"] - alone.error) < 1e-4
    # the gallery made in Python by every rank together: rank 0 was told of the whole group's work,
    # the others of none, and every rank got the gallery rank 0 wrote (one process's)
    stages: dict = {}
    site = cnnviz.gallery(photos, "samples", "features.3", output=tmp_path / "gallery", progress=recorder(stages), **GALLERY)
    for rank in range(processes):
        told = json.loads((out / f"gallery.rank{rank}.json").read_text())
        assert told["figures"] == [f["file"] for f in site.figures] and told["units"] == len(site.units) == 3
        assert told["done"] == site.done and told["folder"] == str(out / "gallery")
        if rank:
            assert told["stages"] == {}
            continue
        assert sorted(told["stages"]) == sorted(stages)
        for stage, (total, done) in told["stages"].items():
            assert total == stages[stage][0], stage
            if stage in ("maximize", "renders", "classes"):  # a render that stops early reports fewer steps
                assert 0 < done <= total, stage
            else:
                assert done == stages[stage][1] == total, stage


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


#: a small gallery of two layers with every section: statistics, renders of each kind, maps,
#: exemplars, kernels, attributions, classes and Deep Dream
GALLERY_COMMAND = ["gallery", "-l", "features.3,features.10", "--max-channels", "4", "--unit-renders", "2", "--diverse", "2",
           "--steps", "8", "--class-steps", "8", "--max-classes", "3", "--activation-images", "2",
           "--attribution-images", "3", "--methods", "gradient,gradcam", "--dream-octaves", "1", "--dream-steps", "2",
           # concepts are fitted on each rank's first images, so their files are not one process's to the
           # byte (the concepts' own torchrun check is in test_every_rank_gets_one_process_statistics)
           "--concept-layers", "0"]
RENDERED = re.compile(r"(maximize|neuron|negative|diverse|class)_[\d-]+\.(png|jpg)$")


@pytest.fixture(scope="module")
def one_process_gallery(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gallery") / "single"
    result = CliRunner().invoke(main, [*GALLERY_COMMAND, "-o", str(folder)])
    assert result.exit_code == 0, result.output
    return folder


def same_apart_from_rounding(one, two, where=""):
    """The same JSON, numbers within the rounding of renders made in other batches (text
    compared with its numbers masked)."""
    assert type(one) is type(two), where
    if isinstance(one, dict):
        assert sorted(one) == sorted(two), where
        for key in one:
            same_apart_from_rounding(one[key], two[key], f"{where}/{key}")
    elif isinstance(one, list):
        assert len(one) == len(two), where
        for k, (a, b) in enumerate(zip(one, two)):
            same_apart_from_rounding(a, b, f"{where}[{k}]")
    elif isinstance(one, float):
        assert two == pytest.approx(one, rel=2e-2, abs=2e-3), where
    elif isinstance(one, str):
        assert masked(one) == masked(two), where
    else:
        assert one == two, where


def masked(text: str) -> str:
    return re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "#", text)


@pytest.mark.parametrize("processes", [2, 3] if EVERY else [2])
def test_the_gallery_under_torchrun_is_one_processs(one_process_gallery, tmp_path, processes):
    from PIL import Image

    shared = tmp_path / "shared"
    run = torchrun(processes, "-m", "cnnviz", *GALLERY_COMMAND, "-o", str(shared), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote") == 1 and "16 jobs run, 0 reused" in run.stdout, run.stdout
    single = one_process_gallery
    listed = sorted(str(p.relative_to(single)) for p in single.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(shared)) for p in shared.rglob("*") if p.is_file()) == listed
    rendered = 0
    for name in listed:
        one, two = single / name, shared / name
        if name.endswith(".cnnviz-written") or name.startswith(".cnnviz/"):
            continue  # file times; the records hold the manifest's entries, compared below
        if RENDERED.search(name):  # each unit's render is one process's, within the rounding of other batches
            # (a batch of 1 and one of 16 round differently, and Adam's steps amplify that where a
            # gradient is near zero: up to 2 grey levels on average at features.3 in 8 steps)
            a, b = (np.asarray(Image.open(path).convert("RGB"), dtype=float) for path in (one, two))
            assert np.abs(a - b).mean() <= (6 if name.startswith("thumbs/") else 3), name
            rendered += 1
        elif name == "data/stats.npz":
            with np.load(one) as x, np.load(two) as y:
                assert sorted(x.files) == sorted(y.files)
                for key in x.files:
                    if key.endswith("/histogram"):  # per-image shares: a value at most one bin away
                        assert np.array_equal(x[key].sum(axis=1), y[key].sum(axis=1)), key
                        assert np.abs(np.cumsum(x[key], axis=1) - np.cumsum(y[key], axis=1)).max() <= 2, key
                    elif np.issubdtype(x[key].dtype, np.floating):
                        assert np.allclose(x[key], y[key], rtol=1e-5, atol=1e-6, equal_nan=True), key
                    else:
                        assert np.array_equal(x[key], y[key]), key
        elif name == "manifest.json":
            same_apart_from_rounding(json.loads(one.read_text()), json.loads(two.read_text()))
        elif name.endswith(".html"):
            assert masked(one.read_text()) == masked(two.read_text()), name
        else:  # kernels, maps, exemplars, attributions, Deep Dream, statistics figures: the same bytes
            assert one.read_bytes() == two.read_bytes(), name
    assert rendered >= 20
    again = torchrun(processes, "-m", "cnnviz", *GALLERY_COMMAND, "-o", str(shared), cwd=tmp_path)
    assert again.returncode == 0 and "0 jobs run, 16 reused" in again.stdout, again.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]  # nothing written beside it


def test_a_gallery_mistake_under_torchrun_is_one_line_and_writes_nothing(tmp_path):
    run = torchrun(2, "-m", "cnnviz", "gallery", "-l", "features.99", "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "features.99" in errors[0], run.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_stats_under_torchrun_goes_on_from_its_checkpoints(tmp_path):
    """The last file, named on its own, cannot be read: the run stops (one line) with the share of
    the rank that finished kept; once the file is mended the same command reads only the rest, and
    writes once what one process writes."""
    images = tmp_path / "images"
    images.mkdir()
    names = cnnviz.samples.names()[:7]
    for name in names:
        cnnviz.samples.image(name).save(images / f"{name}.png")
    broken = images / f"{names[-1]}.png"
    broken.write_text("cut short")
    arguments = ["stats", *[a for name in names for a in ("-i", str(images / f"{name}.png"))], "-l", "features.3",
                 "-l", "features.10", "--batch-size", "1"]
    failed = torchrun(2, "-m", "cnnviz", *arguments, "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rank 1 of 2 failed" in errors[0] and broken.name in errors[0], failed.stderr[-2000:]
    kept = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.npz"))
    assert kept == [".cnnviz-checkpoints/rank-0-of-2/statistics.npz"]
    assert not (tmp_path / "out" / "stats.npz").exists()
    cnnviz.samples.image(names[-1]).save(broken)
    resumed = torchrun(2, "-m", "cnnviz", *arguments, "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "3 of the 7 images were not read again" in resumed.stderr + resumed.stdout  # rank 0's share
    assert not (tmp_path / "out" / ".cnnviz-checkpoints").exists()
    # the result is one process's: rank 0 alone says and writes it, the same files, nothing beside them
    fresh = CliRunner().invoke(main, [*arguments, "--no-checkpoints", "-o", str(tmp_path / "fresh")])
    assert fresh.exit_code == 0, fresh.output
    assert resumed.stdout.count("wrote") == fresh.output.count("wrote") >= 1, resumed.stdout
    listed = sorted(str(p.relative_to(tmp_path / "fresh")) for p in (tmp_path / "fresh").rglob("*"))
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")) == listed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "images", "out"]
    with np.load(tmp_path / "fresh" / "stats.npz") as one, np.load(tmp_path / "out" / "stats.npz") as two:
        assert sorted(one.files) == sorted(two.files)
        for key in one.files:
            if np.issubdtype(one[key].dtype, np.floating):
                assert np.allclose(one[key], two[key], rtol=1e-6, atol=1e-7, equal_nan=True), key
            else:
                assert np.array_equal(one[key], two[key]), key


def test_one_process_goes_on_from_its_checkpoint(photos, tmp_path):
    """A run that failed part-way keeps what it measured; the next reads only the rest and gives
    one uninterrupted run's statistics; a checkpoint of other settings is not used."""
    checkpoints = tmp_path / "checkpoints"
    options = dict(batch_size=2, exemplars=3, checkpoint=checkpoints, checkpoint_every=4, checkpoint_minutes=0)
    with pytest.raises(ValueError, match="item 13 is broken"):
        cnnviz.statistics(photos, Photos(photos, failing=13), LAYERS, **options)
    assert [str(p.relative_to(checkpoints)) for p in checkpoints.rglob("*.npz")] == ["rank-0-of-1/statistics.npz"]
    other = Photos(photos)  # another number of exemplars: the checkpoint is not this run's
    cnnviz.statistics(photos, other, LAYERS, **{**options, "exemplars": 2, "checkpoint": tmp_path / "elsewhere"})
    assert other.read == list(range(len(other)))
    again = Photos(photos)
    resumed = cnnviz.statistics(photos, again, LAYERS, **options)
    assert again.read == list(range(12, len(again))) and resumed.resumed == 12  # three parts of 4 were kept
    assert not checkpoints.exists()  # spent
    reference = cnnviz.statistics(photos, Photos(photos), LAYERS, batch_size=2, exemplars=3)
    expected, got = reference.to_arrays(), resumed.to_arrays()
    for key, value in expected.items():
        if np.issubdtype(value.dtype, np.floating):
            assert np.allclose(got[key], value, rtol=1e-6, atol=1e-7, equal_nan=True), key
        else:
            assert np.array_equal(got[key], value), key
    assert [resumed[layer].exemplar_sources for layer in LAYERS] == [reference[layer].exemplar_sources for layer in LAYERS]
    mismatched = Photos(photos)  # a checkpoint of other settings in the same folder: replaced, not used
    with pytest.raises(ValueError):
        cnnviz.statistics(photos, Photos(photos, failing=9), LAYERS, **options)
    cnnviz.statistics(photos, mismatched, LAYERS, **{**options, "exemplars": 2})
    assert mismatched.read == list(range(len(mismatched))) and not checkpoints.exists()
    loader = torch.utils.data.DataLoader(Photos(photos), batch_size=2)
    with pytest.raises(cnnviz.CnnvizError, match="goes on part-way through its images: give .*not a DataLoader"):
        cnnviz.statistics(photos, loader, LAYERS, **options)


OUT_OF_STEP = '''
import json, sys
import torch.distributed as dist
from cnnviz.core import distributed

dist.init_process_group("gloo")
rank = dist.get_rank()
said = []
if rank == 1:  # a call that only rank 1 makes
    try:
        distributed.together("extra", lambda: 1)
    except distributed.RankFailed as error:
        said.append(str(error))
for _ in range(2 - rank):  # rank 0 goes on to its second exchange of "shared", rank 1 to its first
    try:
        said.append(repr(distributed.together("shared", lambda: rank)))
    except distributed.RankFailed as error:
        said.append(str(error))
try:  # what goes to rank 0 alone is checked on every rank too
    distributed.gathered("left" if rank == 0 else "right", rank)
except distributed.OutOfStep as error:
    said.append("gathered: " + str(error))
with open(sys.argv[1] + f"/rank{rank}.json", "w") as file:
    json.dump(said, file)
dist.destroy_process_group()
'''


def test_ranks_out_of_step_fail_naming_where_each_is(tmp_path):
    """Every exchange between ranks is named and counted: a call that one rank makes and the
    other does not is one line on every rank, naming where each is, instead of one call's results
    handed to another (a process-wide counter matched them silently); afterwards the group goes on."""
    script = tmp_path / "out_of_step.py"
    script.write_text(OUT_OF_STEP)
    run = torchrun(2, str(script), str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    first, second = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2))
    assert first[0] == second[0] and "out of step (rank 0 at shared#1, rank 1 at extra#1)" in first[0]
    assert "every rank must make the same cnnviz calls in the same order" in first[0]
    # the counts start afresh after it: a call every rank makes then works
    assert first[1] == second[1] == repr([0, 1])
    assert first[2] == second[2] and first[2].startswith("gathered: the ranks are out of step (rank 0 at left#1, rank 1")

"""Started by torchrun from tests/test_distributed.py: cnnviz.statistics inside a gloo process
group, on every kind of input the group shares, and cnnviz.maximize of a few units, each rank
writing what it got.

    python -m torch.distributed.run --standalone --nproc-per-node N tests/distributed_worker.py OUT FOLDER

For each case, ``OUT/CASE.rankR.npz`` (the statistics' arrays, and their skipped files and
exemplar sources as JSON) or ``OUT/CASE.rankR.error`` (the error's class and message); the
renders in ``OUT/maximize.rankR.pt``; a run that fails and one that goes on from its checkpoints,
``OUT/resumed.rankR.*``; concepts of the sample photographs in ``OUT/concepts.rankR.pt``; a small gallery made by all ranks, what each was told in
``OUT/gallery.rankR.json``.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import cnnviz
from cnnviz.errors import CnnvizError

LAYERS = ["features.3", "features.10"]
BATCH = 2  # the folder's and the Dataset's shares are whole batches: identical to the bit
#: the renders every rank makes its share of (5 units over 2 or 3 ranks; fixed steps)
RENDERS = dict(channels="0-4", steps=12, size=32, stop=False)
#: an objective over a batch of 3 images with a diversity term (every rank renders it whole)
OBJECTIVE = dict(objective=cnnviz.objectives.channel("features.10", 3) - cnnviz.objectives.diversity("features.10"),
                 count=3, steps=6, size=32, stop=False, reference=None)


#: concepts of the sample photographs: each rank streams its share, the fit is made once
CONCEPTS = dict(k=3, batch_size=2, importance_images=3, maps=2, exemplars=4)


#: a small gallery of one layer with every stage, made by every rank together in Python
GALLERY = dict(max_channels=3, unit_renders=1, diverse=2, steps=4, class_steps=4, max_classes=2, activation_images=1,
               attribution_images=2, methods=("gradient",), dream_octaves=1, dream_steps=1, concept_layers=())


def recorder(stages: dict):
    """A gallery's ``progress``: each stage's total and the work reported."""
    def progress(stage: str, total: int):
        stages[stage] = [total, 0]

        def update(amount: int):
            stages[stage][1] += amount
        return update
    return progress


class Photos(torch.utils.data.Dataset):
    """The sample photographs as model inputs (C x H x W), with labels; one item can be made to fail."""

    def __init__(self, model, failing: int | None = None):
        self.names = cnnviz.samples.names()
        self.model, self.failing = model, failing
        self.read: list[int] = []  # the items read, in order

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        if index == self.failing:
            raise ValueError(f"item {index} is broken")
        self.read.append(index)
        image = cnnviz.inputs.prepare(cnnviz.samples.image(self.names[index]), self.model.preprocessing)[0]
        return image, index


def cases(model, folder: Path) -> dict:
    inputs = torch.cat([cnnviz.inputs.prepare(cnnviz.samples.image(name), model.preprocessing)
                        for name in cnnviz.samples.names()[:2]])
    return {
        "folder": str(folder),  # photographs, then a list and a file that are not images
        "list": str(folder / "list.txt"),  # some of them, a missing file, a sample
        "dataset": Photos(model),
        "two": inputs,  # fewer images than ranks: a rank with no work
        "failing": Photos(model, failing=len(cnnviz.samples.names()) - 1),  # the last rank's share fails
    }


def main() -> None:
    out, folder = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = cnnviz.load_model("builtin:photos")
    try:
        for case, images in cases(model, folder).items():
            try:
                stats = cnnviz.statistics(model, images, LAYERS, batch_size=BATCH, exemplars=3)
            except CnnvizError as error:
                (out / f"{case}.rank{rank}.error").write_text(f"{type(error).__name__}: {error}")
                continue
            np.savez(out / f"{case}.rank{rank}.npz", **stats.to_arrays())
            names = {"skipped": stats.skipped,
                     "sources": {layer: stats[layer].exemplar_sources for layer in LAYERS}}
            (out / f"{case}.rank{rank}.json").write_text(json.dumps(names))
        # a run that fails on the last rank's last image, then goes on from every rank's checkpoints
        checkpoints, broken = out / "checkpoints", len(cnnviz.samples.names()) - 1
        try:
            cnnviz.statistics(model, Photos(model, failing=broken), LAYERS, batch_size=BATCH, exemplars=3,
                              checkpoint=checkpoints, checkpoint_every=BATCH, checkpoint_minutes=0)
        except CnnvizError as error:
            (out / f"resumed.rank{rank}.error").write_text(str(error))
        progress: list[int] = []
        again = Photos(model)
        stats = cnnviz.statistics(model, again, LAYERS, batch_size=BATCH, exemplars=3, checkpoint=checkpoints,
                                  checkpoint_every=BATCH, checkpoint_minutes=0, progress=progress.append)
        np.savez(out / f"resumed.rank{rank}.npz", **stats.to_arrays())
        dist.barrier()  # every rank has removed its checkpoint
        (out / f"resumed.rank{rank}.json").write_text(json.dumps({
            "skipped": stats.skipped, "sources": {layer: stats[layer].exemplar_sources for layer in LAYERS},
            "read": again.read, "resumed": stats.resumed, "progress": sum(progress),
            "left": sorted(p.name for p in checkpoints.iterdir()) if checkpoints.exists() else None}))
        progress.clear()
        rendering = cnnviz.maximize(model, "features.10", progress=progress.append, **RENDERS)
        objective = cnnviz.maximize(model, None, **OBJECTIVE)
        torch.save({"images": rendering.images, "values": rendering.values, "steps": rendering.steps_taken,
                    "succeeded": rendering.succeeded, "objective": objective.images, "progress": sum(progress)},
                   out / f"maximize.rank{rank}.pt")
        progress.clear()
        found = cnnviz.concepts(model, "samples", "features.10", progress=progress.append, **CONCEPTS)
        torch.save({"directions": found.directions, "weights": found.image_weights, "images": found.images,
                    "importance": found.importance, "exemplars": found.exemplar_images, "error": found.error, "shift": found.shift, "factors": found.factors, "signed": found.signed,
                    "progress": sum(progress)}, out / f"concepts.rank{rank}.pt")
        stages: dict = {}
        site = cnnviz.gallery(model, "samples", "features.3", output=out / "gallery", progress=recorder(stages), **GALLERY)
        (out / f"gallery.rank{rank}.json").write_text(json.dumps({
            "stages": stages, "figures": [f["file"] for f in site.figures], "units": len(site.units),
            "done": site.done, "folder": str(site.folder)}))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

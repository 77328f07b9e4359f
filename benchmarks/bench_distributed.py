"""Statistics across processes: images per second for one process and for two (torchrun, gloo)
on the same images, and the merge's share of the run, side by side in one run.

The images: the 17 sample photographs saved as JPEG files, ``--copies`` times each, in a
temporary folder (decoded and resized on every run, as a user's folder is). The model:
torchvision's ResNet-18 with random weights at 224 px (``--model`` for another), statistics at
``layer1`` to ``layer4``, batches of 16.

* 1 process, 1 thread and 1 process, 2 threads: ``cnnviz.statistics`` in a process of its own;
  and 1 process, 1 thread, with 1 DataLoader worker decoding the files (``workers=1``);
* 2 processes, 1 thread each: ``torchrun --nproc-per-node 2`` of the same call: each rank streams
  its half and every rank merges the halves. The merge (the exchange of the two results and
  their merging) is timed apart, as a fraction of the rank's whole run.

Times exclude starting Python and loading the model (each process reports its own
``statistics`` call; for two processes, the slower rank, and the merge as the rank that finished its
share last saw it: the exchange and merging alone, no waiting). On a GPU machine ``--device cuda``
runs one process per GPU (``--processes`` up to the GPU count).

Usage::

    python benchmarks/bench_distributed.py --copies 16  # the README's figures (272 images, 2 minutes)
    python benchmarks/bench_distributed.py --copies 1   # a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAYERS = ["layer1", "layer2", "layer3", "layer4"]


def worker(args) -> None:
    """One process of a run: time cnnviz.statistics on the folder, print one JSON line."""
    import torch
    import torch.distributed as dist

    import cnnviz
    from cnnviz.analyses import statistics as s
    from cnnviz.core import distributed
    from cnnviz.inputs.batches import shard_images

    torch.set_num_threads(args.threads)
    grouped = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = distributed.local_device(args.device)
    if grouped:
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        dist.barrier()
    model = cnnviz.load_model(args.model, device=device)
    rank, size = distributed.rank_and_size()
    start = time.perf_counter()
    if not grouped:
        result = cnnviz.statistics(model, args.folder, LAYERS, batch_size=16, workers=args.workers)
        merge = 0.0
    else:  # the steps of cnnviz.statistics in a group, with the merge timed apart
        share = shard_images(args.folder, rank, size, 16)  # as cnnviz.statistics shares them
        local = s._gather(model, share, LAYERS, 16, s.DEFAULT_BINS, s.DEFAULT_TOP_K, s.DEFAULT_NEAR_ZERO, None,
                          args.workers)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        merging = time.perf_counter()
        parts = distributed.together(lambda: local)
        result = None
        for part, _ in parts:
            if part is not None:
                result = part if result is None else result.merge(part)
        merge = time.perf_counter() - merging
    seconds = time.perf_counter() - start
    print(json.dumps({"rank": rank, "images": result.images, "seconds": seconds, "merge": merge}), flush=True)
    if grouped:
        dist.destroy_process_group()


def run(processes: int, threads: int, workers: int, folder: str, args) -> list[dict]:
    command = [sys.executable]
    if processes > 1:
        command += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command += [__file__, "--worker", "--folder", folder, "--threads", str(threads), "--model", args.model,
                "--device", args.device, "--workers", str(workers)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if done.returncode:
        raise SystemExit(f"the run of {processes} process(es) failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4, help="copies of each sample photograph")
    parser.add_argument("--model", default="torchvision:resnet18")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    import cnnviz

    with tempfile.TemporaryDirectory() as folder:
        for copy in range(args.copies):
            for name in cnnviz.samples.names():
                cnnviz.samples.image(name).convert("RGB").save(Path(folder) / f"{name}_{copy}.jpg", quality=90)
        count = args.copies * len(cnnviz.samples.names())
        print(f"{count} JPEG images, {args.model} (random weights), layers {', '.join(LAYERS)}, {args.device}, "
              f"torch {torch.__version__}, {os.cpu_count()} CPUs")
        # (processes, threads each, decoding workers each)
        rows = [(1, 1, 0), (1, 2, 0), (1, 1, 1), (args.processes, 1, 0)] if args.device == "cpu" else \
            [(1, 1, 0), (1, 1, 2), (args.processes, 1, 2)]
        baseline = None
        for processes, threads, workers in rows:
            reports = run(processes, threads, workers, folder, args)
            slowest = max(reports, key=lambda r: r["seconds"])
            assert all(r["images"] == count for r in reports), reports
            rate = count / slowest["seconds"]
            baseline = baseline or rate
            # the exchange as the rank that finished its share last sees it (it waits for no one)
            exchange = min(r["merge"] for r in reports)
            merge = f", merge {100 * exchange / slowest['seconds']:.1f} % of the run " \
                    f"({1000 * exchange:.0f} ms)" if processes > 1 else ""
            decoding = f" + {workers} decoding worker(s)" if workers else ""
            print(f"  {processes} process(es) x {threads} thread(s){decoding}: {rate:.1f} images/s "
                  f"({slowest['seconds']:.1f} s, {rate / baseline:.2f}x one process of one thread){merge}", flush=True)


if __name__ == "__main__":
    main()

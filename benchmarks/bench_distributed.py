"""Statistics across processes: images per second for one process and for two (torchrun, gloo)
on the same images, and the merge's share of the run, side by side in one run.

The images: the 17 sample photographs saved as JPEG files, ``--copies`` times each, in a
temporary folder (decoded and resized on every run, as a user's folder is). The model:
torchvision's ResNet-18 with random weights at 224 px (``--model`` for another), statistics at
``layer1`` to ``layer4``, batches of 16.

* 1 process, 1 thread and 1 process, 2 threads: ``cnnviz.statistics`` in a process of its own;
  and 1 process, 1 thread, with 1 DataLoader worker decoding the files (``workers=1``);
* 2 processes, 1 thread each: ``torchrun --nproc-per-node 2`` of the same call: each rank streams
  its half and every rank merges the halves. The merge (the exchange of the two results without
  their exemplar crops, their merging, then the exchange of the crops that won) is timed apart,
  as a fraction of the rank's whole run.

Times exclude starting Python and loading the model (each process reports its own
``statistics`` call; for two processes, the slower rank, and the merge as the rank that finished its
share last saw it: the exchange and merging alone, no waiting). On a GPU machine ``--device cuda``
runs one process per GPU (``--processes`` up to the GPU count).

The one-process run also times one checkpoint of its whole result (``statistics(checkpoint=...)``
saves one at most every 5 minutes by default): its save and its reading back, and its size.

``--gallery`` then times the default ``cnnviz gallery`` of ``builtin:photos`` as a command (Python's
start and the model's loading included): one process with both threads, and torchrun's two
processes of one thread each.

Usage::

    python benchmarks/bench_distributed.py --copies 16 --gallery  # the benchmark of docs/benchmarks.md (10 minutes)
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
    from cnnviz.analyses import statistics_shards as shards
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
    checkpoint = {}
    if not grouped:
        result = cnnviz.statistics(model, args.folder, LAYERS, batch_size=16, workers=args.workers)
        merge = 0.0
        seconds = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as folder:  # one checkpoint of the whole result, saved and read back
            path = Path(folder) / "checkpoint.npz"
            saving = time.perf_counter()
            shards.save_checkpoint(path, "key", result.images, result, [])
            reading = time.perf_counter()
            done, restored, _ = shards.restore_checkpoint(path, "key")
            assert done == result.images and restored.images == result.images
            checkpoint = {"save": reading - saving, "read": time.perf_counter() - reading,
                          "megabytes": path.stat().st_size / 2**20}
    else:  # the steps of cnnviz.statistics in a group, with the merge timed apart
        share = shard_images(args.folder, rank, size, 16)  # as cnnviz.statistics shares them
        local = s._gather(model, share, LAYERS, 16, s.DEFAULT_BINS, s.DEFAULT_TOP_K, s.DEFAULT_NEAR_ZERO, None,
                          args.workers)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        merging = time.perf_counter()
        result = shards.merged(lambda: local, rank, size)[0]
        merge = time.perf_counter() - merging
    if grouped:
        seconds = time.perf_counter() - start
    print(json.dumps({"rank": rank, "images": result.images, "seconds": seconds, "merge": merge,
                      "checkpoint": checkpoint}), flush=True)
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
    parser.add_argument("--gallery", action="store_true", help="also time the default gallery of builtin:photos")
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
            saved = reports[0].get("checkpoint")
            if saved and processes == 1 and threads == 1 and not workers:
                print(f"    one checkpoint of the whole result: {saved['megabytes']:.1f} MB, saved in {saved['save']:.2f} s, "
                      f"read back in {saved['read']:.2f} s ({100 * saved['save'] / 300:.2f} % of the 5 minutes "
                      "between checkpoints)", flush=True)
    if args.gallery:
        gallery(args)


def gallery(args) -> None:
    """The default gallery of builtin:photos, as a command: one process (both threads), then two."""
    cpus = os.cpu_count() or 2
    timed = {}
    with tempfile.TemporaryDirectory() as folder:
        for processes in (1, args.processes):
            command = [sys.executable]
            if processes > 1:
                command += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
            command += ["-m", "cnnviz", "gallery", "--device", args.device, "-o", str(Path(folder) / str(processes))]
            threads = max(1, cpus // processes)
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, cwd=folder,
                                  env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            timed[processes] = time.perf_counter() - start
            if done.returncode:
                raise SystemExit(f"the gallery of {processes} process(es) failed:\n{done.stderr[-3000:]}")
            print(f"  gallery of builtin:photos, {processes} process(es) x {threads} thread(s): {timed[processes]:.1f} s "
                  f"({timed[1] / timed[processes]:.2f}x one process); {done.stdout.splitlines()[0]}", flush=True)


if __name__ == "__main__":
    main()

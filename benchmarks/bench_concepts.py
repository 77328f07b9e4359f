"""Concepts: time against a plain forward pass to the same layer, flat memory, and the solver
against scikit-learn's.

Time: the same batches go through (a) the model's layers up to the measured one, hand-sliced, with
no hooks and nothing recorded, and (b) ``cnnviz.concepts`` with its defaults (k=8; fitted on the
positions of the first 128 images; importance, deletion and fidelity on the first 32; exemplars
with crops; maps). The two run alternately; times are medians over the repeats and ratios medians
of the per-pair ratios. Target: at most 1.5x, the factorisation included.

Memory: ``cnnviz.concepts`` over 1,000 and over 5,000 images generated batch by batch (so the
input itself takes no memory), each in its own process; the peak resident memory of the two must
be the same within 10%.

Solver: the factorisation of the positions sampled at ``layer4`` (k=8) by cnnviz's torch HALS
(:mod:`cnnviz.analyses.concepts_nmf`) and by scikit-learn's ``NMF(init="nndsvda", solver="cd")``
with the same stopping rule, where scikit-learn is installed: time and relative error.

Usage::

    python benchmarks/bench_concepts.py                   # the benchmark of docs/benchmarks.md (about 15 minutes)
    python benchmarks/bench_concepts.py --quick           # a smoke run
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
import torchvision

import cnnviz
from cnnviz.analyses.concepts_nmf import TOLERANCE, factorise
from bench_statistics import paired, peak_mib, resnet_trunk as trunk  # the statistics benchmark's, the same timing


LAYERS = ["layer4", "layer3"]


def resnet18():
    torch.manual_seed(0)
    return cnnviz.load_model(torchvision.models.resnet18().eval())


def batches_of(count: int, batch: int, size: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, count, batch):
        yield torch.randn(min(batch, count - start), 3, size, size, generator=generator)


def memory_child(count: int, batch: int, size: int, layer: str) -> None:
    model = resnet18()
    result = cnnviz.concepts(model, batches_of(count, batch, size), layer, batch_size=batch)
    print(json.dumps({"images": len(result.images), "peak_mib": peak_mib()}))


def memory_of(count: int, batch: int, size: int, layer: str) -> float:
    done = subprocess.run([sys.executable, __file__, "--memory-child", str(count), "--batch", str(batch),
                           "--size", str(size), "--memory-layer", layer], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["images"] == count, report
    return report["peak_mib"]


def solver_rows(model, batches, k: int = 8) -> None:
    """The sample the factorisation is fitted on (the defaults' 40,000 positions of 128 images), by
    both solvers with the same stopping rule."""
    with torch.no_grad():
        values = torch.cat([trunk(model.module, "layer4")(batch) for batch in batches])[:128]
    positions = values.permute(0, 2, 3, 1).reshape(-1, values.shape[1])
    positions = positions[torch.randperm(len(positions), generator=torch.Generator().manual_seed(0))[:40_000]]
    start = time.perf_counter()
    fit = factorise(positions, k)
    ours = time.perf_counter() - start
    print(f"\nsolver, {len(positions)} positions x {positions.shape[1]} channels, k={k}")
    print(f"  cnnviz HALS (torch)   {ours:6.2f} s   relative error {fit.error:.4f}")
    try:
        from sklearn.decomposition import NMF
    except ImportError:
        print("  scikit-learn is not installed: pip install scikit-learn to compare")
        return
    import numpy as np

    data = positions.numpy()  # float32, as ours
    start = time.perf_counter()
    solver = NMF(k, init="nndsvda", solver="cd", max_iter=200, tol=TOLERANCE, random_state=0)
    w = solver.fit_transform(data)
    theirs = time.perf_counter() - start
    error = float(np.linalg.norm(data - w @ solver.components_) / np.linalg.norm(data))
    print(f"  scikit-learn NMF (cd) {theirs:6.2f} s   relative error {error:.4f}   "
          f"({solver.n_iter_} iterations; ratio ours/theirs {ours / theirs:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="96 images, small memory runs")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory-layer", default="layer4", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.memory_child:
        memory_child(args.memory_child, args.batch, args.size, args.memory_layer)
        return
    if args.quick:
        args.images = 96
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, batch {args.batch}, "
          f"median of {args.repeats}")
    model = resnet18()
    batches = list(batches_of(args.images, args.batch, args.size))
    if not args.skip_time:
        print(f"\ntorchvision resnet18 (random weights), {args.images} images of {args.size}x{args.size}: "
              "concepts (k=8, defaults) vs plain forward to the layer")
        for layer in LAYERS:
            sliced = trunk(model.module, layer)

            def plain():
                with torch.no_grad():
                    for batch in batches:
                        sliced(batch)

            def found():
                cnnviz.concepts(model, batches, layer, batch_size=args.batch)

            plain()  # warm up
            base, other, ratio = paired(plain, found, args.repeats)
            print(f"  {layer:<8} plain {base:7.2f} s   concepts {other:7.2f} s   ratio {ratio:.2f}")
        solver_rows(model, batches[: max(1, 128 // args.batch)])
    if args.skip_memory:
        return
    small, large = (100, 300) if args.quick else (1000, 5000)
    first = memory_of(small, args.batch, args.size, "layer4")
    second = memory_of(large, args.batch, args.size, "layer4")
    print(f"\npeak memory, resnet18 layer4 at {args.size} px: {small} images {first:.0f} MiB, {large} images "
          f"{second:.0f} MiB, ratio {second / first:.3f}")


if __name__ == "__main__":
    main()

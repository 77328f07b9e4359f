"""Streaming statistics: time against a plain forward pass to the same layer, and flat memory.

Time: the same batches go through (a) the model's layers up to the measured one, hand-sliced, with
no hooks and nothing recorded, and (b) ``cnnviz.statistics`` (every per-channel statistic,
histograms, top-8 exemplars with crops). The two run alternately; times are medians over the
repeats and ratios medians of the per-pair ratios. Target: at most 1.15x.

Memory: ``cnnviz.statistics`` over 1,000 and over 5,000 images generated batch by batch (so the
input itself takes no memory), each in its own process; the peak resident memory of the two must
be the same within 5%.

Usage::

    python benchmarks/bench_statistics.py                 # the benchmark of docs/benchmarks.md (several minutes)
    python benchmarks/bench_statistics.py --quick         # a smoke run
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics as stats
import subprocess
import sys
import time

import torch
import torchvision

import cnnviz
from cnnviz.models.zoo import photos

PHOTO_LAYERS = ["features.5", "features.12", "features.19", "features.26"]
RESNET_LAYERS = ["layer1", "layer2", "layer3", "layer4"]
RESNET_MEASURED = ["layer1", "layer3"]


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def paired(baseline, candidate, repeats: int) -> tuple[float, float, float]:
    base, other, ratios = [], [], []
    for _ in range(repeats):
        b, c = timed(baseline), timed(candidate)
        base.append(b)
        other.append(c)
        ratios.append(c / b)
    return stats.median(base), stats.median(other), stats.median(ratios)


def photo_trunk(model, layer: str):
    index = int(layer.split(".")[1])
    return model.features[: index + 1]


def resnet_trunk(model, layer: str):
    stages = [model.conv1, model.bn1, model.relu, model.maxpool]
    for name in RESNET_LAYERS:
        stages.append(getattr(model, name))
        if name == layer:
            return torch.nn.Sequential(*stages)
    raise ValueError(layer)


def time_rows(loaded, trunk_of, layers, batches, repeats: int) -> list[tuple[str, float, float, float]]:
    """Both sides run the same batches (statistics' batch_size is the batches' own size)."""
    rows = []
    for layer in layers:
        trunk = trunk_of(loaded.module, layer)

        def plain():
            with torch.no_grad():
                for batch in batches:
                    trunk(batch)

        def streamed():
            cnnviz.statistics(loaded, batches, [layer], batch_size=len(batches[0]))

        plain()
        streamed()  # warm up
        rows.append((layer, *paired(plain, streamed, repeats)))
    return rows


def memory_child(count: int, batch: int) -> None:
    loaded = cnnviz.load_model("builtin:photos")

    def generated():
        for start in range(0, count, batch):
            images, _ = photos.crops(min(batch, count - start), split="train", seed=start)
            yield loaded.preprocessing.normalize(images)

    result = cnnviz.statistics(loaded, generated(), ["features.5", "features.26"])
    print(json.dumps({"images": result.images, "peak_mib": peak_mib()}))


def peak_mib() -> float:
    """This process's peak resident memory. /proc's VmHWM starts afresh with the process (the
    rusage maximum is inherited from the parent across exec on Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_of(count: int, batch: int) -> float:
    done = subprocess.run([sys.executable, __file__, "--memory-child", str(count), "--batch", str(batch)],
                          capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["images"] == count
    return report["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--resnet-images", type=int, default=2000)
    parser.add_argument("--resnet-repeats", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="128 images, 16 for resnet18, 1 repeat, small memory runs")
    parser.add_argument("--skip-memory", action="store_true", help="skip the two memory runs")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.memory_child:
        memory_child(args.memory_child, args.batch)
        return
    if args.quick:
        args.images, args.resnet_images, args.repeats = 128, 16, 1
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, batch {args.batch}, median of {args.repeats}")

    loaded = cnnviz.load_model("builtin:photos")
    images, _ = photos.crops(args.images, split="train", seed=0)
    batches = list(loaded.preprocessing.normalize(images).split(args.batch))
    print(f"\nbuiltin:photos, {args.images} images of 64x64: statistics vs plain forward to the layer")
    for layer, plain, streamed, ratio in time_rows(loaded, photo_trunk, PHOTO_LAYERS, batches, args.repeats):
        print(f"  {layer:<12} plain {plain:7.2f} s   statistics {streamed:7.2f} s   ratio {ratio:.2f}")

    if args.resnet_images:
        resnet_rows(args)
    if args.skip_memory:
        return
    small, large = (200, 1000) if args.quick else (1000, 5000)
    first, second = memory_of(small, args.batch), memory_of(large, args.batch)
    print(f"\npeak memory, builtin:photos at features.5 and features.26: {small} images {first:.0f} MiB, "
          f"{large} images {second:.0f} MiB, ratio {second / first:.3f}")


def resnet_rows(args) -> None:
    torch.manual_seed(0)
    resnet = cnnviz.load_model(torchvision.models.resnet18().eval())
    generator = torch.Generator().manual_seed(0)
    resnet_batches = [torch.randn(min(32, args.resnet_images - start), 3, 224, 224, generator=generator)
                      for start in range(0, args.resnet_images, 32)]
    print(f"\ntorchvision resnet18 (random weights), {args.resnet_images} images of 224x224, batch 32")
    for layer, plain, streamed, ratio in time_rows(resnet, resnet_trunk, RESNET_MEASURED, resnet_batches, args.resnet_repeats):
        print(f"  {layer:<12} plain {plain:7.2f} s   statistics {streamed:7.2f} s   ratio {ratio:.2f}")


if __name__ == "__main__":
    main()

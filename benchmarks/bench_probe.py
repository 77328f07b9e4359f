"""Probe overhead: capturing layers vs a plain forward pass, and early exit vs a full pass.

Measured on torchvision's resnet50 (random weights, eval mode, no_grad), batch 16 at 224 x 224 on
the CPU by default. Every configuration runs alternately with its baseline in this one process;
times are medians over the repeats and ratios are medians of the per-pair ratios. The targets (DESIGN.md, the foundation issue):

* capturing costs at most 5% over a plain forward pass to the same depth (ratio <= 1.05);
* early exit at an early layer costs a fraction of the full pass.

The anchor for capturing several layers is torchvision's FX feature extractor
(``create_feature_extractor``), which traces the model and returns the chosen nodes.

Usage::

    python benchmarks/bench_probe.py              # the benchmark of docs/benchmarks.md
    python benchmarks/bench_probe.py --quick      # a smoke run: batch 2 at 64 px, 1 repeat
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

import cnnviz

STAGES = ["layer1", "layer2", "layer3", "layer4"]


def plain_to(model: torchvision.models.ResNet, x: torch.Tensor, depth: str) -> torch.Tensor:
    """ResNet's forward written out, stopping after ``depth`` (no hooks, nothing recorded)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    for stage in STAGES:
        x = getattr(model, stage)(x)
        if stage == depth:
            return x
    return model.fc(torch.flatten(model.avgpool(x), 1))


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def paired(baseline, candidate, repeats: int) -> tuple[float, float, float]:
    """Run the two alternately; the medians of each and the median of the per-pair ratios
    (pairs share the machine's momentary load, so their ratio is steadier than either time)."""
    base_times, candidate_times, ratios = [], [], []
    for _ in range(repeats):
        base = timed(baseline)
        other = timed(candidate)
        base_times.append(base)
        candidate_times.append(other)
        ratios.append(other / base)
    return statistics.median(base_times), statistics.median(candidate_times), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="batch 2 at 64 px, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.size, args.repeats = 2, 64, 1

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    fx = create_feature_extractor(model, return_nodes=STAGES)
    print(
        f"resnet50, batch {args.batch} at {args.size}x{args.size}, CPU, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}, median of {args.repeats}"
    )

    def capture_stages():
        return cnnviz.capture(model, x, STAGES)


    def fx_stages():
        return fx(x)

    with torch.no_grad():
        plain_to(model, x, "full")  # warm up allocator and kernels
        rows = []
        full = statistics.median(timed(lambda: plain_to(model, x, "full")) for _ in range(args.repeats))
        rows.append(("plain forward, full depth", full, "1.00 (baseline)"))
        for depth in ("layer1", "layer4"):
            plain, probed, ratio = paired(
                lambda d=depth: plain_to(model, x, d), lambda d=depth: cnnviz.capture(model, x, [d]), args.repeats
            )
            rows.append((f"plain forward to {depth}", plain, f"{plain / full:.2f} of full"))
            rows.append((f"capture {depth} (early exit)", probed, f"{ratio:.3f} x plain to {depth}; {probed / full:.2f} of full"))
        plain4, probed4, ratio4 = paired(lambda: plain_to(model, x, "layer4"), capture_stages, args.repeats)
        _, anchor, anchor_ratio = paired(lambda: plain_to(model, x, "layer4"), fx_stages, args.repeats)
        _, _, versus_fx = paired(fx_stages, capture_stages, args.repeats)
        rows.append(
            ("capture layer1-4 (4 layers)", probed4, f"{ratio4:.3f} x plain to layer4; {versus_fx:.3f} x FX extractor")
        )
        rows.append(("FX feature extractor, layer1-4", anchor, f"{anchor_ratio:.3f} x plain to layer4"))
        every = [name for name, _ in model.named_modules() if name]
        _, probed_all, ratio_all = paired(
            lambda: plain_to(model, x, "full"), lambda: cnnviz.capture(model, x, every), max(1, args.repeats // 2)
        )
        rows.append((f"capture every module ({len(every)})", probed_all, f"{ratio_all:.3f} x full plain forward"))
    width = max(len(r[0]) for r in rows)
    for name, seconds, ratio in rows:
        print(f"{name:<{width}}  {seconds * 1000:9.1f} ms   {ratio}")


if __name__ == "__main__":
    main()

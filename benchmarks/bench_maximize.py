"""Maximal-response images: cnnviz against torch-lucent, side by side in one process.

Needs the ``bench`` extra (``pip install -e ".[bench]"``), which installs torch-lucent 0.1.8.

Models: torchvision VGG11 with fixed random weights (seed 0) and ``builtin:photos``; objective: a
channel's spatial mean; Adam, lr 0.05; no input normalisation on either side; the same transforms
(pad 12, jitter 8, scale, rotate, jitter 4); a decorrelated Fourier parameterisation. Lucent gets
a fresh copy of the model for every render (its hooks are never removed in 0.1.8, and would pile
up). Both sides render under the same allocator policy: the benchmark keeps freed memory in its process
for the whole run (cnnviz.reuse_freed_memory, which the cnnviz command applies to its own process
too), so the page faults that glibc's default costs every step are spared on both sides. Printed per layer:

1. equal settings (the network sees images of the same size on both sides, same steps,
   parameterisation, fp32): Lucent renders 128 px and resizes its transformed images back to
   128 px (fixed_image_size); cnnviz renders 104 px, which its 12 px padding brings to 128.
   cnnviz units per second (all units as one batch) over Lucent's per-unit loop. Targets: >= 4x
   (early layer), >= 1.8x (middle);
2. the floor: cnnviz's time per step over a bare forward pass to the target plus the input
   gradient, for the same batch at the same size (channels_last, fp32), the two interleaved step
   by step (medians). Target: <= 1.3x;
3. time to quality (VGG11): per unit, Lucent renders it with its defaults (128 px upsampled to
   224, 512 steps); cnnviz (its own defaults: size auto, bf16 where the CPU has it) renders the
   same unit with 8, 16, 32, ... steps until the unit's activation, measured on the saved 8-bit
   image re-loaded with no transformation, reaches what Lucent's image of that unit reaches; its
   time is the sum of all those attempts. Target: >= 10x less time (the median over units);
4. with ``--device cuda`` (when a GPU is there), part 1 on the GPU: target >= 10x.

Usage::

    python benchmarks/bench_maximize.py            # the benchmark of docs/benchmarks.md (about 30 minutes)
    python benchmarks/bench_maximize.py --quick    # a smoke run
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torchvision

import cnnviz
from cnnviz.core.memory import reuse_freed_memory


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def lucent_render(model, layer: str, channel: int, size: int, steps: int, upsample: bool, seed: int):
    """One Lucent render (its render_vis); returns the image (1 x 3 x H x W in [0, 1]) and seconds."""
    from lucent.optvis import objectives, param, render, transform

    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    synchronize(device)
    start = time.perf_counter()
    images = render.render_vis(
        fresh, objectives.channel(layer.replace(".", "_"), channel),
        param_f=lambda: param.image(size, fft=True, decorrelate=True),
        optimizer=lambda params: torch.optim.Adam(params, lr=0.05),
        transforms=transform.standard_transforms, thresholds=(steps,), preprocess=False,
        progress=False, show_image=False, fixed_image_size=None if upsample else size,
    )
    synchronize(device)
    seconds = time.perf_counter() - start
    return torch.from_numpy(images[-1]).permute(0, 3, 1, 2).float(), seconds


def saved_activation(model, layer: str, channel: int, image: torch.Tensor) -> float:
    """The unit's activation on the image as saved (8 bits) and re-loaded, with no transformation."""
    quantised = (image.clamp(0, 1) * 255).round() / 255
    values = cnnviz.capture(model, quantised, [f"{layer}:{channel}"])[f"{layer}:{channel}"]
    return float(values.flatten(1).mean(dim=1)[0])


def bare_step(model, layer: str, batch: int, side: int):
    """A forward pass to the layer and the input gradient of the batch, nothing else (on a copy of
    the trunk with frozen parameters; channels_last, as cnnviz runs)."""
    index = int(layer.split(".")[1])
    trunk = copy.deepcopy(model.features[: index + 1])
    for parameter in trunk.parameters():
        parameter.requires_grad_(False)
    device = next(model.parameters()).device
    x = torch.rand(batch, 3, side, side, device=device).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)

    def step():
        trunk(x)[:, :batch].mean(dim=(2, 3)).sum().backward()

    return step


def floor_ratio(wrapped, model, layer: str, units: int, size: int, steps: int) -> tuple[float, float]:
    """Median seconds of one cnnviz step and of one bare step, interleaved: after each cnnviz step
    (its progress callback) one bare step runs and is timed on its own, and the cnnviz step is
    the time between callbacks less that. Both see the same machine at the same moments, which
    matters on a shared CPU whose speed drifts by 20-30 % within a minute."""
    device = next(model.parameters()).device
    bare = bare_step(model, layer, units, size)
    ours, bares, last = [], [], [None]

    def progress(_count):
        synchronize(device)
        now = time.perf_counter()
        if last[0] is not None:
            ours.append(now - last[0])
        bare()
        synchronize(device)
        bares.append(time.perf_counter() - now)
        last[0] = time.perf_counter()

    cnnviz.maximize(wrapped, layer, channels=f"0-{units - 1}", steps=steps, size=size - 24, redirect_steps=0,
                    progress=progress)
    return statistics.median(ours[2:]), statistics.median(bares[2:])


def equal_settings(name, model, layer, units, size, steps, floor_steps):
    wrapped = cnnviz.load_model(model, mean=0.0, std=1.0)
    device = next(model.parameters()).device
    lucent_seconds = sum(lucent_render(model, layer, c, size, steps, False, c)[1] for c in range(units))
    synchronize(device)
    start = time.perf_counter()
    # the 12 px padding on each side brings cnnviz's canvas to the size Lucent's network sees
    cnnviz.maximize(wrapped, layer, channels=f"0-{units - 1}", steps=steps, size=size - 24, redirect_steps=0)
    synchronize(device)
    ours = time.perf_counter() - start
    print(f"  {name} {layer:<12} equal settings on {device.type} ({units} units, network sees {size} px, {steps} steps): "
          f"Lucent {units / lucent_seconds:.3f} units/s, cnnviz {units / ours:.3f} units/s, "
          f"{lucent_seconds / ours:.1f}x")
    if floor_steps:
        step, bare = floor_ratio(wrapped, model, layer, units, size, floor_steps)
        print(f"  {name} {layer:<12} floor ({units} images, {size} px, median of {floor_steps} interleaved steps): "
              f"cnnviz step {step * 1000:.1f} ms, bare forward + input gradient {bare * 1000:.1f} ms, "
              f"{step / bare:.2f}x")


def time_to_quality(model, layer, units, lucent_steps, budget_steps):
    wrapped = cnnviz.load_model(model, mean=0.0, std=1.0)
    ratios, lucent_times, ours, goals = [], [], [], []
    for channel in range(units):
        image, lucent_seconds = lucent_render(model, layer, channel, 128, lucent_steps, True, channel)
        goal = saved_activation(wrapped, layer, channel, image)  # what Lucent reached for this unit
        steps, spent, reached = 8, 0.0, False
        while steps <= budget_steps and not reached:
            start = time.perf_counter()
            rendering = cnnviz.maximize(wrapped, f"{layer}:{channel}", steps=steps, precision="auto", seed=channel)
            spent += time.perf_counter() - start  # every attempt counts, not only the last
            reached = saved_activation(wrapped, layer, channel, rendering.images) >= goal
            steps *= 2
        seconds = spent if reached else float("inf")
        goals.append(goal)
        lucent_times.append(lucent_seconds)
        ours.append(seconds)
        ratios.append(lucent_seconds / seconds)
    print(f"  VGG11 {layer:<12} time to quality ({units} units; Lucent {lucent_steps} steps reaches "
          f"{', '.join(f'{g:.3g}' for g in goals)}): Lucent {statistics.median(lucent_times):.1f} s per unit, "
          f"cnnviz {statistics.median(ours):.2f} s per unit (all attempts); per unit "
          f"{', '.join(f'{r:.1f}x' for r in ratios)}, median {statistics.median(ratios):.1f}x less time "
          f"(size {rendering.settings['size']}, {rendering.settings['precision']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--floor-steps", type=int, default=48, help="interleaved steps of part 2 (x4 on photos)")
    parser.add_argument("--quality-units", type=int, default=3)
    parser.add_argument("--lucent-steps", type=int, default=512)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (part 4: part 1 on the GPU)")
    parser.add_argument("--parts", default="123", help="which parts to run on the CPU, e.g. 12 or 3")
    args = parser.parse_args()
    if args.quick:
        args.units, args.steps, args.quality_units, args.lucent_steps, args.floor_steps = 2, 4, 1, 16, 6
    torch.manual_seed(0)
    vgg = torchvision.models.vgg11().eval()
    photos = cnnviz.load_model("builtin:photos").module
    if args.device != "cpu":
        print(f"4. {torch.cuda.get_device_name()}, torch {torch.__version__}: equal settings on the GPU")
        vgg, photos = vgg.to(args.device), photos.to(args.device)
        for layer in ("features.3", "features.13"):
            equal_settings("VGG11", vgg, layer, args.units, 128, args.steps, args.floor_steps)
        return
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    if "1" in args.parts or "2" in args.parts:
        print("1-2. equal settings and the floor")
        if "1" not in args.parts:
            print("  (part 1's Lucent renders run too: part 2 follows them)")
        floor_steps = args.floor_steps if "2" in args.parts else 0
        for layer in ("features.3", "features.13"):
            equal_settings("VGG11", vgg, layer, args.units, 128, args.steps, floor_steps)
        for layer in ("features.5", "features.12"):
            equal_settings("photos", photos, layer, args.units, 88, args.steps, 4 * floor_steps)
    if "3" in args.parts:
        print("3. time to quality")
        for layer in ("features.3", "features.13"):
            time_to_quality(vgg, layer, args.quality_units, args.lucent_steps, 4096)


if __name__ == "__main__":
    with reuse_freed_memory("cpu"):  # the benchmark owns its process, as the cnnviz command does
        main()

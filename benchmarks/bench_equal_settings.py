"""Equal settings against Lucent, and which of cnnviz's defaults costs what (issue 28).

VGG11 with fixed random weights (seed 0), ``features.3``, 4 channels; the network sees 224 px on
both sides (Lucent renders 224 px with its standard transforms and ``fixed_image_size``; cnnviz
renders 200 px, which its 12 px padding brings to 224), 64 steps, Adam lr 0.05, a decorrelated
Fourier parameterisation, no input normalisation, every step run (cnnviz ``stop=False``, as
``--fixed-steps``). Printed: units per second against Lucent's (its per-unit loop), and the
median robust activation (the unit's mean over 16 random shifts, scales and rotations of the
8-bit image, :mod:`cnnviz.analyses.feature_visualization.robust`, at 224 px) against Lucent's,
for cnnviz's defaults and with each default turned off in turn: the cosine schedule (``constant``),
the comparison with the sample photographs and its restarts (``reference=None``), and the
redirected dead ReLUs of the first 16 steps (``redirect_steps=0``). Targets: >= 4x the speed,
>= 1.0x the robust activation.

Needs the ``bench`` extra (torch-lucent 0.1.8). About 3 minutes on 2 cores::

    python benchmarks/bench_equal_settings.py
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

import cnnviz
from cnnviz.analyses.feature_visualization.robust import contrast, robust_values
from cnnviz.core.memory import reuse_freed_memory

sys.path.insert(0, str(Path(__file__).parent))
from bench_maximize import lucent_render  # noqa: E402

LAYER, UNITS, SIZE, STEPS, LR = "features.3", 4, 224, 64, 0.05
VARIANTS = {
    "defaults (cosine schedule, photographs, redirect 16)": {},
    "constant schedule": {"schedule": "constant"},
    "no photographs (no restarts)": {"reference": None},
    "no redirected ReLUs": {"redirect_steps": 0},
    "all three off": {"schedule": "constant", "reference": None, "redirect_steps": 0},
}


def main() -> None:
    torch.manual_seed(0)
    model = torchvision.models.vgg11().eval()
    wrapped = cnnviz.load_model(model, mean=0.0, std=1.0)
    channels = list(range(UNITS))
    with reuse_freed_memory("cpu"):
        lucent_seconds, images = 0.0, []
        for channel in channels:
            image, seconds = lucent_render(model, LAYER, channel, SIZE, STEPS, False, channel)
            lucent_seconds += seconds
            images.append(image)
        images = torch.cat(images)
        lucent = statistics.median(robust_values(wrapped, LAYER, channels, images, size=SIZE))
        print(f"VGG11 {LAYER}, {UNITS} units, network sees {SIZE} px, {STEPS} steps, lr {LR}, fft")
        print(f"  Lucent: {UNITS / lucent_seconds:.3f} units/s, robust activation {lucent:.4g}, "
              f"contrast {statistics.median(contrast(images)):.3f}")
        for name, change in VARIANTS.items():
            start = time.perf_counter()
            rendering = cnnviz.maximize(wrapped, LAYER, channels=f"0-{UNITS - 1}", steps=STEPS, size=SIZE - 24, lr=LR,
                                        param="fft", stop=False, **change)
            seconds = time.perf_counter() - start
            ours = statistics.median(robust_values(wrapped, LAYER, channels, rendering.images, size=SIZE))
            print(f"  cnnviz, {name}: {UNITS / seconds:.3f} units/s ({lucent_seconds / seconds:.2f}x), robust "
                  f"activation {ours:.4g} ({ours / lucent:.2f}x), contrast "
                  f"{statistics.median(contrast(rendering.images)):.3f}")


if __name__ == "__main__":
    main()

"""Train a built-in model and write its weights into the package (not run by CI).

Usage::

    python -m cnnviz.models.zoo.train patterns      # about 2 minutes on 2 CPU cores
    python -m cnnviz.models.zoo.train photos        # about 10 minutes on 2 CPU cores

Every random choice comes from ``--seed``; the data are generated on the fly (patterns) or cropped
from the training part of each photograph (photos). At the end the script measures the held-out
accuracy on fresh data (a seed never used in training; for photos, the validation part of each
photograph) and stores it, with the class names and preprocessing, beside the weights in one file
that loads with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from cnnviz.models.zoo import BUILTIN, evaluate, patterns, photos, weights_path

VALIDATION_SEED = 1_000_003
#: Training batches use seeds from 2**32 up, so no training seed can equal a validation or test
#: seed (those stay below 2**32).
TRAINING_SEEDS = 2**32
CONTEXT = 0.3  # share of wide views among the photos model's training crops
WEIGHT_DECAY = 5e-4
LABEL_SMOOTHING = 0.05
WARMUP_STEPS = 100


def batch_seed(seed: int, step: int) -> int:
    return TRAINING_SEEDS + seed * 1_000_000 + step


def batches(name: str, batch: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "patterns":
        return patterns.generate(batch, seed=batch_seed(seed, step))
    return photos.crops(batch, split="train", seed=batch_seed(seed, step), augment=True, context=CONTEXT)


def train(name: str, steps: int, batch: int, seed: int, learning_rate: float) -> dict:
    spec = BUILTIN[name]
    torch.manual_seed(seed)
    model = spec.architecture(len(spec.classes()))
    mean, std = spec.statistics()
    shift = torch.tensor(mean).reshape(1, 3, 1, 1)
    scale = torch.tensor(std).reshape(1, 3, 1, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=WEIGHT_DECAY)
    start = time.time()
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:  # warm-up, then cosine decay
            group["lr"] = learning_rate * min(1.0, (step + 1) / WARMUP_STEPS) * 0.5 * (1 + math.cos(math.pi * step / steps))
        images, labels = batches(name, batch, seed, step)
        loss = F.cross_entropy(model((images - shift) / scale), labels, label_smoothing=LABEL_SMOOTHING)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.time() - start:6.0f} s", flush=True)
    model.eval()
    seconds = time.time() - start
    meta = spec.metadata(mean, std)
    meta.update(
        steps=steps, batch=batch, seed=seed, training_seconds=round(seconds), torch_version=str(torch.__version__),
        recipe={
            "optimizer": "AdamW", "learning_rate": learning_rate, "weight_decay": WEIGHT_DECAY,
            "schedule": f"linear warm-up over {WARMUP_STEPS} steps, then cosine to 0",
            "label_smoothing": LABEL_SMOOTHING, "batch_seeds": "2**32 + seed * 1e6 + step",
            "photos_crops": f"10-25% of the photograph's shorter side, {CONTEXT:.0%} wide views, flips, "
                            "brightness and contrast jitter" if name == "photos" else None,
            "validation_seed": VALIDATION_SEED,
        },
    )
    accuracy = evaluate(model, name, meta, seed=VALIDATION_SEED)
    meta["held_out_accuracy"] = round(accuracy, 4)
    meta["held_out"] = spec.held_out_description
    print(f"{name}: held-out accuracy {accuracy:.4f} after {seconds:.0f} s")
    return {"state_dict": model.state_dict(), "meta": meta}


def save(content: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(content, temporary)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description="Train a built-in cnnviz model.")
    parser.add_argument("name", choices=sorted(BUILTIN))
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--out", type=Path, help="where to write (default: the package's weights folder)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    spec = BUILTIN[args.name]
    content = train(args.name, args.steps or spec.steps, args.batch or spec.batch, args.seed, args.lr)
    save(content, args.out or weights_path(args.name))


if __name__ == "__main__":
    main()

"""Statistics shared between the ranks of a process group and across runs: the two-step merge
of the ranks' statistics (the exemplar crops travel only once they have won) and the checkpoints
from which a killed run goes on (see :func:`cnnviz.analyses.statistics.statistics`)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cnnviz.analyses.statistics_results import LayerStatistics, Statistics, array_key, split_array_key
from cnnviz.core.executor import Executor, Share
from cnnviz.core.version import __version__
from cnnviz.errors import CnnvizError
from cnnviz.inputs.batches import shard_images


def merged(run: Executor, images, work, batch_size: int, progress, listed: bool = False
           ) -> tuple[Statistics | None, list[str], int, Share]:
    """Run ``work(share, progress)`` (the ``(statistics, skipped)`` of this process's share of the
    images, ``listed`` when the work needs them as a list) and merge every share's in order: the
    statistics (``None`` without images), the files skipped, the images resumed and this
    process's share. Several shares are merged in two steps: first their statistics with, in place
    of each exemplar's crop, where it is (share and slot); merged, they say which crops won, and
    only those travel."""
    kept = {}

    def light_part(share: Share, shown):
        part, names = work(share, shown)
        kept["part"], kept["share"] = part, share
        return (part if share.whole else _crops_left_out(part, share.index)), names

    parts = run.map("statistics/parts", images, light_part, batch=batch_size,
                    split=_resumable_share if listed else shard_images, expand=listed, progress=progress)
    share = kept["share"]
    skipped = [name for _, names in parts for name in names]
    result = None
    for part, _ in parts:
        if part is not None:
            result = part if result is None else result.merge(part)
    if result is None:
        return None, skipped, 0, share
    resumed = sum(part.resumed for part, _ in parts if part is not None)
    if len(parts) > 1:
        won = run.everywhere("statistics/crops", lambda: _crops_won(result, kept["part"], share.index))
        result = _with_crops(result, won)
    return result, skipped, resumed, share


def _resumable_share(images, positions):
    try:
        return shard_images(images, positions)
    except CnnvizError:
        raise CnnvizError("a run with checkpoints goes on part-way through its images: give a folder, a file list, a "
                          "list of images, a tensor or a Dataset (not a DataLoader or other iterable)") from None


def _crops_left_out(part: Statistics | None, index: int) -> Statistics | None:
    """``part`` with each exemplar's crop replaced by where it is, ``index * k + slot`` (its share's) (``C x k x 1``;
    -1 where there is none), for a merge that moves no crop."""
    if part is None:
        return None
    layers = {}
    for name, layer in part.layers.items():
        k = layer.exemplar_values.shape[1]
        slots = index * k + np.arange(k)[None, :, None]
        where = {f"{prefix}_crops": np.where(getattr(layer, f"{prefix}_images")[:, :, None] >= 0, slots, -1)
                 for prefix in ("exemplar", "bottom") if getattr(layer, f"{prefix}_crops") is not None}
        layers[name] = replace(layer, **where)
    return Statistics(layers, part.images, part.skipped, part.resumed)


def _crops_won(merged: Statistics, part: Statistics | None, index: int) -> dict:
    """The crops of this share that the merged statistics kept: per layer and kind, the
    ``(channel, slot)`` of each in the merged arrays and the crops themselves (``N x 3 x S x S``,
    also when ``N`` is 0: every share with images tells the crops' size)."""
    won = {}
    if part is None:
        return won
    for name, layer in merged.layers.items():
        for prefix in ("exemplar", "bottom"):
            where = getattr(layer, f"{prefix}_crops")
            if where is None:
                continue
            k = layer.exemplar_values.shape[1]
            channel, slot = np.nonzero((where[:, :, 0] >= 0) & (where[:, :, 0] // k == index))
            crops = getattr(part.layers[name], f"{prefix}_crops")[channel, where[channel, slot, 0] % k]
            won[(name, prefix)] = (channel, slot, crops)
    return won


def _with_crops(merged: Statistics, won: list[dict]) -> Statistics:
    """The merged statistics with the crops every share sent put where they belong."""
    layers = {}
    for name, layer in merged.layers.items():
        crops = {}
        for prefix in ("exemplar", "bottom"):
            if getattr(layer, f"{prefix}_crops") is None:
                continue
            sent = [one[(name, prefix)] for one in won if (name, prefix) in one]
            size = sent[0][2].shape[1:]  # 3 x S x S
            whole = np.zeros((*layer.exemplar_values.shape, *size), dtype=np.uint8)
            for channel, slot, pictures in sent:
                whole[channel, slot] = pictures
            crops[f"{prefix}_crops"] = whole
        layers[name] = replace(layer, **crops)
    return Statistics(layers, merged.images, merged.skipped, merged.resumed)


def resumable(gather, model, share: Share, refs, batch_size, bins, top_k, near_zero, progress, workers, folder: Path,
              every: int, minutes: float) -> tuple[Statistics | None, list[str]]:
    """The statistics of ``share`` (each part's by ``gather``, as one pass would take them) in parts
    of ``every`` images (whole batches), the result so far saved in ``folder`` after a part once
    ``minutes`` have passed since the last save (for one of several shares also after the last
    part: the others may still fail); the parts an earlier run saved are not read again."""
    from cnnviz.core.model import model_key

    if every < 1 or not minutes >= 0:
        raise CnnvizError(f"checkpoint_every must be at least 1 image and checkpoint_minutes 0 or more, got "
                          f"{every} and {minutes}")
    rank, size, share = share.index, share.count, share.items
    every = -(-every // batch_size) * batch_size
    key = hashlib.sha256(json.dumps({
        "model": model_key(model), "layers": [str(ref) for ref in refs], "images": _identity(share),
        "settings": [batch_size, bins, top_k, near_zero], "rank": [rank, size], "cnnviz": __version__,
    }, default=str).encode()).hexdigest()
    path = folder / f"rank-{rank}-of-{size}" / "statistics.npz"  # a folder of its own: ranks never share a record
    done, result, skipped = restore_checkpoint(path, key)
    resumed = result.images if result is not None else 0
    if resumed and progress is not None:
        progress(resumed)
    saved = time.monotonic()
    for start in range(done, len(share), every):
        part, missed = gather(model, _part(share, start, start + every), refs, batch_size, bins, top_k, near_zero,
                              progress, workers)
        skipped += missed
        if part is not None:
            result = part if result is None else result.merge(part)
        last = start + every >= len(share)
        # a share of several is kept whole while the others may still fail; one process is done
        if (last and size > 1) or (not last and time.monotonic() - saved >= 60 * minutes):
            save_checkpoint(path, key, start + every, result, skipped)
            saved = time.monotonic()
    if result is not None:
        result.resumed = resumed
    return result, skipped


def _identity(share) -> list:
    """What a rank's images are, for its checkpoint's key: the names of files and samples, the
    shape and a digest of a tensor, the type, length and indices of a Dataset."""
    if isinstance(share, torch.Tensor):
        return ["tensor", list(share.shape), hashlib.sha256(share.detach().cpu().contiguous().view(-1)
                                                           .view(torch.uint8).numpy().tobytes()).hexdigest()]
    if isinstance(share, torch.utils.data.Subset):
        indices = list(share.indices)  # a contiguous share: its ends say which
        return ["dataset", type(share.dataset).__qualname__, len(share.dataset), indices[:1], indices[-1:], len(indices)]
    return [str(getattr(item, "spec", item)) if isinstance(item, (str, os.PathLike)) or hasattr(item, "spec")
            else type(item).__qualname__ for item in share]


def _part(share, start: int, stop: int):
    if isinstance(share, torch.utils.data.Subset):
        return torch.utils.data.Subset(share.dataset, share.indices[start:stop])
    return share[start:stop]


def save_checkpoint(path: Path, key: str, done: int, result: Statistics | None, skipped: list[str]) -> None:
    """A checkpoint: the statistics of the rank's first ``done`` images (arrays, and what no array
    holds as JSON)."""
    from cnnviz.core import output as files

    meta = {"key": key, "done": done, "skipped": skipped, "images": 0, "layers": {}}
    arrays: dict[str, np.ndarray] = {}
    if result is not None:
        meta["images"] = result.images
        for name, layer in result.layers.items():
            meta["layers"][name] = {"half_range": layer.half_range, "map_size": list(layer.map_size),
                                    "input_size": list(layer.input_size), "tolerance": layer.near_zero_tolerance,
                                    "sources": layer.exemplar_sources, "bottom_sources": layer.bottom_sources}
        arrays = {k: v for k, v in result.to_arrays().items() if (split_array_key(k) or ("", ""))[1] in _KEPT}
    arrays["meta"] = np.array(json.dumps(meta))
    files.write_npz(path, arrays)


_KEPT = ("count", "mean", "m2", "minimum", "maximum", "mean_maximum", "positive", "near_zero", "histogram",
         "exemplar_values", "exemplar_images", "exemplar_positions", "exemplar_crops",
         "bottom_values", "bottom_images", "bottom_positions", "bottom_crops")


def restore_checkpoint(path: Path, key: str) -> tuple[int, Statistics | None, list[str]]:
    """``(images of the share done, their statistics, files skipped)`` from a checkpoint of the
    same run; ``(0, None, [])`` where there is none (or one of another run, which is replaced)."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            if meta.get("key") != key:
                return 0, None, []
            arrays = {name: saved[name] for name in saved.files if name != "meta"}
    except (OSError, ValueError, KeyError):  # none yet, or unreadable (cut short): start afresh
        return 0, None, []
    if not meta["layers"]:
        return meta["done"], None, list(meta["skipped"])
    layers = {}
    for name, info in meta["layers"].items():
        fields = {field_name: arrays.get(array_key(name, field_name)) for field_name in _KEPT}
        layers[name] = LayerStatistics(
            layer=name, half_range=info["half_range"], map_size=tuple(info["map_size"]),
            input_size=tuple(info["input_size"]), near_zero_tolerance=info["tolerance"],
            exemplar_sources=info["sources"], bottom_sources=info["bottom_sources"], **fields)
    return meta["done"], Statistics(layers, meta["images"], list(meta["skipped"])), list(meta["skipped"])


def forget(folder: Path, share: Share) -> None:
    """Remove the checkpoint of this share (the first: also those of runs with another number of
    shares), and the folder once nothing is left in it."""
    from cnnviz.core import output as files

    rank, size = share.index, share.count
    spent = [folder / f"rank-{rank}-of-{size}"]
    if rank == 0:
        spent += [path for path in folder.glob("rank-*-of-*") if not path.name.endswith(f"-of-{size}")]
    for place in spent:
        checkpoint = place / "statistics.npz"
        if checkpoint.exists():
            files.remove_written(checkpoint)  # the folder goes with it (its record was all that was left)
        with contextlib.suppress(OSError):
            place.rmdir()
    with contextlib.suppress(OSError):  # the last rank to leave finds it empty
        folder.rmdir()

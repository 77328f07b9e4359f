"""Writing results: every file is written under a temporary name, then renamed into place.

An interrupted run (an exception, Ctrl-C, even SIGKILL) therefore never leaves a half-written
figure, JSON or ``.npz`` file behind: either the old file, or none, or the complete new one.

Example::

    >>> from cnnviz import output
    >>> output.write_json("out/summary.json", {"layers": 3})
    >>> output.save_figure(figure, "out/kernels_features.0.png")
"""
from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cnnviz.errors import CnnvizError


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (folders are created)."""
    return _atomic(path, lambda handle: handle.write(data))


def write_json(path: str | os.PathLike, content) -> Path:
    """Write ``content`` as indented JSON, atomically. NaN and infinities (which JSON cannot hold)
    are written as ``null``, so every file parses with any JSON reader."""
    text = json.dumps(_finite(content), indent=2, default=_jsonable, allow_nan=False) + "\n"
    return write_bytes(path, text.encode("utf-8"))


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays as a compressed ``.npz`` file, atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_bytes(path, buffer.getvalue())


def save_figure(figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return write_bytes(path, buffer.getvalue())


def save_image(pixels, path: str | os.PathLike) -> Path:
    """Save a ``3 x H x W`` (or ``1 x H x W``) tensor in [0, 1] as an 8-bit PNG, atomically, at its
    own size."""
    from PIL import Image

    import torch

    array = (pixels.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    array = array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png")
    return write_bytes(path, buffer.getvalue())


def safe_name(text: str) -> str:
    """A file-name-safe form of a layer reference: ``layer1.0.relu#2:5`` -> ``layer1.0.relu-2-5``."""
    cleaned = re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-.")
    return cleaned or "output"


def output_folder(path: str | os.PathLike) -> Path:
    """Create the output folder (and parents); a clear error when it cannot be."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise CnnvizError(f"the output path {str(path)!r} is a file; give a folder with -o")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CnnvizError(f"cannot create the output folder {str(path)!r}: {error.strerror}") from None
    return folder


STALE_PART_SECONDS = 60


def _remove_stale_parts(target: Path) -> None:
    """Remove ``.NAME.*.part`` files of ``target`` left by a run that was killed (SIGKILL, a power
    cut) at least a minute ago; a part file being written now is younger."""
    now = time.time()
    for part in target.parent.glob(f".{glob.escape(target.name)}.*.part"):
        with contextlib.suppress(OSError):
            if now - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()


def _atomic(path: str | os.PathLike, write: Callable) -> Path:
    target = Path(path).expanduser()
    output_folder(target.parent)
    _remove_stale_parts(target)
    try:
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as error:
        raise CnnvizError(f"cannot write into {str(target.parent)!r}: {error.strerror}; choose another folder with -o") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(temporary, target)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise CnnvizError(f"cannot write {str(target)!r}: {error.strerror}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target


_UMASK: list[int] = []


def _umask() -> int:
    """The process's umask (read once: reading it means setting it)."""
    if not _UMASK:
        current = os.umask(0o022)
        os.umask(current)
        _UMASK.append(current)
    return _UMASK[0]


def _finite(value):
    """``value`` with every non-finite float (also numpy's, also in arrays) replaced by ``None``."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def set_progress_total(progress, total: int) -> None:
    """Tell a progress callback how much work lies ahead, once it is known: when ``progress`` is
    the ``update`` method of a tqdm bar, the bar's total is set (other callables are left alone)."""
    bar = getattr(progress, "__self__", None)
    if bar is not None and hasattr(bar, "total") and callable(getattr(bar, "refresh", None)):
        bar.total = total
        bar.refresh()

"""Writing results: every file is written under a temporary name, then renamed into place.

An interrupted run (an exception, Ctrl-C, even SIGKILL) therefore never leaves a half-written
figure, JSON or ``.npz`` file behind: either the old file, or none, or the complete new one.

cnnviz never overwrites a file it did not write: each folder it writes into keeps a hidden record
(``.cnnviz-written``) of the files it wrote there (name, size, modification time). A file that
exists and is not in the record as cnnviz left it (the user's photo ``input.png``, their own
``stats.json``, a figure they edited) is refused with an error, and a folder listed as input skips
the files of the record, so cnnviz's outputs are never read back as images. The record is
appended to only as a plain file of its own (never through a symbolic or hard link), and each file's
line is written before the file is renamed into place: a file cnnviz placed is always one it
recorded, so a folder cnnviz left (after a full disk, a kill) is always completed by a re-run.

A command's files appear together (:func:`cnnviz.core.staging.staged`), and one run writes into a
folder at a time (:func:`cnnviz.core.lock.locked`).

Example::

    >>> import json, os, tempfile, cnnviz
    >>> from cnnviz import output
    >>> folder = tempfile.mkdtemp()
    >>> json.loads(output.write_json(os.path.join(folder, "summary.json"), {"layers": 3}).read_text())
    {'layers': 3}
    >>> figure = cnnviz.plots.kernels(cnnviz.kernels(cnnviz.load_model("builtin:photos"), "features.0"))
    >>> output.save_figure(figure, os.path.join(folder, "kernels_features.0.png")).name
    'kernels_features.0.png'
    >>> sorted(os.listdir(folder))                   # with the record of what cnnviz wrote
    ['.cnnviz-written', 'kernels_features.0.png', 'summary.json']
    >>> with open(os.path.join(folder, "stats.json"), "w") as mine:   # a file of the user's
    ...     _ = mine.write("{}")
    >>> output.write_json(os.path.join(folder, "stats.json"), {})    # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnviz.errors.CnnvizError: '...stats.json' already exists and cnnviz did not write it ...
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cnnviz.errors import CnnvizError


_capturing = threading.local()


class WriteFailed(CnnvizError):
    """A file could not be written (a full disk, a folder that became read-only): no job can go on
    without its files, so the gallery stops at it too, instead of reporting the job and going on."""


def capturing() -> bool:
    """Whether this thread is inside :func:`captured` (its files kept in memory, not written)."""
    return getattr(_capturing, "files", None) is not None


@contextlib.contextmanager
def captured():
    """Inside, the files cnnviz writes are kept in the dict this yields (absolute path -> bytes)
    instead of written: the work of a rank whose files rank 0 writes (:mod:`cnnviz.core.distributed`)."""
    before = getattr(_capturing, "files", None)
    _capturing.files = {}
    try:
        yield _capturing.files
    finally:
        _capturing.files = before


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (folders are created). A file cnnviz wrote that
    already holds exactly ``data`` is left as it is (a re-run changes nothing on disk). Inside
    :func:`captured`, kept in memory instead."""
    target = Path(path).expanduser()
    kept = getattr(_capturing, "files", None)
    if kept is not None:
        kept[str(target.absolute())] = bytes(data)
        return target
    if _holds(target, data):
        return target
    stage = next((stage for stage in reversed(stages()) if stage.covers(target)), None)
    if stage is not None:
        return stage.write(target, data)
    return _atomic(target, lambda handle: handle.write(data))


_staging = threading.local()


def stages() -> list:
    """This thread's open stages (:func:`cnnviz.core.staging.staged`), the innermost last: a file
    goes into the innermost one whose folder holds it."""
    if not hasattr(_staging, "stack"):
        _staging.stack = []
    return _staging.stack


def _holds(target: Path, data: bytes) -> bool:
    try:
        if target.stat().st_size != len(data) or not written_by_cnnviz(target):
            return False
        return target.read_bytes() == data
    except OSError:
        return False


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


def save_figure(figure, path: str | os.PathLike, dpi: int = 100, palette: bool = False) -> Path:
    """Save a matplotlib figure as PNG, atomically; with ``palette``, in 256 colours (a third of
    the bytes for pages that show many figures; text and colour maps keep their look)."""
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():  # a module named in a script the font lacks: boxes, not noise
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    if palette:
        from PIL import Image

        buffer.seek(0)
        with Image.open(buffer) as image:
            reduced = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        buffer = io.BytesIO()
        reduced.save(buffer, format="png", optimize=True)
    return write_bytes(path, buffer.getvalue())


def save_image(pixels, path: str | os.PathLike) -> Path:
    """Save a ``3 x H x W`` (or ``1 x H x W``) tensor in [0, 1] as an 8-bit PNG, atomically, at its
    own size."""
    return write_bytes(path, png_bytes(pixels))


def uint8_pixels(pixels) -> np.ndarray:
    """A ``3 x H x W`` (or ``1 x H x W``) tensor in [0, 1] as an ``H x W x 3`` (``H x W``) uint8 array."""
    import torch

    array = (pixels.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()


def png_bytes(pixels) -> bytes:
    """A ``3 x H x W`` (or ``1 x H x W``) tensor in [0, 1], or an ``H x W x 3`` (``H x W``) uint8
    array, as the bytes of an 8-bit PNG."""
    from PIL import Image

    array = pixels if isinstance(pixels, np.ndarray) else uint8_pixels(pixels)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png")
    return buffer.getvalue()


def safe_name(text: str) -> str:
    """A file-name-safe form of a layer reference: ``layer1.0.relu#2:5`` -> ``layer1.0.relu-2-5``.

    The reference grammar's characters (``: # @ ,`` and ``-``) become ``-``; a name with any other
    character a file name should not hold (a space, a slash, another script) gets a short hash of
    the whole text as well, so that ``a b`` and ``a-b``, or two names in another script, never
    share a file. A name longer than :data:`NAME_LENGTH` is cut and hashed the same way (a file
    name holds 255 bytes, and cnnviz adds prefixes and suffixes)."""
    cleaned = re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-.")
    if re.fullmatch(r"[A-Za-z0-9._:#@,-]*", text) and cleaned and len(cleaned) <= NAME_LENGTH:
        return cleaned
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[:40].strip('-.')}-{digest}" if cleaned else f"output-{digest}"


NAME_LENGTH = 100  # the longest name safe_name keeps whole


def check_writable(paths) -> None:
    """Refuse, before anything is written, when one of ``paths`` would overwrite a file cnnviz
    did not write, or when two of them are the same file (see :func:`_atomic`)."""
    seen = set()
    for path in paths:
        target = Path(path).expanduser()
        key = os.path.normcase(os.path.abspath(target))
        if key in seen:
            raise CnnvizError(f"two outputs would be written to {str(target)!r}; please report this")
        seen.add(key)
        refuse_foreign(target)


def output_folder(path: str | os.PathLike) -> Path:
    """Create the output folder (and parents); a clear error when it cannot be."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise CnnvizError(f"the output path {str(path)!r} is a file; give a folder (output=...)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CnnvizError(f"cannot create the output folder {str(path)!r}: {error.strerror}") from None
    return folder


STALE_PART_SECONDS = 60
PART_MARK = ".cnnviz-"  # a temporary file of NAME is .NAME.cnnviz-XXXXXXXX.part (mkstemp's 8 characters)
_PART = re.compile(r"\..+\.cnnviz-[a-z0-9_]{8}\.part")


def is_part_name(name: str) -> bool:
    """Whether ``name`` is the name of one of cnnviz's temporary files (``.NAME.cnnviz-XXXXXXXX.part``):
    the only ``.part`` files cnnviz ever removes (a user's own ``.stats.json.mine.part`` is not one)."""
    return _PART.fullmatch(name) is not None


def _remove_stale_parts(target: Path) -> None:
    """Remove cnnviz's temporary files of ``target`` left by a run that was killed (SIGKILL, a power
    cut) at least a minute ago; a part file being written now is younger."""
    now = time.time()
    pattern = re.compile(re.escape(f".{target.name}{PART_MARK}") + r"[a-z0-9_]{8}\.part")
    for part in target.parent.glob(f".{glob.escape(target.name)}{PART_MARK}*.part"):
        with contextlib.suppress(OSError):
            if pattern.fullmatch(part.name) and not part.is_symlink() and now - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()


RECORD = ".cnnviz-written"  # in each folder cnnviz writes to: what it wrote there
_RECORD_LOCK = threading.Lock()


def _read_record(folder: Path) -> dict[str, set[tuple[int, int]]]:
    """The files cnnviz wrote in ``folder``, each with the sizes and modification times (ns) it
    left it with. Lines are appended (one JSON list each), so writers never lose each other's
    lines; each line about a name adds a state it may have (a line is written just before its file
    is renamed into place), ``[name]`` alone means removed. A record that is a link (to a file of
    the user's) holds nothing."""
    text = _read_own(folder / RECORD)
    record: dict[str, set[tuple[int, int]]] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash, or edited: ignored
        if not isinstance(entry, list) or not entry or not isinstance(entry[0], str):
            continue
        if len(entry) == 3 and all(isinstance(value, int) for value in entry[1:]):
            record.setdefault(entry[0], set()).add((entry[1], entry[2]))
        else:
            record.pop(entry[0], None)
    return record


def _read_own(path: Path) -> str:
    """The text of one of cnnviz's own files (its record), or ``""`` when there is none, or when
    it is a link: cnnviz reads nothing through a link as its own."""
    try:
        handle = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return ""
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return ""
        with os.fdopen(handle, "rb", closefd=False) as stream:
            return stream.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    finally:
        os.close(handle)


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _append_record(folder: Path, entry: list) -> None:
    """Note one file in ``folder``'s record (see :func:`append_records`)."""
    append_records(folder, [entry])


def append_records(folder: Path, entries: list[list]) -> None:
    """Append lines to ``folder``'s record, in one write.

    Raises:
        CnnvizError: when they cannot be written (a full disk), or when the record is a link or
            not a file of its own: cnnviz never writes through it into a file of the user's.
    """
    if not entries:
        return
    text = "".join(json.dumps(entry, ensure_ascii=True) + "\n" for entry in entries)
    path = folder / RECORD
    with _RECORD_LOCK:
        _compact_if_long(folder)  # before the new lines: they name files not in place yet, which it would drop
        try:
            handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o666)
        except OSError as error:
            if path.is_symlink():
                raise CnnvizError(f"{str(path)!r} is a symbolic link, and cnnviz writes its record of the files "
                                  "it wrote only into a file of its own; remove the link, or choose another folder "
                                  "(output=...)") from None
            raise WriteFailed(f"cannot write into {str(folder)!r}: {error.strerror}; choose another folder "
                              "(output=...)") from None
        try:
            info = os.fstat(handle)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                raise CnnvizError(f"{str(path)!r} is not a file of cnnviz's own (it is linked to another file, "
                                  "or not a file), and cnnviz writes its record of the files it wrote only into one; "
                                  "move it away, or choose another folder (output=...)")
            _write_all(handle, text.encode("ascii"))
        except OSError as error:
            raise WriteFailed(f"cannot write into {str(folder)!r}: {error.strerror}; choose another folder "
                              "(output=...) (or free space and run the command again)") from None
        finally:
            os.close(handle)


RECORD_LIMIT = 256 * 1024  # a record longer than this is compacted (before the next lines are appended)


def _compact_if_long(folder: Path) -> None:
    with contextlib.suppress(OSError):
        info = os.lstat(folder / RECORD)
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_size > RECORD_LIMIT:
            _compact_record(folder)


def _write_all(handle: int, data: bytes) -> None:
    """Write all of ``data`` to a file descriptor (a short write is continued, an error raised)."""
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view):]


def _compact_record(folder: Path) -> None:
    """Rewrite a long record with one line per file still there as cnnviz left it (called only
    before new lines are appended, so no file is on its way into place)."""
    lines = [json.dumps([name, *file_state(folder / name)]) + "\n" for name, states in sorted(_read_record(folder).items())
             if file_state(folder / name) in states]
    if len(lines) * 64 > 128 * 1024:  # mostly live entries: compacting would gain little, and again each write
        return
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f"{RECORD}{PART_MARK}", suffix=".part")
    with os.fdopen(handle, "w", encoding="ascii") as stream:
        stream.writelines(lines)
    os.chmod(temporary, file_mode())  # readable by whoever could read the appended record
    os.replace(temporary, folder / RECORD)


def file_state(path: Path) -> tuple[int, int] | None:
    """A file's ``(size, modification time in ns)``, as the record keeps it; ``None`` when it is not there."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns)


def written_by_cnnviz(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file cnnviz wrote and nobody changed since."""
    target = Path(path).expanduser()
    state = file_state(target)
    return state is not None and state in _read_record(target.parent).get(target.name, ())


def written_in(folder: str | os.PathLike) -> set[str]:
    """Names of the files in ``folder`` that cnnviz wrote and nobody changed since."""
    folder = Path(folder).expanduser()
    return {name for name, states in _read_record(folder).items() if file_state(folder / name) in states}


def adopt(path: str | os.PathLike) -> None:
    """Record an existing file as written by cnnviz (a gallery of a version before the record:
    its own records prove what it wrote). Nothing happens when the file does not exist."""
    target = Path(path).expanduser()
    state = file_state(target)
    if state is not None and target.is_file():
        _append_record(target.parent, [target.name, *state])


def remove_written(path: str | os.PathLike) -> bool:
    """Delete ``path`` if cnnviz wrote it and nobody changed it since (else leave it); True when
    it was removed. A folder left holding only its record loses the record too."""
    target = Path(path).expanduser()
    if not written_by_cnnviz(target):
        return False
    try:
        target.unlink()
    except OSError:
        return False
    _append_record(target.parent, [target.name])
    if not written_in(target.parent):
        with contextlib.suppress(OSError):
            if all(entry.name == RECORD for entry in target.parent.iterdir()):
                (target.parent / RECORD).unlink()
    return True


def refuse_foreign(target: Path) -> None:
    """Raise :class:`CnnvizError` when writing ``target`` would replace a file (or a folder) cnnviz
    did not write."""
    try:
        _refuse_foreign_file(target)
    except OSError as error:
        raise CnnvizError(f"cannot check {str(target)!r}: {error.strerror}; choose another folder (output=...)") from None


def _refuse_foreign_file(target: Path) -> None:
    if target.is_dir():
        raise CnnvizError(f"cannot write {str(target)!r}: a folder of that name is in the way; choose another folder (output=...)")
    if (target.exists() or target.is_symlink()) and not written_by_cnnviz(target):
        raise CnnvizError(
            f"{str(target)!r} already exists and cnnviz did not write it (cnnviz never overwrites "
            "such a file); choose another output folder (output=...), or move the file away (one written "
            "by a cnnviz older than its record of what it wrote, .cnnviz-written, can be deleted)"
        )


def _atomic(path: str | os.PathLike, write: Callable) -> Path:
    target = Path(path).expanduser()
    output_folder(target.parent)
    refuse_foreign(target)
    _remove_stale_parts(target)
    try:
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}{PART_MARK}", suffix=".part")
    except OSError as error:
        raise WriteFailed(f"cannot write into {str(target.parent)!r}: {error.strerror}; choose another folder (output=...)") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        place(Path(temporary), target)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise WriteFailed(f"cannot write {str(target)!r}: {error.strerror}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target


def place(temporary: Path, target: Path) -> None:
    """Rename a complete temporary file into place, noted in the record first (a rename keeps the
    file's size and modification time): a file cnnviz places is always one it recorded, even
    when the disk is full or the process is killed in between."""
    os.chmod(temporary, file_mode())  # mkstemp makes 0600; give what open() would
    append_records(target.parent, [[target.name, *file_state(temporary)]])
    os.replace(temporary, target)
    state = file_state(target)
    if state is not None and state not in _read_record(target.parent).get(target.name, ()):
        append_records(target.parent, [[target.name, *state]])  # a file system that changed the time


_UMASK: list[int] = []


def file_mode() -> int:
    """The mode ``open()`` gives a new file in this process (``0o666`` less the umask): what a
    temporary file made by ``mkstemp`` (``0o600``) is given before it takes its place."""
    return 0o666 & ~_umask()


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

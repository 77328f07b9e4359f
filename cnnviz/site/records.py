"""A gallery's memory between runs: job keys (model, images, settings), records, and the files
only the gallery wrote (the only files it ever removes)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from cnnviz.core import output as files
from cnnviz.errors import CnnvizError


RECORDS = ".cnnviz"  # the folder of job records inside the gallery


def file_stem(text: str) -> str:
    """A short, readable file name for any text (an image path, a job), unique through a hash of
    the whole text: names that differ only in characters a file name cannot hold stay apart."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    readable = safe(Path(text).name if ("/" in text or os.sep in text) else text)[:40].strip("-.")
    return f"{readable}-{digest}" if readable else digest


def safe(text: str) -> str:
    return files.safe_name(text).replace(":", "_")


SHARED_FIGURE_FOLDERS = ("statistics", "attributions", "classes")  # figures/NAME not of one layer


def layer_stem(layer: str) -> str:
    """The folder and page name of a layer: the name itself when it is plain lower-case
    (``features.3``, ``layer1.0.conv1``), else a readable part and a hash of the whole name, so
    that ``a-b`` and ``a b``, ``Conv`` and ``conv`` (on a case-insensitive disk) or two names
    in scripts a file name cannot hold never share figures; nor does a layer named like the
    gallery's own figure folders (``statistics``, ``attributions``, ``classes``)."""
    if re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)*(#[0-9]+)?", layer) and layer not in SHARED_FIGURE_FOLDERS:
        return layer.replace("#", "-")  # a module's second call act#2: act-2 (a name with '-' is hashed)
    return file_stem(layer.replace("/", "_").replace(os.sep, "_"))


def display_name(spec: str) -> str:
    """How a page names an image: a file by its name (a gallery is often published, and the
    folders of the machine that made it are nobody's business), a sample by its spec."""
    path = Path(spec).expanduser()
    return path.name if path.is_file() else spec


def read_record(path: Path) -> dict | None:
    """A job's record, or None when there is none or it is not one (unreadable, edited by hand)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def recorded_files(record: dict) -> set[str]:
    """The files a record says its job wrote (relative to the gallery)."""
    listed = record.get("files")
    return {path for path in listed if isinstance(path, str)} if isinstance(listed, list) else set()


GALLERY_FOLDERS = ("figures", "thumbs", "data", "units", RECORDS)  # what a gallery writes below its top level


def remove_partial_files(folder: Path) -> None:
    """Temporary files of a run that was killed while writing them (cnnviz's own names alone,
    ``.NAME.cnnviz-XXXXXXXX.part``: :func:`cnnviz.core.output.is_part_name`), only where a gallery
    writes: its top level and its own folders, never elsewhere in a folder that the user also keeps
    other things in."""
    candidates = list(folder.glob(".*.part"))
    for name in GALLERY_FOLDERS:
        candidates += (folder / name).rglob(".*.part") if (folder / name).is_dir() else []
    for partial in candidates:
        if not files.is_part_name(partial.name) or partial.is_symlink():
            continue  # a user's own .part file
        try:
            partial.unlink()
        except OSError:
            pass


def check_folders_writable(folder: Path) -> None:
    """Refuse, before any work, a gallery whose folder or whose own subfolders of an earlier run
    cannot take new files (read-only, immutable): a file is created and removed in each."""
    import tempfile

    folders = [folder] + [path for name in GALLERY_FOLDERS if (folder / name).is_dir() and not (folder / name).is_symlink()
                          for path in [folder / name, *(p for p in (folder / name).rglob("*") if p.is_dir() and not p.is_symlink())]]
    for path in folders:
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as error:
            raise CnnvizError(f"cannot write into {str(path)!r}: {error.strerror}; make it writable, or choose "
                              "another folder (output=...)") from None


def remove_written(folder: Path, paths) -> None:
    """Delete files an earlier run of the gallery wrote (paths relative to the gallery, inside
    its own folders), and the folders that leaves empty."""
    root = folder.resolve()
    for relative in sorted(paths):
        path = (folder / relative).resolve()
        if relative.split("/")[0] not in GALLERY_FOLDERS or root not in path.parents:
            continue  # a record names only what the gallery wrote; anything else is left alone
        if not files.remove_written(path):
            continue  # changed or replaced since the gallery wrote it: the user's now
        parent = path.parent
        try:
            while parent != root and _only_a_spent_record(parent):
                (parent / files.RECORD).unlink(missing_ok=True)
                parent.rmdir()
                parent = parent.parent
        except OSError:
            pass


def _only_a_spent_record(folder: Path) -> bool:
    """Whether ``folder`` is empty but for a record of written files none of which is left (a
    folder whose subfolders went after its own files)."""
    entries = list(folder.iterdir())
    return not entries or ([entry.name for entry in entries] == [files.RECORD] and not files.written_in(folder))


def images_key(sources: list[str]) -> str:
    """The images' identity: sample names, and each file's path, size and modification time."""
    parts = []
    for spec in sources:
        path = Path(spec).expanduser()
        if path.is_file():
            info = path.stat()
            parts.append([spec, info.st_size, info.st_mtime_ns])
        else:
            parts.append([spec])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def adopt_older_gallery(folder: Path) -> None:
    """A gallery written before cnnviz kept its record of written files (``.cnnviz-written``):
    its job records (``.cnnviz/``) prove it is one, so its pages, manifest and the files its
    records list are taken into the record, and it is updated as before."""
    if not (folder / RECORDS).is_dir() or (folder / files.RECORD).exists():
        return
    try:
        json.loads((folder / "manifest.json").read_text())["cnnviz"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    try:  # the layer (and concepts) pages are those its index links to (a user's own page.html stays theirs)
        linked = set(re.findall(r'href="((?:layer|concepts)-[^"/#]+\.html)"',
                                (folder / "index.html").read_text(errors="replace")))
    except OSError:
        linked = set()
    units = set()
    for page in sorted(linked | {"attributions.html"}):  # and the unit and attributions pages they link to
        try:
            units |= set(re.findall(r'href="(units/[^"/]+/\d+\.html|attributions-\d+\.html)"',
                                    (folder / page).read_text(errors="replace")))
        except OSError:
            continue
    for name in ("index.html", "manifest.json", "style.css", "attributions.html", "classes.html", *sorted(linked),
                 *sorted(units)):
        files.adopt(folder / name)
    root = folder.resolve()
    for record_path in (folder / RECORDS).glob("*.json"):
        files.adopt(record_path)
        for relative in recorded_files(read_record(record_path) or {}):
            path = (folder / relative).resolve()
            if relative.split("/")[0] in ("figures", "thumbs", "data") and root in path.parents:
                files.adopt(folder / relative)

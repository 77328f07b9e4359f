"""A command's files appear together or not at all.

Inside :func:`staged`, every file cnnviz writes under the folder goes first into a hidden staging
folder inside it (``.cnnviz-staging-XXXXXXXX``, on the same disk, so that moving is renaming).
When everything was written, the move is committed in three steps:

1. each file's line is appended to its folder's record of written files (``.cnnviz-written``);
2. the list of moves (``moves.json``) is written into the staging folder: the commit point;
3. each staged file is renamed onto its target, and the staging folder removed.

A failure before the commit point (a full disk, an exception, Ctrl-C) removes the staging folder:
the folder holds the previous run's files as they were. A kill before it leaves the staging
folder, which the next run into the folder removes. A kill after it (during the renames, a few
milliseconds) leaves the list, and the next cnnviz run into the folder finishes the moves before
it does anything else (:func:`recover`, called by :func:`writing_into` as it takes the folder's lock): the folder then
holds the new result whole. Renames need no space, so a full disk cannot stop step 3.

Example::

    >>> import os, tempfile
    >>> from cnnviz.core import output, staging
    >>> folder = tempfile.mkdtemp()
    >>> with staging.staged(folder):
    ...     _ = output.write_json(os.path.join(folder, "a.json"), {})
    ...     _ = output.write_json(os.path.join(folder, "b.json"), {})
    ...     sorted(name for name in os.listdir(folder) if not name.startswith("."))   # neither is there yet
    []
    >>> sorted(os.listdir(folder))                # both moved in together, and recorded
    ['.cnnviz-written', 'a.json', 'b.json']
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path

from cnnviz.core import output as files
from cnnviz.core.lock import holds, locked

PREFIX = ".cnnviz-staging-"
MOVES = "moves.json"
_STAGED = re.compile(r"\d{5}\.part|moves\.json(\.part)?")  # the only names a staging folder holds


class Stage:
    """The files of one run waiting in a staging folder inside ``root``."""

    def __init__(self, root: Path):
        self.root = Path(os.path.abspath(root))
        self.folder: Path | None = None
        self.moves: dict[Path, Path] = {}  # target -> its staged file
        self.committed = False  # past the commit point: the moves are done, now or by the next run

    def covers(self, target: Path) -> bool:
        """Whether ``target`` lies inside the root (other files are written as usual)."""
        return Path(os.path.abspath(target)).is_relative_to(self.root)

    def write(self, target: Path, data: bytes) -> Path:
        """Stage ``data`` for ``target`` (a file in the way is refused now, as it would be later)."""
        target = Path(os.path.abspath(target))
        files.refuse_foreign(target)
        if self.folder is None:
            try:
                self.folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=self.root))
            except OSError as error:
                raise files.WriteFailed(f"cannot write into {str(self.root)!r}: {error.strerror}; choose another "
                                  "folder (output=...)") from None
        staged = self.moves.get(target) or self.folder / f"{len(self.moves):05d}.part"
        try:
            with open(staged, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(staged, files.file_mode())
        except OSError as error:
            raise files.WriteFailed(f"cannot write {str(target)!r}: {error.strerror}") from None
        self.moves[target] = staged
        return target

    def commit(self) -> None:
        """Move every staged file into place (see the module's steps)."""
        if self.folder is None:
            return
        by_folder: dict[Path, list] = {}
        for target, staged in self.moves.items():
            files.output_folder(target.parent)
            files.refuse_foreign(target)  # a file that appeared meanwhile stays the user's
            by_folder.setdefault(target.parent, []).append([target.name, *files.file_state(staged)])
        try:
            for folder, entries in by_folder.items():
                files.append_records(folder, entries)
            moves = [[staged.name, target.relative_to(self.root).as_posix()] for target, staged in self.moves.items()]
            _write_moves(self.folder, moves)
        except OSError as error:
            raise files.WriteFailed(f"cannot write into {str(self.root)!r}: {error.strerror}; choose another "
                                    "folder (output=...), or free space and run again") from None
        self.committed = True
        _finish(self.root, self.folder, moves)

    def discard(self) -> None:
        """After an error: before the commit point the staged files go; after it (Ctrl-C during
        the renames) the renames are finished, or left to the next run when they cannot be."""
        if self.folder is None:
            return
        if not self.committed:
            _remove(self.folder)
            return
        with contextlib.suppress(Exception):
            _finish(self.root, self.folder, _read_moves(self.folder) or [])


@contextlib.contextmanager
def writing_into(folder: str | os.PathLike, what: str | None = None, group: bool = False):
    """Hold ``folder``'s lock (:func:`cnnviz.core.lock.locked`, re-entrant; with ``group``, rank
    0's for a whole process group) and, on taking it, finish or remove what a killed run left
    there (:func:`recover`): how every command and writer enters its output folder."""
    from cnnviz.core.executor import Executor, executor

    first = not holds(folder)  # differs between ranks (only rank 0 holds it): decides, never skips a collective
    with locked(folder, what, group=group):
        run = executor()
        due = first and run.first_process and not files.capturing()
        # with group every process enters, and the first's error stops every process
        (run if group else Executor()).first("staging/recover", lambda: recover(folder) if due else None)
        yield Path(folder).expanduser()


@contextlib.contextmanager
def staged(folder: str | os.PathLike):
    """Inside, the files written under ``folder`` are staged; they move into place together when
    the block ends without an error, and are dropped when it raises. Holds the folder's lock
    (:func:`cnnviz.core.lock.locked`). Nested, the outermost block commits. Inside
    :func:`cnnviz.core.output.captured` (a rank whose files rank 0 writes) nothing is staged."""
    if files.capturing():
        yield
        return
    stack = files.stages()
    if any(stage.covers(Path(folder).expanduser()) for stage in stack):
        yield  # inside a larger stage: its files go with it
        return
    with writing_into(folder):
        stage = Stage(Path(folder).expanduser())
        stack.append(stage)
        try:
            yield
            stack.remove(stage)
            stage.commit()
        except BaseException:
            if stage in stack:
                stack.remove(stage)
            stage.discard()
            raise


def recover(root: str | os.PathLike) -> None:
    """Complete or remove what killed runs left in ``root``: a staging folder with its list of
    moves is finished (its run had written everything), one without is removed. Call it only
    holding the folder's lock."""
    root = Path(os.path.abspath(Path(root).expanduser()))
    try:
        leftovers = [entry for entry in root.iterdir() if entry.name.startswith(PREFIX)]
    except OSError:
        return
    for folder in leftovers:
        if folder.is_symlink() or not folder.is_dir():
            continue
        moves = [move for move in _read_moves(folder) or [] if _may_move(root, folder, *move)]
        entries: dict[Path, list] = {}
        for staged, relative in moves:
            target = root / relative
            entries.setdefault(target.parent, []).append([target.name, *files.file_state(folder / staged)])
        for parent, lines in entries.items():
            files.append_records(parent, lines)  # written before; again, in case the files changed since
        _finish(root, folder, moves, strict=False)


def _may_move(root: Path, folder: Path, staged: str, relative: str) -> bool:
    """Whether a move of a list found in a staging folder is one cnnviz could have made: a plain
    file of the staging folder onto a file name inside the root (through no link, not one of
    cnnviz's own bookkeeping names), where no file is or one cnnviz wrote. A list planted by
    someone else moves nothing else."""
    source, target = folder / staged, root / relative
    try:
        if not stat.S_ISREG(os.lstat(source).st_mode):
            return False
    except OSError:
        return False  # moved before the kill
    parent = Path(os.path.realpath(target.parent))
    if not parent.is_relative_to(os.path.realpath(root)) or any(part.startswith(".cnnviz") for part in Path(relative).parts):
        return False
    if target.is_symlink() or target.is_dir():
        return False
    return not target.exists() or files.written_by_cnnviz(target)


def _write_moves(folder: Path, moves: list) -> None:
    temporary = folder / f"{MOVES}.part"
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(moves, stream)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, folder / MOVES)
    _sync_folder(folder)


def _read_moves(folder: Path) -> list | None:
    try:
        moves = json.loads((folder / MOVES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(moves, list):
        return None
    return [move for move in moves if isinstance(move, list) and len(move) == 2 and all(isinstance(m, str) for m in move)
            and _STAGED.fullmatch(move[0]) and ".." not in Path(move[1]).parts and not Path(move[1]).is_absolute()]


def _finish(root: Path, folder: Path, moves: list, strict: bool = True) -> None:
    """The renames (step 3), then the staging folder goes. A rename that fails is an error (the
    list stays for the next run), or, for a list a killed run left (not ``strict``), skipped: a
    folder is never stuck on a move that cannot be made."""
    for staged, relative in moves:
        source, target = folder / staged, root / relative
        if not source.is_file():
            continue  # moved before a kill
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        except OSError as error:
            if strict:
                raise files.WriteFailed(f"cannot move {str(target)!r} into place: {error.strerror}; run the "
                                        "command again to finish it") from None
    _sync_folder(root)
    _remove(folder)


def _remove(folder: Path) -> None:
    """Remove a staging folder: only the files cnnviz puts there (anything else keeps it)."""
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if _STAGED.fullmatch(entry.name) and (entry.is_symlink() or entry.is_file()):
                entry.unlink()  # a link itself, never what it points to
        folder.rmdir()


def _sync_folder(folder: Path) -> None:
    """Make renames in ``folder`` durable (where the platform can)."""
    with contextlib.suppress(OSError, AttributeError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


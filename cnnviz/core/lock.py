"""One cnnviz run per output folder at a time: an advisory lock on ``FOLDER/.cnnviz-lock``.

Two runs writing into one folder at once would leave figures of one beside the data of the other,
so the second is refused in one line that names the first (its process, command and start time)
and the fix. The lock is the operating system's (``flock``), tied to the open file: it goes with
the process however it ends (an exception, Ctrl-C, SIGKILL, a power cut), so a lock of a dead
process is never in the way; the file itself is removed when the run ends normally, and one left
by a killed run is simply taken over. Under ``torchrun`` rank 0 holds the lock for the whole
group (its files are the only ones written). Inside one process the lock is re-entrant: the
command holds it from the start, the writes inside take it again.

:func:`cnnviz.core.staging.writing_into` takes the lock and then completes or removes what a
killed run left in the folder, so a re-run finds it whole: the commands use that.

Example::

    >>> import os, tempfile
    >>> from cnnviz.core.lock import locked
    >>> folder = tempfile.mkdtemp()
    >>> with locked(folder, "cnnviz stats"):        # nobody else writes into the folder meanwhile
    ...     os.listdir(folder)
    ['.cnnviz-lock']
    >>> os.listdir(folder)                           # the lock file goes when the block ends
    []
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import sys
import threading
import time
from pathlib import Path

from cnnviz.errors import CnnvizError

try:
    import fcntl
except ImportError:  # Windows: no flock; msvcrt's lock of the file's first byte instead
    fcntl = None

LOCK = ".cnnviz-lock"
_MARK = "cnnviz-lock"  # the key of the lock file's JSON: a file of that name without it is not cnnviz's


class FolderBusy(CnnvizError):
    """Another cnnviz run is writing into the folder."""


_held: dict[str, list] = {}  # real path of a folder -> [its open lock file, times entered, whether it existed]
_guard = threading.Lock()


@contextlib.contextmanager
def locked(folder: str | os.PathLike, what: str | None = None, group: bool = False):
    """Hold ``folder``'s lock inside (the folder is created). ``what`` names the run for whoever
    is refused (``"cnnviz stats"``; default the command line).

    With ``group``, under a process group (torchrun) every rank must enter together: rank 0 takes
    the lock for all, and every rank raises when it could not (the gallery). Without, each process
    that enters takes it (a rank that writes alone: rank 0's report).

    Raises:
        FolderBusy: another run holds it (one line: its process id, command and start).
        CnnvizError: the folder cannot be written (read-only, full): before any work is done.
    """
    from cnnviz.core.executor import Executor, executor

    keys: list[str] = []
    try:  # with group, the first process takes it for all; its error stops every process
        (executor() if group else Executor()).first("lock", lambda: keys.append(_enter(folder, what)))
        yield Path(folder).expanduser()
    finally:  # also when another rank failed after this one took the lock
        for key in keys:
            _leave(key)


def holds(folder: str | os.PathLike) -> bool:
    """Whether this process holds ``folder``'s lock."""
    with _guard:
        return os.path.realpath(Path(folder).expanduser()) in _held


def _enter(folder: str | os.PathLike, what: str | None) -> str:
    from cnnviz.core import output

    existed = Path(folder).expanduser().is_dir()
    path = output.output_folder(folder)
    key = os.path.realpath(path)
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return key
        try:
            handle = _take(path, what)
        except BaseException:
            if not existed:
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise
        _held[key] = [handle, 1, existed]
    return key


def _leave(key: str) -> None:
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[key]
    handle = entry[0]
    with contextlib.suppress(OSError):
        if _same_file(handle, Path(key) / LOCK):
            os.unlink(Path(key) / LOCK)  # removed while still held: nobody can take a lock on a file going away
    with contextlib.suppress(OSError):
        os.close(handle)
    if not entry[2]:  # a folder the run created and left empty (it failed before writing): gone again
        with contextlib.suppress(OSError):
            os.rmdir(key)


def _take(folder: Path, what: str | None) -> int:
    """Open and lock ``folder/.cnnviz-lock``, and write who holds it; an error when it is held."""
    path = folder / LOCK
    for _ in range(20):  # the file can be removed by the holder between our open and our lock
        handle = _open(path, folder)
        taken = False
        try:
            if not _try_lock(handle):
                raise FolderBusy(f"another cnnviz run{_holder(handle)} is writing into {str(folder)!r}; wait for it "
                                 "to end, or choose another folder (output=...)")
            if not _same_file(handle, path):
                os.close(handle)
                continue  # the holder removed it as it ended: take the new one
            if not _ours(handle):
                raise CnnvizError(f"{str(path)!r} is not cnnviz's lock file; move it away, or choose another "
                                  "folder (output=...)")
            taken = True
            os.ftruncate(handle, 0)
            os.lseek(handle, 0, os.SEEK_SET)
            os.write(handle, json.dumps({_MARK: 1, "pid": os.getpid(), "host": socket.gethostname(),
                                         "command": what or _command_line(), "since": time.time()}).encode())
            return handle
        except OSError as error:
            if taken:  # ours, and it could not say who holds it (a full disk): gone again
                with contextlib.suppress(OSError):
                    os.unlink(path)
            os.close(handle)
            raise CnnvizError(f"cannot write into {str(folder)!r}: {error.strerror}; choose another folder "
                              "(output=...)") from None
        except BaseException:
            os.close(handle)
            raise
    raise FolderBusy(f"cnnviz runs keep starting in {str(folder)!r}; wait for them to end, or choose another "
                     "folder (output=...)")


def _open(path: Path, folder: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        handle = os.open(path, flags, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP or path.is_symlink():
            raise CnnvizError(f"{str(path)!r} is a symbolic link, and cnnviz locks a folder only with a file of "
                              "its own; remove the link, or choose another folder (output=...)") from None
        raise CnnvizError(f"cannot write into {str(folder)!r}: {error.strerror}; choose another folder "
                          "(output=...)") from None
    info = os.fstat(handle)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(handle)
        raise CnnvizError(f"{str(path)!r} is not cnnviz's lock file (it is linked to another file, or not a file); "
                          "move it away, or choose another folder (output=...)")
    return handle


def _try_lock(handle: int) -> bool:
    if fcntl is None:
        import msvcrt

        try:
            msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            return True  # a file system without locks (some network ones): cnnviz runs unguarded there
        raise
    return True


def _same_file(handle: int, path: Path) -> bool:
    try:
        mine, there = os.fstat(handle), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def _ours(handle: int) -> bool:
    """An empty lock file (or one a power cut left as zero bytes), or one cnnviz wrote (a user's own
    file of that name is left alone)."""
    content = _content(handle)
    return content.strip(b"\x00 \t\r\n") == b"" or _parsed(content) is not None


def _content(handle: int) -> bytes:
    try:
        os.lseek(handle, 0, os.SEEK_SET)
        return os.read(handle, 4096)
    except OSError:
        return b""


def _parsed(content: bytes) -> dict | None:
    try:
        holder = json.loads(content)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) and _MARK in holder else None


def _holder(handle: int) -> str:
    """`` (process 123, 'cnnviz stats', since 10:04:05)``: who holds the lock, as far as it says."""
    holder = _parsed(_content(handle)) or {}
    parts = []
    if isinstance(holder.get("pid"), int):
        host = holder.get("host")
        parts.append(f"process {holder['pid']}" + (f" on {host}" if host and host != socket.gethostname() else ""))
    if isinstance(holder.get("command"), str):
        parts.append(repr(holder["command"][:80]))
    if isinstance(holder.get("since"), (int, float)):
        parts.append("since " + time.strftime("%H:%M:%S", time.localtime(holder["since"])))
    return f" ({', '.join(parts)})" if parts else ""


def _command_line() -> str:
    arguments = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:2]]
    return " ".join(arguments)

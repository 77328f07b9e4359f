"""Faults at the k-th write into a folder: a full disk (``ENOSPC``) or a kill (``SIGKILL``).

The writes counted are the operating system's calls that put data into a file, or a file into
place, inside the folder: ``os.write`` and ``os.fsync`` on a file there (Python's file objects
write through ``fsync`` before cnnviz renames) and ``os.replace`` onto a path there. At the k-th,
``ENOSPC`` raises the error a full disk gives (from ``write``/``fsync``, where a full disk
reports it), and ``kill`` ends the process with SIGKILL, as a power cut or the OOM killer would.

Run as a script, it runs the ``cnnviz`` command line with a fault:
``python faults.py MODE K FOLDER -- ARGS...``; ``MODE`` ``count`` prints how many writes a run
made (on stderr: ``writes: N``).
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys


class Injector:
    """Counts the writes into ``folder`` and fails the ``k``-th (``k`` 0: never)."""

    def __init__(self, folder: str | os.PathLike, mode: str, k: int = 0):
        self.folder = os.path.realpath(folder)
        self.mode, self.k, self.count = mode, k, 0

    def _inside(self, path: str) -> bool:
        return os.path.realpath(path).startswith(self.folder + os.sep)

    def _descriptor_inside(self, handle: int) -> bool:
        try:
            return self._inside(os.readlink(f"/proc/self/fd/{handle}"))
        except OSError:
            return False

    def _hit(self, can_be_full: bool) -> None:
        self.count += 1
        if self.count != self.k:
            return
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.mode == "ENOSPC" and can_be_full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if self.mode == "ENOSPC":
            self.k += 1  # a rename needs no space: the next write fails instead

    @contextlib.contextmanager
    def active(self):
        real_write, real_fsync, real_replace = os.write, os.fsync, os.replace

        def write(handle, data):
            if self._descriptor_inside(handle):
                self._hit(True)
            return real_write(handle, data)

        def fsync(handle):
            descriptor = handle if isinstance(handle, int) else handle.fileno()
            if self._descriptor_inside(descriptor) and not os.path.isdir(f"/proc/self/fd/{descriptor}"):
                self._hit(True)
            return real_fsync(handle)

        def replace(source, target, **kwargs):
            if self._inside(os.fspath(target)):
                self._hit(False)
            return real_replace(source, target, **kwargs)

        os.write, os.fsync, os.replace = write, fsync, replace
        try:
            yield self
        finally:
            os.write, os.fsync, os.replace = real_write, real_fsync, real_replace


def main(argv: list[str]) -> None:
    mode, k, folder = argv[0], int(argv[1]), argv[2]
    arguments = argv[argv.index("--") + 1:]
    from cnnviz.cli.main import run

    injector = Injector(folder, mode if mode != "count" else "none", k)
    sys.argv = ["cnnviz", *arguments]
    try:
        with injector.active():
            run()
    finally:
        if mode == "count":
            print(f"writes: {injector.count}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Keeping freed memory for the next step of a CPU render (glibc's malloc on Linux).

A render runs the same forward and backward pass hundreds of times, and each step allocates and
frees the same tensors. By default glibc's malloc gives large freed blocks back to the operating
system (``munmap``, or trimming the top of the heap once more than twice the largest freed block
is free there) and takes them back on the next step, where every 4 KiB page costs a page fault
when it is first written. Measured on ``builtin:photos`` (8 images, 88 px, 2 CPU cores): 3,800 to
5,700 page faults per step, and 14.3 -> 9.1 ms for the bare forward-and-gradient step to
``features.5`` once the blocks stay in the process (no page faults per step at all).

Inside :func:`reuse_freed_memory`, blocks up to 1 GiB come from the heap and freed memory stays
there for the next step. On exit the free memory goes back to the system (``malloc_trim``) and
the thresholds become 32 MiB (mmap) and 64 MiB (trim): the values glibc's own adjustment reaches
in a process that has freed a tensor of 32 MiB, which it cannot go back to once they are set.
Nothing is changed when the C library is not glibc, when another allocator is preloaded
(jemalloc, tcmalloc, mimalloc), when the user tuned malloc (``MALLOC_*_`` variables or
``GLIBC_TUNABLES``), for a render on a GPU, or with ``CNNVIZ_MALLOC=default``.

Example::

    >>> from cnnviz.memory import reuse_freed_memory
    >>> with reuse_freed_memory("cpu"):
    ...     for step in range(256):
    ...         loss = model(x).mean(); loss.backward()
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from collections.abc import Iterator

import torch

# mallopt's parameter numbers (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
DURING = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: 1 << 30}
AFTER = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 64 << 20}
_USER_TUNING = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                "MALLOC_ARENA_MAX", "MALLOC_CONF", "TCMALLOC_RELEASE_RATE")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


@functools.lru_cache(maxsize=1)
def _glibc():
    """The process's glibc, when cnnviz may tune its malloc; ``None`` otherwise."""
    if not sys.platform.startswith("linux") or os.environ.get("CNNVIZ_MALLOC", "").lower() == "default":
        return None
    if any(os.environ.get(name) for name in _USER_TUNING) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return None
    if any(name in os.environ.get("LD_PRELOAD", "") for name in _OTHER_ALLOCATORS):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library the process already uses
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


def tuned() -> bool:
    """Whether :func:`reuse_freed_memory` changes anything in this process (on a CPU)."""
    return _glibc() is not None


def _set(libc, values: dict) -> None:
    for parameter, value in values.items():
        libc.mallopt(parameter, value)


@contextlib.contextmanager
def reuse_freed_memory(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block of repeated CPU steps without handing freed memory back to the system between
    them (see the module's text); does nothing for a GPU device or where malloc is not glibc's."""
    libc = _glibc() if torch.device(device).type == "cpu" else None
    if libc is None:
        yield
        return
    _depth[0] += 1
    if _depth[0] == 1:  # a block inside another one leaves the settings to the outer one
        _set(libc, DURING)
    try:
        yield
    finally:
        _depth[0] -= 1
        if _depth[0] == 0:
            libc.malloc_trim(0)
            _set(libc, AFTER)


_depth = [0]  # how many blocks are open

"""Keeping freed memory for the next step of a CPU render (glibc's malloc on Linux): an explicit
choice of whoever owns the process.

The library never applies it by itself (``cnnviz.maximize`` and ``cnnviz.dream`` leave the
allocator as they find it). The ``cnnviz`` command applies it to its own process for the whole
command; a notebook or a program of yours opts in with ``with cnnviz.reuse_freed_memory():``
around its renders.

A render runs the same forward and backward pass hundreds of times, and each step allocates and
frees the same tensors. By default glibc's malloc maps every block above its mmap threshold
(128 KiB at first; raised to the size of each mapped block that is freed, up to 32 MiB) straight
from the system and unmaps it when it is freed, and gives the top of its heap back once more than
twice that threshold is free there. The next step then takes the memory from the system again,
and every 4 KiB page costs a page fault when it is first written. Measured on ``builtin:photos``
(8 images, 88 px, 2 CPU cores): 3,800 to 5,700 page faults per step, and 14.3 -> 9.1 ms for the
bare forward-and-gradient step to ``features.5`` once the blocks stayed in the process (no page
faults per step at all).

Inside :func:`reuse_freed_memory`, blocks up to 1 GiB come from the main heap (another thread's
heap holds at most 64 MiB, so larger blocks allocated there are still mapped) and freed memory
stays there for the next step. On exit the free memory goes back to the system (``malloc_trim``)
and the thresholds are set to 32 MiB (mmap) and 64 MiB (trim), the ceiling of glibc's own
adjustment. The change is process-wide and lasting: glibc cannot be put back to adjusting its
thresholds by itself, and a value the program set with ``mallopt`` is replaced. Nothing is changed
when the C library is not glibc or the process is not 64-bit, when another allocator is preloaded
(``LD_PRELOAD`` naming jemalloc, tcmalloc or mimalloc), when malloc was tuned through the
environment (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
``MALLOC_MMAP_MAX_``, ``MALLOC_ARENA_MAX``, ``MALLOC_CONF``, ``TCMALLOC_RELEASE_RATE`` or
``glibc.malloc`` in ``GLIBC_TUNABLES``), for a render on a GPU, or while ``CNNVIZ_MALLOC=default``.

Forward-only work that runs the network many times on different inputs (Score-CAM's masked
images, faithfulness's perturbed ones) needs no opt-in and changes nothing of the process:
:class:`PassSizes` splits each batch so that no tensor of a pass is larger than 24 MiB, under the
threshold glibc climbs to, and halves the passes while they still page-fault (a pass whose
tensors together pass the trim threshold is handed back all the same), so that the blocks stay in
the heap for the next pass. Measured (torchvision's MobileNetV2, batch normalisations folded,
224 px, channels-last, 2 CPU cores): 13.3 ms an image at 32 images a pass (3,600 page faults an
image), 6.9-8.0 ms at 4 or 5 (none); resnet18: 24.2 ms at 32, 22.6-23.1 ms at 7 or 8. A memory-bound
model (two convolutions, 32 maps of 112 x 112 px): 5.8 ms an image at 64 a pass, 1.3 at 10.

Example::

    >>> import cnnviz
    >>> loaded = cnnviz.load_model("builtin:photos")
    >>> with cnnviz.reuse_freed_memory():          # this process's renders keep their memory
    ...     rendering = cnnviz.maximize(loaded, "features.5", channels="0-3", steps=8, size=32, reference=None)
    >>> rendering.images.shape
    torch.Size([4, 3, 32, 32])
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import sys
import threading
from collections.abc import Iterator

import torch

from cnnviz.core.model import unwrap
from cnnviz.errors import CnnvizError
from cnnviz.core.probe import every_output_shape

# mallopt's parameter numbers (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: during a block: the mmap thresholds to try, in order (glibc before 2.35 refuses more than 32 MiB)
DURING_MMAP = (1 << 30, 32 << 20)
DURING_TRIM = 1 << 30
AFTER = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 64 << 20}
USER_TUNING = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
               "MALLOC_ARENA_MAX", "MALLOC_CONF", "TCMALLOC_RELEASE_RATE")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

#: on a CPU with glibc's malloc, the largest tensor a pass of :class:`PassSizes` should allocate at first
PASS_BLOCK = 24 << 20
PAGE = 4096
#: passes whose largest output is smaller keep their size (their page faults come from elsewhere)
SMALL_PASS = 4 << 20

_lock = threading.Lock()
_depth = 0  # how many blocks are open, in all threads


@functools.lru_cache(maxsize=1)
def _glibc():
    """The process's glibc, when cnnviz may tune its malloc; ``None`` otherwise. (The environment
    that glibc itself reads is read at start-up, so this is decided once.)"""
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    if any(os.environ.get(name) for name in USER_TUNING) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
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
    """Whether :func:`reuse_freed_memory` changes anything in this process now (on a CPU)."""
    return _glibc() is not None and os.environ.get("CNNVIZ_MALLOC", "").lower() != "default"


def active() -> bool:
    """Whether a :func:`reuse_freed_memory` block is open now (in any thread)."""
    return _depth > 0


def _keep(libc) -> bool:
    """Raise the thresholds for a block; ``False`` (and nothing set) when glibc refuses."""
    if not any(libc.mallopt(_M_MMAP_THRESHOLD, value) for value in DURING_MMAP):
        return False
    libc.mallopt(_M_TRIM_THRESHOLD, DURING_TRIM)
    return True


@contextlib.contextmanager
def reuse_freed_memory(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block of repeated CPU steps without handing freed memory back to the system between
    them (see the module's text); does nothing for a GPU device or where malloc is not glibc's.
    Blocks may nest, also in several threads: the outermost one sets and restores.

    The setting is process-wide while the block is open and, after it, malloc's thresholds stay at
    32/64 MiB (see the module's text): use it where you own the process (the ``cnnviz`` command
    does, for its whole run)."""
    global _depth
    if torch.device(device).type != "cpu" or not tuned():
        yield
        return
    libc = _glibc()
    with _lock:
        _depth += 1
        kept = _depth > 1 or _keep(libc)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and kept:
                libc.malloc_trim(0)
                for parameter, value in AFTER.items():
                    libc.mallopt(parameter, value)


class PassSizes:
    """How many inputs each of many forward-only passes to ``layers`` takes (Score-CAM's masked
    images, faithfulness's perturbed ones): ``batch_size``, except on a CPU with glibc's malloc
    outside :func:`reuse_freed_memory`. There the first guess keeps every module's output under
    :data:`PASS_BLOCK` (measured on ``sample``, one ``1 x C x H x W`` input); then, while a pass
    still page-faults in more than a quarter of its largest output (malloc gave the blocks back),
    the size is halved, down to one or to a largest output of 4 MiB. See the module's text.
    TorchScript models (whose modules cannot be hooked) and models that refuse one input run
    ``batch_size`` at a time. Make it before opening the probe of the passes (it runs one of its own).

    Example::

        sizes = PassSizes(model, ["logits"], inputs[:1], batch_size)
        for part in sizes.slices(len(inputs)):
            ...  # one pass on inputs[part]
    """

    def __init__(self, model, layers, sample: torch.Tensor, batch_size: int) -> None:
        self.size, self.largest = batch_size, 0  # bytes of the largest output, per input
        if sample.device.type != "cpu" or not tuned() or active() or _faults() is None:
            return
        module, _ = unwrap(model)
        if isinstance(module, torch.jit.ScriptModule):
            return
        try:
            shapes = every_output_shape(model, layers, sample[:1])
        except (CnnvizError, RuntimeError):  # only a speed-up: a model this pass cannot take runs as asked
            return
        sizes = [math.prod(shape) for calls in shapes.values() for shape in calls if shape]
        self.largest = max(sizes, default=0) * sample.element_size()
        self.size = max(1, min(batch_size, PASS_BLOCK // max(self.largest, 1)))

    def slices(self, count: int) -> Iterator[slice]:
        """Consecutive slices of ``range(count)``, one per pass; the caller runs each pass before
        asking for the next slice."""
        start, judged = 0, False  # the first pass at a size takes its memory from the system anyway
        while start < count:
            stop = min(count, start + self.size)
            before = _faults() if self.largest else None
            yield slice(start, stop)
            if before is not None:
                pages = (_faults() - before) / (stop - start)
                if judged and pages > self.largest / 4 / PAGE and self.size * self.largest > SMALL_PASS:
                    self.size, judged = max(1, self.size // 2), False
                else:
                    judged = True
            start = stop


def _faults() -> int | None:
    """This process's minor page faults so far (``None`` where the platform does not count them)."""
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes of memory free for new tensors on ``device``: a GPU's free memory, or on the CPU
    what Linux reports as available (``MemAvailable``), bounded by the process's cgroup limit;
    ``None`` when it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        try:  # free on the device, and what PyTorch's caching allocator holds unused
            return int(torch.cuda.mem_get_info(device)[0]) + int(torch.cuda.memory_reserved(device)) \
                - int(torch.cuda.memory_allocated(device))
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as limit_file:
            limit = limit_file.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as current_file:
            current = int(current_file.read().strip())
        with contextlib.suppress(OSError, ValueError), open("/sys/fs/cgroup/memory.stat", encoding="ascii") as stat_file:
            for line in stat_file:  # page cache the kernel gives back under pressure is not in use
                if line.startswith("inactive_file "):
                    current -= int(line.split()[1])
                    break
        if limit != "max":
            left = int(limit) - current
            available = left if available is None else min(available, left)
    except (OSError, ValueError):
        pass
    return available

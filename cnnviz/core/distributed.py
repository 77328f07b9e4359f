"""Work shared between the processes of a ``torch.distributed`` group (started by ``torchrun``).

cnnviz does not schedule anything itself: the processes are torchrun's (or SLURM's, or
Kubernetes'), and the group is torch's (gloo on CPUs, NCCL on GPUs). A function that shards its
work (:func:`cnnviz.statistics` its images, :func:`cnnviz.maximize` its units) asks
:func:`rank_and_size` where it runs; in one process, in no group at all, or inside :func:`alone`
(a gallery job one rank was dealt), that is ``(0, 1)`` and nothing changes. Each rank takes a
contiguous part of the work (:func:`share`: whole batches where it can), so that merging the parts
in rank order is the same as one pass in order; :func:`together` hands every rank the results of
all, or one line naming the rank that failed; :func:`gathered` hands them to rank 0 alone, and
:func:`from_first` hands rank 0's to all. :class:`SharedProgress` shows the whole group's progress
on rank 0.

Every exchange is named by its caller (``together("statistics/parts", work)``) and counted per
name: the ranks send the name and count with their results, so ranks that are out of step (a cnnviz
call that only some ranks made) fail on every rank with one line naming where each rank is,
instead of matching one call's results with another's.

The command line joins a group when torchrun started it (``WORLD_SIZE`` above 1 in its
environment, :func:`launched`); a Python caller inside a group it made itself gets the same sharding.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from cnnviz.errors import CnnvizError

T = TypeVar("T")

#: the commands that share their work between the processes torchrun starts
SHARDED_COMMANDS = ("stats", "concepts", "maximize", "gallery")

_local = threading.local()
_exchanges: dict[str, int] = {}  # per name: how many exchanges of that name this process has made
#: how long rank 0 waits for the others' progress without news before it just waits for their results
QUIET_SECONDS = 120.0


class RankFailed(CnnvizError):
    """A rank of the group failed; every rank raises it, and the command line prints it once (rank 0)."""


class OutOfStep(RankFailed):
    """The ranks are not at the same exchange (a cnnviz call made on some ranks only): raised on
    every rank, never taken for one job's failure. The exchange counts start afresh after it, so
    that a group whose ranks all catch it can go on with calls they all make."""


def _step(name: str) -> str:
    """``name#N``: this process's N-th exchange of that name (every rank counts its own)."""
    if not name or not isinstance(name, str):
        raise ValueError("every exchange between ranks is named")
    _exchanges[name] = _exchanges.get(name, 0) + 1
    return f"{name}#{_exchanges[name]}"


def _check_in_step(steps: list[str]) -> None:
    """:class:`OutOfStep`, naming where each rank is, when the ranks are not at the same exchange
    (the counts then start afresh)."""
    if len(set(steps)) <= 1:
        return
    _exchanges.clear()
    where = ", ".join(f"rank {rank} at {step}" for rank, step in enumerate(steps))
    raise OutOfStep(f"the ranks are out of step ({where}): every rank must make the same cnnviz calls in the same "
                    "order (a call made on some ranks only, such as under 'if rank == 0', cannot share its work)")


def rank_and_size() -> tuple[int, int]:
    """This process's rank and the group's size; ``(0, 1)`` outside a process group, and inside
    :func:`alone` (work one rank does by itself)."""
    if getattr(_local, "alone", False):
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def alone():
    """Inside, this rank works by itself: :func:`rank_and_size` is ``(0, 1)``, so a cnnviz call
    does its whole work here and waits for no other rank (a gallery job that one rank was given)."""
    before = getattr(_local, "alone", False)
    _local.alone = True
    try:
        yield
    finally:
        _local.alone = before


def part(count: int, rank: int, size: int) -> range:
    """The contiguous part of ``range(count)`` that rank ``rank`` of ``size`` takes (ranks beyond
    the work get an empty part)."""
    return range(count * rank // size, count * (rank + 1) // size)


def share(count: int, rank: int, size: int, batch: int = 1) -> range:
    """Rank ``rank``'s part of ``count`` items that one process takes in batches of ``batch``:
    whole batches when there are at least as many as ranks (each rank then runs one process's
    batches, so the results are the same to the bit), else single items (every rank has some)."""
    batches = -(-count // batch)
    if batch > 1 and batches >= size:
        whole = part(batches, rank, size)
        return range(whole.start * batch, min(whole.stop * batch, count))
    return part(count, rank, size)


def together(name: str, work: Callable[[], T]) -> list[T]:
    """Run ``work`` on this rank and hand every rank all the ranks' results, in rank order.
    ``name`` names the exchange (see the module's docstring).

    Raises:
        CnnvizError: on every rank when any rank's ``work`` raised: one line naming the rank and its
            error (the lowest failing rank's; the others are counted), or the error alone when
            every rank had the same.
    """
    rank, size = rank_and_size()
    if size == 1:
        return [work()]
    step = _step(name)
    try:
        outcome = (step, True, work())
    except CnnvizError as error:
        outcome = (step, False, str(error))
    except Exception as error:  # a bug on one rank must still stop the others, not leave them waiting
        outcome = (step, False, f"{type(error).__name__}: {error}")
    _wait_showing_progress(f"cnnviz/done/{step}", rank, size)
    gathered_outcomes: list = [None] * size
    dist.all_gather_object(gathered_outcomes, outcome)
    _check_in_step([one[0] for one in gathered_outcomes])
    outcomes = [(ok, value) for _, ok, value in gathered_outcomes]
    failed = [(r, message) for r, (ok, message) in enumerate(outcomes) if not ok]
    if len(failed) == size and len({message for _, message in failed}) == 1:
        raise RankFailed(failed[0][1])  # the same mistake everywhere (a wrong layer): said as it is
    if failed:
        first, message = failed[0]
        others = f" (and {len(failed) - 1} more ranks)" if len(failed) > 1 else ""
        raise RankFailed(f"rank {first} of {size} failed{others}: {message}")
    return [value for _, value in outcomes]


def gathered(name: str, value: T) -> list[T] | None:
    """Every rank's ``value`` on rank 0 (in rank order), ``None`` on the others: what only rank
    0 writes (the files of the jobs other ranks ran) does not travel to every rank. Every rank
    checks first that all are at this exchange of ``name`` (else :class:`OutOfStep` on each)."""
    rank, size = rank_and_size()
    if size == 1:
        return [value]
    step = _step(name)
    _wait_showing_progress(f"cnnviz/done/{step}", rank, size)
    steps: list = [None] * size
    dist.all_gather_object(steps, step)  # every rank learns whether they are in step (not rank 0 alone)
    _check_in_step(steps)
    values: list | None = [None] * size if rank == 0 else None
    dist.gather_object(value, values, dst=0)
    return values


def from_first(name: str, work: Callable[[], T]) -> T:
    """Run ``work`` on rank 0 alone and hand every rank its result (or its error, as :func:`together`)."""
    rank = rank_and_size()[0]
    return together(name, lambda: work() if rank == 0 else None)[0]


class SharedProgress:
    """The progress of the whole group shown by rank 0's callback: every rank adds the work it did
    to a counter in the group's store (torchrun's, or whatever ``init_process_group`` was given),
    and rank 0 passes on what all of them did. Every rank must make one, in the same order (they
    are told apart by ``name`` and its count); outside a group, or without a store, it is ``update``.
    While it is entered (``with``), rank 0 keeps it moving as it waits for the others in
    :func:`together`."""

    def __init__(self, name: str, update: Callable[[int], object] | None):
        self.update = update
        self.rank, self.size = rank_and_size()
        self.key = f"cnnviz/progress/{_step(name)}" if self.size > 1 else ""
        self.shared = self.size > 1 and _store() is not None
        self.shown = 0

    def __call__(self, amount: int) -> None:
        store = _store() if self.shared else None  # asked each time: no reference outlives the group
        if store is None:
            if self.update is not None and self.rank == 0:
                self.update(amount)
            return
        self._show(store.add(self.key, int(amount)))

    def refresh(self) -> None:
        """Show what the other ranks have done since (rank 0, while it waits for them)."""
        store = _store() if self.shared and self.rank == 0 else None
        if store is not None:
            self._show(store.add(self.key, 0))

    def _show(self, total: int) -> None:
        if self.rank == 0 and self.update is not None and total > self.shown:
            self.update(total - self.shown)
            self.shown = total

    def __enter__(self) -> SharedProgress:
        _local.__dict__.setdefault("progress", []).append(self)
        return self

    def __exit__(self, *_) -> None:
        _local.progress.remove(self)


def _store():
    """The process group's key-value store (``None`` outside a group, or where torch does not say).
    Never kept: a store that outlives its group can abort the process as it exits."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    try:
        return dist.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError):
        return None


def _wait_showing_progress(done: str, rank: int, size: int) -> None:
    """Before the results are exchanged, rank 0 shows the others' progress until every rank has
    finished its work (or nothing has moved for :data:`QUIET_SECONDS`: it then simply waits)."""
    bars = getattr(_local, "progress", [])
    if not bars or _store() is None:
        return
    try:
        finished = _store().add(done, 1)
        quiet_since, last = time.monotonic(), None
        while rank == 0 and finished < size:
            for bar in bars:
                bar.refresh()
            state = (finished, tuple(bar.shown for bar in bars))
            if state != last:
                quiet_since, last = time.monotonic(), state
            elif time.monotonic() - quiet_since > QUIET_SECONDS:
                break
            time.sleep(0.1)
            finished = _store().add(done, 0)
        for bar in bars:
            bar.refresh()
    except RuntimeError:  # a store that went away: the exchange itself will say what happened
        return


def tidy() -> None:
    """Free now what the group's exchanges left in reference cycles: freed only as the interpreter
    shuts down, after the group is gone, such leftovers can abort the process as it exits
    (``terminate called without an active exception``; seen with gloo about one exit in four)."""
    import gc

    gc.collect()


def torchrun_size() -> int:
    """The number of processes torchrun (or another launcher) started, from the environment."""
    return _environment_number("WORLD_SIZE", 1)


def launcher_rank() -> int:
    """This process's rank as the launcher set it (``RANK``; 0 when not launched)."""
    return _environment_number("RANK", 0)


def _environment_number(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, str(default)))
    except ValueError:
        return default


def local_device(device: str) -> str:
    """``cuda`` (and ``auto`` where there is a GPU) under a launcher means this process's own GPU
    (``LOCAL_RANK``)."""
    wants_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if wants_gpu and torchrun_size() > 1:
        return f"cuda:{_environment_number('LOCAL_RANK', 0)}"
    return device


@contextlib.contextmanager
def launched(model):
    """For the command line: join the group torchrun started (gloo for a model on the CPU, NCCL
    on a GPU) and leave it afterwards; nothing when started as one process or already in a group."""
    if torchrun_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        yield
        return
    from cnnviz.core.model import unwrap

    module, _ = unwrap(model)
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), torch.empty(0))
    device = tensor.device
    if not dist.is_available():
        raise CnnvizError("this torch has no torch.distributed; run cnnviz as one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend)
    try:
        yield
    finally:
        dist.destroy_process_group()
        tidy()

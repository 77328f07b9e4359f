"""Work shared between the processes of a ``torch.distributed`` group (started by ``torchrun``).

cnnviz does not schedule anything itself: the processes are torchrun's (or SLURM's, or
Kubernetes'), and the group is torch's (gloo on CPUs, NCCL on GPUs). A function that shards its
work (:func:`cnnviz.statistics` its images, :func:`cnnviz.maximize` its units) asks :func:`rank_and_size` where it runs; in one process, or in no
group at all, that is ``(0, 1)`` and nothing changes. Each rank takes a contiguous part of the
work (:func:`share`: whole batches where it can), so that merging the parts in rank order is
the same as one pass in order;
:func:`together` hands every rank the results of all, or one line naming the rank that failed.

The command line joins a group when torchrun started it (``WORLD_SIZE`` above 1 in its
environment, :func:`launched`); a Python caller inside a group it made itself gets the same sharding.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from cnnviz.errors import CnnvizError

T = TypeVar("T")

#: the commands that share their work between the processes torchrun starts
SHARDED_COMMANDS = ("stats", "maximize")


class RankFailed(CnnvizError):
    """A rank of the group failed; every rank raises it, and the command line prints it once (rank 0)."""


def rank_and_size() -> tuple[int, int]:
    """This process's rank and the group's size; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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


def together(work: Callable[[], T]) -> list[T]:
    """Run ``work`` on this rank and hand every rank all the ranks' results, in rank order.

    Raises:
        CnnvizError: on every rank when any rank's ``work`` raised: one line naming the rank and its
            error (the lowest failing rank's; the others are counted), or the error alone when
            every rank had the same.
    """
    size = rank_and_size()[1]
    if size == 1:
        return [work()]
    try:
        outcome = (True, work())
    except CnnvizError as error:
        outcome = (False, str(error))
    except Exception as error:  # a bug on one rank must still stop the others, not leave them waiting
        outcome = (False, f"{type(error).__name__}: {error}")
    outcomes: list = [None] * size
    dist.all_gather_object(outcomes, outcome)
    failed = [(r, message) for r, (ok, message) in enumerate(outcomes) if not ok]
    if len(failed) == size and len({message for _, message in failed}) == 1:
        raise RankFailed(failed[0][1])  # the same mistake everywhere (a wrong layer): said as it is
    if failed:
        first, message = failed[0]
        others = f" (and {len(failed) - 1} more ranks)" if len(failed) > 1 else ""
        raise RankFailed(f"rank {first} of {size} failed{others}: {message}")
    return [value for _, value in outcomes]


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

"""Where a cnnviz call's work runs: this process alone, or the processes of a ``torch.distributed``
group (``torchrun``). The one place that knows about ranks.

An analysis asks :func:`executor` for the executor of the moment and works on what it is handed:

- :meth:`Executor.share` gives it its :class:`Share` of a list of work (contiguous, whole batches
  where there are enough, so that the shares merged in order are one pass's results, to the bit);
  :meth:`Executor.deal` deals out jobs of different sizes, each to be run whole by one process;
- :meth:`Executor.map` runs a function on this process's share and returns every share's result,
  in order (one process: the function's result on the whole, in a list of one);
- :meth:`Executor.everywhere` runs a function in every process and returns all their results;
  :meth:`Executor.first` runs it in the first process alone (the one that writes shared files) and
  hands every process its result; :meth:`Executor.collected` hands every process's value to the
  first alone;
- :meth:`Executor.progress` shows the progress of the whole group through one callback.

Every exchange has an explicit key (``"statistics/parts"``): the processes send the key and its
count with their results, so processes that are out of step (a call that only some of them make)
fail in every process with one line naming where each is (:class:`OutOfStep`). Errors in one
process stop all of them, with one line naming the process that failed (:class:`RankFailed`).

Example::

    >>> from cnnviz.core.executor import executor
    >>> work = executor()                     # one process here: one share, the whole
    >>> work.share(list("abcdefg"), batch=3)
    Share(items=['a', 'b', 'c', 'd', 'e', 'f', 'g'], index=0, count=1)
    >>> work.map("example/lengths", ["ab", "cde"], lambda share, progress: sum(map(len, share.items)))
    [5]
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cnnviz.core import distributed
from cnnviz.core.distributed import OutOfStep, RankFailed

__all__ = ["Dealt", "Executor", "OutOfStep", "RankFailed", "Share", "executor"]

T = TypeVar("T")
Items = TypeVar("Items")


@dataclass(frozen=True)
class Share(Generic[Items]):
    """This process's part of some work: ``items`` (of the type given), the ``index`` of the part
    and the ``count`` of parts, which merged in index order are the whole, in its order."""

    items: Items
    index: int = 0
    count: int = 1

    @property
    def whole(self) -> bool:
        """Whether this share is all the work (one process)."""
        return self.count == 1


@dataclass(frozen=True)
class Dealt(Generic[T]):
    """Items dealt out to the processes (:meth:`Executor.deal`): every process's ``parts``, in
    process order, and which of them is this process's (``index``)."""

    parts: list[list[T]]
    index: int = 0

    @property
    def mine(self) -> list[T]:
        """This process's items, in the order dealt."""
        return self.parts[self.index]

    def rounds(self) -> list[list[T]]:
        """The items round by round: every process's first, then every process's second, ..."""
        return [[part[number] for part in self.parts if number < len(part)]
                for number in range(max(map(len, self.parts), default=0))]


class Executor:
    """The processes a cnnviz call shares its work with; see the module's text. Made by
    :func:`executor`, for one call: it is not kept (the group may end, or a job be run alone)."""

    def __init__(self, rank: int = 0, size: int = 1):
        self._rank, self._size = rank, size

    def __repr__(self) -> str:
        return "Executor(one process)" if self._size == 1 else f"Executor(process {self._rank} of {self._size})"

    @property
    def parallel(self) -> bool:
        """Whether the work is shared between several processes."""
        return self._size > 1

    @property
    def first_process(self) -> bool:
        """Whether this process is the first of the group (or alone): the one that writes what is
        written once, and whose progress is shown."""
        return self._rank == 0

    def positions(self, count: int, batch: int = 1) -> range:
        """The positions of ``range(count)`` that this process takes (see :meth:`share`)."""
        return distributed.share(count, self._rank, self._size, batch)

    def share(self, items: Sequence | Any, batch: int = 1, split: Callable[[Any, Callable[[int], range]], Any] | None = None,
              *, expand: bool = False) -> Share:
        """This process's :class:`Share` of ``items``: contiguous, whole batches of ``batch`` where
        there are at least as many batches as processes, else single items. ``split(items,
        positions)`` takes the share out of what is not a plain sequence, ``positions(count)`` being
        the positions this process takes of ``count`` items. In one process the whole is handed on
        untouched, unless ``expand`` asks for it through ``split`` too (listed, as a share is)."""
        if self._size == 1 and not (expand and split is not None):
            return Share(items)

        def positions(count: int) -> range:
            return self.positions(count, batch)

        part = split(items, positions) if split is not None else [items[k] for k in positions(len(items))]
        return Share(part, self._rank, self._size)

    def deal(self, items: Sequence[T], size: Callable[[T], float] = lambda item: 1) -> Dealt[T]:
        """``items`` to be run one by one, dealt out to the processes: the largest first (by
        ``size``), each to the process with the least work so far (the lowest on a tie). Every
        process deals the same; in one process, it has them all."""
        load = [0.0] * self._size
        parts: list[list[T]] = [[] for _ in range(self._size)]
        for item in sorted(items, key=lambda item: -size(item)):
            chosen = min(range(self._size), key=lambda process: (load[process], process))
            load[chosen] += max(size(item), 1)
            parts[chosen].append(item)
        return Dealt(parts, self._rank)

    def map(self, key: str, items, work: Callable[[Share, Callable[[int], object] | None], T], *, batch: int = 1,
            split: Callable[[Any, Callable[[int], range]], Any] | None = None, expand: bool = False,
            progress: Callable[[int], object] | None = None) -> list[T]:
        """Run ``work(share, progress)`` on this process's :meth:`share` of ``items`` and return
        every share's result in share order (one process: ``[work(whole, progress)]``); ``progress``
        shows the whole group's work.

        Raises:
            RankFailed: in every process when taking the share or ``work`` raised in any.
        """
        def this_share() -> T:  # taken inside the exchange: a folder one machine lacks stops every process
            return work(self.share(items, batch, split, expand=expand), shown)

        with self.progress(f"{key}/progress", progress) as shown:
            results = self.everywhere(key, this_share)
        self.tidy()
        return results

    def everywhere(self, key: str, work: Callable[[], T]) -> list[T]:
        """Run ``work`` in every process and hand every process all their results, in order.

        Raises:
            RankFailed: in every process when ``work`` raised in any (one line naming the first
                that failed, or the error alone when every process had the same).
            OutOfStep: the processes are not all at this exchange of ``key``.
        """
        if self._size == 1:
            return [work()]
        return distributed.together(key, work)

    def first(self, key: str, work: Callable[[], T]) -> T:
        """Run ``work`` in the first process alone and hand every process its result (or its error)."""
        if self._size == 1:
            return work()
        rank = self._rank
        return distributed.together(key, lambda: work() if rank == 0 else None)[0]

    def collected(self, key: str, value: T) -> list[T] | None:
        """Every process's ``value``, in order, in the first process; ``None`` in the others (what
        only the first writes does not travel to every process)."""
        if self._size == 1:
            return [value]
        return distributed.gathered(key, value)

    @contextlib.contextmanager
    def progress(self, key: str, update: Callable[[int], object] | None) -> Iterator[Callable[[int], object] | None]:
        """A callback for the work this process does that shows the whole group's progress through
        ``update`` in the first process (kept moving while it waits for the others); in one
        process, ``update`` itself."""
        if self._size == 1:
            yield update
            return
        with distributed.SharedProgress(key, update) as shown:
            yield shown

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        """Inside, a cnnviz call made in this process does all its work here and waits for no other
        (a job that this process was dealt)."""
        with distributed.alone():
            yield

    def tidy(self) -> None:
        """After the exchanges of a call: free what they left in reference cycles (see
        :func:`cnnviz.core.distributed.tidy`)."""
        if self._size > 1:
            distributed.tidy()


def executor() -> Executor:
    """The executor of the moment: the ``torch.distributed`` group this process is in, or this
    process alone (outside a group, and inside :meth:`Executor.alone`)."""
    return Executor(*distributed.rank_and_size())

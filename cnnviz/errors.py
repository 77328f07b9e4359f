"""The one exception type for user mistakes, and helpers to word its messages.

Every mistake a user can make (a wrong layer name, a channel out of range, a missing or corrupt
file) raises :class:`CnnvizError` with a message that says what was wrong and what would be right.
The command line prints that message as one line on stderr and exits with code 2.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnvizError(ValueError):
    """A mistake in what the user asked for; the message names the fix."""


class CnnvizWarning(UserWarning):
    """Something the user should know about (random weights, assumed preprocessing)."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The ``n`` candidates most similar to ``name``, best first, ties in the candidates' order."""
    candidates = list(dict.fromkeys(candidates))
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(name)
    scored = []
    for index, candidate in enumerate(candidates):
        matcher.set_seq1(candidate)
        scored.append((-matcher.ratio(), index, candidate))
    return [candidate for _, _, candidate in sorted(scored)[:n]]


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """``"did you mean 'a', 'b' or 'c'?"`` for the closest candidates, or ``""`` when there are none."""
    matches = [repr(m) for m in closest(name, candidates, n)]
    if not matches:
        return ""
    if len(matches) == 1:
        return f"did you mean {matches[0]}?"
    return f"did you mean {', '.join(matches[:-1])} or {matches[-1]}?"


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

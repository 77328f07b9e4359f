"""The one exception type for user mistakes, and helpers to word its messages.

Every mistake a user can make (a wrong layer name, a channel out of range, a missing or corrupt
file) raises :class:`CnnvizError` with a message that says what was wrong and what would be right.
The command line prints that message as one line on stderr and exits with code 2.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


class CnnvizError(ValueError):
    """A mistake in what the user asked for; the message names the fix."""


class NotApplicable(CnnvizError):
    """A method that does not apply to this model (the message says why); where several methods
    run side by side it is skipped and shown as "n/a: why", the others go on."""


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


MAX_SEED = 2**63 - 1


def check_seed(seed) -> int:
    """A seed as an ``int`` in ``[0, 2**63)``, or :class:`CnnvizError` naming the range."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise CnnvizError(f"the seed must be a whole number from 0 to {MAX_SEED}, not {seed!r}")
    return seed


def check_finite(value, what: str, positive: bool = True) -> float:
    """``value`` as a finite float (and above zero when ``positive``), or :class:`CnnvizError`."""
    number = float(value)
    if not math.isfinite(number) or (positive and number <= 0):
        kind = "a positive finite number" if positive else "a finite number"
        raise CnnvizError(f"{what} must be {kind}, not {value!r}")
    return number

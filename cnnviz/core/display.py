"""How results show themselves: ``result.plot()``, a picture in a notebook, a short text repr.

A result class mixes in :class:`Shows`. Its figure function lives in :mod:`cnnviz.plots`, which
registers it here (:func:`register`) when it is imported (``import cnnviz`` imports it), so the
analyses do not depend on the plots. In a notebook the result displays as that figure through
``_repr_png_`` — in a fresh kernel, with no ``%matplotlib`` magic — and elsewhere as one line.

Figures made by :mod:`cnnviz.plots` are :class:`ShownFigure` objects: a plain matplotlib
``Figure`` that also has ``_repr_png_``, so it displays as a picture in a fresh kernel too.
"""
from __future__ import annotations

import io
from collections.abc import Callable

from matplotlib.figure import Figure

from cnnviz.errors import CnnvizError

_DRAWERS: dict[type, Callable] = {}
NOTEBOOK_DPI = 80  # pictures in a notebook: a figure of 10 x 4 inches is 800 x 320 px


class ShownFigure(Figure):
    """A matplotlib ``Figure`` that shows itself as a PNG in a notebook (no pyplot, no magic)."""

    def _repr_png_(self) -> bytes:
        return png_bytes(self)


def png_bytes(figure: Figure, dpi: int = NOTEBOOK_DPI) -> bytes:
    """The figure as PNG bytes (pyplot's state is not touched)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def register(result_type: type, draw: Callable) -> None:
    """Make ``draw(result, **options) -> Figure`` the figure of ``result_type`` (and subclasses)."""
    _DRAWERS[result_type] = draw


def draw(result, **options) -> Figure:
    """The figure of a result, by the function registered for its type."""
    for kind in type(result).__mro__:
        if kind in _DRAWERS:
            return _DRAWERS[kind](result, **options)
    raise CnnvizError(f"there is no figure of a {type(result).__name__}; see cnnviz.plots for the figures")


class Shows:
    """Mixin of result objects: ``plot()``, ``_repr_png_`` and a one-line ``__repr__``.

    A class that mixes it in defines ``_summary()`` (the text inside ``Name(...)``); dataclasses
    take ``repr=False`` so that this ``__repr__`` is used and no array is ever dumped.
    """

    def plot(self, **options) -> Figure:
        """The result's figure (:mod:`cnnviz.plots`); ``options`` are that function's arguments."""
        return draw(self, **options)

    def _repr_png_(self) -> bytes | None:
        try:
            figure = self.plot()
        except CnnvizError:
            return None  # nothing to draw (an empty result): the text repr is shown
        return png_bytes(figure)

    def _summary(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._summary()})"

"""Parameter types of the commands' options (beside :mod:`cnnviz.cli.options`, so that
:mod:`cnnviz.cli.messages` can read them without importing the options)."""
from __future__ import annotations

import click


class FloatList(click.ParamType):
    """One number or comma-separated numbers: ``0.5`` or ``0.485,0.456,0.406``."""

    name = "X[,X...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(float(part) for part in str(value).split(","))
        except ValueError:
            numbers = ()
        if not numbers:
            self.fail(f"{value!r} is not a number or comma-separated numbers (e.g. 0.485,0.456,0.406)", param, ctx)
        return numbers

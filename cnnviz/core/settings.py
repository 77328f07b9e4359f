"""Settings as values: frozen dataclasses whose fields carry their default and their help, so that
a function's keywords, a command's options and its ``--help`` read one source
(:class:`cnnviz.RenderSettings`, :class:`cnnviz.DreamSettings`, :class:`cnnviz.AttributionSettings`,
:class:`cnnviz.GallerySettings`)."""
from __future__ import annotations

import numbers
import re
import warnings
from dataclasses import field, fields, replace

import numpy

from cnnviz.errors import CnnvizError


def setting(default, help: str):
    """A settings field: its default and the help the command line shows for it."""
    return field(default=default, metadata={"help": help})


def help_of(settings: type, name: str) -> str:
    """The help text of a field of a settings class (what the command's ``--help`` says)."""
    for one in fields(settings):
        if one.name == name:
            return one.metadata.get("help", "")
    raise KeyError(f"{settings.__name__} has no setting {name!r}")


def chosen(kind: type, settings, options: dict, where: str):
    """``settings`` (an instance of ``kind``; default: its defaults) with the fields ``options``
    names replaced: how a function takes ``settings=`` and keywords alike. An unknown keyword, or a
    settings value of another kind, is one line naming the settings there are. A field's old name
    (the class's ``RENAMED``, old -> new) still works, with a :class:`DeprecationWarning`."""
    names = [one.name for one in fields(kind)]
    options = renamed(kind, options, where, stacklevel=5)
    unknown = [name for name in options if name not in names]
    if unknown:
        raise CnnvizError(f"{where} has no option {unknown[0]!r}; its settings are {', '.join(names)}")
    if settings is not None and not isinstance(settings, kind):
        raise CnnvizError(f"settings must be a cnnviz.{kind.__name__}, not a {type(settings).__name__}")
    result = replace(settings if settings is not None else kind(), **options)
    for one in fields(kind):
        value = getattr(result, one.name)
        if isinstance(one.type, str) and not _fits(value, one.type):
            raise CnnvizError(f"{where}: {one.name} must be {_in_words(one.type)}, not {value!r}")
    return result


def _fits(value, annotation: str) -> bool:
    """Whether ``value`` is of the simple type ``annotation`` names (``int``, ``float | None``,
    ``tuple[int, ...]``, ...); a name not known here (a class) accepts anything."""
    for kind in _alternatives(annotation):
        tuple_of = re.fullmatch(r"tuple\[(\w+), \.\.\.\]", kind)
        pair = re.fullmatch(r"tuple\[(\w+), (\w+)\]", kind)
        if tuple_of:
            if tuple_of[1] == "str" and isinstance(value, str):  # one name for a list of one
                return True
            if _sequence(value) and all(_fits(item, tuple_of[1]) for item in value):
                return True
        elif pair:
            if _sequence(value) and len(value) == 2 and all(_fits(v, k) for v, k in zip(value, pair.groups())):
                return True
        elif kind == "None":
            if value is None:
                return True
        elif kind == "bool":
            if isinstance(value, (bool, numpy.bool_)):
                return True
        elif kind == "int":
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                return True
        elif kind == "float":
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                return True
        elif kind == "str":
            if isinstance(value, str):
                return True
        else:
            return True
    return False


def _sequence(value) -> bool:
    """A list, tuple, range or 1-D array (not a string)."""
    return not isinstance(value, (str, bytes)) and hasattr(value, "__iter__") and hasattr(value, "__len__")


def _alternatives(annotation: str) -> list[str]:
    """``"int | tuple[int, int] | str"`` -> its alternatives (``|`` outside brackets)."""
    parts, depth, current = [], 0, ""
    for character in annotation:
        depth += {"[": 1, "]": -1}.get(character, 0)
        if character == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += character
    return [*parts, current.strip()]


_WORDS = {"int": "a whole number", "float": "a number", "bool": "True or False", "str": "a string", "None": "None"}
_PLURALS = {"int": "whole numbers", "float": "numbers", "bool": "True or False values", "str": "strings"}


def _in_words(annotation: str) -> str:
    """``"tuple[int, ...] | None"`` -> ``"a list of whole numbers or None"``."""
    words = []
    for kind in _alternatives(annotation):
        tuple_of = re.fullmatch(r"tuple\[(\w+), \.\.\.\]", kind)
        if tuple_of:
            words.append(f"a list of {_PLURALS.get(tuple_of[1], tuple_of[1])}")
        elif kind == "tuple[int, int]":
            words.append("a pair of whole numbers")
        else:
            words.append(_WORDS.get(kind, kind))
    return " or ".join(words)


def renamed(kind: type, options: dict, where: str, stacklevel: int = 4) -> dict:
    """``options`` with each old name of a field (the class's ``RENAMED``, old -> new) replaced by
    the new one, with a :class:`DeprecationWarning`; both names at once is one line."""
    options = dict(options)
    for old, new in getattr(kind, "RENAMED", {}).items():
        if old in options:
            if new in options:
                raise CnnvizError(f"{where} takes {new}= (its old name {old}= too would say it twice)")
            warnings.warn(f"{where}: {old}= is now called {new}=", DeprecationWarning, stacklevel=stacklevel)
            options[new] = options.pop(old)
    return options


def default_of(settings: type, name: str):
    """The default of a field of a settings class."""
    for one in fields(settings):
        if one.name == name:
            return one.default
    raise KeyError(f"{settings.__name__} has no setting {name!r}")

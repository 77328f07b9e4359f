"""Settings as values: frozen dataclasses whose fields carry their default and their help, so that
a function's keywords, a command's options and its ``--help`` read one source
(:class:`cnnviz.RenderSettings`, :class:`cnnviz.DreamSettings`, :class:`cnnviz.AttributionSettings`,
:class:`cnnviz.GallerySettings`)."""
from __future__ import annotations

import warnings
from dataclasses import field, fields, replace

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
    return replace(settings if settings is not None else kind(), **options)


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

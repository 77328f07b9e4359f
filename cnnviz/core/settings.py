"""Settings as values: frozen dataclasses whose fields carry their default and their help, so that
a function's keywords, a command's options and its ``--help`` read one source
(:class:`cnnviz.RenderSettings`, :class:`cnnviz.DreamSettings`, :class:`cnnviz.AttributionSettings`,
:class:`cnnviz.GallerySettings`)."""
from __future__ import annotations

from dataclasses import field, fields


def setting(default, help: str):
    """A settings field: its default and the help the command line shows for it."""
    return field(default=default, metadata={"help": help})


def help_of(settings: type, name: str) -> str:
    """The help text of a field of a settings class (what the command's ``--help`` says)."""
    for one in fields(settings):
        if one.name == name:
            return one.metadata.get("help", "")
    raise KeyError(f"{settings.__name__} has no setting {name!r}")


def default_of(settings: type, name: str):
    """The default of a field of a settings class."""
    for one in fields(settings):
        if one.name == name:
            return one.default
    raise KeyError(f"{settings.__name__} has no setting {name!r}")

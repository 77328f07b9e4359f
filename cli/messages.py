"""The library's messages in the command line's words.

The library's errors and warnings name what the user can change as Python keywords, written
``keyword=VALUE`` (``weights='DEFAULT'``, ``input_size=(H, W)``, ``trusted=True``, ``channels=...``:
``...`` for "some value"). :func:`cli_syntax` rewrites each mention that names an option of the
running command as that option (``--weights DEFAULT``, ``--input-size H W``, ``--trust-pickle``,
``--channels``), so that the command line never shows Python syntax; a keyword the command has no
option for is left as it is. A Python-only aside in parentheses that ends "in Python"
(``(trusted=True in Python)``) is dropped.
"""
from __future__ import annotations

import re
import shlex

import click

from cnnviz.cli.types import FloatList

# Python keywords whose option has another parameter name in the commands (tried after the keyword
# itself and its plural: ``layer`` -> ``layers``, ``target`` -> ``targets``)
SYNONYMS = {
    "trusted": "trust_pickle",
    "spec": "model_spec",
    "model": "model_spec",
    "reference": "reference_images",
    "method": "methods",
}

_QUOTES = "'\""
_VALUE = r"""'[^']*'|"[^"]*"|\([^()]*\)|\[[^\[\]]*\]|\.\.\.|-?[\w.:/]+"""
_MENTION = re.compile(rf"(?<![\w.])(?P<keyword>[a-z][a-z0-9_]*)=(?P<value>{_VALUE})")
# a message that still names both (``input_size=(H, W) (--input-size H W)``, ``(target=..., --target on the
# command line)``) says the option once
_REPEATED = re.compile(r"(?P<option>--[\w-]+(?: [^\s(),]+)*) \((?P=option)\)")
_REPEATED_ASIDE = re.compile(r"\((?P<option>--[\w-]+(?: [^\s(),]+)*), (?P=option) on the command line\)")
_PYTHON_ASIDE = re.compile(r"\s*\((?:[^()]|\([^()]*\))*\bin Python\)")  # one level of parentheses inside


def cli_syntax(message: str, command: click.Command | None) -> str:
    """``message`` with each ``keyword=VALUE`` that names an option of ``command`` written as that
    option: ``"pass weights='DEFAULT'"`` -> ``"pass --weights DEFAULT"``.

    Args:
        message: a library message (a :class:`cnnviz.CnnvizError`'s or a warning's text).
        command: the command that runs (its options are what the mentions become); ``None``
            leaves the message as it is.

    Example::

        >>> from cnnviz.cli.main import main
        >>> cli_syntax("use input_size=(H, W)", main.commands["layers"])
        'use --input-size H W'
        >>> cli_syntax("pass weights='DEFAULT' (trusted=True in Python)", main.commands["layers"])
        'pass --weights DEFAULT'
    """
    if command is None:
        return message
    message = _PYTHON_ASIDE.sub("", message)

    def rewrite(found: re.Match) -> str:
        option = _option_for(command, found.group("keyword"))
        if option is None:
            return found.group()
        return _as_option(option, found.group("value"))

    message = _MENTION.sub(rewrite, message)
    return _REPEATED_ASIDE.sub(r"(\g<option>)", _REPEATED.sub(r"\g<option>", message))


def _option_for(command: click.Command, keyword: str) -> click.Option | None:
    """The option of ``command`` that a Python keyword stands for, or ``None``."""
    options = {param.name: param for param in command.params if isinstance(param, click.Option)}
    for name in (keyword, keyword + "s", SYNONYMS.get(keyword)):
        if name in options:
            return options[name]
    return None


def _as_option(option: click.Option, value: str) -> str:
    """One mention as the command line writes it: ``--flag``, ``--name VALUE``, ``--name H W``."""
    flag = next((text for text in option.opts if text.startswith("--")), option.opts[0])  # its first long name
    if option.is_flag:
        if value == "False" and option.secondary_opts:
            return option.secondary_opts[0]
        return flag
    if value == "...":
        return flag
    if value == "None":
        return f"{flag} none"
    if value[0] in "([":  # a tuple or list: H W (two numbers), 0.5,0.5 (one list option), repeated
        parts = [part.strip().strip(_QUOTES) for part in value[1:-1].split(",") if part.strip()]
        if option.multiple:
            return " ".join(f"{flag} {_quoted(part)}" for part in parts)
        if isinstance(option.type, FloatList):
            return f"{flag} {','.join(parts)}"
        return " ".join([flag, *map(_quoted, parts)])
    return f"{flag} {_quoted(value.strip(_QUOTES))}"


def _quoted(text: str) -> str:
    """``text`` as a shell word (quoted only when it has to be)."""
    return shlex.quote(text) if text else "''"

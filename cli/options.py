"""Options shared by the commands, and the model loading that goes with them."""
from __future__ import annotations

import functools
import re

import click

from cnnviz.cli.types import FloatList  # noqa: F401 (the commands' type)

MODEL_HELP = (
    "The model: torchvision:NAME, timm:NAME, builtin:NAME, package.module:factory, "
    "path/to/file.py:factory, or a TorchScript / pickled .pt file."
)


def model_options(command):
    """Add --model, --weights, --trust-pickle, --mean, --std, --input-size and --device."""
    options = [
        click.option(
            "--model", "-m", "model_spec", default="builtin:photos", show_default=True, metavar="SPEC",
            help=MODEL_HELP,
        ),
        click.option(
            "--weights", "-w", metavar="NAME|PATH",
            help="torchvision weights name (DEFAULT, IMAGENET1K_V1) or a state-dict file; "
            "without it a torchvision model has random weights.",
        ),
        click.option(
            "--trust-pickle", is_flag=True,
            help="Allow loading a fully pickled model file (this runs code from the file).",
        ),
        click.option("--mean", type=FloatList(), help="Override the per-channel input mean."),
        click.option("--std", type=FloatList(), help="Override the per-channel input std."),
        click.option(
            "--input-size", nargs=2, type=click.IntRange(min=1), metavar="H W", default=None,
            help="Override the input size (height width).",
        ),
        click.option(
            "--device", default="cpu", show_default=True, metavar="DEVICE",
            help="cpu, cuda, cuda:N or auto.",
        ),
    ]

    @functools.wraps(command)
    def wrapper(*args, model_spec, weights, trust_pickle, mean, std, input_size, device, **kwargs):
        with output_locked(kwargs.get("output")):  # a second run into the folder: refused before any work
            loaded = load_for_cli(model_spec, weights, trust_pickle, mean, std, input_size, device)
            return command(*args, loaded=loaded, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def output_locked(output):
    """The output folder's lock (:func:`cnnviz.core.staging.writing_into`) for the whole command, named by
    its command line; nothing for a command without ``-o``. Under torchrun rank 0 holds it for all
    (the other ranks write nothing)."""
    import contextlib

    from cnnviz.core.distributed import launcher_rank
    from cnnviz.core.staging import writing_into

    if output is None or launcher_rank() != 0:
        return contextlib.nullcontext()
    context = click.get_current_context(silent=True)
    return writing_into(output, context.command_path if context is not None else None)


def load_for_cli(spec, weights, trusted, mean, std, input_size, device):
    """Load a model; the library's warnings become notes (see cnnviz.cli.main). Whatever is printed
    to stdout meanwhile (torchvision's or timm's download lines, a model factory's own prints) goes
    to stderr: stdout holds the command's output only (``--json`` stays JSON)."""
    import contextlib
    import sys

    import cnnviz
    from cnnviz.core.distributed import local_device

    with contextlib.redirect_stdout(sys.stderr):
        loaded = cnnviz.load_model(
            spec, weights, trusted=trusted, mean=mean, std=std,
            input_size=tuple(input_size) if input_size else None, device=local_device(device),
        )
    if not loaded.preprocessing.known:
        note(
            f"the preprocessing of {loaded.spec} is unknown; assuming {loaded.preprocessing.describe()}. "
            "Pass --mean, --std and --input-size if the model expects otherwise"
        )
    return loaded


_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters and escape sequences (from a file, layer or
    class name: ``\\x1b[2J`` clears a screen, U+202E turns text around) written as Python writes
    them in a string (``\\x1b``, ``\\u202e``); lines and tabs kept."""
    return _UNPRINTABLE.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


def echo(text: str = "", err: bool = False) -> None:
    """``click.echo`` of :func:`printable` text: everything the commands print goes through it."""
    click.echo(printable(str(text)), err=err)


def note(message: str) -> None:
    """A one-line note for stderr, shown once the command has succeeded (an error stays one line).
    The library's Python keywords in it are written as the command's options
    (:func:`cnnviz.cli.messages.cli_syntax`)."""
    from cnnviz.cli.messages import cli_syntax

    context = click.get_current_context(silent=True)
    if context is None:
        echo(f"note: {message}", err=True)
    else:
        context.find_root().meta.setdefault("cnnviz.notes", []).append(cli_syntax(message, context.command))


def flush_notes() -> None:
    """Print the notes gathered so far, one line each on stderr."""
    from cnnviz.core.distributed import launcher_rank

    context = click.get_current_context(silent=True)
    if context is None:
        return
    messages = context.find_root().meta.pop("cnnviz.notes", [])
    if launcher_rank() != 0:  # every rank of a torchrun job has the same notes: rank 0 says them
        return
    for message in messages:
        echo(f"note: {message}", err=True)


OUTPUT_HELP = "Folder for the PNG figures and the JSON summary (created if missing)."


def output_option(command):
    """``--output/-o DIR`` (default ``cnnviz-output``) for commands that write figures; the command
    holds the folder's lock throughout (:func:`model_options` takes it already before the model loads)."""
    body = command

    @functools.wraps(body)
    def command(*args, output, **kwargs):
        with output_locked(output):
            return body(*args, output=output, **kwargs)

    return click.option("--output", "-o", default="cnnviz-output", show_default=True, metavar="DIR",
                        help=OUTPUT_HELP)(command)


def wrote(paths) -> None:
    """Say which files a command wrote, one line each."""
    for path in paths:
        echo(f"wrote {path}")


def one_image(ctx, param, value):
    """For a command that shows one image: ``-i`` given twice is an error, not the last one kept."""
    if len(value) > 1:
        raise click.BadParameter(f"this command takes one image, but {len(value)} were given; give -i once "
                                 "(run it once per image)", ctx=ctx, param=param)
    return value[0] if value else None


def several_images(ctx, param, value):
    """For a command that takes several images: ``-i`` given once is that spec as it is, several
    times a list of them."""
    return value[0] if len(value) == 1 else list(value)

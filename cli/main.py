"""The ``cnnviz`` command group and its error handling.

User mistakes (:class:`cnnviz.CnnvizError`, bad options) become one line on stderr and exit code 2;
anything else is a bug: one line and exit code 1, with the traceback under ``--debug``.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import warnings

import click

from cnnviz import __version__
from cnnviz.core import distributed
from cnnviz.cli.attribution import saliency
from cnnviz.cli.catalogue import models, predict, samples
from cnnviz.cli.concepts import concepts
from cnnviz.cli.gallery import gallery
from cnnviz.cli.inspect import activations, kernels, stats
from cnnviz.cli.visualize import dream, maximize
from cnnviz.cli.layers import layers
from cnnviz.cli.lecture import conv_arithmetic, conv_matrix, equivariance, rf
from cnnviz.cli.messages import cli_syntax
from cnnviz.cli.options import echo, flush_notes, note
from cnnviz.errors import CnnvizError, CnnvizWarning
from cnnviz.core.memory import reuse_freed_memory

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_INTERRUPTED = 130


class CnnvizGroup(click.Group):
    """A click group that turns every error into one readable line."""

    def main(self, args=None, prog_name=None, **kwargs):  # noqa: D102 - click's signature
        kwargs.pop("standalone_mode", None)
        arguments = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in arguments
        try:
            with _warnings_as_notes():
                super().main(arguments, prog_name="cnnviz", standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as error:
            echo(error.ctx.get_help())
            sys.exit(0)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.UsageError as error:
            if debug:
                raise
            command = error.ctx.command_path if error.ctx is not None else "cnnviz"
            if command == "cnnviz":  # an error while the subcommand's own options were parsed
                named = [a for a in arguments if a in self.commands]
                command = f"cnnviz {named[0]}" if named else command
            _fail(f"{error.format_message()} (see '{command} --help')", EXIT_USER_ERROR)
        except click.ClickException as error:
            if debug:
                raise
            _fail(error.format_message(), EXIT_USER_ERROR)
        except CnnvizError as error:
            if debug:
                raise
            rank = distributed.launcher_rank()
            if isinstance(error, distributed.RankFailed) and rank != 0:
                sys.exit(EXIT_USER_ERROR)  # every rank has it: rank 0 prints it once
            message = cli_syntax(str(error), self._subcommand(arguments))  # Python keywords as options
            _fail(f"rank {rank}: {message}" if rank != 0 else message, EXIT_USER_ERROR)
        except (KeyboardInterrupt, click.Abort):
            echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as error:  # a bug: say so in one line, traceback on request
            if debug:
                raise
            _fail(
                f"internal error: {type(error).__name__}: {error} (rerun with --debug for the "
                "traceback, and please report it)",
                EXIT_INTERNAL_ERROR,
            )
        sys.exit(0)

    def _subcommand(self, arguments: list[str]) -> click.Command | None:
        """The command named on the command line (its options name the library's keywords), if any."""
        named = [a for a in arguments if a in self.commands]
        return self.commands[named[0]] if named else None


@contextlib.contextmanager
def _warnings_as_notes():
    """cnnviz's own warnings (random weights, assumed preprocessing, huge images) become notes."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", CnnvizWarning)
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, CnnvizWarning):
                note(str(message))  # the library's keywords as options (see note)
            else:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def _fail(message: str, code: int) -> None:
    one_line = " ".join(message.split())
    echo(f"error: {one_line}", err=True)
    sys.exit(code)


@click.group(cls=CnnvizGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cnnviz", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show the full traceback of any error.")
def main(debug: bool) -> None:
    """See what a convolutional network has learned.

    Every command takes a model (--model) and names its units with layer
    references: features.10 (a module), layer1.0.relu#2 (its second call),
    features.10:5 (channel 5), features.10:5@7,3 (one neuron), logits:281.

    Without --model, commands use the built-in model builtin:photos, which
    works offline; 'cnnviz models' lists the others.

    \b
    Examples:
      cnnviz layers
      cnnviz layers --model torchvision:resnet18
      cnnviz predict --image sample:chelsea
    """
    command = click.get_current_context().invoked_subcommand
    if distributed.torchrun_size() > 1 and command is not None and command not in distributed.SHARDED_COMMANDS:
        raise CnnvizError(
            f"cnnviz {command} does not share its work between processes; run it as one process "
            f"(torchrun runs these across processes: cnnviz {', '.join(distributed.SHARDED_COMMANDS)})"
        )


@main.result_callback()
def _after_success(*_results, **_options) -> None:
    flush_notes()  # notes wait for success, so that an error stays one line


main.add_command(layers)
main.add_command(kernels)
main.add_command(activations)
main.add_command(stats)
main.add_command(concepts)
main.add_command(saliency)
main.add_command(maximize)
main.add_command(dream)
main.add_command(models)
main.add_command(predict)
main.add_command(samples)
main.add_command(rf)
main.add_command(equivariance)
main.add_command(conv_matrix)
main.add_command(conv_arithmetic)
main.add_command(gallery)


def run() -> None:
    """The ``cnnviz`` console script (and ``python -m cnnviz``).

    The command owns its process, so it keeps the memory its renders free for their next step
    (glibc's malloc on a CPU; :func:`cnnviz.reuse_freed_memory`, which the library itself never
    applies): page faults cost a third of a small model's step otherwise. ``CNNVIZ_MALLOC=default``
    turns it off.
    """
    with reuse_freed_memory("cpu"), _terminate_cleanly():
        main(prog_name="cnnviz")


@contextlib.contextmanager
def _terminate_cleanly():
    """SIGTERM (a scheduler's, ``kill``) ends the command as Ctrl-C does: every ``finally`` runs, so
    no half-written ``.NAME.part`` file is left in the output folder. Exit status 143."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except (ValueError, OSError):  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

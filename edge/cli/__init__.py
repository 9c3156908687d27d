"""The ``wildedge`` command line (Typer): one sub-app per group.

Every error ends as one line on stderr, ``error: <what> (see 'wildedge CMD --help')`` for a usage
mistake, and never a traceback: :class:`_RootGroup` turns Click's usage errors (a boxed, three-line
report by default) into that line, and gives every command ``-v``/``--verbose`` after its name too.
Help is plain text (no Rich boxes): it reads the same on a serial console as in a terminal.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import typer
from typer.core import TyperGroup

from edge import __version__

logger = logging.getLogger(__name__)

_LEVELS = {0: logging.WARNING, 1: logging.INFO}
VERBOSE_HELP = "-v: log progress, -vv: debug detail."


def _level(verbose: int) -> int:
    return _LEVELS.get(verbose, logging.DEBUG)


def _subcommand_verbosity(ctx: typer.Context, value: int) -> int:
    """``-v`` after a command's name: raise the root's verbosity (``_root`` has configured logging)."""
    if value:
        root = ctx.find_root()
        verbose = max(int(root.params.get("verbose") or 0), value)
        root.params["verbose"] = verbose
        logging.getLogger().setLevel(_level(verbose))
    return value


def _verbose_option() -> Any:
    """A fresh ``-v/--verbose`` counting option (built by Typer itself) for a command that lacks one."""
    probe = typer.Typer()

    @probe.command()
    def _probe(
        verbose: int = typer.Option(0, "--verbose", "-v", count=True, expose_value=False, show_default=False,
                                    callback=_subcommand_verbosity, help=VERBOSE_HELP),
    ) -> None:
        """Only its option is used."""

    return typer.main.get_command(probe).params[0]


def _commands(group: Any) -> Iterator[Any]:
    for command in getattr(group, "commands", {}).values():
        yield command
        yield from _commands(command)


def _one_line(text: str) -> str:
    return " ".join(text.split()).rstrip(".")


class _RootGroup(TyperGroup):
    """The root command: ``-v`` on every command, and every error as one ``error:`` line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in _commands(self):
            names = {opt for param in command.params for opt in getattr(param, "opts", ())}
            if "-v" not in names and "--verbose" not in names:
                command.params.append(_verbose_option())

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        except typer.TyperException as err:  # Click's usage errors and the like
            sys.exit(self._report(err))
        except OSError as err:  # the file system under a command that did not foresee it
            logger.debug("unexpected OS error", exc_info=True)
            where = f"{err.filename}: " if err.filename else ""
            typer.echo(f"error: {where}{err.strerror or err}", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    @staticmethod
    def _report(err: Any) -> int:
        ctx = getattr(err, "ctx", None)
        if type(err).__name__ == "NoArgsIsHelpError":  # a bare group name: its help, as before
            typer.echo(err.format_message(), err=True)
            return 2
        path = ctx.command_path if ctx is not None else "wildedge"
        hint = f" (see '{path} --help')" if hasattr(err, "ctx") else ""
        typer.echo(f"error: {_one_line(err.format_message())}{hint}", err=True)
        return int(getattr(err, "exit_code", 1))


app = typer.Typer(
    name="wildedge",
    cls=_RootGroup,
    help="Edge inference for wildlife and insect monitoring.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wildedge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, show_default=False, help=VERBOSE_HELP),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Edge inference for wildlife and insect monitoring."""
    logging.basicConfig(
        level=_level(verbose),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _register() -> None:
    from edge.cli import detect_cmd, doctor, model_cmd, results_cmd, run_cmd

    app.add_typer(model_cmd.app, name="model")
    app.command("detect")(detect_cmd.detect)
    app.command("run")(run_cmd.run)
    app.command("check")(doctor.check)
    app.command("trigger")(run_cmd.trigger)
    app.command("results")(results_cmd.results)
    # Other packages of the distribution (export, collector) add their groups through the
    # "wildedge.commands" entry point, so that edge never imports them.
    for entry in entry_points(group="wildedge.commands"):
        try:
            group = entry.load()
        except ImportError as err:
            logging.getLogger(__name__).debug("command group %s unavailable: %s", entry.name, err)
            continue
        app.add_typer(group, name=entry.name)


_register()


def main() -> None:
    app()

"""The ``wildedge`` command line (Typer): one sub-app per group."""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points

import typer

from edge import __version__

app = typer.Typer(
    name="wildedge",
    help="Edge inference for wildlife and insect monitoring.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wildedge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v: log progress, -vv: debug detail."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Edge inference for wildlife and insect monitoring."""
    logging.basicConfig(
        level={0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _register() -> None:
    from edge.cli import detect_cmd, model_cmd, results_cmd, run_cmd

    app.add_typer(model_cmd.app, name="model")
    app.command("detect")(detect_cmd.detect)
    app.command("run")(run_cmd.run)
    app.command("check")(run_cmd.check)
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

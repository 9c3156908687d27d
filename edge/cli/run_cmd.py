"""``wildedge run`` and ``wildedge trigger``: the field daemon's commands (``wildedge check``, the field
doctor, is edge/cli/doctor.py; it loads configs through :func:`_load` here).

Every expected failure (bad config, missing model, camera that cannot open, unwritable state
directory) ends with one ``error:`` line naming the file or key (a config with several problems:
then one ``key.path: message`` line each) and a non-zero exit, never a traceback: exit 2 for an
invalid config, 1 for anything else.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edge.errors import ConfigError, WildedgeError

logger = logging.getLogger(__name__)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The daemon's TOML config file.")]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY.PATH=VALUE",
    help="Override one config value, e.g. --set trigger.interval=5m (repeatable).")]


def runtime_problems(cfg: Any) -> list[str]:
    """What ``run`` would refuse in a config that validates: the active windows, the trigger and the
    external-trigger queue built exactly as the daemon builds them (no camera or GPIO is opened).

    ``check``, ``run`` and ``trigger`` all load through :func:`_load`, so ``check`` refuses exactly
    what ``run`` refuses, with the same ``key.path: message`` lines.
    """
    from edge.config.build import build_external, build_triggers, build_windows

    if cfg.trigger is None:
        steps = [("trigger", lambda: build_external(cfg))]
    else:
        tz = cfg.device.zone()
        steps = [("trigger.active", lambda: build_windows(cfg, tz=tz)),
                 ("trigger", lambda: build_triggers(cfg, tz=tz, external=build_external(cfg)))]
    problems = []
    for key, build in steps:
        try:
            build()
        except (ValueError, ConfigError) as err:
            problems.append(f"{key}: {err}")
    return problems


def _validated(config: Path, overrides: list[str] | None) -> Any:
    """``load_config``, :func:`runtime_problems` and ``preflight`` (the model-dependent values, see
    edge/config/preflight.py); raises InvalidConfigError for any of them."""
    from edge.config import InvalidConfigError, load_config
    from edge.config.preflight import preflight

    cfg = load_config(config, overrides=overrides or [])
    problems = runtime_problems(cfg)
    try:  # classifier.classes against the detector's labels: 'animal' expanded as detect does
        cfg = preflight(cfg)
    except ConfigError as err:
        problems.append(str(err))
    if problems:
        raise InvalidConfigError(problems, source=str(config))
    return cfg


def _load(config: Path, overrides: list[str] | None) -> Any:
    """The validated config, or exit 2 with one ``key.path: message`` line per problem."""
    from edge.config import InvalidConfigError

    try:
        return _validated(config, overrides)
    except InvalidConfigError as err:
        # One problem: one line naming the file and the key. Several: one ``error:`` line naming
        # the file, then one ``key.path: message`` line each.
        problems = [p if p.startswith(str(config)) else f"{config}: {p}" for p in err.problems]
        if len(problems) == 1:
            typer.echo(f"error: {problems[0]}", err=True)
        else:
            typer.echo(f"error: invalid config {config} ({len(problems)} problems):", err=True)
            for problem in err.problems:
                typer.echo(f"  {problem}", err=True)
        raise typer.Exit(2) from None
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def _with_remote_settings(cfg: Any, path: Path, overrides: list[str] | None) -> Any:
    """The config with the settings persisted by MQTT ``set`` commands applied under ``--set``.

    Remote settings that no longer validate (the file was edited since) are ignored with a
    warning: a trap must not refuse to start over a stale remote change.
    """
    from edge.config import InvalidConfigError
    from edge.mqtt.device import OVERRIDES_FILE, read_overrides

    remote = read_overrides(Path(cfg.device.state_dir))
    if not remote:
        return cfg
    try:
        return _validated(path, [*remote, *(overrides or [])])
    except InvalidConfigError as err:
        typer.echo(f"warning: remote settings in {Path(cfg.device.state_dir) / OVERRIDES_FILE} ignored: "
                   + "; ".join(err.problems), err=True)
        return cfg


def _private_state(state_dir: Path) -> None:
    """Keep what the daemon writes to its owner: umask 077 for the whole process, and the state
    directory's files and folders from an older wildedge (0755, 0644) tightened to 0700 and 0600.

    The images may show people, the database holds the device's history, the remote settings its
    thresholds: none of it is for other local users. Only ``run`` does this (``check`` changes nothing).
    """
    import os

    from edge.daemon import state_paths
    from edge.mqtt.device import OVERRIDES_FILE
    from edge.store.db import tighten

    os.umask(0o077)
    db_path, images_dir, _socket = state_paths(state_dir)
    journals = [db_path.with_name(db_path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]
    tighten([db_path, *journals, images_dir, state_dir / OVERRIDES_FILE], shallow=[state_dir])


def _verbosity(ctx: typer.Context, own: int) -> int:
    root = ctx.find_root().params.get("verbose") or 0
    return max(int(root), own)


def run(
    ctx: typer.Context,
    config: ConfigOption,
    overrides: SetOption = None,
    once: Annotated[bool, typer.Option(
        "--once", help="One session for duty-cycled devices: capture one trigger now (a folder camera: "
                       "every file not yet processed), store the results and exit 0.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, show_default=False,
                                           help="-v: debug detail (the daemon logs progress by default).")] = 0,
) -> None:
    """Run the field daemon: capture, detect, store (and deliver over MQTT) until stopped."""
    from edge.daemon import Daemon
    from edge.logsetup import configure_logging

    cfg = _with_remote_settings(_load(config, overrides), config, overrides)
    root = logging.getLogger()
    for handler in list(root.handlers):  # the CLI's plain handler: the daemon logs its own way
        if handler.get_name() != "wildedge":
            root.removeHandler(handler)
    configure_logging(verbosity=_verbosity(ctx, verbose))
    _private_state(Path(cfg.device.state_dir))
    try:
        code = Daemon(cfg, once=once).run()
    except (WildedgeError, OSError) as err:
        # OSError: a file system the checks above could not foresee (a card gone read-only).
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


# -- trigger ----------------------------------------------------------------------------------------

def trigger(
    config: ConfigOption,
    overrides: SetOption = None,
    burst: Annotated[Optional[int], typer.Option(min=1, max=100, help="Frames to capture; default: the "
                                                 "trigger's burst.")] = None,
    status: Annotated[bool, typer.Option("--status", help="Print the daemon's status instead.")] = False,
) -> None:
    """Make a running daemon capture now (or, with --status, print its status as JSON)."""
    from edge.daemon import state_paths
    from edge.triggers import send_command

    cfg = _load(config, overrides)
    _, _, socket_path = state_paths(Path(cfg.device.state_dir))
    request: dict[str, Any] = {"cmd": "status"} if status else {"cmd": "capture"}
    if burst is not None and not status:
        request["burst"] = burst
    try:
        reply = send_command(socket_path, request)
    except (ConfigError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    if not reply.get("ok"):
        typer.echo(f"error: the daemon refused: {reply.get('error', reply)}", err=True)
        raise typer.Exit(1)
    if status:
        json.dump(reply.get("status"), sys.stdout, indent=2)
        typer.echo()
    else:
        typer.echo("capture requested")


__all__ = ["run", "trigger"]

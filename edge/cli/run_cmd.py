"""``wildedge run``, ``wildedge check`` and ``wildedge trigger``: the field daemon's commands.

Every expected failure (bad config, missing model, camera that cannot open, unwritable state
directory) ends with one ``error:`` line naming the file or key (a config with several problems:
then one ``key.path: message`` line each) and a non-zero exit, never a traceback: exit 2 for an
invalid config, 1 for anything else.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

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


# -- check ------------------------------------------------------------------------------------------

class _Report:
    def __init__(self) -> None:
        self.failures = 0

    def line(self, ok: bool | None, what: str, detail: str) -> None:
        mark = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
        self.failures += ok is False
        typer.echo(f"{mark} {what:<11} {detail}")

    def step(self, what: str, fn: Callable[[], str]) -> bool:
        try:
            detail = fn()
        except (WildedgeError, OSError, ValueError) as err:
            self.line(False, what, str(err))
            return False
        self.line(True, what, detail)
        return True


def _check_state_dir(state_dir: Path) -> str:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=state_dir, prefix=".check-"):
            pass
    except OSError as err:
        raise ConfigError(f"state directory {state_dir} is not writable: {err.strerror or err}") from None
    from edge.daemon import state_paths
    from edge.store import Store

    db_path, images_dir, _ = state_paths(state_dir)
    if not db_path.exists():
        return f"{state_dir} (writable; no store yet)"
    with Store(db_path, images_dir=images_dir) as store:
        verdict = store.integrity_check()
        if verdict != "ok":
            raise ConfigError(f"store {db_path} is damaged: {verdict}")
        depth = store.outbox_depth()
    return f"{state_dir} (store ok, {depth.count} messages waiting)"


def _check_models(cfg: Any) -> list[tuple[str, Callable[[], str]]]:
    from edge.inference.classifier import Classifier
    from edge.inference.detector import Detector

    def detector() -> str:
        started = time.perf_counter()
        with Detector(cfg.detector.model, conf=cfg.detector.conf, iou=cfg.detector.iou,
                      threads=cfg.detector.threads, spin=False) as det:
            took = time.perf_counter() - started
            return (f"{cfg.detector.model}: {det.card.name or det.card.decoder.name}, {len(det.labels)} classes, "
                    f"loaded in {took:.1f} s")

    def classifier() -> str:
        with Classifier(cfg.classifier.model, threads=cfg.detector.threads, spin=False) as cls:
            return f"{cfg.classifier.model}: {cls.card.name or cls.card.decoder.name}, {len(cls.labels)} classes"

    steps = [("detector", detector)]
    if cfg.classifier is not None:
        steps.append(("classifier", classifier))
    return steps


def _check_camera(cfg: Any) -> str:
    from edge.clock import SystemClock
    from edge.config.build import build_camera_factory

    camera = build_camera_factory(cfg, clock=SystemClock(), is_processed=lambda _source: False,
                                  tz=cfg.device.zone())()
    camera.open()
    try:
        if cfg.camera.type == "folder":
            pending = camera.pending() if hasattr(camera, "pending") else 0
            what = "images" if cfg.camera.mode == "replay" else "images found so far"
            return f"{camera.name}: {pending} {what}"
        frame = camera.capture()
        if frame is None:
            raise ConfigError(f"camera {camera.name} opened but gave no frame")
        height, width = frame.image.shape[:2]
        return f"{camera.name}: {width}x{height} frame captured"
    finally:
        camera.close()


def _check_mqtt(cfg: Any, timeout: float = 10.0) -> tuple[bool | None, str]:
    """Connect once as ``<device>-check`` with a throwaway session (a running daemon keeps its own):
    ok, FAIL when the broker refuses us or the TLS/password files are unusable, warn when it
    cannot be reached (the daemon queues results until it can)."""
    from edge.mqtt.connect import V5, connect, make_client

    mqtt = cfg.mqtt
    result: dict[str, Any] = {}
    try:
        client = make_client(mqtt, device=f"{cfg.device.id}-check", protocol=V5,
                             will_topic=f"{mqtt.prefix}/{cfg.device.id}-check/status", will_payload=b"")
        client.on_connect = lambda _c, _u, _f, reason, _p: result.setdefault("reason", reason)
        connect(client, mqtt, protocol=V5, session=False)
    except ConfigError as err:
        return False, str(err)
    except OSError as err:
        return None, f"{mqtt.url}: cannot reach the broker now ({err}); results are queued until it can"
    deadline = time.monotonic() + timeout
    while "reason" not in result and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    reason = result.get("reason")
    if reason is None:
        return None, f"{mqtt.url}: no answer within {timeout:g} s; results are queued until it answers"
    if reason.is_failure:
        return False, f"{mqtt.url}: the broker refused the connection: {reason}"
    return True, f"{mqtt.url}: connected ({'TLS, ' if mqtt.tls else ''}MQTT 5)"


def check(
    config: ConfigOption,
    overrides: SetOption = None,
) -> None:
    """Check a config without running: models, camera, state directory, disk, clock, temperature.

    Exit 1 when anything fails.
    """
    from edge.clock import SystemClock
    from edge.health import read_cpu_temperature

    cfg = _load(config, overrides)
    report = _Report()
    report.line(True, "config", f"{config} (device {cfg.device.id})")
    if cfg.device.profile:
        from edge.config.profiles import board_problem, load_profile

        profile = load_profile(cfg.device.profile)
        report.line(True, "profile", profile.summary())
        if (mismatch := board_problem(profile)) is not None:
            report.line(None, "profile", mismatch)
    for what, fn in _check_models(cfg):
        report.step(what, fn)
    if report.step("camera", lambda: _check_camera(cfg)) and cfg.camera.type == "folder":
        from edge.batch.sources import unreadable_photos

        note = unreadable_photos(Path(cfg.camera.path), recursive=cfg.camera.recursive)
        if note:
            report.line(None, "camera", note)
    state_dir = Path(cfg.device.state_dir)
    if report.step("state dir", lambda: _check_state_dir(state_dir)):
        free = shutil.disk_usage(state_dir).free
        floor = cfg.storage.min_free
        report.line(free >= floor or None, "disk", f"{free / 1e9:.1f} GB free (floor {floor / 1e9:.1f} GB)"
                    + ("" if free >= floor else ": images will not be saved"))
    clock = SystemClock(rtc=cfg.device.rtc)
    synced = clock.synchronised()
    report.line(True if synced else None, "clock",
                f"{clock.now().isoformat(timespec='seconds')} "
                + ("synchronised" if synced else "NOT synchronised (events are marked; the server corrects "
                                                 "them from the boot-relative time)"))
    temp = read_cpu_temperature()
    report.line(None if temp is not None and temp >= 80 else True, "temperature",
                f"{temp:.1f} °C" if temp is not None else "no sensor")
    if cfg.mqtt is not None:
        ok, detail = _check_mqtt(cfg)
        report.line(ok, "mqtt", detail)
    if report.failures:
        typer.echo(f"error: {report.failures} check(s) failed", err=True)
        raise typer.Exit(1)


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


__all__ = ["check", "run", "trigger"]

"""``wildedge check``: the field doctor. Everything a trap needs, checked from the config, without
creating or changing anything.

One line per check, ``ok`` / ``warn`` / ``FAIL`` (exit 1 when anything fails): the config (the same
validation as ``wildedge run``, :func:`edge.cli.run_cmd._load`) and its device profile, each model
loaded and timed on one frame, the camera (a live camera captures a frame, a folder is counted),
the state directory and the store (read-only: no folder is created, no migration runs), free disk,
the clock, CPU temperature, under-voltage and throttling (the firmware's word, or ``vcgencmd``), the
watchdog, and the broker with the configured credentials.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from edge.cli.run_cmd import ConfigOption, SetOption, _load
from edge.errors import ConfigError, WildedgeError

#: Inference runs timed after one warm-up; the median is reported.
TIMED_RUNS = 3
#: Where systemd says how often it feeds the hardware watchdog.
_SYSTEMD = Path("/run/systemd/system")
#: Where systemd/install.sh keeps the broker password for the unit's LoadCredential= (relative form).
CREDSTORE_PASSWORD = Path("/etc/credstore/wildedge.mqtt-password")


class _Report:
    def __init__(self) -> None:
        self.failures = 0

    def line(self, ok: bool | None, what: str, detail: str) -> None:
        mark = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
        self.failures += ok is False
        typer.echo(f"{mark} {what:<11} {detail}")

    def step(self, what: str, fn: Callable[[], str | tuple[bool | None, str]]) -> bool:
        try:
            outcome = fn()
        except (WildedgeError, OSError, ValueError) as err:
            self.line(False, what, str(err))
            return False
        ok, detail = outcome if isinstance(outcome, tuple) else (True, outcome)
        self.line(ok, what, detail)
        return ok is not False


def check_state_dir(state_dir: Path) -> tuple[bool | None, str]:
    """The state directory and its store, read-only: nothing is created, migrated or written."""
    from edge.daemon import state_paths
    from edge.outputs.device_store import open_readonly

    if not state_dir.exists():
        parent = state_dir
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"state directory {state_dir} does not exist and {parent} is not writable: create "
                              f"it for the daemon's user (the systemd unit's StateDirectory= does)")
        return True, f"{state_dir} (not created yet: the daemon creates it)"
    if not state_dir.is_dir():
        raise ConfigError(f"state directory {state_dir} is not a folder")
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"state directory {state_dir} is not writable by this user")
    db_path = state_paths(state_dir)[0]
    if not db_path.exists():
        return True, f"{state_dir} (writable; no store yet)"
    with open_readonly(db_path) as conn:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check") if r[0] != "ok"]
        if problems:
            raise ConfigError(f"store {db_path} is damaged: {'; '.join(problems[:3])}")
        queued = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    return True, f"{state_dir} (store ok, {queued} messages waiting)"


def _timed(run: Callable[[], object]) -> float:
    run()  # the first call allocates and warms caches
    times = []
    for _ in range(TIMED_RUNS):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _interval_s(cfg: Any) -> float | None:
    trigger = cfg.trigger
    interval = getattr(trigger, "interval", None) if trigger is not None else None
    return interval.total_seconds() if interval is not None else None


def check_models(cfg: Any) -> list[tuple[str, Callable[[], tuple[bool | None, str]]]]:
    """Load each model and time it on one frame; warn when the detector is slower than the
    timelapse interval (the daemon could not keep up)."""
    import numpy as np

    from edge.inference.classifier import Classifier
    from edge.inference.detector import Detector

    frame = np.full((480, 640, 3), 127, np.uint8)

    def detector() -> tuple[bool | None, str]:
        started = time.perf_counter()
        with Detector(cfg.detector.model, conf=cfg.detector.conf, iou=cfg.detector.iou,
                      threads=cfg.detector.threads, spin=False) as det:
            took = time.perf_counter() - started
            ms = _timed(lambda: det.detect(frame))
            detail = (f"{cfg.detector.model}: {det.card.name or det.card.decoder.name}, {len(det.labels)} classes, "
                      f"loaded in {took:.1f} s, {ms:.0f} ms a frame")
        interval = _interval_s(cfg)
        if interval is not None and ms / 1000 > interval:
            return None, f"{detail}: slower than trigger.interval ({interval:g} s), frames will queue up"
        return True, detail

    def classifier() -> tuple[bool | None, str]:
        with Classifier(cfg.classifier.model, threads=cfg.detector.threads, spin=False) as cls:
            crop = np.full((224, 224, 3), 127, np.uint8)
            ms = _timed(lambda: cls.classify(crop))
            return True, (f"{cfg.classifier.model}: {cls.card.name or cls.card.decoder.name}, "
                          f"{len(cls.labels)} classes, {ms:.0f} ms a crop")

    steps: list[tuple[str, Callable[[], tuple[bool | None, str]]]] = [("detector", detector)]
    if cfg.classifier is not None:
        steps.append(("classifier", classifier))
    return steps


def check_camera(cfg: Any) -> str:
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


def check_power(root: Path | None = None) -> tuple[bool | None, str] | None:
    """Under-voltage and throttling from the firmware (now, and since boot); None off a Raspberry Pi.

    ``root``: a stand-in for ``/`` (tests); it also keeps ``vcgencmd`` out of the way.
    """
    from edge.health import read_throttled

    flags = read_throttled() if root is None else read_throttled(root)
    if flags is None and root is None and shutil.which("vcgencmd"):
        try:
            out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5).stdout
            word = int(out.strip().partition("=")[2], 16)
        except (OSError, ValueError, subprocess.SubprocessError):
            word = None
        if word is not None:
            from edge.health import decode_throttled

            flags = decode_throttled(word)
    if flags is None:
        return None
    now = [name.replace("_", " ") for name in ("under_voltage", "throttled", "freq_capped") if flags.get(name)]
    since = [name.replace("_occurred", "").replace("_", " ") for name in
             ("under_voltage_occurred", "throttled_occurred", "freq_capped_occurred") if flags.get(name)]
    if now:
        return None, f"{', '.join(now)} NOW (0x{flags['raw']:x}): check the power supply and cooling"
    if since:
        return None, f"{', '.join(since)} since boot (0x{flags['raw']:x}): check the power supply and cooling"
    return True, "no under-voltage or throttling since boot"


def check_watchdog(dev: Path = Path("/dev"), systemd: Path = _SYSTEMD) -> tuple[bool | None, str]:
    """Whether a hardware watchdog exists and systemd feeds it (RuntimeWatchdogSec)."""
    devices = sorted(p.name for p in dev.glob("watchdog*"))
    if not devices:
        return None, ("no /dev/watchdog: a hung board is not reset (Raspberry Pi: dtparam=watchdog=on, "
                      "firmware_configs/README.md)")
    if not systemd.is_dir():
        return None, f"/dev/{devices[0]} present; systemd is not running, so nothing feeds it"
    try:
        value = subprocess.run(["systemctl", "show", "-p", "RuntimeWatchdogUSec", "--value"], capture_output=True,
                               text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        value = ""
    if value in ("", "0", "infinity"):
        return None, (f"/dev/{devices[0]} present but systemd does not feed it (RuntimeWatchdogSec is off: "
                      "firmware_configs/os/)")
    return True, f"/dev/{devices[0]} fed by systemd every {value}"


def check_mqtt(cfg: Any, timeout: float = 10.0, *, credstore: Path = CREDSTORE_PASSWORD) -> tuple[bool | None, str]:
    """Connect once as ``<device>-check`` with a throwaway session (a running daemon keeps its own):
    ok, FAIL when the broker refuses us or the TLS/password files are unusable, warn when it
    cannot be reached (the daemon queues results until it can).

    Without ``password_file`` and outside the unit (no ``$CREDENTIALS_DIRECTORY``), the password is
    the one the unit's ``LoadCredential=`` hands the daemon: ``credstore``."""
    from edge.mqtt.connect import V5, connect, make_client

    mqtt = cfg.mqtt
    if mqtt.password_file is None and not os.environ.get("CREDENTIALS_DIRECTORY") and credstore.is_file():
        # Run by hand (not under the unit), check logs in with the password the unit is handed.
        mqtt = mqtt.model_copy(update={"password_file": credstore})
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
    """Check a trap without running it or changing anything: config, models and their speed, camera,
    state directory, disk, clock, temperature, power, watchdog, broker.

    Exit 1 when anything fails (warnings do not).
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
    for what, fn in check_models(cfg):
        report.step(what, fn)
    if report.step("camera", lambda: check_camera(cfg)) and cfg.camera.type == "folder":
        from edge.batch.sources import unreadable_photos

        note = unreadable_photos(Path(cfg.camera.path), recursive=cfg.camera.recursive)
        if note:
            report.line(None, "camera", note)
    state_dir = Path(cfg.device.state_dir)
    if report.step("state dir", lambda: check_state_dir(state_dir)):
        from edge.store import free_space

        free = free_space(state_dir)
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
    power = check_power()
    if power is not None:
        report.line(power[0], "power", power[1])
    watchdog_ok, watchdog = check_watchdog()
    report.line(watchdog_ok, "watchdog", watchdog)
    if cfg.mqtt is not None:
        ok, detail = check_mqtt(cfg)
        report.line(ok, "mqtt", detail)
    if report.failures:
        typer.echo(f"error: {report.failures} check(s) failed", err=True)
        raise typer.Exit(1)

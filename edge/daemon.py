"""The field daemon: wiring only. Camera -> trigger -> pipeline -> store, with health and systemd.

One process, one main loop: it waits until the earliest trigger is due (or an external trigger,
a command or a signal wakes it), captures the trigger's burst, runs it through
:class:`edge.pipeline.FramePipeline` and commits the whole trigger in one SQLite transaction. A
folder camera is its own trigger: every new file is one frame, processed as soon as it is there.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from edge import memory
from edge.capture import ReopeningCamera
from edge.capture.base import Camera
from edge.clock import Clock, SystemClock
from edge.errors import CaptureError, ConfigError, ImageReadError, StoreError
from edge.health import CpuMeter
from edge.pipeline import FramePipeline, Processed
from edge.sdnotify import Notifier
from edge.store import DiskFullError, DiskReserve, OutboxMessage, Store, free_space, make_room, new_uid
from edge.triggers import Fire, OnceTrigger, Trigger
from edge.triggers.control import CONTROL_COMMANDS, ControlServer
from edge.upkeep import Upkeep

logger = logging.getLogger(__name__)

DB_NAME = "wildedge.db"
IMAGES = "images"
CONTROL_SOCKET = "control.sock"
#: The longest the loop sleeps without looking at the stop flag, health and the watchdog.
MAX_WAIT_S = 5.0


#: Free bytes a store needs to open (WAL index, first writes) when no reserve can be given back.
OPEN_ROOM = 1 << 20


def state_paths(state_dir: Path) -> tuple[Path, Path, Path]:
    """The database, the image store and the control socket under a state directory."""
    return state_dir / DB_NAME, state_dir / IMAGES, state_dir / CONTROL_SOCKET


class Daemon(Upkeep):
    """``wildedge run``: build everything from the config, loop until stopped; a single use object."""

    def __init__(
        self,
        config: Any,
        *,
        once: bool = False,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        camera_factory: Callable[[], Camera] | None = None,
        messages: Callable[[Any, list[Processed]], list[OutboxMessage]] | None = None,
    ) -> None:
        from edge.config.build import build_external, build_windows

        self.config = config
        self.once = once
        self.clock = clock or SystemClock(rtc=config.device.rtc)
        self.notifier = notifier or Notifier.from_env()
        self.tz = config.device.zone()
        self.state_dir = Path(config.device.state_dir)
        self.db_path, self.images_dir, self.socket_path = state_paths(self.state_dir)
        self._camera_factory = camera_factory
        self._messages = messages
        self._stop = threading.Event()
        self.external = build_external(config, clock=self.clock)
        self.windows = build_windows(config, tz=self.tz) if config.trigger is not None else None
        self.folder = config.camera.type == "folder"
        self.triggers: list[Trigger] = []
        self._held_fire: Fire | None = None
        self._untrimmed = False
        self._config_lock = threading.Lock()
        self._pending_config: Any = None
        self.publisher: Any = None
        self.ha_tally: Any = None  # Home Assistant "detections today" (mqtt.ha_discovery)
        self.ha_topic = ""
        self.cpu = CpuMeter()
        self.counts = {"frames": 0, "events": 0, "failures": 0, "triggers": 0, "unsendable": 0, "unrecorded": 0}
        self.reserve = DiskReserve(self.state_dir, size=config.storage.reserve)
        self.disk_full = False  # the last store write failed for lack of space
        self._next_health = 0.0
        self._next_watchdog = 0.0

    # -- control ------------------------------------------------------------------------------------
    def stop(self, reason: str = "requested") -> None:
        """Ask the loop to finish the trigger in hand and exit (thread- and signal-safe)."""
        if not self._stop.is_set():
            logger.info("stopping (%s)", reason)
        self._stop.set()
        self.external.fire("stop")  # wakes a loop waiting for the next trigger

    def _signals(self, stack: ExitStack) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may install handlers (tests run the daemon in a thread)
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.signal(sig, lambda num, _frame: self.stop(signal.Signals(num).name))
            stack.callback(signal.signal, sig, previous)

    def _command(self, request: dict) -> dict:
        """Requests from ``wildedge trigger`` (the control socket); nothing is ever executed."""
        cmd = request.get("cmd")
        if cmd == "capture":
            burst = request.get("burst")
            if burst is not None and (not isinstance(burst, int) or isinstance(burst, bool)
                                      or not 1 <= burst <= 100):
                return {"ok": False, "error": "burst must be an integer within 1..100"}
            self.external.fire("command", burst=burst)
            return {"ok": True}
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "ping":
            return {"ok": True, "pong": True}
        if cmd == "set":
            return self._set(request.get("values"))
        return {"ok": False, "error": f"unknown command {cmd!r} (capture, status, ping; set only over MQTT)"}

    def _remote(self, command: Any) -> dict:
        """A command that came over MQTT (already parsed and syntax-checked by edge.payload)."""
        return self._command({"cmd": command.name, **command.args})

    def _set(self, values: Any) -> dict:
        """Change runtime settings: validated against the whole config, persisted, applied by the loop."""
        from edge.mqtt.device import apply_set

        if not isinstance(values, dict) or not values:
            return {"ok": False, "error": "values must be a non-empty object of key.path: value", "code": "bad_args"}
        # One set at a time, each on top of the last one not yet applied: two quick sets both hold.
        with self._config_lock:
            try:
                new = apply_set(self._pending_config or self.config, values, state_dir=self.state_dir)
            except (ConfigError, OSError) as err:
                return {"ok": False, "error": str(err), "code": "invalid"}
            self._pending_config = new
        self.external.wake()  # the loop applies it at its next turn (housekeeping)
        return {"ok": True, "applied": sorted(values)}

    def _apply_pending(self) -> None:
        """Swap in a config changed by ``set`` (main loop only: nothing else touches these objects)."""
        with self._config_lock:
            new, self._pending_config = self._pending_config, None
        if new is None:
            return
        from edge.config.build import build_triggers, build_windows

        self.config = new
        self.pipeline.reconfigure(new)
        self.external.burst = new.trigger.burst if new.trigger is not None else 1
        if new.trigger is not None and new.trigger.type == "external":
            self.external.cooldown = new.trigger.cooldown
        if new.trigger is not None:
            self.windows = build_windows(new, tz=self.tz)
            scheduled, _gpio = build_triggers(new, tz=self.tz, external=self.external)
            self.triggers = scheduled  # the GPIO sensor, if any, stays open as it was
        logger.info("runtime settings applied")

    def status(self) -> dict[str, Any]:
        """What ``status`` commands answer: counters, camera, clock, disk, outbox and delivery state."""
        out: dict[str, Any] = {
            "device": self.config.device.id, "counts": dict(self.counts), "camera": self._camera_state(),
            "clock_synchronised": self.clock.synchronised(),
            "disk_low": bool(self.pipeline.disk_low) if hasattr(self, "pipeline") else False,
            "disk_full": self.disk_full}
        if hasattr(self, "store"):
            try:
                out["queue_depth"] = self.store.outbox_depth().count
            except StoreError as err:
                out["queue_error"] = str(err)
        if self.publisher is not None:
            out["mqtt"] = self.publisher.state.as_dict()
        return out

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped (or, with ``once``, until the session's work is done); the exit code."""
        cfg = self.config
        started = self.clock.monotonic()
        memory.limit_arenas(2)
        with ExitStack() as stack:
            stack.enter_context(self.notifier)
            self._signals(stack)
            # A card filled to the last byte (by this daemon or any other program) must not stop the
            # store from opening: SQLite needs free blocks to open a WAL database and to delete.
            self.reserve.release_if_full()
            self.store = stack.enter_context(self._open_store())
            self.notifier.extend_timeout(180)  # loading and warming up models can be slow on a Pi
            self.pipeline = self._pipeline(stack)
            from edge.config.build import build_camera_factory

            factory = self._camera_factory or build_camera_factory(
                cfg, clock=self.clock, is_processed=self.store.is_processed, tz=self.tz)
            self.camera = stack.enter_context(ReopeningCamera(factory, clock=self.clock))
            if self.camera.state != "ok":
                # At start a camera that cannot open is a mistake to report (systemd restarts the
                # unit); once running, an outage is waited out with backoff.
                raise CaptureError(f"camera {self.camera.name} cannot open: {self.camera.last_error}")
            if cfg.trigger is not None:
                self.triggers = self._triggers(stack)
            stack.enter_context(ControlServer(self.socket_path, self._command, commands=CONTROL_COMMANDS))
            if cfg.mqtt is not None:
                self._delivery(stack)
            self._retention()
            self.notifier.ready(f"{cfg.device.id}: running")
            logger.info("wildedge running: device %s, camera %s, state %s", cfg.device.id, self.camera.name,
                        self.state_dir)
            code = self._loop_folder() if self.folder else self._loop_live()
            if self.publisher is not None and not self._stop.is_set():
                self._deliver_before_exit()
            self.notifier.stopping()
            self._health(force=True)
            self._effort(force=True)
        logger.info("stopped after %.1f s: %d frames, %d events, %d failures", self.clock.monotonic() - started,
                    self.counts["frames"], self.counts["events"], self.counts["failures"])
        return code

    def _loop_folder(self) -> int:
        """A folder camera: each file is one frame and one trigger of its own.

        Without a ``[trigger]`` (or with ``--once``) files are read as soon as they are there; with
        one, the new files are read when it fires. Replay ends when every file is done; ``--once``
        ends when nothing is left to read (watch: nothing still settling either).
        """
        continuous = self.once or self.config.trigger is None
        poll = self.config.camera.poll.total_seconds()
        while not self._stop.is_set():
            self._housekeeping()
            fire = self._poll_external()
            if fire is not None and fire.reason == "stop":
                break
            if fire is None and not continuous:
                fire = self._due_fire()
            if continuous or fire is not None:
                if self._drain(fire.reason if fire is not None else "file"):
                    continue
            if self.camera.state == "failed" and self.once:
                raise CaptureError(f"camera {self.camera.name} failed: {self.camera.last_error}")
            if self.camera.exhausted or (self.once and self._pending() == 0):
                logger.info("every file of %s is processed", self.camera.name)
                return 0
            self._wait(poll if continuous else None)
        return 0

    def _drain(self, reason: str) -> int:
        """Read and commit every file ready now; how many were read."""
        count = 0
        while not self._stop.is_set():
            self._housekeeping()
            burst_id = new_uid()
            try:
                frame = self.camera.capture()
            except ImageReadError as err:
                self._commit([self.pipeline.failed(err.source, str(err), trigger=reason, burst_id=burst_id,
                                                   index=0)], reason)
                count += 1
                continue
            if frame is None:
                return count
            self._commit([self.pipeline.process(frame, trigger=reason, burst_id=burst_id, index=0)], reason)
            count += 1
        return count

    def _pending(self) -> int:
        camera = self.camera.camera
        return int(camera.pending()) if camera is not None and hasattr(camera, "pending") else 0

    def _loop_live(self) -> int:
        triggers: list[Trigger] = [OnceTrigger(burst=self.config.trigger.burst)] if self.once else self.triggers
        while not self._stop.is_set():
            self._housekeeping()
            fire = self._poll_external()
            if fire is not None and fire.reason == "stop":
                break
            if fire is None:
                fire = self._due_fire(triggers)
            if fire is not None:
                self._handle(fire)
                if self.once:
                    if self.counts["frames"] == 0:
                        raise CaptureError(f"camera {self.camera.name} gave no frame: {self.camera.last_error}")
                    return 0
                continue
            self._wait(None, triggers)
        return 0

    def _due_fire(self, triggers: list[Trigger] | None = None) -> Fire | None:
        now = self.clock.now()
        for trigger in self.triggers if triggers is None else triggers:
            due = trigger.due(now)
            if due is not None and due <= now:
                fire = trigger.check(now, self.camera)
                if fire is not None:
                    return fire
        return None

    def _wait(self, limit: float | None, triggers: list[Trigger] | None = None) -> None:
        """Sleep until the next trigger is due, an external fire comes, or ``MAX_WAIT_S`` passes.

        A fire that arrives while waiting is kept for the loop's next :meth:`_poll_external`.
        """
        if self._untrimmed:
            memory.trim()  # a shot's frames and buffers are freed: give them back before idling
            self._untrimmed = False
        now = self.clock.now()
        dues = [d for t in (self.triggers if triggers is None else triggers) if (d := t.due(now)) is not None]
        wait = min([(min(dues) - now).total_seconds(), MAX_WAIT_S] if dues else [MAX_WAIT_S])
        if limit is not None:
            wait = min(wait, limit)
        woke = self.external.wait(max(0.0, wait))
        if woke is not None and self._external_allowed(woke):
            self._held_fire = woke

    def _poll_external(self) -> Fire | None:
        """The next external fire (one that woke the last wait first), skipping disallowed ones."""
        if self._held_fire is not None:
            fire, self._held_fire = self._held_fire, None
            return fire
        while (fire := self.external.poll()) is not None:
            if self._external_allowed(fire):
                return fire
        return None

    def _external_allowed(self, fire: Fire) -> bool:
        """Sensor fires outside the trigger's active windows are ignored; commands always go."""
        if fire.reason in ("command", "stop") or self.windows is None or self.windows.always:
            return True
        if self.windows.is_active(fire.at):
            return True
        logger.debug("%s fire outside the active windows: ignored", fire.reason)
        return False

    def _handle(self, fire: Fire) -> None:
        """Capture a trigger's burst and commit it."""
        self.counts["triggers"] += 1
        burst_id, frames = new_uid(), []
        interval = self.config.trigger.burst_interval.total_seconds() if self.config.trigger else 0.0
        for index in range(max(1, fire.burst)):
            if index and self.clock.sleep(interval, self._stop):
                break
            try:
                frame = self.camera.capture()
            except ImageReadError as err:
                frames.append(self.pipeline.failed(err.source, str(err), trigger=fire.reason, burst_id=burst_id,
                                                   index=index))
                continue
            if frame is None:
                continue  # the camera is down: ReopeningCamera logs it and health shows it
            frames.append(self.pipeline.process(frame, trigger=fire.reason, burst_id=burst_id, index=index))
        if frames:
            self._commit(frames, fire.reason)
        else:
            logger.warning("trigger %s: no frame captured (camera %s)", fire.reason, self.camera.state)

    def _commit(self, frames: list[Processed], reason: str) -> None:
        burst_id = frames[0].record.burst_id
        event = self.pipeline.event(frames, trigger=reason, burst_id=burst_id)
        messages = []
        if self._messages and event is not None:
            try:
                messages = self._messages(event, frames)
            except ValueError as err:
                # One event the wire format cannot carry must not stop the daemon (and every restart
                # after it): it is stored, counted and logged, not sent.
                logger.error("event %s is stored but cannot be sent: %s", event.uid, err)
                self.counts["unsendable"] += 1
        if not self._record(frames, event, messages):
            return
        if messages and self.publisher is not None:
            self.publisher.notify()
        if event is not None and self.ha_tally is not None:
            # Home Assistant shows names, not class indices; a time the device does not know yet (an
            # unsynchronised clock) waits for the clock (edge/mqtt/homeassistant.py, DetectionTally).
            self.ha_tally.add_event(event, frames, clock=self.clock, tz=self.tz)
            self.publisher.set_retained(self.ha_topic, self.ha_tally.state())
            try:  # today's count survives a restart within the day
                self.store.set_meta(self.ha_tally.META_KEY, self.ha_tally.dumps())
            except StoreError as err:
                logger.warning("Home Assistant tally not saved: %s", err)
        self.counts["frames"] += len(frames)
        self.counts["failures"] += sum(p.record.failure is not None for p in frames)
        self.counts["events"] += event is not None
        if event is not None:  # one INFO line per event; frames without detections make none
            from edge.logsetup import event_line

            logger.info("%s", event_line(event, frames))
        self._untrimmed = True

    def _open_store(self) -> Store:
        """The store; on a disk too full to open it (no reserve left to give back), the oldest
        images are deleted to make room, and their rows forget them."""
        try:
            return Store(self.db_path, images_dir=self.images_dir, clock=self.clock)
        except StoreError as err:
            need = max(2 * self.reserve.size, OPEN_ROOM)
            try:
                free = free_space(self.state_dir)
            except OSError:
                raise err from None
            if free >= need:
                raise
            removed, _ = make_room(self.images_dir, need=need)
            if not removed:
                raise StoreError(f"{err}; the disk holding {self.state_dir} is full ({free} bytes free) and it holds "
                                 f"no images to delete: free some space on it") from err
        store = Store(self.db_path, images_dir=self.images_dir, clock=self.clock)
        store.forget_missing_images()
        return store

    def _record(self, frames: list[Processed], event: Any, messages: list[OutboxMessage]) -> bool:
        """Commit one burst; on a full disk, release the reserve, free space and try once more.

        A burst that still cannot be written is counted (``unrecorded``) and logged, and the daemon
        goes on: a full disk degrades, it never stops detection. A folder camera's file left
        unrecorded is read again at the next start.
        """
        records = [p.record for p in frames]
        for attempt in (1, 2):
            try:
                self.store.commit_burst(records, event, messages)
            except DiskFullError as err:
                if attempt == 1:
                    self.disk_full = True
                    self.reserve.release(str(err.__cause__ or err))
                    self.pipeline.images_paused = bool(self.reserve.size)
                    self._retention()  # checkpoints the WAL too: often the biggest file on a full card
                    continue
                self.counts["unrecorded"] += len(frames)
                logger.error("burst %s (%d frames%s) not recorded, the disk is full even after retention: %s",
                             records[0].burst_id, len(frames), ", 1 event" if event is not None else "", err)
                return False
            if self.disk_full:
                logger.info("results are recorded again")
            self.disk_full = False
            return True
        return False

    # -- building -----------------------------------------------------------------------------------
    def _delivery(self, stack: ExitStack) -> None:
        from edge.mqtt import EventMessages, Publisher, model_message

        cfg = self.config
        model, model_id = model_message(cfg, detector=self.pipeline.detector, classifier=self.pipeline.classifier,
                                        at=self.clock.now(), synced=self.clock.synchronised())
        if self._messages is None:
            self._messages = EventMessages(cfg, model_id=model_id, sticky=cfg.events.mode == "sticky")
        retained: list[tuple[str, bytes]] = []
        if cfg.mqtt.ha_discovery:
            from edge import __version__
            from edge.mqtt import homeassistant as ha

            retained = ha.discovery_messages(prefix=cfg.mqtt.prefix, device=cfg.device.id,
                                             ha_prefix=cfg.mqtt.ha_prefix, version=__version__)
            self.ha_tally = ha.DetectionTally(cfg.device.id)
            self.ha_tally.restore(self.store.get_meta(ha.TALLY_KEY))
            self.ha_tally.follow(self.clock, self.tz)
            self.ha_topic = ha.ha_state_topic(cfg.mqtt.prefix, cfg.device.id)
            retained.append((self.ha_topic, self.ha_tally.state()))
        location = (cfg.device.latitude, cfg.device.longitude) if cfg.mqtt.send_location else None
        self.publisher = stack.enter_context(Publisher(cfg.mqtt, device=cfg.device.id, store=self.store,
                                                       on_command=self._remote, model=model, retained=retained,
                                                       location=location, clock=self.clock))
        self._effort()

    def _pipeline(self, stack: ExitStack) -> FramePipeline:
        from edge.group import NewObjectFilter, PrivacyPolicy
        from edge.inference.classifier import Classifier
        from edge.inference.detector import Detector

        cfg = self.config
        det = cfg.detector
        detector = stack.enter_context(Detector(det.model, conf=det.conf, iou=det.iou, threads=det.threads,
                                                spin=False))
        classifier, classes = None, None
        if cfg.classifier is not None:
            classifier = stack.enter_context(Classifier(cfg.classifier.model, threads=det.threads, spin=False))
            classes = cfg.classifier.classes
        sticky = None
        if cfg.events.mode == "sticky":
            sticky = NewObjectFilter(iou=cfg.events.match_iou)
            previous = self.store.last_frame_detections()
            if previous:
                sticky.reset([(d.box, d.class_id) for d in previous])
        return FramePipeline(
            detector=detector, clock=self.clock, images_dir=self.images_dir, classifier=classifier,
            classify_labels=classes,
            classifier_min_confidence=cfg.classifier.min_confidence if cfg.classifier else 0.0,
            classifier_margin=cfg.classifier.margin if cfg.classifier else 0.0, sticky=sticky,
            privacy=PrivacyPolicy(mode=cfg.privacy.person, labels=cfg.privacy.labels),
            save_images=cfg.storage.save_images, jpeg_quality=cfg.storage.jpeg_quality,
            min_free=cfg.storage.min_free,
            crop_max_bytes=cfg.mqtt.crop_max_bytes if cfg.mqtt is not None and cfg.mqtt.crops else None,
        )

    def _triggers(self, stack: ExitStack) -> list[Trigger]:
        from edge.config.build import build_triggers

        triggers, gpio = build_triggers(self.config, tz=self.tz, external=self.external)
        if gpio is not None:
            stack.enter_context(gpio)
        return triggers

    # -- housekeeping -------------------------------------------------------------------------------

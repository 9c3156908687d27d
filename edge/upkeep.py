"""The daemon's periodic duties, split out of :mod:`edge.daemon` to keep each module small:
watchdog pings, health snapshots (stored, and published when MQTT is set), retention and the
outbox bound, sampling-effort summaries, and delivering before a session ends by itself.

:class:`Upkeep` is a mixin of :class:`edge.daemon.Daemon` and uses its attributes (config, clock,
store, pipeline, publisher, notifier, counts); it runs on the daemon's main loop only.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from edge.errors import StoreError
from edge.health import collect_health
from edge.store import enforce

logger = logging.getLogger(__name__)


class Upkeep:
    """Periodic duties of the main loop (see the module docstring)."""

    config: Any
    clock: Any
    store: Any
    pipeline: Any
    publisher: Any
    notifier: Any
    counts: dict[str, int]
    reserve: Any
    disk_full: bool
    cpu: Any
    state_dir: Path
    images_dir: Path
    _stop: threading.Event
    _pending_config: Any
    _next_health: float
    _next_watchdog: float

    def _apply_pending(self) -> None:  # the daemon's; declared for readers and type checkers
        raise NotImplementedError

    def _deliver_before_exit(self) -> None:
        """A session that ends by itself (``--once``, a finished replay) delivers before it exits."""
        self._effort(force=True)
        deadline = self.clock.monotonic() + self.config.mqtt.drain_timeout.total_seconds()
        while not self._stop.is_set():
            depth = self.store.outbox_depth().count
            if depth == 0:
                logger.info("outbox delivered")
                return
            if self.clock.monotonic() >= deadline:
                logger.warning("%d messages not delivered within %s: they stay queued for the next run (%s)",
                               depth, self.config.mqtt.drain_timeout, self.publisher.state.last_error or
                               "still sending")
                return
            self._housekeeping()
            self._stop.wait(0.1)

    def _effort(self, *, force: bool = False) -> None:
        if self.config.mqtt is None:
            return
        from edge.mqtt import enqueue_effort

        try:
            queued = enqueue_effort(self.store, self.config, now=self.clock.now(), synced=self.clock.synchronised(),
                                    boot_id=self.clock.boot_id(), monotonic=self.clock.monotonic(), force=force)
        except (StoreError, ValueError) as err:
            logger.warning("effort summary not queued: %s", err)
            return
        if queued and self.publisher is not None:
            self.publisher.notify()

    def _housekeeping(self) -> None:
        # A deleted or replaced database stops the daemon (StoreGoneError) instead of recording
        # into a file nobody will read; the loop comes here at least every few seconds.
        self.store.check_file()
        now = self.clock.monotonic()
        interval = self.notifier.watchdog_interval()
        if interval is not None and now >= self._next_watchdog:
            self.notifier.watchdog()
            self._next_watchdog = now + interval
        if self._pending_config is not None:
            self._apply_pending()
        self._health()

    def _camera_state(self) -> dict[str, Any]:
        camera = getattr(self, "camera", None)
        if camera is None:
            return {"state": "closed"}
        return {"name": camera.name, "state": camera.state, "failures": camera.failures,
                "reopened": camera.reopened, "last_error": camera.last_error}

    def _health(self, *, force: bool = False) -> None:
        now = self.clock.monotonic()
        if not force and now < self._next_health:
            return
        self._next_health = now + self.config.health.interval.total_seconds()
        self._retention()
        depth = self.store.outbox_depth()
        extra = {
            "device": self.config.device.id,
            "camera": self._camera_state(),
            "clock_synchronised": self.clock.synchronised(),
            "boot_id": self.clock.boot_id(),
            "monotonic_s": round(now, 3),
            "queue_depth": depth.count,
            "queue_bytes": depth.bytes,
            "inference_ms": self.pipeline.last_inference_ms,
            "disk_low": self.pipeline.disk_low,
            "disk_full": self.disk_full,
            "disk_reserve_held": self.reserve.held,
            "counts": dict(self.counts),
        }
        if self.publisher is not None:
            extra["mqtt"] = {**self.publisher.state.as_dict(), "dropped": self.store.outbox_dropped(),
                             "dropped_crops": self.store.outbox_dropped(expendable=True)}
        try:
            snapshot = collect_health(state_dir=self.state_dir, extra=extra, clock=self.clock, cpu=self.cpu)
            self.store.add_health(snapshot, self.clock.now())
        except (StoreError, ValueError, OSError) as err:
            logger.warning("health snapshot not recorded: %s", err)
            return
        if self.publisher is not None:
            from edge import payload as wire

            self._effort()
            tally = getattr(self, "ha_tally", None)
            if tally is not None and tally.follow(self.clock):  # local midnight, or the clock synchronised
                self.publisher.set_retained(self.ha_topic, tally.state())
            if self.config.mqtt.health:
                self.publisher.publish_direct(self.publisher.topics.health,
                                              wire.encode_health(snapshot, device=self.config.device.id))
        self.notifier.status(f"{self.counts['frames']} frames, {self.counts['events']} events, queue {depth.count}, "
                             f"camera {self._camera_state()['state']}")

    def _retention(self) -> None:
        """Checkpoint, the outbox bound, retention, then the disk reserve (see docs/store.md).

        While the reserve is given back, retention's free-space floor is at least twice the reserve,
        so that deleting images (least valuable first) makes room to take it back.
        """
        storage, mqtt = self.config.storage, self.config.mqtt
        try:
            # Truncating the WAL first gives its megabytes back to the card (see Store.checkpoint).
            self.store.checkpoint()
        except StoreError as err:
            logger.warning("store checkpoint failed: %s", err)
        if mqtt is not None:
            try:
                self.store.trim_outbox(max_messages=mqtt.max_queue, max_bytes=mqtt.max_queue_bytes,
                                       max_age=mqtt.max_queue_age,
                                       expendable=f"{mqtt.prefix}/{self.config.device.id}/crop/")
            except StoreError as err:
                logger.warning("outbox bound not applied: %s", err)
        floor = storage.min_free
        if self.reserve.size and not self.reserve.held:
            floor = max(floor, 2 * self.reserve.size)
        try:
            report = enforce(self.store, images_dir=self.images_dir, now=self.clock.now(), max_age=storage.max_age,
                             min_free=floor)
        except (StoreError, OSError) as err:
            logger.warning("retention failed: %s", err)
        else:
            if report.disk_low and not self.pipeline.disk_low:
                logger.warning("disk below the free-space floor after retention (%d bytes free)", report.free_bytes)
        # Images are saved only while the reserve is held: the room it gave back is for results.
        self.pipeline.images_paused = bool(self.reserve.size) and not self.reserve.ensure()

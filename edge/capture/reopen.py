"""A camera that survives its device: on failure it closes, waits, and opens a fresh one.

A field camera fails in ordinary ways (a USB camera browns out, an RTSP camera reboots, a card is
pulled). The daemon must keep running, report the failure in its health messages and pick the
camera up again when it returns, without hammering the device: retries back off exponentially
(1 s, 2 s, 4 s ... up to ``backoff_max``). Waiting never blocks: while a retry is not due,
``capture`` and ``preview`` return None, so triggers, health and MQTT carry on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import numpy as np

from edge.capture.base import Camera, Frame
from edge.clock import Clock
from edge.errors import CaptureError, ImageReadError

logger = logging.getLogger(__name__)

State = Literal["ok", "failed", "closed"]


class ReopeningCamera:
    """Wraps the camera ``factory`` makes; a new one is made for every reopen.

    Health: ``state`` ("ok" | "failed" | "closed"), ``failures`` (device errors so far),
    ``last_error``, ``reopened`` (recoveries so far), ``retry_at`` (monotonic time of the next try).
    An :class:`~edge.errors.ImageReadError` (one bad file) passes through untouched: the device is fine.
    """

    def __init__(
        self,
        factory: Callable[[], Camera],
        *,
        clock: Clock,
        backoff_initial: float = 1.0,
        backoff_max: float = 300.0,
    ) -> None:
        if backoff_initial <= 0:
            raise ValueError("backoff_initial must be positive")
        if backoff_max < backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        self._factory = factory
        self._clock = clock
        self._initial = backoff_initial
        self._max = backoff_max
        self._delay = backoff_initial
        self._camera: Camera | None = factory()  # made now: a caller mistake in its options shows at once
        self.name = self._camera.name
        self.state: State = "closed"
        self.failures = 0
        self.reopened = 0
        self.last_error: str | None = None
        self.retry_at: float | None = None

    @property
    def camera(self) -> Camera | None:
        """The wrapped camera while one is open."""
        return self._camera if self.state == "ok" else None

    def open(self) -> None:
        """Open the camera; a device failure does not raise but leaves ``state`` "failed" and
        schedules a retry (a camera unplugged at boot must not stop the daemon)."""
        self._delay = self._initial
        self._try_open()

    def _try_open(self) -> bool:
        was_failed = self.state == "failed"
        try:
            if self._camera is None:
                self._camera = self._factory()
                self.name = self._camera.name
            self._camera.open()
        except CaptureError as err:
            self._fail(err)
            return False
        self.state, self.retry_at = "ok", None
        if was_failed:
            self.reopened += 1
            logger.info("camera %s is back (failures so far: %d)", self.name, self.failures)
        return True

    def _fail(self, err: CaptureError) -> None:
        self.failures += 1
        self.last_error = str(err)
        if self._camera is not None:
            camera, self._camera = self._camera, None
            try:
                camera.close()
            except CaptureError as close_err:
                logger.debug("camera %s: close after failure: %s", self.name, close_err)
        self.retry_at = self._clock.monotonic() + self._delay
        # One warning per outage; the retries of the same outage go to debug.
        if self.state != "failed":
            logger.warning("camera %s failed: %s; retrying in %g s", self.name, err, self._delay)
        else:
            logger.debug("camera %s still failing: %s; next try in %g s", self.name, err, self._delay)
        self.state = "failed"
        self._delay = min(self._delay * 2, self._max)

    def _live(self) -> Camera | None:
        """The open camera, trying a due reopen first; None while it is down."""
        if self.state == "closed":
            raise RuntimeError(f"camera {self.name}: used before open()")
        if self.state == "failed":
            if self.retry_at is not None and self._clock.monotonic() < self.retry_at:
                return None
            if not self._try_open():
                return None
        return self._camera

    def capture(self) -> Frame | None:
        """A frame, or None (no frame right now, or the camera is down and a retry is not due).

        Raises:
            ImageReadError: one file could not be read (passed through from a folder camera).
        """
        camera = self._live()
        if camera is None:
            return None
        try:
            frame = camera.capture()
        except ImageReadError:
            raise
        except CaptureError as err:
            self._fail(err)
            return None
        if frame is not None:
            self._delay = self._initial  # frames flow again: the next outage starts at 1 s
        return frame

    def preview(self) -> np.ndarray | None:
        """A grey preview frame, or None (no preview stream, or the camera is down)."""
        camera = self._live()
        if camera is None:
            return None
        try:
            image = camera.preview()
        except ImageReadError:
            raise
        except CaptureError as err:
            self._fail(err)
            return None
        if image is not None:
            self._delay = self._initial
        return image

    @property
    def exhausted(self) -> bool:
        """The wrapped camera has nothing more to give (a replayed folder, a video file)."""
        return self.state == "ok" and bool(getattr(self._camera, "exhausted", False))

    def close(self) -> None:
        if self._camera is not None and self.state == "ok":
            try:
                self._camera.close()
            except CaptureError as err:
                logger.warning("camera %s: close failed: %s", self.name, err)
        self.state, self.retry_at = "closed", None

    def __enter__(self) -> ReopeningCamera:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

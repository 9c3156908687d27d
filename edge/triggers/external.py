"""External triggers: fires from other threads (a PIR sensor on GPIO, a command, MQTT) for the main loop.

:class:`ExternalTriggers` is a thread-safe queue of :class:`Fire` that the daemon's loop polls or
waits on. Sensor fires within ``cooldown`` of the last accepted one are ignored (and counted): a PIR
sensor fires again and again while an animal moves. Commands and stop requests are never throttled,
and a stop request goes to the front of the queue so that shutdown never waits behind a backlog.

gpiozero is imported only when a :class:`GpioTrigger` opens (it probes the hardware at import).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from edge.errors import ConfigError
from edge.triggers.base import Fire

if TYPE_CHECKING:
    from edge.clock import Clock

logger = logging.getLogger(__name__)

#: Reasons the cooldown never drops: a person asked for them.
UNTHROTTLED = frozenset({"command", "stop"})
#: A stop request jumps the queue.
STOP = "stop"


class ExternalTriggers:
    """A thread-safe queue of fires from outside the main loop.

    Args:
        cooldown: sensor fires within this time of the last accepted one are ignored.
        burst: frames per fire when :meth:`fire` is not given a burst.
        clock: stamps fires and times the cooldown; None = the system clock.
        maxlen: fires waiting beyond this are dropped (counted), except stop requests.

    Raises:
        ValueError: an option is out of range.
    """

    def __init__(
        self,
        *,
        cooldown: timedelta = timedelta(0),
        burst: int = 1,
        clock: Clock | None = None,
        maxlen: int = 100,
    ) -> None:
        if cooldown < timedelta(0) or burst < 1 or maxlen < 1:
            raise ValueError(
                f"need cooldown >= 0, burst >= 1, maxlen >= 1 (got {cooldown}, {burst}, {maxlen})")
        self.cooldown = cooldown
        self.burst = burst
        self.maxlen = maxlen
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[Fire] = deque()
        self._last_accepted: float | None = None
        self.accepted = 0
        self.ignored = 0  # within the cooldown
        self.dropped = 0  # the queue was full
        self._woken = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def fire(
        self, reason: str = "external", *, burst: int | None = None, detail: dict[str, Any] | None = None,
    ) -> bool:
        """Queue a fire (from any thread); False when the cooldown or a full queue dropped it."""
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be at least 1 (got {burst})")
        now, mono = self._now()
        event = Fire(reason, now, burst=self.burst if burst is None else burst, detail=dict(detail or {}))
        with self._cond:
            if reason not in UNTHROTTLED and self._last_accepted is not None \
                    and mono - self._last_accepted < self.cooldown.total_seconds():
                self.ignored += 1
                logger.debug("%s fire ignored: within the %s cooldown", reason, self.cooldown)
                return False
            if reason == STOP:
                self._queue.appendleft(event)
            elif len(self._queue) >= self.maxlen:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    logger.warning("external trigger queue full (%d waiting): %d fire(s) dropped so far",
                                   len(self._queue), self.dropped)
                return False
            else:
                self._queue.append(event)
            if reason not in UNTHROTTLED:
                self._last_accepted = mono
            self.accepted += 1
            self._cond.notify_all()
        return True

    def poll(self) -> Fire | None:
        """The oldest waiting fire, or None at once."""
        with self._cond:
            return self._queue.popleft() if self._queue else None

    def wait(self, timeout: float) -> Fire | None:
        """The oldest waiting fire, waiting up to ``timeout`` seconds for one; None on timeout or
        after :meth:`wake`."""
        with self._cond:
            if timeout > 0:
                self._cond.wait_for(lambda: bool(self._queue) or self._woken, timeout=timeout)
            self._woken = False
            return self._queue.popleft() if self._queue else None

    def wake(self) -> None:
        """End a :meth:`wait` early without queueing a fire (new settings to apply, say)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def _now(self) -> tuple[datetime, float]:
        if self._clock is not None:
            return self._clock.now(), self._clock.monotonic()
        return datetime.now(timezone.utc), time.monotonic()


class GpioTrigger:
    """A PIR sensor (or any digital input) on a GPIO pin that fires ``triggers``; a context manager.

    Uses gpiozero's ``DigitalInputDevice``: edge interrupts, no polling thread (a battery matters).

    Args:
        pin: BCM pin number.
        triggers: where the fires go.
        pull_up: enable the internal pull-up (the sensor pulls the line low when active).
        burst: frames per fire; None = the queue's default.

    Raises:
        ConfigError: on open, when gpiozero is missing or the pin cannot be opened.
    """

    def __init__(self, pin: int, triggers: ExternalTriggers, *, pull_up: bool = False,
                 burst: int | None = None) -> None:
        if not isinstance(pin, int) or isinstance(pin, bool) or pin < 0:
            raise ValueError(f"pin must be a BCM pin number (got {pin!r})")
        self.pin = pin
        self.triggers = triggers
        self.pull_up = pull_up
        self.burst = burst
        self.activations = 0
        self._device: Any = None

    def open(self) -> None:
        if self._device is not None:
            return
        try:
            import gpiozero
        except ImportError as err:
            raise ConfigError(
                f"trigger.gpio_pin = {self.pin} needs gpiozero: `sudo apt install python3-gpiozero` "
                "(Raspberry Pi OS) or `pip install gpiozero`") from err
        try:
            device = gpiozero.DigitalInputDevice(self.pin, pull_up=self.pull_up)
        except Exception as err:  # gpiozero raises its own tree, lgpio/RPi.GPIO theirs: report them all
            raise ConfigError(f"cannot open GPIO pin {self.pin}: {err}") from err
        device.when_activated = self._activated
        self._device = device
        logger.info("listening on GPIO pin %d (pull_up=%s)", self.pin, self.pull_up)

    def _activated(self) -> None:
        # Runs on gpiozero's thread; the queue is thread-safe.
        self.activations += 1
        self.triggers.fire("external", burst=self.burst, detail={"pin": self.pin})

    def close(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            device.when_activated = None
            device.close()

    def __enter__(self) -> GpioTrigger:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

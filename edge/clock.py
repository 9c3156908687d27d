"""Wall-clock time with a "synchronised?" flag, plus boot-relative time (the ``Clock`` seam).

A field device often boots without network or RTC and starts in 1970 or at the last shutdown's
time. Every record therefore carries the UTC wall time, whether the clock was synchronised when it
was taken, and boot-relative seconds with the boot id, so that a server can correct records made
before synchronisation once a synchronised record from the same boot arrives.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

#: adjtimex(2) returns TIME_ERROR while the kernel considers the clock unsynchronised.
_TIME_ERROR = 5
#: Earliest plausible time for a trusted RTC: a clock before this was never set.
_PLAUSIBLE = datetime(2024, 1, 1, tzinfo=timezone.utc)


class Clock(Protocol):
    """What the daemon needs to know about time."""

    def now(self) -> datetime:
        """Current wall time, timezone-aware UTC."""

    def monotonic(self) -> float:
        """Seconds since boot, counting suspend (CLOCK_BOOTTIME); never goes back."""

    def synchronised(self) -> bool:
        """Whether the wall time can be trusted (NTP, or a trusted RTC)."""

    def boot_id(self) -> str:
        """An id that changes at every boot (pairs with :meth:`monotonic`)."""

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Wait ``seconds`` or until ``stop`` is set; True when stopped."""


class _Timex(ctypes.Structure):
    # struct timex is 208 bytes on 64-bit Linux; only ``modes`` (first field) must be zero for a
    # read-only call, the rest is scratch space for the kernel to fill.
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 252)]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # find_library runs ldconfig (about 2 ms): once per process, as the store asks at every write.
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def kernel_synchronised() -> bool | None:
    """The kernel's NTP state from adjtimex(2) (what ``timedatectl`` shows); None if unknown."""
    libc = _libc()
    if libc is None:
        return None
    try:
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


class SystemClock:
    """The real clock. ``rtc=True`` trusts a plausible wall time even without NTP (a device with a
    battery-backed RTC that was set once)."""

    def __init__(self, *, rtc: bool = False) -> None:
        self.rtc = rtc
        self._boot_id: str | None = None

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    def synchronised(self) -> bool:
        state = kernel_synchronised()
        if state:
            return True
        return self.rtc and self.now() >= _PLAUSIBLE

    def boot_id(self) -> str:
        if self._boot_id is None:
            try:
                self._boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
            except OSError:
                self._boot_id = "unknown"
        return self._boot_id

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        if stop is None:
            time.sleep(max(0.0, seconds))
            return False
        return stop.wait(max(0.0, seconds))


class FakeClock:
    """A clock for tests: time moves only when :meth:`advance` or :meth:`sleep` is called."""

    def __init__(self, start: datetime, *, synchronised: bool = True, boot_id: str = "fake-boot") -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._now = start.astimezone(timezone.utc)
        self._mono = 100.0
        self.is_synchronised = synchronised
        self._boot_id = boot_id
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def synchronised(self) -> bool:
        return self.is_synchronised

    def boot_id(self) -> str:
        return self._boot_id

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go back")
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def set(self, when: datetime) -> None:
        """Step the wall clock (as NTP does after boot); monotonic time does not move."""
        self._now = when.astimezone(timezone.utc)

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        self.sleeps.append(seconds)
        if stop is not None and stop.is_set():
            return True
        self.advance(max(0.0, seconds))
        return False

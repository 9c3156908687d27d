"""The systemd notify protocol (sd_notify(3)) without libsystemd: readiness, status and watchdog.

The service manager passes ``$NOTIFY_SOCKET``, an AF_UNIX datagram socket (a filesystem path, or an
abstract-namespace name written with a leading ``@``). Each message is one datagram of
newline-separated ``KEY=value`` assignments. ``$WATCHDOG_USEC`` (with ``$WATCHDOG_PID`` naming the
process it applies to) asks for a ``WATCHDOG=1`` keep-alive at least that often; sd_watchdog_enabled(3)
recommends pinging every half of it. Outside systemd every method is a no-op, and a failed send is
logged and swallowed: losing the service manager must never stop a trap from recording.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from types import TracebackType

logger = logging.getLogger(__name__)


def _parse_address(raw: str) -> str | None:
    """The sendto() address for a ``$NOTIFY_SOCKET`` value; None when unusable."""
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        # Python spells an abstract-namespace address as a str starting with NUL.
        return "\0" + raw[1:]
    # systemd 254+ also accepts "vsock:CID:PORT" (for VMs); a field device never runs under that.
    logger.warning("NOTIFY_SOCKET=%r is not a unix socket path; systemd notifications disabled", raw)
    return None


def _watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    """``$WATCHDOG_USEC`` when it applies to process ``pid`` (see sd_watchdog_enabled(3))."""
    raw_usec = environ.get("WATCHDOG_USEC")
    if not raw_usec:
        return None
    raw_pid = environ.get("WATCHDOG_PID")
    if raw_pid:
        try:
            owner = int(raw_pid)
        except ValueError:
            logger.warning("WATCHDOG_PID=%r is not a number; watchdog ignored", raw_pid)
            return None
        if owner != pid:
            # Inherited from a parent that runs under the watchdog; pinging for it would hide its hang.
            return None
    try:
        usec = int(raw_usec)
    except ValueError:
        logger.warning("WATCHDOG_USEC=%r is not a number; watchdog ignored", raw_usec)
        return None
    if usec <= 0:
        logger.warning("WATCHDOG_USEC=%r is not positive; watchdog ignored", raw_usec)
        return None
    return usec


def _one_line(text: str) -> str:
    # STATUS= is a single line; a newline would start a new (bogus) assignment.
    return " ".join(text.splitlines()).strip()


class Notifier:
    """Sends sd_notify(3) messages to the service manager; inert when not under systemd.

    Thread-safe: the watchdog may be pinged from one thread while another sets the status.
    """

    def __init__(self, address: str | None = None, *, watchdog_usec: int | None = None) -> None:
        """Args:
            address: the socket address for ``sendto`` (a path, or NUL + name for the abstract
                namespace); None for an inert notifier.
            watchdog_usec: the watchdog timeout in microseconds; None when no watchdog is expected.

        Raises:
            ValueError: ``watchdog_usec`` is not positive.
        """
        if watchdog_usec is not None and watchdog_usec <= 0:
            raise ValueError(f"watchdog_usec must be positive, got {watchdog_usec}")
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._failing = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> Notifier:
        """A notifier for this process from ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC``, ``$WATCHDOG_PID``.

        Args:
            environ: the environment to read; default ``os.environ``.
            pid: the process the watchdog must name; default ``os.getpid()``.
        """
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address = _parse_address(raw) if raw else None
        usec = _watchdog_usec(env, os.getpid() if pid is None else pid) if address else None
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        """Whether messages go anywhere (running under systemd and not closed)."""
        return self.address is not None and not self._closed

    def watchdog_interval(self) -> float | None:
        """Seconds between keep-alives (half the watchdog timeout); None when no watchdog runs."""
        if not self.enabled or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2_000_000

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments as one datagram; True when it was sent."""
        if not self.enabled or not assignments:
            return False
        for item in assignments:
            if "=" not in item or "\n" in item:
                raise ValueError(f"not a single KEY=value assignment: {item!r}")
        payload = "\n".join(assignments).encode("utf-8")
        with self._lock:
            if self._closed:
                return False
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.sendto(payload, self.address)
            except OSError as err:
                # Log once per outage: the watchdog pings every few seconds and must not flood the log.
                if not self._failing:
                    logger.warning("systemd notification to %r failed: %s", self._shown_address(), err)
                    self._failing = True
                return False
            if self._failing:
                logger.info("systemd notifications work again")
                self._failing = False
            return True

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up is complete (``READY=1``), with an optional status line."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", f"STATUS={_one_line(status)}")

    def status(self, text: str) -> bool:
        """Set the one-line status ``systemctl status`` shows."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """Keep-alive ``WATCHDOG=1``; a no-op unless the watchdog applies to this process."""
        if self.watchdog_interval() is None:
            return False
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before a start/stop timeout (a slow model load on a Pi Zero)."""
        if seconds <= 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def stopping(self) -> bool:
        """Tell systemd the service is shutting down (``STOPPING=1``)."""
        return self.notify("STOPPING=1")

    def close(self) -> None:
        """Close the socket; later calls are no-ops."""
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _shown_address(self) -> str:
        address = self.address or ""
        return "@" + address[1:] if address.startswith("\0") else address

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if not self.enabled:
            return "Notifier(disabled)"
        return f"Notifier({self._shown_address()!r}, watchdog_usec={self.watchdog_usec})"

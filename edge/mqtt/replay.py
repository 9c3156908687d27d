"""Replay protection for signed commands that survives restarts and unsynchronised clocks.

A signed command's ``ts`` is checked against the device clock only while that clock is
synchronised (``edge.commands.MAX_CLOCK_SKEW_S``), and the publisher's in-memory de-duplication
is lost at every restart: a command captured off the broker could be run again after a reboot, or
at any time on a trap without NTP. The guard therefore remembers the signatures of the signed
commands it ran, with their ``ts``, in the store (meta key ``signed_commands``), and refuses

- a signature it has seen (the same bytes again), and
- a ``ts`` older than the newest one run by more than the window (a command it may have forgotten).

Time here is the *server's* clock, carried in the signed ``ts``: the device clock plays no part.
A server whose clock steps back by more than the window has its commands refused as stale until its
``ts`` passes the newest one again (the refusal says so).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

META_KEY = "signed_commands"
WINDOW_S = 600
KEEP = 512


class ReplayGuard:
    """Signed commands run within the window, persisted through ``load``/``save`` (the store's meta).

    Args:
        load: returns the persisted text, or None.
        save: persists the text; errors are logged (the guard still holds in memory).
        window: seconds of ``ts`` kept behind the newest command run.
        keep: at most this many signatures kept (the oldest ``ts`` go first).
    """

    def __init__(self, load: Callable[[], str | None], save: Callable[[str], None], *, window: int = WINDOW_S,
                 keep: int = KEEP) -> None:
        self.window, self.keep, self._save = window, keep, save
        self.seen: dict[str, int] = {}
        try:
            raw = json.loads(load() or "[]")
            self.seen = {str(sig): int(ts) for sig, ts in raw}
        except (ValueError, TypeError) as err:
            logger.warning("replay memory of signed commands unreadable (%s): starting empty", err)

    @property
    def newest(self) -> int | None:
        return max(self.seen.values()) if self.seen else None

    def refuse(self, body: dict[str, Any]) -> str | None:
        """Why this correctly signed command must not run, or None."""
        sig, ts = str(body.get("sig", "")).lower(), body.get("ts")
        if sig in self.seen:
            return "this signed command was already run (a replay)"
        newest = self.newest
        if isinstance(ts, int) and newest is not None and ts < newest - self.window:
            return (f"ts is {newest - ts} s older than the newest signed command run (at most {self.window} s): a "
                    "stale or replayed command, or a server clock that went back")
        return None

    def note(self, body: dict[str, Any]) -> None:
        """Remember a signed command that is being run, and persist the memory."""
        ts = body.get("ts")
        if not isinstance(ts, int):
            return
        self.seen[str(body.get("sig", "")).lower()] = ts
        newest = max(self.seen.values())
        self.seen = {s: t for s, t in self.seen.items() if t >= newest - self.window}
        if len(self.seen) > self.keep:
            self.seen = dict(sorted(self.seen.items(), key=lambda item: item[1])[-self.keep:])
        try:
            self._save(json.dumps(sorted(self.seen.items(), key=lambda item: item[1])))
        except Exception as err:  # noqa: BLE001 - a store that cannot write must not stop commands
            logger.warning("replay memory of signed commands not saved: %s", err)

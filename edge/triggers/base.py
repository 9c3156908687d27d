"""The ``Trigger`` seam: when the daemon captures, and why (a :class:`Fire`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edge.capture.base import Camera

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Fire:
    """One trigger firing: capture ``burst`` frames now.

    ``reason`` is "timelapse", "motion", "external", "command" or "once" (the daemon may add its own,
    such as "stop"); ``at`` is the UTC wall time it fired; ``detail`` carries what the trigger saw
    (the slot and missed-slot count of a timelapse, the area and boxes of a motion).
    """

    reason: str
    at: datetime
    burst: int = 1
    detail: dict[str, Any] = field(default_factory=dict, hash=False)


def as_utc(when: datetime) -> datetime:
    """``when`` in UTC; a naive datetime is a caller mistake (ValueError), never guessed at."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"need a timezone-aware datetime (got {when!r})")
    return when.astimezone(timezone.utc)


class Trigger(Protocol):
    """Something that decides when to capture; polled by the daemon's loop.

    The loop asks :meth:`due` when to look next and calls :meth:`check` once ``now`` has reached it.
    Both take ``now`` from the caller, so a trigger is deterministic given its inputs.
    """

    def due(self, now: datetime) -> datetime | None:
        """When the trigger next wants :meth:`check` called (may be in the past); None = never."""

    def check(self, now: datetime, camera: Camera) -> Fire | None:
        """Look (at the clock, the camera's preview, ...) and return a :class:`Fire` or None."""


class OnceTrigger:
    """Fires once at the first check, then never (``wildedge run --once`` on a live camera)."""

    def __init__(self, *, burst: int = 1) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1 (got {burst})")
        self.burst = burst
        self.fired = False

    def due(self, now: datetime) -> datetime | None:
        return None if self.fired else now

    def check(self, now: datetime, camera: Camera) -> Fire | None:
        if self.fired:
            return None
        self.fired = True
        return Fire("once", now, burst=self.burst)

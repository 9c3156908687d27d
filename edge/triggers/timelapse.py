"""Timelapse: fire at wall-clock aligned slots (every 20 min at :00, :20, :40), inside active windows.

Slots are the local wall times that are whole multiples of the interval after local midnight, so an
interval that does not divide a day restarts at midnight (every 7 min: ..., 23:48, 23:55, 00:00).
Across DST changes the wall clock rules: a slot whose wall time a spring-forward jump skips does not
fire; in the repeated hour of a fall-back night the slot fires at both instants (they are different
real times). A slot missed while the device slept or was busy fires once when next checked (unless
its window has closed by then), and the timelapse moves on to the next future slot: no burst of
catch-up shots.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING

from edge.triggers.base import Fire, as_utc
from edge.triggers.windows import HORIZON, ActiveWindows, system_zone

if TYPE_CHECKING:
    from edge.capture.base import Camera

logger = logging.getLogger(__name__)

_DAY = timedelta(days=1)
_TICK = timedelta(microseconds=1)
#: Walls within this distance of a time are examined (the largest DST shift in use is 1 h; 2 h historic).
_DST_REACH = timedelta(hours=3)
#: Counting missed slots after a long sleep (or a clock jump from 1970) stops here.
MISSED_CAP = 1000
#: The largest step back in wall time taken as jitter rather than a clock correction.
_CLOCK_SLACK = timedelta(minutes=1)


class Timelapse:
    """Fire every ``interval`` at wall-clock aligned slots, only inside ``windows``.

    Args:
        interval: time between slots, more than 0 and at most a day.
        tz: the device's zone (slots are local wall times); None = the system's zone.
        windows: when the timelapse may fire; None = always.
        burst: frames per firing.

    Raises:
        ValueError: the interval or burst is out of range.
    """

    def __init__(
        self,
        interval: timedelta,
        *,
        tz: tzinfo | None = None,
        windows: ActiveWindows | None = None,
        burst: int = 1,
    ) -> None:
        if not timedelta(0) < interval <= _DAY:
            raise ValueError(f"timelapse interval must be more than 0 and at most 1 day (got {interval})")
        if burst < 1:
            raise ValueError(f"burst must be at least 1 (got {burst})")
        self.interval = interval
        self.tz = tz if tz is not None else system_zone()
        self.windows = windows if windows is not None and not windows.always else None
        self.burst = burst
        self._slots_per_day = -(-_DAY // interval)  # ceil: the last slot of a day is before 24:00
        self._next: datetime | None = None
        self._retry_at: datetime | None = None  # when to look again after finding no slot
        self._last_now: datetime | None = None
        self.fired = 0
        self.missed = 0

    def __repr__(self) -> str:
        return (f"Timelapse(interval={self.interval}, tz={self.tz}, windows={self.windows}, "
                f"burst={self.burst})")

    # -- the Trigger protocol -----------------------------------------------------------------------
    def due(self, now: datetime) -> datetime | None:
        """The slot to fire next (in the past when it was missed); None when no slot is active."""
        now = as_utc(now)
        if self._last_now is not None and now < self._last_now - _CLOCK_SLACK:
            logger.warning("clock stepped back from %s to %s: timelapse slots recomputed",
                           self._last_now, now)
            self._next = self._retry_at = None
            self._last_now = now
        else:
            self._last_now = now if self._last_now is None else max(now, self._last_now)
        if self._next is None and (self._retry_at is None or now >= self._retry_at):
            self._next = self.next_slot(now)
            self._retry_at = None if self._next is not None else now + _DAY
        return self._next

    def check(self, now: datetime, camera: Camera | None = None) -> Fire | None:
        """Fire once when ``now`` has reached the due slot; later slots already passed are skipped."""
        now = as_utc(now)
        slot = self.due(now)
        if slot is None or now < slot:
            return None
        following = self.next_slot(now + _TICK)
        self._next = following
        self._retry_at = None if following is not None else now + _DAY
        if self.windows is not None and not self.windows.is_active(now):
            # Checked so late that the window has closed: the slot is missed, not shot out of hours.
            missed = 1 + self.count_slots(slot + _TICK, now)
            self.missed += missed
            logger.info("timelapse: %d slot(s) from %s missed and the window has closed since",
                        missed, slot.astimezone(self.tz))
            return None
        missed = self.count_slots(slot + _TICK, now)
        if missed:
            self.missed += missed
            logger.info("timelapse: %s%d slot(s) after %s missed (device asleep or busy); firing once",
                        "at least " if missed >= MISSED_CAP else "", missed, slot.astimezone(self.tz))
        self.fired += 1
        return Fire("timelapse", now, burst=self.burst, detail={"slot": slot.isoformat(), "missed": missed})

    # -- slots --------------------------------------------------------------------------------------
    def next_slot(self, when: datetime) -> datetime | None:
        """The first active slot at or after ``when``; None if none within the windows' horizon."""
        when = as_utc(when)
        limit = when + HORIZON
        slot = self._wall_slot(when)
        while self.windows is not None and not self.windows.is_active(slot):
            start = self.windows.next_active(slot)
            if start is None or start > limit:
                return None
            slot = self._wall_slot(start)
        return slot

    def count_slots(self, start: datetime, end: datetime) -> int:
        """Active slots in [start, end], counted up to :data:`MISSED_CAP`."""
        count, slot = 0, self.next_slot(start)
        while slot is not None and slot <= end and count < MISSED_CAP:
            count += 1
            slot = self.next_slot(slot + _TICK)
        return count

    def slots(self, day: date) -> list[datetime]:
        """Every slot (UTC, in order) of a local date, ignoring windows."""
        found = [inst for k in range(self._slots_per_day) for inst in self._instants(day, k)]
        return sorted(found)

    def _wall_slot(self, when: datetime) -> datetime:
        """The first slot instant at or after ``when``, ignoring windows."""
        local = when.astimezone(self.tz)
        day = local.date()
        wall = local.replace(tzinfo=None) - datetime.combine(day, time())
        k = -(-wall // self.interval)  # the first wall slot at or after now
        steady = (when - _DST_REACH).astimezone(self.tz).utcoffset() == \
            (when + _DST_REACH).astimezone(self.tz).utcoffset()
        if steady and k < self._slots_per_day:
            found = self._instants(day, k)
            if found and found[0] >= when:
                return found[0]
        # Near a DST change a slot with an earlier wall time can be a later instant: look around.
        k = max(0, (wall - _DST_REACH) // self.interval)
        best: datetime | None = None
        while True:
            if k >= self._slots_per_day:
                if best is not None:
                    return best
                day, k, wall = day + _DAY, 0, wall - _DAY
                continue
            if best is not None and k * self.interval > wall + _DST_REACH:
                return best
            for instant in self._instants(day, k):
                if instant >= when and (best is None or instant < best):
                    best = instant
            k += 1

    def _instants(self, day: date, k: int) -> list[datetime]:
        """The real instants (UTC) of wall time ``k * interval`` on ``day``: none, one, or two."""
        naive = datetime.combine(day, time()) + k * self.interval
        found: list[datetime] = []
        for fold in (0, 1):
            instant = naive.replace(tzinfo=self.tz, fold=fold).astimezone(timezone.utc)
            # A wall time that a spring-forward jump skips does not come back from UTC unchanged.
            if instant.astimezone(self.tz).replace(tzinfo=None) == naive and instant not in found:
                found.append(instant)
        return found


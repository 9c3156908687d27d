"""Active windows: the parts of the day when a trigger may fire, by clock time or by the sun.

A window ``START..END`` (syntax: :func:`edge.config.units.parse_window`) is active from each START
until the first END after it, so ``"22:00..02:00"`` spans midnight; the day's windows are unioned.
Clock times are wall times in the device's zone: a time that a DST jump skips falls at the same
distance after the jump (02:30 on a spring-forward night is 03:30), a repeated time means its first
occurrence.

A window whose both ends are sun events follows the sun's own cycle: ``sunrise..sunset`` is each
day's daylight, ``sunset..sunrise`` each night; the offsets are applied after pairing, so nights
padded by ``sunset-30m..sunrise+30m`` merge into one window when the day gets shorter than an hour,
and ``sunrise+7h..sunset-7h`` is empty on days shorter than 14 h. Sunrise and sunset are astral's
(the sun's upper limb on the horizon, with refraction), per solar day.

Polar day and night (astral finds no sunrise or sunset): the sun is up all day on a polar day and
down all day on a polar night. In the calculation a polar day's sunrise and sunset both fall at
solar midnight and a polar night's at solar noon, where they meet as the day or night closes in;
so in polar day ``sunrise..sunset`` is always active and ``sunset..sunrise`` empty (padded, it is
the padding around solar midnight), in polar night the reverse, and windows that mix a clock time
with a sun event see the sun set (or rise) at solar noon or midnight.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import astral
import astral.sun

from edge.config.units import SunTime, WindowEnd, WindowSpec, parse_window
from edge.triggers.base import as_utc

logger = logging.getLogger(__name__)

#: How far ahead :meth:`ActiveWindows.next_active` and ``next_change`` look before answering None.
HORIZON = timedelta(days=370)
_DAY = timedelta(days=1)
_HALF_DAY = timedelta(hours=12)
#: No single window interval is longer than this (a night with 12 h offsets on both ends is < 2 days).
_LOOKBACK = timedelta(days=3)
#: Look-ahead steps: a short first look keeps the common query cheap, the last is the horizon.
_AHEAD = (timedelta(days=2), timedelta(days=8), timedelta(days=32), timedelta(days=128), HORIZON)
#: A solar day's events lie within a day of its noon, and offsets add less than half a day.
_SUN_MARGIN = 2
#: astral's sunrise/sunset zenith (it adds refraction itself).
_ZENITH = 90.0 + astral.sun.SUN_APPARENT_RADIUS
#: Geometric zenith of the sun's centre at sunrise (upper limb on the horizon, with refraction).
_UP_ZENITH = 90.833

Span = tuple[datetime, datetime]


def system_zone() -> tzinfo:
    """The system's local zone, as a ZoneInfo (with its DST rules) wherever it can be found."""
    names = [os.environ.get("TZ", "").lstrip(":")]
    try:
        link = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in link:
            names.append(link.split("zoneinfo/", 1)[1])
        names.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    except OSError:
        pass
    for name in filter(None, names):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            continue
    try:
        with open("/etc/localtime", "rb") as file:
            return ZoneInfo.from_file(file, key="localtime")
    except (OSError, ValueError):
        pass
    # A fixed offset knows no DST: say so, since slots and windows may then be off by an hour.
    local = datetime.now().astimezone().tzinfo or timezone.utc
    logger.warning("cannot name the system time zone; using the fixed offset %s (set device.timezone)", local)
    return local


class _Sun:
    """Sunrise and sunset of each solar day (keyed by UTC date), polar days and nights filled in."""

    def __init__(self, latitude: float, longitude: float) -> None:
        self.observer = astral.Observer(latitude=latitude, longitude=longitude)
        self._noon: dict[date, datetime] = {}
        self._raw: dict[date, Span] = {}

    def noon(self, day: date) -> datetime:
        if day not in self._noon:
            if len(self._noon) > 4000:  # a daemon runs for years; keep the caches bounded
                self._noon.clear()
                self._raw.clear()
            self._noon[day] = astral.sun.noon(self.observer, day)
        return self._noon[day]

    def _transit(self, day: date, direction: astral.SunDirection) -> datetime | None:
        try:
            when = astral.sun.time_of_transit(self.observer, day, _ZENITH, direction)
        except ValueError:
            return None  # the sun does not cross the horizon on this solar day
        # astral can return the crossing of a neighbouring day; fold it into this day's noon +- 12 h.
        start = self.noon(day) - _HALF_DAY
        return when - ((when - start) // _DAY) * _DAY

    def _raw_day(self, day: date) -> Span:
        if day not in self._raw:
            self._raw[day] = self._compute_day(day)
        return self._raw[day]

    def _compute_day(self, day: date) -> Span:
        noon = self.noon(day)
        rise = self._transit(day, astral.SunDirection.RISING)
        fall = self._transit(day, astral.SunDirection.SETTING)
        if rise is not None and fall is not None:
            return rise, fall
        # The sun's path is symmetric about noon: a lone crossing mirrors the missing one.
        if rise is not None:
            return rise, noon + (noon - rise)
        if fall is not None:
            return noon - (fall - noon), fall
        # Neither: the sun's mean height over the day says which way (polar day: high at noon and still
        # up at midnight), robust to astral's refraction nudging the threshold.
        noon_zenith = astral.sun.zenith(self.observer, noon, with_refraction=False)
        midnight_zenith = astral.sun.zenith(self.observer, noon + _HALF_DAY, with_refraction=False)
        if noon_zenith + midnight_zenith < 2 * _UP_ZENITH:
            # polar day: rise and set meet at solar midnight (midpoints, so neighbours agree exactly)
            before, after = self.noon(day - _DAY), self.noon(day + _DAY)
            return before + (noon - before) / 2, noon + (after - noon) / 2
        return noon, noon  # polar night: they meet at solar noon

    def day(self, day: date) -> Span:
        """(sunrise, sunset) of the solar day; each sunset is at or before the next sunrise."""
        rise, fall = self._raw_day(day)
        previous_fall = self._raw_day(day - _DAY)[1]
        next_rise = self._raw_day(day + _DAY)[0]
        # At the edge of polar day the approximations can overlap a night of a few seconds: close it.
        if rise < previous_fall:
            rise = previous_fall + (rise - previous_fall) / 2
        if next_rise < fall:
            fall = fall + (next_rise - fall) / 2
        return rise, max(rise, fall)

    def event(self, name: str, day: date) -> datetime:
        return self.day(day)[0 if name == "sunrise" else 1]


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _dates(lo: datetime, hi: datetime, zone: tzinfo, margin: int = 1) -> Iterator[date]:
    """Dates in ``zone`` from ``margin`` days before ``lo``'s to ``margin`` days after ``hi``'s."""
    day = lo.astimezone(zone).date() - margin * _DAY
    last = hi.astimezone(zone).date() + margin * _DAY
    while day <= last:
        yield day
        day += _DAY


class ActiveWindows:
    """The union of active windows such as ``"06:00..20:00"`` or ``"sunset-30m..sunrise+30m"``.

    Args:
        specs: window texts (or parsed :class:`WindowSpec`); empty means always active.
        tz: the device's zone for clock times and local dates; None = the system's zone.
        latitude: decimal degrees, needed when a window uses sunrise or sunset.
        longitude: decimal degrees, likewise.

    Raises:
        ValueError: a window does not parse, or uses the sun without a location.
    """

    def __init__(
        self,
        specs: Sequence[str | WindowSpec],
        *,
        tz: tzinfo | None = None,
        latitude: float | None = None,
        longitude: float | None = None,
    ) -> None:
        if isinstance(specs, str):
            raise ValueError(f"specs must be a list of windows, not one string ({specs!r})")
        self.specs = tuple(parse_window(s) if isinstance(s, str) else s for s in specs)
        self.tz = tz if tz is not None else system_zone()
        self._sun: _Sun | None = None
        if any(spec.uses_sun for spec in self.specs):
            if latitude is None or longitude is None:
                texts = ", ".join(repr(s.text) for s in self.specs if s.uses_sun)
                raise ValueError(f"window {texts} uses sunrise/sunset: give the latitude and longitude")
            if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
                raise ValueError(f"latitude/longitude out of range: {latitude}, {longitude}")
            self._sun = _Sun(latitude, longitude)
        self._cache: tuple[datetime, datetime, list[Span]] | None = None
        self._memo: tuple[datetime, datetime | None] | None = None

    def __repr__(self) -> str:
        return f"ActiveWindows({[s.text for s in self.specs]!r}, tz={self.tz})"

    @property
    def always(self) -> bool:
        """True when no window is configured (always active)."""
        return not self.specs

    # -- queries ------------------------------------------------------------------------------------
    def is_active(self, when: datetime) -> bool:
        """Whether ``when`` (timezone-aware) lies inside a window."""
        when = as_utc(when)
        if self.always:
            return True
        spans, _ = self._around(when, _AHEAD[0])
        index = bisect_left(spans, (when, when)) - 1
        return any(start <= when < end for start, end in spans[max(0, index):index + 2])

    def next_change(self, when: datetime) -> datetime | None:
        """The next start or end of activity after ``when``; None when none within :data:`HORIZON`."""
        when = as_utc(when)
        if self.always:
            return None
        for ahead in _AHEAD:
            spans, complete = self._around(when, ahead)
            span = next(((s, e) for s, e in spans if e > when), None)
            if span is None:
                continue
            change = span[1] if span[0] <= when else span[0]
            if change <= complete:  # an end past the look-ahead may still merge with later windows
                return change
        return None

    def next_active(self, when: datetime) -> datetime | None:
        """``when`` if active, else the next window start; None if none within :data:`HORIZON`."""
        when = as_utc(when)
        if self.always:
            return when
        if self._memo is not None:
            asked, answer = self._memo
            # Nothing is active between a question and its answer, so later questions share it.
            if asked <= when and (when < answer if answer is not None else when < asked + _DAY):
                return answer
        answer = None
        for ahead in _AHEAD:
            spans, _ = self._around(when, ahead)
            span = next(((s, e) for s, e in spans if e > when), None)
            if span is not None:
                answer = max(span[0], when)
                break
        if answer is None:
            logger.info("no active window within %d days of %s (%s)", HORIZON.days, when, self)
        self._memo = (when, answer)
        return answer

    def spans(self, start: datetime, end: datetime) -> list[Span]:
        """The active intervals (UTC, merged, clipped) between ``start`` and ``end``."""
        start, end = as_utc(start), as_utc(end)
        if self.always:
            return [(start, end)] if end > start else []
        spans = _merge(self._intervals(start - _LOOKBACK, end))
        return [(max(s, start), min(e, end)) for s, e in spans if e > start and s < end]

    # -- computation --------------------------------------------------------------------------------
    def _around(self, when: datetime, ahead: timedelta) -> tuple[list[Span], datetime]:
        """Merged spans that decide activity in [when, when + ahead], and the time they are complete to."""
        lo, hi = when - _LOOKBACK, when + ahead
        if self._cache is not None and self._cache[0] <= lo and hi <= self._cache[1]:
            return self._cache[2], self._cache[1]
        spans = _merge(self._intervals(lo, hi))
        self._cache = (lo, hi, spans)
        return spans, hi

    def _intervals(self, lo: datetime, hi: datetime) -> list[Span]:
        """Every window interval that starts within [lo, hi] (unmerged, non-empty)."""
        spans: list[Span] = []
        for spec in self.specs:
            if isinstance(spec.start, SunTime) and isinstance(spec.end, SunTime):
                spans.extend(self._sun_spans(spec.start, spec.end, lo, hi))
                continue
            ends = self._occurrences(spec.end, lo, hi + _LOOKBACK)
            for start in self._occurrences(spec.start, lo, hi):
                index = bisect_left(ends, start)
                if index < len(ends) and ends[index] > start:
                    spans.append((start, ends[index]))
        return spans

    def _the_sun(self) -> _Sun:
        if self._sun is None:  # __init__ makes one whenever a window uses the sun
            raise RuntimeError("no location for sun times")
        return self._sun

    def _sun_spans(self, start: SunTime, end: SunTime, lo: datetime, hi: datetime) -> Iterator[Span]:
        sun = self._the_sun()
        # Pair on the sun's cycle first, then offset: the end is the same day's unless it comes round later.
        same_day = (start.event, end.event) == ("sunrise", "sunset") or (
            start.event == end.event and start.offset < end.offset)
        for day in _dates(lo, hi, timezone.utc, _SUN_MARGIN):
            begin = sun.event(start.event, day) + start.offset
            if lo <= begin <= hi:
                finish = sun.event(end.event, day if same_day else day + _DAY) + end.offset
                if finish > begin:
                    yield begin, finish

    def _occurrences(self, end: WindowEnd, lo: datetime, hi: datetime) -> list[datetime]:
        """The instants (UTC, sorted) within [lo, hi] at which a window end occurs."""
        if isinstance(end, time):
            found = [datetime.combine(day, end, tzinfo=self.tz).astimezone(timezone.utc)
                     for day in _dates(lo, hi, self.tz)]
        else:
            sun = self._the_sun()
            found = [sun.event(end.event, day) + end.offset
                     for day in _dates(lo, hi, timezone.utc, _SUN_MARGIN)]
        return sorted(t for t in found if lo <= t <= hi)

"""Value types of the config file: durations, byte sizes and active time windows.

Durations: ``"500ms"``, ``"10s"``, ``"20m"``, ``"1h30m"``, ``"2d"``, or a bare number of seconds.
Sizes: ``"200MB"``, ``"1.5GiB"``, ``"512kB"``, or a bare number of bytes (decimal units are powers
of 1000, ``Ki``/``Mi``/``Gi``/``Ti`` powers of 1024). Windows: ``"START..END"`` where each end is
``HH:MM`` or ``sunrise``/``sunset`` with an optional ``+``/``-`` duration offset.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BeforeValidator

DURATION_HINT = "use e.g. 30s, 20m, 1h"

#: The longest duration (and largest size) any key takes: beyond them the daemon's date arithmetic
#: and SQLite's 64-bit integers overflow, so the config refuses them instead of ``run`` crashing.
MAX_DURATION = timedelta(days=36500)
MAX_SIZE = 10**18
SIZE_HINT = "use e.g. 200MB, 1.5GiB, 512kB"
WINDOW_HINT = 'use e.g. "06:00..18:00", "sunset-30m..sunrise+1h", "06:00..sunrise"'

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)")
_NUMBER = re.compile(r"[+]?(\d+(?:\.\d*)?|\.\d+)")

# Lower-case keys: "MB", "mb" and "Mb" all mean megabytes; nobody configures disk space in bits.
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2,
    "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)")

_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_SUN = re.compile(r"(sunrise|sunset)\s*(?:([+-])\s*(.+))?")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_duration(value: Any) -> timedelta:
    """A non-negative duration from ``"1h30m"``-style text, a number of seconds or a timedelta.

    Raises:
        ValueError: the value is not a duration, or is negative.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif _is_number(value):
        try:
            seconds = float(value)
        except OverflowError:  # a whole number of seconds too large for a float: "at most" below
            seconds = MAX_DURATION.total_seconds() + 1
        if not math.isfinite(seconds):
            raise ValueError(f"invalid duration {value!r} ({DURATION_HINT})")
    elif isinstance(value, str):
        seconds = _duration_seconds(value)
    else:
        raise ValueError(f"invalid duration {value!r} ({DURATION_HINT})")
    if seconds < 0:
        raise ValueError(f"must not be negative (got {value!r})")
    if seconds > MAX_DURATION.total_seconds():
        # Dates a century away overflow the daemon's clock arithmetic (now - max_age).
        raise ValueError(f"must be at most {MAX_DURATION.days}d (100 years) (got {_short(value)})")
    return value if isinstance(value, timedelta) else timedelta(seconds=seconds)


def _duration_seconds(text: str) -> float:
    stripped = text.strip()
    if _NUMBER.fullmatch(stripped):
        return float(stripped)
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(stripped):
        if match.start() != pos and stripped[pos:match.start()].strip():
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    else:
        if pos == len(stripped) and pos > 0:
            return total
    raise ValueError(f"invalid duration {text!r} ({DURATION_HINT})")


def parse_size(value: Any) -> int:
    """A byte count from ``"200MB"``-style text or a bare number of bytes.

    Raises:
        ValueError: the value is not a size, or is negative.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"invalid size {_short(value)} ({SIZE_HINT})")
        size = value
    elif _is_number(value):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"invalid size {value!r} ({SIZE_HINT})")
        if value != int(value):
            raise ValueError(f"invalid size {value!r}: a number of bytes must be whole ({SIZE_HINT})")
        size = int(value)
    elif not isinstance(value, str):
        raise ValueError(f"invalid size {value!r} ({SIZE_HINT})")
    else:
        match = _SIZE.fullmatch(value.strip())
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(f"invalid size {value!r} ({SIZE_HINT})")
        number = float(match.group(1)) * _SIZE_UNITS[unit]
        size = round(number) if math.isfinite(number) else MAX_SIZE + 1
    if size > MAX_SIZE:
        raise ValueError(f"must be at most 1000000TB (got {_short(value)})")
    return size


class SunTime(NamedTuple):
    """A window end tied to the sun: ``event`` plus a signed ``offset``."""

    event: Literal["sunrise", "sunset"]
    offset: timedelta


WindowEnd = time | SunTime


@dataclass(frozen=True)
class WindowSpec:
    """A parsed active window; ``end`` before ``start`` means the window spans midnight."""

    start: WindowEnd
    end: WindowEnd
    text: str

    @property
    def uses_sun(self) -> bool:
        """Whether either end needs sunrise/sunset times (and so the device's location)."""
        return isinstance(self.start, SunTime) or isinstance(self.end, SunTime)


def _parse_end(text: str, whole: str) -> WindowEnd:
    clock = _CLOCK.fullmatch(text)
    if clock:
        hour, minute = int(clock.group(1)), int(clock.group(2))
        if hour > 23 or minute > 59:
            raise ValueError(f"invalid time {text!r} in window {whole!r} (use 00:00 to 23:59)")
        return time(hour, minute)
    sun = _SUN.fullmatch(text.lower())
    if sun is None:
        raise ValueError(
            f"invalid window end {text!r} in {whole!r}: use HH:MM, sunrise or sunset with an optional "
            "offset such as sunset-30m")
    event, sign, offset_text = sun.groups()
    if sign is None:
        return SunTime(event, timedelta(0))
    offset_text = offset_text.strip()
    try:
        offset = parse_duration(offset_text)
    except ValueError:
        raise ValueError(f"invalid offset {offset_text!r} in window {whole!r} ({DURATION_HINT})") from None
    if offset >= timedelta(hours=12):
        raise ValueError(f"offset {offset_text!r} in window {whole!r} must be less than 12h")
    return SunTime(event, -offset if sign == "-" else offset)


def parse_window(text: str) -> WindowSpec:
    """Parse an active window such as ``"sunset-30m..sunrise+1h"`` or ``"06:00..18:00"``.

    Raises:
        ValueError: the text is not a window, or its start and end are the same.
    """
    if not isinstance(text, str):
        raise ValueError(f"a window must be a string like \"06:00..18:00\" (got {text!r})")
    parts = text.split("..")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise ValueError(f"invalid window {text!r} ({WINDOW_HINT})")
    start, end = (_parse_end(part.strip(), text) for part in parts)
    if start == end:
        raise ValueError(
            f"window {text!r} starts and ends at the same time; to be active all day, leave `active` empty")
    return WindowSpec(start=start, end=end, text=text)


def _check_window(text: str) -> str:
    parse_window(text)
    return text


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"must be more than 0 ({DURATION_HINT})")
    return value


def _expand_user(value: Path) -> Path:
    return value.expanduser()


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
"""A non-negative duration (see :func:`parse_duration`)."""

PositiveDuration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]
"""A duration that must be more than zero."""

ByteSize = Annotated[int, BeforeValidator(parse_size)]
"""A byte count (see :func:`parse_size`)."""

Window = Annotated[str, AfterValidator(_check_window)]
"""An active window kept as its text, syntax-checked by :func:`parse_window`."""

UserPath = Annotated[Path, AfterValidator(_expand_user)]
"""A path with ``~`` expanded; whether it exists is ``wildedge check``'s business."""

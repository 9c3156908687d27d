"""What the store records: frames, detections, events, outbox messages; time-ordered unique ids.

Records are plain slotted dataclasses so the daemon, the publisher and the tests build them without
touching SQLite. Times are timezone-aware UTC; the store keeps them as fixed-width ISO-8601 text so
that text order is time order.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

#: Box layout of a :class:`DetectionRecord`: x1, y1, x2, y2 as fractions (0..1) of the frame size.
Box = tuple[float, float, float, float]


@dataclass(slots=True)
class DetectionRecord:
    """One detected object; ``box`` normalised xyxy, ``classification`` (class id, label, prob) or None;
    ``new`` is False when the sticky filter recognised the object from an earlier frame."""

    class_id: int
    label: str
    score: float
    box: Box
    classification: tuple[int, str, float] | None = None
    new: bool = True


@dataclass(slots=True)
class FrameRecord:
    """One processed frame; ``image_path`` is relative to the image store, None when not saved.

    ``failure`` says why a frame could not be processed (a folder camera's unreadable file): it is
    still recorded, so that the file counts as done and is not retried at every start.
    """

    uid: str
    captured_at: datetime
    monotonic: float
    boot_id: str
    clock_synced: bool
    trigger: str
    burst_id: str
    burst_index: int
    width: int
    height: int
    inference_ms: float
    source: str | None = None
    image_path: str | None = None
    detections: list[DetectionRecord] = field(default_factory=list)
    person: bool = False
    failure: str | None = None


@dataclass(slots=True)
class EventRecord:
    """What one trigger saw, summarised over its burst; ``summary`` must be JSON-serialisable."""

    uid: str
    burst_id: str
    captured_at: datetime
    monotonic: float
    boot_id: str
    clock_synced: bool
    trigger: str
    image_path: str | None
    best_frame_uid: str
    summary: dict


@dataclass(slots=True)
class OutboxMessage:
    """An MQTT message waiting in the outbox; ``event_uid`` ties it to the event it delivers."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    event_uid: str | None = None


@dataclass(slots=True)
class OutboxRow:
    """A queued message as stored: ``seq`` orders delivery; ``attempts`` counts publish tries."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    event_uid: str | None
    created_at: datetime
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    """How much waits in the outbox: messages, payload bytes, the oldest message's time."""

    count: int
    bytes: int
    oldest: datetime | None


def to_iso(when: datetime) -> str:
    """Fixed-width UTC ISO-8601 text (``2026-11-24T10:00:00.000000Z``): text order is time order.

    Raises:
        ValueError: ``when`` is naive (its zone is unknown, so its UTC time is too).
    """
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is needed, got naive {when!r}")
    return when.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def from_iso(text: str) -> datetime:
    """Inverse of :func:`to_iso`: an aware UTC datetime."""
    return datetime.fromisoformat(text).astimezone(timezone.utc)


class _UidSource:
    """UUIDv7 generator (RFC 9562): 48-bit Unix ms, then random bits, strictly increasing per process.

    The random tail keeps ids unique across processes and devices; within one process, an id made
    in the same millisecond as the last one (or after the wall clock stepped back, as NTP does
    after boot) is the last one plus one, the RFC's "monotonic random" method, so ids always sort
    in the order they were made.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> str:
        ms = time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF
        rand = int.from_bytes(os.urandom(10), "big")
        rand_a = rand >> 68 & 0xFFF  # 12 bits
        rand_b = rand & 0x3FFF_FFFF_FFFF_FFFF  # 62 bits
        # Layout: ms(48) | ver(4) | rand_a(12) | var(2) | rand_b(62); "value" below omits ver/var.
        value = ms << 74 | rand_a << 62 | rand_b
        with self._lock:
            if value <= self._last:
                # Increment by a random step (not 1) so a guessed id stays hard to predict.
                value = self._last + 1 + (rand_b & 0xFFFF_FFFF)
            self._last = value
        ms, rand_a, rand_b = value >> 74, value >> 62 & 0xFFF, value & 0x3FFF_FFFF_FFFF_FFFF
        full = ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
        text = f"{full:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


# One source per process: monotonicity needs the previous id. Creating it does no work.
_UIDS = _UidSource()


def new_uid() -> str:
    """A fresh UUIDv7 string: unique across restarts and devices, and sorts in creation order."""
    return _UIDS.next()


def uid_time(uid: str) -> datetime:
    """The creation time (ms precision, UTC) stamped into a :func:`new_uid` id.

    Raises:
        ValueError: ``uid`` is not a version-7 UUID string.
    """
    digits = uid.replace("-", "")
    if len(digits) != 32 or digits[12] != "7":
        raise ValueError(f"not a UUIDv7: {uid!r}")
    try:
        ms = int(digits[:12], 16)
    except ValueError as err:
        raise ValueError(f"not a UUIDv7: {uid!r}") from err
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)

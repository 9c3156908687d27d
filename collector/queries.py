"""Read-side queries shared by ``wildedge collect status`` and the web page (SQLAlchemy Core, both dialects).

Nothing here writes. Per-day grouping uses the stored ``day`` text (UTC ``YYYY-MM-DD``), so no
dialect-specific date function is needed, and date ranges are plain text comparisons.

Counting rule of :func:`daily_counts` (the plot): counts are animals seen, not events. An event
adds its burst count per detector class (``event_counts``: the most individuals of a class seen
together during the burst) under that class's detector label. A classified event (one with a
classifier vote) adds the sum of its burst counts under its vote class's classifier label
instead: the vote names the species, the detector only said "animal". Labels come from the
``labels`` table through the event's device and ``model_id``; a class without a label shows as
``det <id>`` or ``cls <id>``.
"""

from __future__ import annotations

import logging
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import Connection, and_, exists, func, literal, or_, select

from collector.db.schema import counters, crops, devices, event_counts, events, health, labels, rejects

logger = logging.getLogger(__name__)

#: Expected interval between messages of a device whose health spacing is unknown.
DEFAULT_INTERVAL_S = 2 * 3600
#: Silent after this many expected health intervals without a word.
SILENT_FACTOR = 3
#: Health messages whose spacing gives a device's interval (the newest ones).
HEALTH_WINDOW = 10
#: The plot's span (days) when the filters give no start date.
DEFAULT_DAYS = 30
MAX_DAYS = 366
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_EVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAX_TEXT = 200

LabelMap = dict[tuple[str, str, str, int], str]


@dataclass(frozen=True, slots=True)
class Filters:
    """What the page and the exports select: one device, one class label, a range of UTC days (inclusive)."""

    device: str | None = None
    label: str | None = None
    start: str | None = None
    end: str | None = None

    @classmethod
    def parse(cls, *, device: str | None = None, label: str | None = None, start: str | None = None,
              end: str | None = None) -> Filters:
        """Filters from user text (empty means unset).

        Raises:
            ValueError: a date that is not ``YYYY-MM-DD``, ``start`` after ``end``, or text too long.
        """
        device, label = (v.strip() if v else None for v in (device, label))
        for name, value in (("device", device), ("class", label)):
            if value and (len(value) > _MAX_TEXT or not value.isprintable()):
                raise ValueError(f"{name}: at most {_MAX_TEXT} printable characters")
        start, end = _day_arg("from", start), _day_arg("to", end)
        if start and end and start > end:
            raise ValueError(f"from {start} is after to {end}; swap them")
        return cls(device or None, label or None, start, end)

    def query(self) -> dict[str, str]:
        """The set filters as URL query parameters (the names the web page reads)."""
        pairs = (("device", self.device), ("class", self.label), ("from", self.start), ("to", self.end))
        return {k: v for k, v in pairs if v}


def _day_arg(name: str, value: str | None) -> str | None:
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        if not _DAY.fullmatch(value):
            raise ValueError
        date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}: {value[:40]!r} is not a date; use YYYY-MM-DD") from None
    return value


def utc_day(t: float) -> str:
    """The UTC ``YYYY-MM-DD`` of Unix time ``t``."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


# -- devices -------------------------------------------------------------------------------------------

@dataclass(slots=True)
class DeviceRow:
    """One device as status and the page show it; times are Unix seconds (collector clock)."""

    device: str
    last_seen: int
    age_s: int
    state: str | None
    clock: str
    disk_free_mib: int | None
    disk_total_mib: int | None
    temp_c: float | None
    queue_depth: int | None
    disk_low: bool | None
    camera: str | None
    events_today: int
    expected_s: int
    silent: bool
    marks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


_CAMERA = {"o": "ok", "f": "failed", "c": "closed"}


def device_rows(conn: Connection, *, now: float) -> list[DeviceRow]:
    """Every device with its latest state, today's events (UTC) and the SILENT / OFFLINE marks."""
    today = utc_day(now)
    per_day = dict(conn.execute(select(events.c.device, func.count()).where(events.c.day == today)
                                .group_by(events.c.device)).all())
    out = []
    for d in conn.execute(select(devices).order_by(devices.c.device)).mappings():
        expected = expected_interval(conn, d["device"])
        age = max(0, int(now) - d["last_seen"])
        silent = age > expected
        marks = (["OFFLINE"] if d["state"] == "offline" else []) + (["SILENT"] if silent else [])
        clock = {1: "synced", 0: "unsynced"}.get(d["clock_synced"], "unknown")
        out.append(DeviceRow(
            device=d["device"], last_seen=d["last_seen"], age_s=age, state=d["state"], clock=clock,
            disk_free_mib=d["disk_free_mib"], disk_total_mib=d["disk_total_mib"],
            temp_c=None if d["cpu_temp_dc"] is None else d["cpu_temp_dc"] / 10,
            queue_depth=d["queue_depth"], disk_low=None if d["disk_low"] is None else bool(d["disk_low"]),
            camera=_CAMERA.get(d["camera_state"], d["camera_state"]), events_today=per_day.get(d["device"], 0),
            expected_s=expected, silent=silent, marks=marks))
    return out


def expected_interval(conn: Connection, device: str) -> int:
    """How long the device may stay quiet: 3x the median spacing of its newest health messages, else 2 h."""
    times = conn.execute(select(health.c.t).where(health.c.device == device).order_by(health.c.t.desc())
                         .limit(HEALTH_WINDOW)).scalars().all()
    gaps = [a - b for a, b in pairwise(times) if a > b]
    if len(gaps) < 2:
        return DEFAULT_INTERVAL_S
    return max(60, int(SILENT_FACTOR * statistics.median(gaps)))


# -- labels and filters ----------------------------------------------------------------------------------

def label_map(conn: Connection) -> LabelMap:
    """(device, model_id, kind, class_id) -> label of every model ever announced."""
    return {(r.device, r.model_id, r.kind, r.class_id): r.label for r in conn.execute(select(labels))}


def label_of(names: LabelMap, device: str, model_id: str, kind: str, class_id: int) -> str:
    """The label of a class, or ``det <id>`` / ``cls <id>`` when its model never said."""
    return names.get((device, model_id, kind, class_id), f"{kind} {class_id}")


def class_labels(conn: Connection) -> list[str]:
    """Every label a device announced, sorted (the page's class filter)."""
    return sorted(set(conn.execute(select(labels.c.label).distinct()).scalars()))


def device_ids(conn: Connection) -> list[str]:
    """Every device id, sorted."""
    return list(conn.execute(select(devices.c.device).order_by(devices.c.device)).scalars())


def _label_is(kind: str, class_col: Any, label: str) -> Any:
    return exists().where(labels.c.device == events.c.device, labels.c.model_id == events.c.model_id,
                          labels.c.kind == kind, labels.c.class_id == class_col, labels.c.label == label)


def event_where(f: Filters) -> list[Any]:
    """WHERE clauses on ``events`` for ``f`` (the class: the vote label, else any detector class label)."""
    where: list[Any] = []
    if f.device:
        where.append(events.c.device == f.device)
    if f.start:
        where.append(events.c.day >= f.start)
    if f.end:
        where.append(events.c.day <= f.end)
    if f.label:
        det = exists().where(event_counts.c.event_id == events.c.id, _label_is("det", event_counts.c.class_id,
                                                                                 f.label))
        where.append(or_(and_(events.c.vote_class.is_not(None), _label_is("cls", events.c.vote_class, f.label)),
                         and_(events.c.vote_class.is_(None), det)))
    return where


# -- detections per day ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DailyCounts:
    """Animals per UTC day per class label over ``days`` (every day of the span, oldest first)."""

    days: list[str]
    series: dict[str, list[int]]


def daily_counts(conn: Connection, f: Filters, *, now: float) -> DailyCounts:
    """Detections per day per class (see the module docstring for the counting rule)."""
    end = f.end or conn.execute(select(func.max(events.c.day)).where(*event_where(Filters(device=f.device)))) \
        .scalar() or utc_day(now)
    start = f.start or (date.fromisoformat(end) - timedelta(days=DEFAULT_DAYS - 1)).isoformat()
    if (date.fromisoformat(end) - date.fromisoformat(start)).days >= MAX_DAYS:
        start = (date.fromisoformat(end) - timedelta(days=MAX_DAYS - 1)).isoformat()
    span = Filters(device=f.device, start=start, end=end)
    stmt = (select(events.c.day, events.c.device, events.c.model_id, events.c.vote_class, event_counts.c.class_id,
                   func.sum(event_counts.c.count))
            .join(event_counts, event_counts.c.event_id == events.c.id).where(*event_where(span))
            .group_by(events.c.day, events.c.device, events.c.model_id, events.c.vote_class, event_counts.c.class_id))
    names = label_map(conn)
    first = date.fromisoformat(start)
    days = [(first + timedelta(days=i)).isoformat() for i in range((date.fromisoformat(end) - first).days + 1)]
    index = {d: i for i, d in enumerate(days)}
    series: dict[str, list[int]] = {}
    for day, device, model_id, vote, class_id, n in conn.execute(stmt):
        name = label_of(names, device, model_id, "cls", vote) if vote is not None \
            else label_of(names, device, model_id, "det", class_id)
        if f.label and name != f.label:
            continue
        series.setdefault(name, [0] * len(days))[index[day]] += int(n)
    return DailyCounts(days, dict(sorted(series.items(), key=lambda kv: (-sum(kv[1]), kv[0]))))


# -- events and crops ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EventRow:
    """One event as listed: its id, device, best time, clock, trigger, classes and whether a crop exists."""

    id: str
    device: str
    time: int
    clock: str
    trigger: str
    classes: str
    has_crop: bool


def event_rows(conn: Connection, f: Filters, *, limit: int = 50) -> list[EventRow]:
    """The newest events matching ``f``."""
    has_crop = exists().where(crops.c.event_id == events.c.id)
    rows = conn.execute(select(events.c.id, events.c.device, events.c.time, events.c.clock, events.c.trigger,
                               events.c.model_id, events.c.vote_class, has_crop.label("has_crop"))
                        .where(*event_where(f)).order_by(events.c.time.desc(), events.c.id).limit(limit)).all()
    return _described(conn, rows)


def latest_crops(conn: Connection, f: Filters, *, limit: int = 24) -> list[EventRow]:
    """The newest crops (by arrival) whose events match ``f``; a crop whose event has not arrived yet shows too."""
    stmt = (select(crops.c.event_id.label("id"), crops.c.device, func.coalesce(events.c.time, crops.c.received)
                   .label("time"), events.c.clock, events.c.trigger, events.c.model_id, events.c.vote_class,
                   literal(True).label("has_crop"))
            .select_from(crops.outerjoin(events, events.c.id == crops.c.event_id))
            .order_by(crops.c.received.desc(), crops.c.event_id).limit(limit))
    if f.device:
        stmt = stmt.where(crops.c.device == f.device)
    if f.label or f.start or f.end:
        stmt = stmt.where(*event_where(Filters(label=f.label, start=f.start, end=f.end)))
    return _described(conn, conn.execute(stmt).all())


def _described(conn: Connection, rows: Sequence[Any]) -> list[EventRow]:
    """EventRows of ``rows`` (id, device, time, clock, trigger, model_id, vote_class, has_crop) with their classes."""
    counts: dict[str, list[tuple[int, int]]] = {}
    if rows:
        for event_id, class_id, n in conn.execute(select(event_counts).where(
                event_counts.c.event_id.in_([r.id for r in rows])).order_by(event_counts.c.class_id)):
            counts.setdefault(event_id, []).append((class_id, n))
    names = label_map(conn) if rows else {}
    out = []
    for r in rows:
        if r.model_id is None:  # a crop that came before its event
            out.append(EventRow(r.id, r.device, r.time, "", "", "event not received yet", True))
            continue
        if r.vote_class is not None:
            text = f"{label_of(names, r.device, r.model_id, 'cls', r.vote_class)} " \
                   f"x{sum(n for _c, n in counts.get(r.id, [])) or 1}"
        else:
            text = ", ".join(f"{label_of(names, r.device, r.model_id, 'det', c)} x{n}" for c, n in counts.get(r.id, []))
        out.append(EventRow(r.id, r.device, r.time, r.clock, r.trigger, text or "empty", bool(r.has_crop)))
    return out


def crop_jpeg(conn: Connection, event_id: str) -> bytes | None:
    """The JPEG crop of an event, or None (also for a malformed id)."""
    if not _EVENT_ID.fullmatch(event_id):
        return None
    return conn.execute(select(crops.c.jpeg).where(crops.c.event_id == event_id)).scalar()


# -- rejects ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Rejects:
    """Refused messages: the count per reason (all time) and the newest few kept rows."""

    counts: dict[str, int]
    latest: list[dict[str, Any]]


def reject_counts(conn: Connection, *, latest: int = 20) -> Rejects:
    """Counts of refused messages per reason and the newest kept rejects (topic, reason, detail)."""
    counts = {name.removeprefix("rejected."): int(value) for name, value in conn.execute(
        select(counters.c.name, counters.c.value).where(counters.c.name.like("rejected.%")).order_by(counters.c.name))}
    rows = conn.execute(select(rejects.c.received, rejects.c.topic, rejects.c.device, rejects.c.reason,
                               rejects.c.detail).order_by(rejects.c.id.desc()).limit(latest)).mappings().all()
    return Rejects(counts, [dict(r) for r in rows])

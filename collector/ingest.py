"""Storing parsed messages: idempotent inserts, clock correction, device state, rejects.

:func:`store_batch` writes a batch of received messages in ONE transaction, each message inside
its own savepoint, so that a row one dialect refuses becomes a reject instead of failing the
batch. The caller acknowledges the batch to the broker only after this returns (the commit is
done): at-least-once on the wire, exactly once in the database, nothing acknowledged unstored.

Two collectors sharing a PostgreSQL database cannot deadlock: every transaction takes its locks in
one global order. First the clock locks (below), sorted; then the messages' rows, stored sorted by
kind and key (not in arrival order: two batches holding the same events in different orders would
otherwise each wait for the other's uncommitted insert); then the device rows, once per batch and in
device order; then the reject counters, in name order.

On PostgreSQL a transaction-level advisory lock per (device, boot) closes a race between collectors:
an unsynchronised event stored while another transaction stores its boot's first reference would be
missed by both (neither sees the other's uncommitted row). Storing a reference takes the lock
exclusively, reading one takes it shared.

Clock handling (docs/wire-format.md): an event made while the device clock was not synchronised
(``s`` 0) is moved to ``m + (t_ref - m_ref)`` as soon as a message from the same boot with a
synchronised clock gives the reference, whichever arrives first. A folder camera's event (marked
``"c":1``; from older devices, trigger ``file``) carries the photo's own EXIF time and is never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, case, literal_column, or_, select, text, tuple_, update
from sqlalchemy.exc import DataError, IntegrityError

from collector.db import insert
from collector.db.schema import (
    REJECT_PAYLOAD_BYTES,
    REJECTS_KEEP,
    clock_refs,
    counters,
    crops,
    detections,
    devices,
    effort,
    effort_counts,
    event_counts,
    events,
    health,
    labels,
    models,
    rejects,
    status_history,
)
from collector.wire import Parsed, Rejected, parse

logger = logging.getLogger(__name__)

_MAX_T = 253402300799
#: The order in which a batch's messages are stored (see the module docstring).
_RANK = {"model": 0, "health": 1, "effort": 2, "event": 3, "crop": 4, "status": 5}
#: Advisory lock keys: (namespace, key) pairs, apart from the migration lock's single 64-bit key.
_CLOCK_LOCKS, _TRIM_LOCK = 0x77650001, (0x77650002, 0)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One received message; ``received`` is the collector's Unix time."""

    topic: str
    payload: bytes
    received: int


@dataclass(slots=True)
class Outcome:
    """What became of a message: stored, a duplicate already stored, or rejected (reason)."""

    kind: str
    stored: bool = False
    reject: str | None = None


@dataclass(slots=True)
class _DeviceState:
    first: int
    last: int
    statuses: list[dict[str, Any]] = field(default_factory=list)
    health: dict[str, Any] | None = None
    model_id: str | None = None


@dataclass(slots=True)
class BatchResult:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, what: str) -> int:
        if what == "stored":
            return sum(o.stored for o in self.outcomes)
        if what == "duplicate":
            return sum(not o.stored and o.reject is None for o in self.outcomes)
        return sum(o.reject is not None for o in self.outcomes)


def day_of(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def store_batch(conn: Connection, batch: Sequence[Incoming], *, prefix: str, max_payload: int,
                allow: frozenset[str] | None = None) -> BatchResult:
    """Store ``batch`` inside the caller's transaction on ``conn`` (see the module docstring).

    Returns:
        One :class:`Outcome` per message, in the order of ``batch``.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database failed as a whole (connection lost, disk
            full): the caller rolls back, acknowledges nothing and tries again later.
    """
    outcomes: list[Outcome] = [Outcome("?") for _ in batch]
    rejected: Counter[str] = Counter()
    valid: list[tuple[int, Parsed]] = []
    for i, msg in enumerate(batch):
        try:
            valid.append((i, parse(msg.topic, msg.payload, prefix=prefix, max_payload=max_payload, allow=allow)))
        except Rejected as err:
            _reject(conn, msg, err)
            rejected[err.reason] += 1
            outcomes[i].reject = err.reason
    if conn.dialect.name == "postgresql":
        _lock_clocks(conn, [p for _, p in valid])
    ordered = sorted(valid, key=lambda item: _order(item[1]))
    grouped = [item for item in ordered if item[1].kind == "event"]
    done = {i for i, _ in grouped} if len(grouped) > 1 and _events_at_once(conn, grouped, batch, outcomes) \
        else set()
    for i, parsed in ordered:
        if i in done:
            continue
        msg = batch[i]
        outcomes[i].kind = parsed.kind
        try:
            with conn.begin_nested():
                outcomes[i].stored = _STORE[parsed.kind](conn, parsed, msg.received)
        except (DataError, IntegrityError) as err:
            refused = Rejected("db_refused", str(err.orig or err).splitlines()[0][:200], device=parsed.device)
            _reject(conn, msg, refused)
            rejected["db_refused"] += 1
            outcomes[i].reject = "db_refused"
    states: dict[str, _DeviceState] = {}
    for i, parsed in valid:  # in arrival order: the last status and model of a batch win
        if outcomes[i].reject is not None:
            continue
        received = batch[i].received
        state = states.setdefault(parsed.device, _DeviceState(received, received))
        state.first, state.last = min(state.first, received), max(state.last, received)
        if parsed.kind == "status":
            state.statuses.append(parsed.data)
        elif parsed.kind == "health" and (state.health is None or parsed.raw["t"] >= state.health["t"]):
            state.health = parsed.raw
        elif parsed.kind == "model":
            state.model_id = parsed.data["model_id"]
    for device in sorted(states):
        _update_device(conn, device, states[device])
    if rejected:
        _count_rejects(conn, rejected)
    return BatchResult(outcomes)


def _order(p: Parsed) -> tuple[int, tuple[Any, ...]]:
    """Sort key of a message: its kind, then the key of the row it inserts."""
    data, raw = p.data, p.raw
    keys: dict[str, tuple[Any, ...]] = {
        "model": (p.device, data.get("model_id")), "health": (p.device, raw.get("b"), raw.get("m")),
        "effort": (data.get("id"),), "event": (data.get("id"),), "crop": (data.get("event_id"),)}
    return _RANK[p.kind], keys.get(p.kind, ())


def _lock_clocks(conn: Connection, parsed: list[Parsed]) -> None:
    """PostgreSQL: take the (device, boot) clock locks this batch needs, exclusive to write a reference."""
    wanted: dict[int, bool] = {}
    references: dict[int, tuple[str, str]] = {}
    for p in parsed:
        raw = p.raw
        if p.kind in ("health", "effort") and raw["s"] == 1:
            exclusive = True
        elif p.kind == "effort" or p.kind == "event" and raw["s"] == 0 and p.data["trigger"] != "file":
            exclusive = False
        else:
            continue
        key = _clock_key(p.device, raw["b"])
        wanted[key] = wanted.get(key, False) or exclusive
        if exclusive:
            references[key] = (p.device, raw["b"])
    if references:
        # A boot whose reference is already committed needs no exclusive lock: a synced message then
        # writes nothing, and every later statement sees the reference. Without this, two collectors
        # whose batches both carry health from most devices waited for each other 42 % of the time.
        known = {(r.device, r.boot) for r in conn.execute(select(clock_refs.c.device, clock_refs.c.boot).where(
            tuple_(clock_refs.c.device, clock_refs.c.boot).in_(sorted(set(references.values())))))}
        for key, pair in references.items():
            if pair in known:
                wanted[key] = False
    for key in sorted(wanted):
        function = "pg_advisory_xact_lock" if wanted[key] else "pg_advisory_xact_lock_shared"
        conn.execute(text(f"SELECT {function}(:space, :key)"), {"space": _CLOCK_LOCKS, "key": key})


def _clock_key(device: str, boot: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{device}/{boot}".encode(), digest_size=4).digest(), "big", signed=True)


def _inserted(conn: Connection, stmt: Any) -> bool:
    """Whether ``stmt`` (an INSERT ... ON CONFLICT DO NOTHING) inserted its row.

    RETURNING, not ``rowcount``: SQLAlchemy reads an INSERT's rowcount after closing the cursor, and
    psycopg 3 then reports -1 (every message looked like a duplicate on PostgreSQL).
    """
    return conn.execute(stmt.returning(literal_column("1"))).first() is not None


# -- events and effort ---------------------------------------------------------------------------------

def _clock(conn: Connection, device: str, raw: dict[str, Any], t: int, trigger: str) -> tuple[int, str]:
    """(best time, clock) of a message sent at device time ``t``.

    An event marked ``"c":1`` (a folder camera's photo, whatever its trigger) or, from a device older
    than that marker, with trigger ``file`` carries the camera's own time: never corrected.
    """
    if raw.get("c") == 1 or trigger == "file":
        return t, "camera"
    if raw["s"] == 1:
        return t, "synced"
    offset = conn.execute(select(clock_refs.c.offset).where(
        clock_refs.c.device == device, clock_refs.c.boot == raw["b"])).scalar()
    if offset is not None and 0 <= raw["m"] + offset <= _MAX_T:
        return raw["m"] + offset, "corrected"
    return t, "unsynced"


def _event_row(conn: Connection, p: Parsed, received: int) -> dict[str, Any]:
    raw, data = p.raw, p.data
    time, clock = _clock(conn, p.device, raw, raw["t"], data["trigger"])
    vote = data["vote"] or {}
    return {"id": data["id"], "device": p.device, "t": raw["t"], "time": time, "day": day_of(time),
            "clock": clock, "boot": data["boot"], "monotonic": data["monotonic"], "trigger": data["trigger"],
            "image": data["image"], "model_id": data["model_id"], "vote_class": vote.get("class_id"),
            "votes": vote.get("votes"), "voters": vote.get("voters"), "received": received}


def _event_children(p: Parsed) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The detection rows and burst-count rows of an event."""
    event_id = p.data["id"]
    found = [{"event_id": event_id, "idx": i, "class_id": x[0], "score": x[1], "x1": x[2], "y1": x[3],
              "x2": x[4], "y2": x[5], "cls_class": x[6] if len(x) == 8 else None,
              "cls_prob": x[7] if len(x) == 8 else None} for i, x in enumerate(p.raw.get("x") or [])]
    counts = [{"event_id": event_id, "class_id": c, "count": n} for c, n in p.data["counts"].items()]
    return found, counts


def _event(conn: Connection, p: Parsed, received: int) -> bool:
    row = _event_row(conn, p, received)
    if not _inserted(conn, insert(conn, events).values(row).on_conflict_do_nothing(index_elements=["id"])):
        return False
    found, counts = _event_children(p)
    if found:
        conn.execute(detections.insert(), found)
    if counts:
        conn.execute(event_counts.insert(), counts)
    return True


def _events_at_once(conn: Connection, items: list[tuple[int, Parsed]], batch: Sequence[Incoming],
                    outcomes: list[Outcome]) -> bool:
    """Every event of a batch in three statements (events, detections, counts) instead of four round trips
    each; False, with nothing stored, when the database refuses a row (the caller then stores them one by
    one, each in its own savepoint, to find it)."""
    rows: dict[str, dict[str, Any]] = {}
    for i, p in items:  # a repeat within the batch is a duplicate of its first copy
        if p.data["id"] not in rows:
            rows[p.data["id"]] = _event_row(conn, p, batch[i].received)
    try:
        with conn.begin_nested():
            stmt = insert(conn, events).on_conflict_do_nothing(index_elements=["id"]).returning(events.c.id)
            new = set(conn.execute(stmt, list(rows.values())).scalars())
            found: list[dict[str, Any]] = []
            counts: list[dict[str, Any]] = []
            children = set()
            for _, p in items:
                if p.data["id"] in new and p.data["id"] not in children:
                    children.add(p.data["id"])
                    more_found, more_counts = _event_children(p)
                    found += more_found
                    counts += more_counts
            if found:
                conn.execute(detections.insert(), found)
            if counts:
                conn.execute(event_counts.insert(), counts)
    except (DataError, IntegrityError):
        return False
    for i, p in items:
        outcomes[i].kind = "event"
        outcomes[i].stored = p.data["id"] in new
        new.discard(p.data["id"])
    return True


def _effort(conn: Connection, p: Parsed, received: int) -> bool:
    raw, data = p.raw, p.data
    end, clock = _clock(conn, p.device, raw, raw["t1"], "")
    row = {"id": data["id"], "device": p.device, "t0": raw["t0"], "t1": raw["t1"],
           "start": max(0, end - (raw["t1"] - raw["t0"])), "end": end, "clock": clock, "boot": raw["b"],
           "monotonic": raw["m"], "received": received}
    if not _inserted(conn, insert(conn, effort).values(row).on_conflict_do_nothing(index_elements=["id"])):
        return False
    if data["counts"]:
        conn.execute(effort_counts.insert(), [{"effort_id": data["id"], "trigger": trigger, **counts}
                                               for trigger, counts in data["counts"].items()])
    if raw["s"] == 1:
        _reference(conn, p.device, raw["b"], raw["t1"] - raw["m"], received)
    return True


def _reference(conn: Connection, device: str, boot: str, offset: int, received: int) -> None:
    """Record a boot's clock offset; the first time, correct what that boot sent unsynchronised."""
    if not _inserted(conn, insert(conn, clock_refs).values(device=device, boot=boot, offset=offset, received=received)
                     .on_conflict_do_nothing(index_elements=["device", "boot"])):
        return
    late = conn.execute(select(events.c.id, events.c.monotonic).where(
        events.c.device == device, events.c.boot == boot, events.c.clock == "unsynced")).all()
    for event_id, monotonic in late:
        if 0 <= monotonic + offset <= _MAX_T:
            conn.execute(update(events).where(events.c.id == event_id).values(
                time=monotonic + offset, day=day_of(monotonic + offset), clock="corrected"))
    end = effort.c.monotonic + offset
    conn.execute(update(effort).where(effort.c.device == device, effort.c.boot == boot, effort.c.clock == "unsynced",
                                      end.between(0, _MAX_T))
                 .values(end=end, start=case((end - (effort.c.t1 - effort.c.t0) < 0, 0),
                                             else_=end - (effort.c.t1 - effort.c.t0)), clock="corrected"))
    if late:
        logger.info("%s: corrected the times of %d events from boot %s (clock offset %d s)",
                    device, len(late), boot, offset)


# -- state messages ------------------------------------------------------------------------------------

def _health(conn: Connection, p: Parsed, received: int) -> bool:
    raw = p.raw
    row = {"device": p.device, "t": raw["t"], "clock_synced": raw["s"], "boot": raw["b"], "monotonic": raw["m"],
           "received": received, "disk_free_mib": raw.get("df"), "cpu_temp_dc": raw.get("tc"),
           "queue_depth": raw.get("q"), "data": json.dumps(p.data, default=str, sort_keys=True)}
    stmt = insert(conn, health).values(row).on_conflict_do_nothing(index_elements=["device", "boot", "monotonic"])
    if not _inserted(conn, stmt):
        return False
    if raw["s"] == 1:
        _reference(conn, p.device, raw["b"], raw["t"] - raw["m"], received)
    return True


def _status(conn: Connection, p: Parsed, received: int) -> bool:
    return True  # applied to the device row and its history at the end of the batch


def _model(conn: Connection, p: Parsed, received: int) -> bool:
    data, raw = p.data, p.raw
    det, cls = data["detector"], data["classifier"]
    row = {"device": p.device, "model_id": data["model_id"], "t": raw["t"], "received": received,
           "det_name": det.name, "det_sha256": det.sha256, "det_conf": _permille(det.conf),
           "det_iou": None if det.iou is None else _permille(det.iou),
           "cls_name": cls.name if cls else None, "cls_sha256": cls.sha256 if cls else None,
           "cls_conf": _permille(cls.conf) if cls else None}
    stmt = insert(conn, models).values(row).on_conflict_do_nothing(index_elements=["device", "model_id"])
    if not _inserted(conn, stmt):
        return False
    names = [{"device": p.device, "model_id": data["model_id"], "kind": kind, "class_id": i, "label": label}
             for kind, info in (("det", det), ("cls", cls)) if info is not None
             for i, label in enumerate(info.labels)]
    if names:
        conn.execute(labels.insert(), names)
    return True


def _crop(conn: Connection, p: Parsed, received: int) -> bool:
    row = {"event_id": p.data["event_id"], "device": p.device, "received": received, "jpeg": p.data["jpeg"]}
    return _inserted(conn, insert(conn, crops).values(row).on_conflict_do_nothing(index_elements=["event_id"]))


_STORE = {"event": _event, "effort": _effort, "health": _health, "status": _status, "model": _model,
          "crop": _crop}


def _permille(value: float) -> int:
    return int(value * 1000 + 0.5)


def _update_device(conn: Connection, device: str, s: _DeviceState) -> None:
    ins = insert(conn, devices).values(device=device, first_seen=s.first, last_seen=s.last)
    conn.execute(ins.on_conflict_do_update(index_elements=["device"], set_={
        "last_seen": case((ins.excluded.last_seen > devices.c.last_seen, ins.excluded.last_seen),
                          else_=devices.c.last_seen)}))
    if s.model_id is not None:
        conn.execute(update(devices).where(devices.c.device == device).values(model_id=s.model_id))
    if s.health is not None:
        h = s.health
        conn.execute(update(devices).where(devices.c.device == device, or_(
            devices.c.health_t.is_(None), devices.c.health_t <= h["t"])).values(
            health_t=h["t"], health_received=s.last, clock_synced=h["s"], disk_free_mib=h.get("df"),
            disk_total_mib=h.get("dt"), cpu_temp_dc=h.get("tc"), queue_depth=h.get("q"), disk_low=h.get("dl"),
            camera_state=h.get("cam")))
    for st in s.statuses:
        t = None if st["time"] is None else int(st["time"].timestamp())
        synced = None if st["clock_synced"] is None else int(st["clock_synced"])
        # Retained status comes again at every reconnect: a repeat changes nothing and is not history.
        changed = conn.execute(update(devices).where(devices.c.device == device, or_(
            devices.c.state.is_distinct_from(st["state"]), devices.c.state_t.is_distinct_from(t))).values(
            state=st["state"], state_t=t, state_received=s.last,
            **({"clock_synced": synced} if synced is not None else {}))).rowcount
        if changed:
            conn.execute(status_history.insert().values(device=device, state=st["state"], t=t, clock_synced=synced,
                                                        received=s.last))
        if st["location"] is not None:  # kept when a later status (a Last Will) comes without it
            lat, lon = (round(v * 1_000_000) for v in st["location"])
            conn.execute(update(devices).where(devices.c.device == device).values(latitude_e6=lat,
                                                                                 longitude_e6=lon))


def record_reject(conn: Connection, msg: Incoming, err: Rejected) -> None:
    """Keep one refused message and count it (for a caller that refuses a message on its own)."""
    _reject(conn, msg, err)
    _count_rejects(conn, Counter({err.reason: 1}))


def _reject(conn: Connection, msg: Incoming, err: Rejected) -> None:
    logger.warning("rejected a message on %s: %s: %s", msg.topic[:200], err.reason, err.detail)
    conn.execute(rejects.insert().values(received=msg.received, topic=msg.topic[:1024], device=err.device,
                                         reason=err.reason, detail=err.detail[:500], size=len(msg.payload),
                                         payload=msg.payload[:REJECT_PAYLOAD_BYTES]))


def _count_rejects(conn: Connection, rejected: Counter[str]) -> None:
    """Add to the ``rejected.<reason>`` counters (in name order), then keep the newest REJECTS_KEEP rejects."""
    for reason in sorted(rejected):
        ins = insert(conn, counters).values(name=f"rejected.{reason}", value=rejected[reason])
        conn.execute(ins.on_conflict_do_update(index_elements=["name"],
                                               set_={"value": counters.c.value + ins.excluded.value}))
    if conn.dialect.name == "postgresql" and not conn.execute(
            text("SELECT pg_try_advisory_xact_lock(:space, :key)"),
            {"space": _TRIM_LOCK[0], "key": _TRIM_LOCK[1]}).scalar():
        return  # another collector is trimming right now
    oldest_kept = select(rejects.c.id).order_by(rejects.c.id.desc()).offset(REJECTS_KEEP - 1).limit(1)
    conn.execute(rejects.delete().where(rejects.c.id < oldest_kept.scalar_subquery()))

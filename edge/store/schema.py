"""The store's SQLite schema (append-only migrations) and the mapping between rows and records."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from edge.store.records import DetectionRecord, EventRecord, FrameRecord, OutboxMessage, from_iso, to_iso

#: PRAGMA application_id of a wildedge store ("WEDG"): tells our file from any other SQLite file.
APPLICATION_ID = 0x57454447

#: MIGRATIONS[n] takes a store from schema version n to n + 1 (PRAGMA user_version). Append only:
#: a shipped migration never changes, since devices in the field have already run it.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE frames (
            id INTEGER PRIMARY KEY,
            uid TEXT NOT NULL UNIQUE,
            captured_at TEXT NOT NULL,
            monotonic REAL NOT NULL,
            boot_id TEXT NOT NULL,
            clock_synced INTEGER NOT NULL,
            trigger_reason TEXT NOT NULL,
            burst_id TEXT NOT NULL,
            burst_index INTEGER NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            inference_ms REAL NOT NULL,
            source TEXT UNIQUE,
            image_path TEXT,
            person INTEGER NOT NULL,
            failure TEXT)""",
        "CREATE INDEX frames_captured_at ON frames (captured_at)",
        "CREATE INDEX frames_burst ON frames (burst_id)",
        "CREATE INDEX frames_image ON frames (image_path) WHERE image_path IS NOT NULL",
        """CREATE TABLE detections (
            id INTEGER PRIMARY KEY,
            frame_id INTEGER NOT NULL REFERENCES frames (id) ON DELETE CASCADE,
            class_id INTEGER NOT NULL,
            label TEXT NOT NULL,
            score REAL NOT NULL,
            x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
            cls_id INTEGER, cls_label TEXT, cls_score REAL,
            new INTEGER NOT NULL)""",
        "CREATE INDEX detections_frame ON detections (frame_id)",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            uid TEXT NOT NULL UNIQUE,
            burst_id TEXT NOT NULL,
            captured_at TEXT NOT NULL,
            monotonic REAL NOT NULL,
            boot_id TEXT NOT NULL,
            clock_synced INTEGER NOT NULL,
            trigger_reason TEXT NOT NULL,
            image_path TEXT,
            best_frame_uid TEXT NOT NULL,
            summary TEXT NOT NULL,
            delivered_at TEXT)""",
        "CREATE INDEX events_captured_at ON events (captured_at)",
        "CREATE INDEX events_burst ON events (burst_id)",
        "CREATE INDEX events_image ON events (image_path) WHERE image_path IS NOT NULL",
        # The foreign key makes deleting an event that still has queued messages impossible.
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL,
            qos INTEGER NOT NULL,
            retain INTEGER NOT NULL,
            event_uid TEXT REFERENCES events (uid),
            created_at TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX outbox_event ON outbox (event_uid) WHERE event_uid IS NOT NULL",
        "CREATE TABLE health (id INTEGER PRIMARY KEY, at TEXT NOT NULL, snapshot TEXT NOT NULL)",
    ),
    # 1 -> 2: when a row was written. Retention ages rows by it: a folder camera's frames carry the
    # photo's own (EXIF) time, which may be years old on the day the card is processed.
    (
        "ALTER TABLE frames ADD COLUMN recorded_at TEXT",
        "ALTER TABLE events ADD COLUMN recorded_at TEXT",
        "CREATE INDEX frames_recorded_at ON frames (recorded_at)",
        "CREATE INDEX events_recorded_at ON events (recorded_at)",
    ),
    # 2 -> 3: when a row was written, on a basis that survives wall-clock steps: the boot, the boot's
    # monotonic seconds (CLOCK_BOOTTIME) and whether the wall clock was synchronised. Retention and the
    # outbox age bound measure ages by monotonic difference within a boot, and by wall time across boots
    # only when the clock was synchronised then and now. Older rows have no boot (never "this boot") and
    # take their capture's synchronised flag, the best knowledge there is of that moment's clock.
    (
        "ALTER TABLE frames ADD COLUMN recorded_boot TEXT",
        "ALTER TABLE frames ADD COLUMN recorded_mono REAL",
        "ALTER TABLE frames ADD COLUMN recorded_synced INTEGER",
        "ALTER TABLE events ADD COLUMN recorded_boot TEXT",
        "ALTER TABLE events ADD COLUMN recorded_mono REAL",
        "ALTER TABLE events ADD COLUMN recorded_synced INTEGER",
        "ALTER TABLE outbox ADD COLUMN created_boot TEXT",
        "ALTER TABLE outbox ADD COLUMN created_mono REAL",
        "ALTER TABLE outbox ADD COLUMN created_synced INTEGER",
        "UPDATE frames SET recorded_synced = clock_synced",
        "UPDATE events SET recorded_synced = clock_synced",
        ("UPDATE outbox SET created_synced = COALESCE((SELECT e.clock_synced FROM events e "
         "WHERE e.uid = outbox.event_uid), 0)"),
    ),
]
FRAME_COLS = ("uid, captured_at, monotonic, boot_id, clock_synced, trigger_reason, burst_id, burst_index, "
               "width, height, inference_ms, source, image_path, person, failure")
EVENT_COLS = ("uid, burst_id, captured_at, monotonic, boot_id, clock_synced, trigger_reason, image_path, "
               "best_frame_uid, summary")
MESSAGE_COLS = "topic, payload, qos, retain, event_uid, created_at, attempts"
OUTBOX_COLS = "seq, " + MESSAGE_COLS
#: Where and when a row was written (schema 3): boot id, boot-relative seconds, clock synchronised.
RECORDED_COLS = "recorded_at, recorded_boot, recorded_mono, recorded_synced"
CREATED_COLS = "created_boot, created_mono, created_synced"


def age_clause(prefix: str, wall: str) -> str:
    """SQL that is true for a row older than a cutoff, measured on a basis that cannot jump.

    Same boot: monotonic seconds. Another boot: wall time, and only when the clock was synchronised
    both when the row was written and now; otherwise the row counts as young. Takes the five
    parameters of :meth:`edge.store.db.Moment.cutoff`.
    """
    return (f"(({prefix}_boot = ? AND {prefix}_mono < ?) OR "
            f"({prefix}_boot IS NOT ? AND {prefix}_synced = 1 AND ? = 1 AND {wall} < ?))")

# -- rows <-> records ---------------------------------------------------------------------------
def marks(n: int) -> str:
    return ", ".join("?" * n)


def to_json(value: dict, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} is not JSON-serialisable: {err}") from err


def frame_row(f: FrameRecord) -> tuple:
    return (f.uid, to_iso(f.captured_at), f.monotonic, f.boot_id, int(f.clock_synced), f.trigger, f.burst_id,
            f.burst_index, f.width, f.height, f.inference_ms, f.source, f.image_path, int(f.person),
            f.failure)


def detection_row(d: DetectionRecord) -> tuple:
    if len(d.box) != 4:
        raise ValueError(f"a box needs 4 numbers (x1, y1, x2, y2), got {d.box!r}")
    cls = d.classification if d.classification is not None else (None, None, None)
    return (d.class_id, d.label, float(d.score), *map(float, d.box), *cls, int(d.new))


def event_row(e: EventRecord) -> tuple:
    return (e.uid, e.burst_id, to_iso(e.captured_at), e.monotonic, e.boot_id, int(e.clock_synced), e.trigger,
            e.image_path, e.best_frame_uid, to_json(e.summary, f"summary of event {e.uid}"))


def message_row(m: OutboxMessage, now: datetime) -> tuple:
    if m.qos not in (0, 1, 2):
        raise ValueError(f"qos must be 0, 1 or 2, got {m.qos}")
    if not isinstance(m.payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes, got {type(m.payload).__name__}")
    if not m.topic:
        raise ValueError("an outbox message needs a topic")
    return (m.topic, bytes(m.payload), m.qos, int(m.retain), m.event_uid, to_iso(now), 0)


def frame_from_row(r: sqlite3.Row, detections: list[DetectionRecord]) -> FrameRecord:
    return FrameRecord(r["uid"], from_iso(r["captured_at"]), r["monotonic"], r["boot_id"],
                       bool(r["clock_synced"]), r["trigger_reason"], r["burst_id"], r["burst_index"],
                       r["width"], r["height"], r["inference_ms"], r["source"], r["image_path"], detections,
                       bool(r["person"]), r["failure"])


def event_from_row(r: sqlite3.Row) -> EventRecord:
    return EventRecord(r["uid"], r["burst_id"], from_iso(r["captured_at"]), r["monotonic"], r["boot_id"],
                       bool(r["clock_synced"]), r["trigger_reason"], r["image_path"], r["best_frame_uid"],
                       json.loads(r["summary"]))

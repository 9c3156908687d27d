"""The collector's database schema (SQLAlchemy Core), one definition for SQLite and PostgreSQL.

Conventions, chosen so that both dialects store exactly the same values:

- times are whole Unix seconds (``BigInteger``), as on the wire; ``day`` is the UTC date of an
  event's best time as ``YYYY-MM-DD`` text, kept beside it so that per-day counts need no
  dialect-specific date function;
- scores, probabilities and box corners are the wire's per-mille integers (exact, no float drift);
- ids are the lowercase hyphenated UUID text the wire decoder returns.

Migrations: :data:`MIGRATIONS` in :mod:`collector.db.migrate`. Changing a table here needs a new
migration there; a shipped migration never changes.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

DEVICE = String(64)
UUID = String(36)
MODEL_ID = String(8)

#: One row: the schema version this database is at (see collector.db.migrate).
schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, nullable=False),
)

#: Every device ever heard from, with its latest state (status, health, model).
devices = Table(
    "devices", metadata,
    Column("device", DEVICE, primary_key=True),
    Column("first_seen", BigInteger, nullable=False),   # receive times (collector clock)
    Column("last_seen", BigInteger, nullable=False),
    Column("state", String(16)),                        # online | stopped | offline (LWT)
    Column("state_t", BigInteger),                      # the status message's t (device clock), if any
    Column("state_received", BigInteger),
    Column("clock_synced", Integer),                    # from the newest status/health
    Column("model_id", MODEL_ID),                       # the newest model message's mv
    Column("health_t", BigInteger),                     # the newest health message's t
    Column("health_received", BigInteger),
    Column("disk_free_mib", BigInteger),
    Column("disk_total_mib", BigInteger),
    Column("cpu_temp_dc", Integer),                     # 0.1 degC, as on the wire
    Column("queue_depth", BigInteger),
    Column("disk_low", Integer),
    Column("camera_state", String(16)),
    # Schema 2: the position in micro-degrees from the status message (devices with [mqtt] send_location).
    Column("latitude_e6", BigInteger),
    Column("longitude_e6", BigInteger),
)

status_history = Table(
    "status_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device", DEVICE, nullable=False),
    Column("state", String(16), nullable=False),
    Column("t", BigInteger),
    Column("clock_synced", Integer),
    Column("received", BigInteger, nullable=False),
    Index("status_history_device", "device", "received"),
)

health = Table(
    "health", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device", DEVICE, nullable=False),
    Column("t", BigInteger, nullable=False),
    Column("clock_synced", Integer, nullable=False),
    Column("boot", String(8), nullable=False),
    Column("monotonic", BigInteger, nullable=False),
    Column("received", BigInteger, nullable=False),
    Column("disk_free_mib", BigInteger),
    Column("cpu_temp_dc", Integer),
    Column("queue_depth", BigInteger),
    Column("data", Text, nullable=False),               # the decoded message as JSON
    # A health message has no id; one boot cannot send two at the same second since boot.
    UniqueConstraint("device", "boot", "monotonic", name="health_once"),
    Index("health_device_t", "device", "t"),
)

#: Per device and boot: the clock offset (t - m) from a message sent with a synchronised clock.
clock_refs = Table(
    "clock_refs", metadata,
    Column("device", DEVICE, primary_key=True),
    Column("boot", String(8), primary_key=True),
    Column("offset", BigInteger, nullable=False),
    Column("received", BigInteger, nullable=False),
)

models = Table(
    "models", metadata,
    Column("device", DEVICE, primary_key=True),
    Column("model_id", MODEL_ID, primary_key=True),
    Column("t", BigInteger, nullable=False),
    Column("received", BigInteger, nullable=False),
    Column("det_name", Text, nullable=False),
    Column("det_sha256", String(64), nullable=False),
    Column("det_conf", Integer, nullable=False),        # per-mille
    Column("det_iou", Integer),
    Column("cls_name", Text),
    Column("cls_sha256", String(64)),
    Column("cls_conf", Integer),
)

#: Class id -> label of each model a device announced; ``kind`` is "det" or "cls".
labels = Table(
    "labels", metadata,
    Column("device", DEVICE, primary_key=True),
    Column("model_id", MODEL_ID, primary_key=True),
    Column("kind", String(3), primary_key=True),
    Column("class_id", Integer, primary_key=True, autoincrement=False),
    Column("label", Text, nullable=False),
)

#: One row per event id: at-least-once on the wire becomes exactly once here.
events = Table(
    "events", metadata,
    Column("id", UUID, primary_key=True),
    Column("device", DEVICE, nullable=False),
    Column("t", BigInteger, nullable=False),            # as sent
    Column("time", BigInteger, nullable=False),         # best known time (corrected when it could be)
    Column("day", String(10), nullable=False),          # UTC date of ``time``
    # synced | corrected | unsynced (no reference for its boot yet) | camera (a photo's own EXIF time)
    Column("clock", String(10), nullable=False),
    Column("boot", String(8)),
    Column("monotonic", BigInteger),
    Column("trigger", String(16), nullable=False),
    Column("image", Text),
    Column("model_id", MODEL_ID, nullable=False),
    Column("vote_class", Integer),
    Column("votes", Integer),
    Column("voters", Integer),
    Column("received", BigInteger, nullable=False),
    Index("events_device_time", "device", "time"),
    Index("events_time", "time"),
    Index("events_day", "day"),
    Index("events_unsynced", "device", "boot", "clock"),
)

#: The best frame's detections of an event (``idx`` keeps the wire order).
detections = Table(
    "detections", metadata,
    Column("event_id", UUID, ForeignKey("events.id", ondelete="CASCADE"), primary_key=True),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("class_id", Integer, nullable=False),
    Column("score", Integer, nullable=False),
    Column("x1", Integer, nullable=False),
    Column("y1", Integer, nullable=False),
    Column("x2", Integer, nullable=False),
    Column("y2", Integer, nullable=False),
    Column("cls_class", Integer),
    Column("cls_prob", Integer),
)

#: The burst count of each detector class of an event (after ``n``).
event_counts = Table(
    "event_counts", metadata,
    Column("event_id", UUID, ForeignKey("events.id", ondelete="CASCADE"), primary_key=True),
    Column("class_id", Integer, primary_key=True, autoincrement=False),
    Column("count", Integer, nullable=False),
)

effort = Table(
    "effort", metadata,
    Column("id", UUID, primary_key=True),
    Column("device", DEVICE, nullable=False),
    Column("t0", BigInteger, nullable=False),           # as sent
    Column("t1", BigInteger, nullable=False),
    Column("start", BigInteger, nullable=False),        # corrected like an event's time
    Column("end", BigInteger, nullable=False),
    Column("clock", String(10), nullable=False),
    Column("boot", String(8), nullable=False),
    Column("monotonic", BigInteger, nullable=False),
    Column("received", BigInteger, nullable=False),
    Index("effort_device_start", "device", "start"),
)

effort_counts = Table(
    "effort_counts", metadata,
    Column("effort_id", UUID, ForeignKey("effort.id", ondelete="CASCADE"), primary_key=True),
    Column("trigger", String(16), primary_key=True),
    Column("frames", BigInteger, nullable=False),
    Column("empty", BigInteger, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),
)

#: JPEG crops of events' best detections (they may arrive before or after their event).
crops = Table(
    "crops", metadata,
    Column("event_id", UUID, primary_key=True),
    Column("device", DEVICE, nullable=False),
    Column("received", BigInteger, nullable=False),
    Column("jpeg", LargeBinary, nullable=False),
    Index("crops_received", "received"),
)

#: Messages that were refused: kept (the newest ``REJECTS_KEEP``) for inspection, never a crash.
rejects = Table(
    "rejects", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received", BigInteger, nullable=False),
    Column("topic", Text, nullable=False),
    Column("device", Text),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),     # the first REJECT_PAYLOAD_BYTES bytes
)

#: Counters that outlive the trimmed rejects table: ``rejected.<reason>``.
counters = Table(
    "counters", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

REJECTS_KEEP = 10_000
REJECT_PAYLOAD_BYTES = 1024

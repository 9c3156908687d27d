"""The device's local store: SQLite (WAL) event log and outbox, atomic image files, retention.

SQLite is the single source of truth; see ``docs/store.md`` for the schema, the transaction
boundaries and the retention order.
"""

from __future__ import annotations

from edge.store.db import DiskFullError, Moment, Store, StoreGoneError
from edge.store.images import encode_jpeg, image_relpath, resolve, save_jpeg, write_atomic
from edge.store.records import (
    DetectionRecord,
    EventRecord,
    FrameRecord,
    OutboxDepth,
    OutboxMessage,
    OutboxRow,
    from_iso,
    new_uid,
    to_iso,
    uid_time,
)
from edge.store.reserve import DiskReserve, is_disk_full
from edge.store.retention import RetentionReport, can_save, enforce, free_space, make_room
from edge.store.schema import APPLICATION_ID, MIGRATIONS

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "DetectionRecord",
    "DiskFullError",
    "DiskReserve",
    "EventRecord",
    "FrameRecord",
    "Moment",
    "OutboxDepth",
    "OutboxMessage",
    "OutboxRow",
    "RetentionReport",
    "Store",
    "StoreGoneError",
    "can_save",
    "encode_jpeg",
    "enforce",
    "free_space",
    "from_iso",
    "image_relpath",
    "is_disk_full",
    "make_room",
    "new_uid",
    "resolve",
    "save_jpeg",
    "to_iso",
    "uid_time",
    "write_atomic",
]

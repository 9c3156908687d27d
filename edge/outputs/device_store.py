"""Reading a device's store for ``wildedge results``: read-only, beside a daemon that may be writing.

The store is opened with SQLite's ``mode=ro``: no migration, no write lock, no checkpoint. WAL
readers never block the writer, and one read transaction gives a consistent snapshot.
Values are quantised as the wire encoder quantises them (:func:`edge.outputs.events.permille`),
so a device's export and the collector's export of the same event agree exactly.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from edge.errors import StoreError
from edge.outputs.events import (
    Classification,
    Deployment,
    Event,
    EventDetection,
    EventExport,
    Models,
    Vote,
    permille,
    whole_seconds,
)
from edge.store.records import from_iso, to_iso
from edge.store.schema import APPLICATION_ID, MIGRATIONS

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoreSummary:
    """What ``wildedge results`` prints: frames, events, events per class, last event, outbox depth."""

    frames: int
    events: int
    per_class: dict[str, int]
    last_event: datetime | None
    queued: int
    queued_bytes: int


@contextmanager
def open_readonly(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the store at ``path``, inside one read transaction.

    Raises:
        StoreError: the file does not exist, is not a wildedge store, or is newer than this code.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no store at {path}: the daemon has not run with this config yet (check device.state_dir)")
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, isolation_level=None,
                               timeout=10.0)
    except sqlite3.Error as err:
        raise StoreError(f"cannot open store {path}: {err}") from err
    conn.row_factory = sqlite3.Row
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise StoreError(f"{path} is not a wildedge store")
        if version > len(MIGRATIONS):
            raise StoreError(f"store {path} has schema version {version}, newer than this wildedge knows "
                             f"({len(MIGRATIONS)}); upgrade wildedge")
        conn.execute("BEGIN")
        yield conn
        conn.execute("COMMIT")
    except sqlite3.Error as err:
        raise StoreError(f"cannot read store {path}: {err}") from err
    finally:
        conn.close()


def summarise(conn: sqlite3.Connection) -> StoreSummary:
    """Counts over the whole store."""
    frames = conn.execute("SELECT count(*) FROM frames").fetchone()[0]
    events, last = conn.execute("SELECT count(*), max(captured_at) FROM events").fetchone()
    per_class: dict[str, int] = {}
    for (text,) in conn.execute("SELECT summary FROM events"):
        for entry in json.loads(text).get("classes") or []:
            label = str(entry.get("label"))
            per_class[label] = per_class.get(label, 0) + 1
    queued, size = conn.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").fetchone()
    return StoreSummary(frames, events, dict(sorted(per_class.items(), key=lambda kv: (-kv[1], kv[0]))),
                        from_iso(last) if last else None, queued, size)


def _where(since: datetime | None, until: datetime | None, column: str) -> tuple[str, list[str]]:
    parts, params = ["1"], []
    if since is not None:
        parts.append(f"{column} >= ?")
        params.append(to_iso(since))
    if until is not None:
        parts.append(f"{column} < ?")
        params.append(to_iso(until))
    return " AND ".join(parts), params


def _detections(conn: sqlite3.Connection, frame_id: int | None) -> tuple[EventDetection, ...]:
    if frame_id is None:
        return ()
    out = []
    for r in conn.execute("SELECT * FROM detections WHERE frame_id = ? ORDER BY id", (frame_id,)):
        box = tuple(permille(min(1.0, max(0.0, r[k]))) for k in ("x1", "y1", "x2", "y2"))
        cls = None if r["cls_id"] is None else Classification(r["cls_id"], r["cls_label"], permille(r["cls_score"]))
        out.append(EventDetection(r["class_id"], r["label"], permille(r["score"]), box, cls))  # type: ignore[arg-type]
    return tuple(out)


def _image(row: sqlite3.Row, folder: Path | None) -> str | None:
    """The image path the wire names: a folder camera's photo relative to its folder, else the store's."""
    if folder is not None and row["source"]:
        try:
            return Path(row["source"]).relative_to(folder).as_posix()
        except ValueError:
            return Path(row["source"]).name
    return row["image_path"]


def read_events(conn: sqlite3.Connection, *, device: str, models: Models, since: datetime | None = None,
                until: datetime | None = None, folder: Path | None = None) -> list[Event]:
    """The store's events in ``[since, until)`` (capture time), oldest first."""
    where, params = _where(since, until, "e.captured_at")
    rows = conn.execute(
        "SELECT e.uid, e.captured_at, e.clock_synced, e.trigger_reason, e.image_path, e.summary, "
        "f.id AS frame_id, f.width, f.height, f.source FROM events e LEFT JOIN frames f ON f.uid = e.best_frame_uid "
        f"WHERE {where} ORDER BY e.captured_at, e.uid", params).fetchall()
    events = []
    for r in rows:
        summary = json.loads(r["summary"])
        counts = {int(c["class_id"]): int(c["count"]) for c in summary.get("classes") or []}
        vote = summary.get("classification")
        if vote is not None:
            label = vote.get("label") or (models.classifier.label(vote["class_id"]) if models.classifier
                                          else f"class {vote['class_id']}")
            vote = Vote(int(vote["class_id"]), label, int(vote["votes"]), int(vote["voters"]))
        trigger = r["trigger_reason"]
        clock = "camera" if trigger == "file" else "synced" if r["clock_synced"] else "unsynced"
        events.append(Event(device, r["uid"], whole_seconds(from_iso(r["captured_at"])), clock, trigger,
                            _image(r, folder), r["width"], r["height"], _detections(conn, r["frame_id"]), counts,
                            vote, models))
    return events


def read_deployment(conn: sqlite3.Connection, *, device: str, since: datetime | None = None,
                    until: datetime | None = None, latitude: float | None = None,
                    longitude: float | None = None) -> Deployment:
    """The device's active period (first to last frame) and effort per trigger in ``[since, until)``."""
    where, params = _where(since, until, "captured_at")
    effort: dict[str, dict[str, int]] = {}
    start = end = None
    for r in conn.execute(
            "SELECT trigger_reason, count(*), min(captured_at), max(captured_at), "
            "sum(failure IS NULL AND NOT EXISTS (SELECT 1 FROM detections d WHERE d.frame_id = f.id)), "
            f"sum(failure IS NOT NULL) FROM frames f WHERE {where} GROUP BY trigger_reason", params):
        effort[r[0]] = {"frames": r[1], "empty": r[4], "events": 0, "failed": r[5]}
        lo, hi = from_iso(r[2]), from_iso(r[3])
        start, end = min(start or lo, lo), max(end or hi, hi)
    for trigger, n in conn.execute(f"SELECT trigger_reason, count(*) FROM events WHERE {where} "
                                   "GROUP BY trigger_reason", params):
        effort.setdefault(trigger, {"frames": 0, "empty": 0, "events": 0, "failed": 0})["events"] = n
    return Deployment(device, whole_seconds(start) if start else None, whole_seconds(end) if end else None,
                      latitude, longitude, effort)


def read_export(conn: sqlite3.Connection, *, device: str, models: Models, since: datetime | None = None,
                until: datetime | None = None, latitude: float | None = None, longitude: float | None = None,
                folder: Path | None = None) -> EventExport:
    """Everything a device export holds: its events and its one deployment."""
    events = read_events(conn, device=device, models=models, since=since, until=until, folder=folder)
    dep = read_deployment(conn, device=device, since=since, until=until, latitude=latitude, longitude=longitude)
    return EventExport(events, {device: dep}, source=f"wildedge results (device {device})")

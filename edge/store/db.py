"""The device's local store: one SQLite file in WAL mode, the single source of truth.

Every result is committed here before anything else sees it; MQTT is a view of the ``outbox``
table, and a message leaves it only when the broker confirmed it. One trigger (a burst of frames,
its event and the event's messages) is one transaction, so after a crash or a power cut a burst
is in the store whole or not at all.

The database is created 0600 in folders created 0700 (SQLite gives its ``-wal`` and ``-shm`` files
the database's mode); :func:`tighten` removes group and other bits left by older versions.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from edge.clock import Clock, SystemClock
from edge.errors import StoreError
from edge.store.images import FILE_MODE, make_private_dirs
from edge.store.records import (
    DetectionRecord,
    EventRecord,
    FrameRecord,
    OutboxDepth,
    OutboxMessage,
    OutboxRow,
    from_iso,
    to_iso,
)
from edge.store.reserve import is_disk_full
from edge.store.schema import (
    APPLICATION_ID,
    CREATED_COLS,
    EVENT_COLS,
    FRAME_COLS,
    MESSAGE_COLS,
    MIGRATIONS,
    OUTBOX_COLS,
    RECORDED_COLS,
    age_clause,
    detection_row,
    event_from_row,
    event_row,
    frame_from_row,
    frame_row,
    marks,
    message_row,
    to_json,
)

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 10.0
HEALTH_KEEP = 2000
#: The boot id of a store driven by a bare ``now`` callable (tests, tools): its wall time is its
#: monotonic time, trusted and never stepping.
WALL_BOOT = "wall-clock"
GONE = ("the database file was deleted or replaced while the daemon ran ({what}); stopping so that "
        "nothing is recorded into a file nobody will read")


class StoreGoneError(StoreError):
    """The database file the store opened was deleted or replaced under it; nothing can go on."""


class DiskFullError(StoreError):
    """A write failed because the disk (or quota) is full; the store itself is intact."""


@dataclass(frozen=True, slots=True)
class Moment:
    """One instant on every basis the store records: wall time, boot, boot-relative seconds, trust."""

    wall: datetime
    boot_id: str
    monotonic: float
    synced: bool

    def cutoff(self, age: timedelta) -> tuple:
        """The parameters of :func:`edge.store.schema.age_clause` for rows older than ``age``."""
        return (self.boot_id, self.monotonic - age.total_seconds(), self.boot_id, int(self.synced),
                to_iso(self.wall - age))


def tighten(paths: Sequence[Path], *, shallow: Sequence[Path] = ()) -> list[Path]:
    """Take group and other permissions away from ``paths`` (folders: and everything below them) and
    from the ``shallow`` folders themselves (not what they hold: a state directory may hold the
    user's own files).

    For a state directory written by an older wildedge (0755 folders, 0644 files); a folder that was
    already private is not searched. Symbolic links are
    left alone; a file that cannot be changed (another owner) is logged and skipped. Returns what
    was changed; one log line says so.
    """
    changed: list[Path] = []
    failed: list[str] = []

    def one(path: Path, deep: bool = True) -> None:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return
        except OSError as err:
            failed.append(f"{path}: {err.strerror or err}")
            return
        if stat.S_ISLNK(mode):
            return
        exposed = bool(stat.S_IMODE(mode) & 0o077)
        if exposed:
            try:
                os.chmod(path, stat.S_IMODE(mode) & 0o700)  # the owner's bits stay as they were
            except OSError as err:
                failed.append(f"{path}: {err.strerror or err}")
                return
            changed.append(path)
        # A folder only its owner could enter exposed nothing below it: not searching it keeps a
        # start quick over a large image store.
        if deep and exposed and stat.S_ISDIR(mode):
            try:
                children = sorted(path.iterdir())
            except OSError as err:
                failed.append(f"{path}: {err.strerror or err}")
                return
            for child in children:
                one(child)

    for folder in shallow:
        one(Path(folder), deep=False)
    for path in paths:
        one(Path(path))
    if changed:
        logger.warning("tightened permissions of %d files and folders that group or others could read "
                       "(%s); wildedge now keeps them 0600 and 0700", len(changed),
                       ", ".join(str(p) for p in changed[:3]) + (", ..." if len(changed) > 3 else ""))
    if failed:
        logger.warning("cannot tighten permissions of %d files: %s", len(failed), "; ".join(failed[:3]))
    return changed


class Store:
    """The SQLite store; a context manager, safe to share between threads (one lock serialises use).

    Args:
        path: the database file; its folder is created.
        images_dir: the image store (created); :class:`FrameRecord` image paths are relative to it.
        health_keep: how many health snapshots to keep (the newest).
        now: a wall clock that never steps (tests, tools): its time is also the rows' age basis.
        clock: the daemon's clock; rows record its boot id, monotonic seconds and synchronised flag,
            and ages are measured on them (see :func:`edge.store.schema.age_clause`). Without
            ``now`` or ``clock``, the system clock.

    Raises:
        StoreError: the folder is not writable, the file is not a wildedge store or is corrupt, or
            its schema is newer than this code.
    """

    def __init__(self, path: Path, *, images_dir: Path, health_keep: int = HEALTH_KEEP,
                 now: Callable[[], datetime] | None = None, clock: Clock | None = None) -> None:
        if health_keep < 1:
            raise ValueError(f"health_keep must be >= 1, got {health_keep}")
        if now is not None and clock is not None:
            raise ValueError("give the store a clock or a now callable, not both")
        self.path = Path(path)
        self.images_dir = Path(images_dir)
        self.health_keep = health_keep
        self._clock = clock if clock is not None or now is not None else SystemClock()
        self._now = self._clock.now if self._clock is not None else now
        self._lock = threading.RLock()
        self._identity: tuple[int, int] | None = None
        self._gone: str | None = None
        for folder in (self.path.parent, self.images_dir):
            try:
                make_private_dirs(folder)
            except OSError as err:
                raise StoreError(f"cannot create store folder {folder}: {err.strerror or err}") from err
        self._conn = self._connect()
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    # -- opening -----------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            # SQLite would create the file 0644 (less the umask); an empty file is a valid database.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        except FileExistsError:
            pass
        except OSError as err:
            raise StoreError(f"cannot create store {self.path}: {err.strerror or err}") from err
        try:
            # isolation_level=None: transactions are ours (BEGIN IMMEDIATE ... COMMIT), never implicit.
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                                   check_same_thread=False)
        except sqlite3.Error as err:
            raise StoreError(f"cannot open store {self.path}: {err}") from err
        conn.row_factory = sqlite3.Row
        try:
            st = os.stat(self.path)
        except OSError as err:
            conn.close()
            raise StoreError(f"cannot open store {self.path}: {err.strerror or err}") from err
        self._identity = (st.st_dev, st.st_ino)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if app_id != APPLICATION_ID and (app_id or version or tables):
                raise StoreError(f"{self.path} is a SQLite database but not a wildedge store")
            if version > len(MIGRATIONS):
                raise StoreError(f"store {self.path} has schema version {version}, newer than this wildedge "
                                 f"knows ({len(MIGRATIONS)}); upgrade wildedge or use another state_dir")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"store {self.path}: the filesystem does not support WAL mode (got {mode})")
            # WAL with synchronous=NORMAL survives a crash uncorrupted but may lose the last commits on
            # a power cut (the WAL is synced only at checkpoints). FULL syncs the WAL at every commit,
            # so a committed burst, which the daemon treats as done, is still there after the cut.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            # Cap the WAL left on disk after a checkpoint: SD cards are small.
            conn.execute("PRAGMA journal_size_limit=67108864")
        except sqlite3.Error as err:
            conn.close()
            # "file is not a database", "database disk image is malformed", "readonly database", ...
            raise StoreError(f"cannot open store {self.path}: {err}") from err
        except StoreError:
            conn.close()
            raise
        return conn

    def _migrate(self) -> None:
        """Apply the migrations this file has not seen yet, each in its own transaction."""
        if self.query("PRAGMA user_version")[0][0] >= len(MIGRATIONS):
            return  # the usual case: no write lock needed
        while True:
            with self.transaction("migrate") as conn:
                # Read again inside the write lock: another process may have migrated meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version >= len(MIGRATIONS):
                    return
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={version + 1}")
            logger.info("store %s migrated to schema version %d", self.path, version + 1)

    # -- time and identity ---------------------------------------------------------------------------
    def moment(self, wall: datetime | None = None) -> Moment:
        """Now on every basis rows record (``wall`` instead of the clock's wall time, for retention)."""
        wall = self._now() if wall is None else wall
        if self._clock is None:
            return Moment(wall, WALL_BOOT, wall.timestamp(), True)
        return Moment(wall, self._clock.boot_id(), self._clock.monotonic(), self._clock.synchronised())

    def check_file(self) -> None:
        """Raise :class:`StoreGoneError` when the path no longer names the file this store opened.

        SQLite goes on writing into a deleted file (its inode stays open), so without this a deleted
        or replaced database would swallow every result unseen until the next start. One ``stat``.
        """
        if self._gone is None and self._identity is not None:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self._gone = "no file at that path any more"
            except OSError as err:
                self._gone = f"cannot stat it: {err.strerror or err}"
            else:
                if (st.st_dev, st.st_ino) != self._identity:
                    self._gone = "another file is at that path now"
        if self._gone is not None:
            raise StoreGoneError(f"store {self.path}: " + GONE.format(what=self._gone))

    # -- plumbing ----------------------------------------------------------------------------------
    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (the last one out checkpoints the WAL into the main file)."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE .. COMMIT, rolled back on any error).

        For the store's own modules (retention); SQLite errors become :class:`StoreError`
        naming ``what``.
        """
        with self._lock:
            self.check_file()
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                kind = DiskFullError if is_disk_full(err) else StoreError
                raise kind(f"store {self.path}: {what} failed: {err}") from err
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                logger.exception("rollback failed in %s", self.path)

    def checkpoint(self) -> bool:
        """Copy the WAL into the database file and truncate the WAL to zero bytes.

        SQLite checkpoints by itself only every 1000 pages (4 MB) and then reuses the WAL file
        without shrinking it: on a small or full card those megabytes are what retention and the
        next results need. Returns False when a reader kept the checkpoint from finishing (it is
        tried again later).

        Raises:
            StoreError: the checkpoint failed (:class:`DiskFullError` when for lack of space).
        """
        with self._lock:
            self.check_file()
            try:
                busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as err:
                kind = DiskFullError if is_disk_full(err) else StoreError
                raise kind(f"store {self.path}: checkpoint failed: {err}") from err
        return not busy

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows of one read-only statement (for the store's own modules)."""
        with self._lock:
            self.check_file()
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as err:
                raise StoreError(f"store {self.path}: query failed: {err}") from err

    def image_file(self, relative: str) -> Path:
        """The absolute path of an image given relative to the image store."""
        return self.images_dir / relative

    # -- writing results -----------------------------------------------------------------------------
    def commit_burst(self, frames: Sequence[FrameRecord], event: EventRecord | None,
                     messages: Sequence[OutboxMessage] = ()) -> None:
        """Record one trigger in ONE transaction: frames, their detections, the event, its messages.

        Raises:
            ValueError: a naive time, a frame from another burst than the event's, a bad message.
            StoreError: the write failed, or a frame's uid or ``source`` is already in the store (the
                UNIQUE backstop: reprocessing a file after a crash can never record it twice).
        """
        for frame in frames:
            if event is not None and frame.burst_id != event.burst_id:
                raise ValueError(f"frame {frame.uid} is from burst {frame.burst_id}, the event from "
                                 f"{event.burst_id}")
        frame_rows = [frame_row(f) for f in frames]
        event_values = event_row(event) if event is not None else None
        at = self.moment()
        message_rows = [(*message_row(m, at.wall), *self._created(at)) for m in messages]
        what = f"commit of burst {event.burst_id if event else frames[0].burst_id if frames else '-'}"
        recorded = (to_iso(at.wall), at.boot_id, at.monotonic, int(at.synced))
        with self.transaction(what) as conn:
            for frame, row in zip(frames, frame_rows):
                cur = conn.execute(f"INSERT INTO frames ({FRAME_COLS}, {RECORDED_COLS}) VALUES ({marks(19)})",
                                   (*row, *recorded))
                conn.executemany(
                    "INSERT INTO detections (frame_id, class_id, label, score, x1, y1, x2, y2, "
                    "cls_id, cls_label, cls_score, new) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(cur.lastrowid, *detection_row(d)) for d in frame.detections])
            if event_values is not None:
                conn.execute(f"INSERT INTO events ({EVENT_COLS}, {RECORDED_COLS}) VALUES ({marks(14)})",
                             (*event_values, *recorded))
            conn.executemany(f"INSERT INTO outbox ({MESSAGE_COLS}, {CREATED_COLS}) VALUES ({marks(10)})",
                             message_rows)

    def forget_missing_images(self) -> int:
        """Clear the image path of rows whose file is gone (deleted by :func:`make_room`, or by hand);
        how many paths were cleared. One ``stat`` per referenced image."""
        from edge.store.images import resolve

        paths = [r[0] for r in self.query("SELECT image_path FROM frames WHERE image_path IS NOT NULL "
                                          "UNION SELECT image_path FROM events WHERE image_path IS NOT NULL")]
        gone = []
        for relative in paths:
            try:
                if not resolve(self.images_dir, relative).exists():
                    gone.append((relative,))
            except ValueError:
                gone.append((relative,))
        if gone:
            with self.transaction("forget missing images") as conn:
                conn.executemany("UPDATE frames SET image_path = NULL WHERE image_path = ?", gone)
                conn.executemany("UPDATE events SET image_path = NULL WHERE image_path = ?", gone)
            logger.warning("%d images named by the store are gone: their rows now have no image", len(gone))
        return len(gone)

    def is_processed(self, source: str) -> bool:
        """Whether a frame read from ``source`` (a folder camera's file) is already recorded."""
        return bool(self.query("SELECT 1 FROM frames WHERE source = ?", (source,)))

    def processed_sources(self) -> set[str]:
        """Every recorded frame source (one indexed scan; fine for 100k rows)."""
        return {r[0] for r in self.query("SELECT source FROM frames WHERE source IS NOT NULL")}

    # -- outbox --------------------------------------------------------------------------------------
    def enqueue(self, message: OutboxMessage) -> int:
        """Queue one standalone message (status, health); returns its ``seq``."""
        at = self.moment()
        row = (*message_row(message, at.wall), *self._created(at))
        with self.transaction("enqueue") as conn:
            return conn.execute(f"INSERT INTO outbox ({MESSAGE_COLS}, {CREATED_COLS}) VALUES ({marks(10)})",
                                row).lastrowid

    @staticmethod
    def _created(at: Moment) -> tuple:
        return (at.boot_id, at.monotonic, int(at.synced))

    def pending(self, *, limit: int, after_seq: int = 0) -> list[OutboxRow]:
        """Up to ``limit`` queued messages with ``seq > after_seq``, in ``seq`` order."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        rows = self.query(f"SELECT {OUTBOX_COLS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                          (after_seq, limit))
        return [OutboxRow(r["seq"], r["topic"], bytes(r["payload"]), r["qos"], bool(r["retain"]),
                          r["event_uid"], from_iso(r["created_at"]), r["attempts"]) for r in rows]

    def ack(self, seq: int) -> None:
        """The broker confirmed message ``seq``: delete it; when it was its event's last queued
        message, the event is delivered (``delivered_at`` set). Acking an unknown seq does nothing."""
        with self.transaction(f"ack of {seq}") as conn:
            row = conn.execute("SELECT event_uid FROM outbox WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                logger.debug("ack of seq %d, which is not queued", seq)
                return
            conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            uid = row["event_uid"]
            if uid is not None and not conn.execute("SELECT 1 FROM outbox WHERE event_uid = ?",
                                                    (uid,)).fetchone():
                conn.execute("UPDATE events SET delivered_at = ? WHERE uid = ?", (to_iso(self._now()), uid))

    def ack_many(self, seqs: Sequence[int]) -> None:
        """:meth:`ack` for several messages in one transaction (one fsync for a whole batch of PUBACKs)."""
        if not seqs:
            return
        with self.transaction(f"ack of {len(seqs)} messages") as conn:
            holders = marks(len(seqs))
            uids = {r[0] for r in conn.execute(
                f"SELECT DISTINCT event_uid FROM outbox WHERE seq IN ({holders}) AND event_uid IS NOT NULL",
                tuple(seqs))}
            conn.execute(f"DELETE FROM outbox WHERE seq IN ({holders})", tuple(seqs))
            if uids:
                conn.execute(f"UPDATE events SET delivered_at = ? WHERE uid IN ({marks(len(uids))}) "
                             "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_uid = events.uid)",
                             (to_iso(self._now()), *uids))

    def trim_outbox(self, *, max_messages: int, max_bytes: int | None = None, max_age: timedelta | None = None,
                    expendable: str | None = None) -> int:
        """Drop undelivered messages beyond ``max_messages``, beyond ``max_bytes`` of payload, or
        older than ``max_age``.

        The policy that bounds the outbox when a link stays down for months: messages whose topic
        starts with ``expendable`` (the device's crop topics) go first, then the oldest; each drop
        counted (``meta`` keys ``outbox_dropped`` and ``outbox_dropped_expendable``, see
        :meth:`outbox_dropped`). Returns how many were dropped now; their events stay in the store,
        undelivered. Ages are measured as :func:`edge.store.schema.age_clause` says: a wall clock
        that steps (1970 to today, +400 days) makes no message old; a message whose age cannot be
        trusted is kept.
        """
        if max_messages < 0:
            raise ValueError(f"max_messages must be >= 0, got {max_messages}")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        # Expendable rows first: those whose topic starts with ``expendable`` (none without it).
        first, first_params = ("substr(topic, 1, ?) = ?", (len(expendable), expendable)) if expendable else ("0", ())
        with self.transaction("trim outbox") as conn:
            dropped = spared = 0
            if max_age is not None:
                dropped += conn.execute(f"DELETE FROM outbox WHERE {age_clause('created', 'created_at')}",
                                        self.moment().cutoff(max_age)).rowcount
            count, size = conn.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").fetchone()
            extra_count = count - max_messages
            extra_bytes = size - max_bytes if max_bytes is not None else 0
            if extra_count > 0 or extra_bytes > 0:
                victims, crops = [], 0
                # Expendable first, oldest first within each kind; stops at the first row that
                # brings both bounds back (a cursor: no more rows are read than are dropped).
                for seq, length, is_first in conn.execute(
                        f"SELECT seq, length(payload), {first} AS first FROM outbox ORDER BY first DESC, seq",
                        first_params):
                    if extra_count <= 0 and extra_bytes <= 0:
                        break
                    victims.append(seq)
                    crops += bool(is_first)
                    extra_count -= 1
                    extra_bytes -= length
                for start in range(0, len(victims), 500):
                    chunk = victims[start:start + 500]
                    conn.execute(f"DELETE FROM outbox WHERE seq IN ({marks(len(chunk))})", chunk)
                dropped += len(victims)
                spared = crops
            for key, value in (("outbox_dropped", dropped), ("outbox_dropped_expendable", spared)):
                if value:
                    conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                                 "DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value", (key, str(value)))
        if dropped:
            logger.warning("outbox over its bounds (%d messages, %s bytes, max age %s): dropped %d undelivered "
                           "messages (%d of them crops), oldest first", max_messages, max_bytes, max_age,
                           dropped, spared)
        return dropped

    def outbox_dropped(self, *, expendable: bool = False) -> int:
        """Messages dropped by :meth:`trim_outbox` over the store's life (``expendable``: of them, crops)."""
        return int(self.get_meta("outbox_dropped_expendable" if expendable else "outbox_dropped", "0") or 0)

    def effort_window(self, start: datetime, end: datetime) -> dict[str, tuple[int, int, int, int]]:
        """Per trigger reason, for frames recorded in ``[start, end)``: (frames, empty, events, failed)."""
        lo, hi = to_iso(start), to_iso(end)
        rows = self.query(
            "SELECT trigger_reason, count(*), "
            "sum(failure IS NULL AND NOT EXISTS (SELECT 1 FROM detections d WHERE d.frame_id = f.id)), "
            "sum(failure IS NOT NULL) FROM frames f "
            "WHERE COALESCE(recorded_at, captured_at) >= ? AND COALESCE(recorded_at, captured_at) < ? "
            "GROUP BY trigger_reason", (lo, hi))
        events = dict(self.query(
            "SELECT trigger_reason, count(*) FROM events WHERE COALESCE(recorded_at, captured_at) >= ? "
            "AND COALESCE(recorded_at, captured_at) < ? GROUP BY trigger_reason", (lo, hi)))
        return {r[0]: (r[1], r[2], events.get(r[0], 0), r[3]) for r in rows}

    def note_attempt(self, seq: int) -> None:
        """Count one publish attempt of message ``seq``."""
        with self.transaction(f"attempt of {seq}") as conn:
            conn.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,))

    def outbox_depth(self) -> OutboxDepth:
        """How much is waiting for the broker."""
        row = self.query("SELECT count(*), coalesce(sum(length(payload)), 0), min(created_at) FROM outbox")[0]
        return OutboxDepth(row[0], row[1], from_iso(row[2]) if row[2] else None)

    def delivered_at(self, event_uid: str) -> datetime | None:
        """When the broker confirmed the event's last message; None while undelivered or unknown."""
        rows = self.query("SELECT delivered_at FROM events WHERE uid = ?", (event_uid,))
        return from_iso(rows[0][0]) if rows and rows[0][0] else None

    # -- health and meta -----------------------------------------------------------------------------
    def add_health(self, snapshot: dict, at: datetime) -> None:
        """Keep one health snapshot; only the newest ``health_keep`` stay."""
        text = to_json(snapshot, "health snapshot")
        with self.transaction("health") as conn:
            cur = conn.execute("INSERT INTO health (at, snapshot) VALUES (?, ?)", (to_iso(at), text))
            last = cur.lastrowid
            conn.execute("DELETE FROM health WHERE id <= ?", (last - self.health_keep,))

    def latest_health(self) -> dict | None:
        """The newest health snapshot, or None."""
        rows = self.query("SELECT snapshot FROM health ORDER BY id DESC LIMIT 1")
        return json.loads(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a small string setting (last sync, device id seen, ...)."""
        with self.transaction(f"set {key}") as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """A setting stored with :meth:`set_meta`, or ``default``."""
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    # -- reading -------------------------------------------------------------------------------------
    def frame_count(self) -> int:
        """How many frames are recorded."""
        return self.query("SELECT count(*) FROM frames")[0][0]

    def frames(self, *, burst_id: str | None = None, limit: int | None = None) -> list[FrameRecord]:
        """Recorded frames with their detections, oldest first (of one burst when ``burst_id``)."""
        where, params = ("WHERE burst_id = ?", [burst_id]) if burst_id is not None else ("", [])
        rows = self.query(f"SELECT id, {FRAME_COLS} FROM frames {where} ORDER BY id LIMIT ?",
                          [*params, -1 if limit is None else limit])
        return [frame_from_row(r, self._detections(r["id"])) for r in rows]

    def events(self, *, limit: int | None = None) -> list[EventRecord]:
        """Recorded events, oldest first."""
        rows = self.query(f"SELECT {EVENT_COLS} FROM events ORDER BY id LIMIT ?",
                          (-1 if limit is None else limit,))
        return [event_from_row(r) for r in rows]

    def last_frame_detections(self) -> list[DetectionRecord]:
        """The detections of the most recently recorded frame (the sticky filter restarts from them)."""
        rows = self.query("SELECT max(id) FROM frames")
        return self._detections(rows[0][0]) if rows[0][0] is not None else []

    def _detections(self, frame_id: int) -> list[DetectionRecord]:
        rows = self.query("SELECT * FROM detections WHERE frame_id = ? ORDER BY id", (frame_id,))
        return [DetectionRecord(
            r["class_id"], r["label"], r["score"], (r["x1"], r["y1"], r["x2"], r["y2"]),
            None if r["cls_id"] is None else (r["cls_id"], r["cls_label"], r["cls_score"]), bool(r["new"]))
            for r in rows]

    def effort(self, since: datetime) -> dict:
        """Sampling effort since ``since``: frames and empty frames, in total and per trigger reason."""
        rows = self.query(
            "SELECT trigger_reason, count(*), "
            "sum(NOT EXISTS (SELECT 1 FROM detections d WHERE d.frame_id = f.id)) "
            "FROM frames f WHERE captured_at >= ? GROUP BY trigger_reason ORDER BY trigger_reason",
            (to_iso(since),))
        triggers = {r[0]: {"frames": r[1], "empty": r[2]} for r in rows}
        events = self.query("SELECT count(*) FROM events WHERE captured_at >= ?", (to_iso(since),))[0][0]
        return {"since": to_iso(since), "frames": sum(t["frames"] for t in triggers.values()),
                "empty": sum(t["empty"] for t in triggers.values()), "events": events, "triggers": triggers}

    def integrity_check(self) -> str:
        """SQLite's integrity and foreign-key checks: "ok", or the problems found, one per line."""
        try:
            problems = [r[0] for r in self.query("PRAGMA integrity_check") if r[0] != "ok"]
            problems += [f"foreign key: {r[0]} row {r[1]} -> {r[2]}"
                         for r in self.query("PRAGMA foreign_key_check")]
        except StoreError as err:  # too damaged for the check itself to run
            return str(err.__cause__ or err)
        return "\n".join(problems) or "ok"

"""Retention: keep the store inside its age limit and the disk above its free-space floor.

Rules, in order: (a) remove image files no row references (a crash between writing an image and
committing its frame leaves one); (b) delete frames and events recorded more than ``max_age`` ago, except what
still waits for the broker (a frame read from a file keeps its row, without its image: it
records that the file was processed); (c) while free space is below the floor, delete image files (never
rows), least valuable first; (d) report ``disk_low`` when even that was not enough, so the daemon
stops saving images but keeps recording results.

Database rows change first and files go after the commit: a crash in between leaves an orphan file,
which rule (a) removes later, and never a row that points at a missing file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from edge.store.db import Moment, Store
from edge.store.images import resolve
from edge.store.schema import age_clause

logger = logging.getLogger(__name__)

#: A file younger than this may belong to a burst still being processed; the orphan sweep waits.
ORPHAN_AGE = timedelta(hours=1)
_BATCH = 500  # rows per transaction: a long sweep never holds the write lock for long

DiskUsage = Callable[[Any], Any]  # shutil.disk_usage's shape: path -> (total, used, free)

# An event "waits for the broker" while any of its outbox rows is not acked. An event that never had
# outbox rows (no MQTT) waits for nothing: its rows and messages were committed in one transaction.
_PENDING_BURST = ("EXISTS (SELECT 1 FROM events pe JOIN outbox o ON o.event_uid = pe.uid "
                  "WHERE pe.burst_id = f.burst_id)")
# Rows age from when they were written (schema 2), on a basis no clock step can fool (schema 3; see
# age_clause); rows older than the recorded_at column, from their capture.
_OLD = age_clause("recorded", "COALESCE(recorded_at, captured_at)")
_PENDING_EVENT = "EXISTS (SELECT 1 FROM outbox o WHERE o.event_uid = e.uid)"
# Images that may go for space, least valuable first: 0 empty frames, 1 frames/events already
# delivered (or never queued), 2 events still waiting for the broker; oldest first within a tier.
# A file shared by several rows takes its most protected tier.
_CANDIDATES = f"""
SELECT path FROM (
    SELECT f.image_path AS path, f.captured_at AS at,
        CASE WHEN NOT EXISTS (SELECT 1 FROM detections d WHERE d.frame_id = f.id) THEN 0
             WHEN {_PENDING_BURST} THEN 2 ELSE 1 END AS tier
    FROM frames f WHERE f.image_path IS NOT NULL
    UNION ALL
    SELECT e.image_path, e.captured_at, CASE WHEN {_PENDING_EVENT} THEN 2 ELSE 1 END
    FROM events e WHERE e.image_path IS NOT NULL)
GROUP BY path ORDER BY max(tier), min(at), path LIMIT ?"""


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one :func:`enforce` run did; ``disk_low`` means free space is still below the floor."""

    deleted_images: int
    deleted_frames: int
    freed_bytes: int
    free_bytes: int
    disk_low: bool
    deleted_events: int = 0
    orphans: int = 0


@dataclass(slots=True)
class _Tally:
    images: int = 0
    frames: int = 0
    events: int = 0
    orphans: int = 0
    freed: int = 0


def free_space(images_dir: Path, *, disk_usage: DiskUsage = shutil.disk_usage) -> int:
    """Free bytes on the filesystem of ``images_dir`` (or of its nearest existing parent)."""
    folder = Path(images_dir).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return int(disk_usage(folder).free)


def can_save(images_dir: Path, min_free: int, *, disk_usage: DiskUsage = shutil.disk_usage) -> bool:
    """Whether free space is at or above the floor, so that saving one more image is allowed."""
    return free_space(images_dir, disk_usage=disk_usage) >= min_free


def enforce(store: Store, *, images_dir: Path, now: datetime, max_age: timedelta | None, min_free: int,
            disk_usage: DiskUsage = shutil.disk_usage, orphan_age: timedelta = ORPHAN_AGE) -> RetentionReport:
    """Apply the retention rules once (see the module docstring); safe to run at any time.

    Args:
        store: the open store whose rows reference the images.
        images_dir: the image store folder.
        now: the current wall time; row ages are measured by the store's clock as
            :func:`edge.store.schema.age_clause` says (monotonic within a boot, wall time across boots
            only when it was synchronised then and now), so a stepped clock never makes a row old.
        max_age: delete rows older than this; None keeps rows forever.
        min_free: the free-space floor in bytes.
        disk_usage: ``shutil.disk_usage`` or a stand-in (tests simulate a full disk with it).
        orphan_age: how old an unreferenced file must be before it is removed.

    Raises:
        ValueError: negative limits, or an image store that contains the database itself.
        StoreError: the database failed.
    """
    images_dir = Path(images_dir)
    if min_free < 0:
        raise ValueError(f"min_free must be >= 0, got {min_free}")
    if max_age is not None and max_age <= timedelta(0):
        raise ValueError(f"max_age must be positive, got {max_age}")
    if images_dir.resolve() in store.path.resolve().parents:
        raise ValueError(f"the image store {images_dir} must not contain the database {store.path}")
    tally = _Tally()
    if images_dir.is_dir():
        _sweep_orphans(store, images_dir, now - orphan_age, tally)
    if max_age is not None:
        _expire(store, images_dir, store.moment(now), max_age, tally)
    free = _free_for_floor(store, images_dir, min_free, disk_usage, tally)
    report = RetentionReport(tally.images, tally.frames, tally.freed, free, free < min_free,
                             tally.events, tally.orphans)
    if tally.images or tally.frames or tally.events:
        logger.info("retention: removed %d images (%d orphans), %d frames, %d events; freed %d bytes",
                    tally.images, tally.orphans, tally.frames, tally.events, tally.freed)
    return report


def _sweep_orphans(store: Store, images_dir: Path, before: datetime, tally: _Tally) -> None:
    """Rule (a): remove old unreferenced files (and leftover temp files), then old empty folders."""
    referenced = {r[0] for r in store.query(
        "SELECT image_path FROM frames WHERE image_path IS NOT NULL "
        "UNION SELECT image_path FROM events WHERE image_path IS NOT NULL")}
    cutoff = before.timestamp()
    # Folder times before the sweep: removing a child touches its parent, which must still count as old.
    folder_times = {}
    for root, _, _ in os.walk(images_dir):
        with contextlib.suppress(OSError):
            folder_times[root] = os.stat(root).st_mtime
    for root, _, files in os.walk(images_dir, topdown=False):
        for name in files:
            path = Path(root, name)
            if path.relative_to(images_dir).as_posix() in referenced:
                continue
            freed = _unlink(path, older_than=cutoff)
            if freed is not None:
                tally.images += 1
                tally.orphans += 1
                tally.freed += freed
        if Path(root) != images_dir and folder_times.get(root, cutoff) < cutoff:
            with contextlib.suppress(OSError):
                os.rmdir(root)  # fails, harmlessly, unless empty


def _expire(store: Store, images_dir: Path, at: Moment, max_age: timedelta, tally: _Tally) -> None:
    """Rule (b): delete rows older than ``max_age`` at ``at`` unless their event still waits for the broker."""
    cutoff = at.cutoff(max_age)
    while True:
        with store.transaction("expire old rows") as conn:
            frames = conn.execute(f"SELECT id, image_path, source FROM frames f WHERE {_OLD} "
                                  f"AND NOT {_PENDING_BURST} AND (source IS NULL OR image_path IS NOT NULL) "
                                  f"LIMIT ?", (*cutoff, _BATCH)).fetchall()
            events = conn.execute(f"SELECT id, image_path FROM events e WHERE {_OLD} "
                                  f"AND NOT {_PENDING_EVENT} LIMIT ?", (*cutoff, _BATCH)).fetchall()
            # A frame read from a file keeps its row (without image): it is the record that the file
            # was processed, so a folder replayed again later is not processed twice.
            conn.executemany("DELETE FROM frames WHERE id = ?", [(r[0],) for r in frames if r[2] is None])
            conn.executemany("UPDATE frames SET image_path = NULL WHERE id = ?",
                             [(r[0],) for r in frames if r[2] is not None])
            conn.executemany("DELETE FROM events WHERE id = ?", [(r[0],) for r in events])
            paths = {r[1] for r in [*frames, *events] if r[1] is not None}
            # A file stays while any remaining row still points at it (an event shares its best frame's).
            gone = [p for p in paths if not _referenced(conn, p)]
        tally.frames += sum(r[2] is None for r in frames)
        tally.events += len(events)
        _remove(images_dir, gone, tally)
        if len(frames) < _BATCH and len(events) < _BATCH:
            return


def _free_for_floor(store: Store, images_dir: Path, min_free: int, disk_usage: DiskUsage,
                    tally: _Tally) -> int:
    """Rule (c): drop images (rows stay, image_path NULL) until free space reaches the floor."""
    free = free_space(images_dir, disk_usage=disk_usage)
    while free < min_free:
        candidates = [r[0] for r in store.query(_CANDIDATES, (64,))]
        if not candidates:
            break
        chosen, planned = [], 0
        for path in candidates:
            chosen.append(path)
            planned += _size(images_dir, path)
            if planned >= min_free - free:
                break
        with store.transaction("free disk space") as conn:
            rows = [(p,) for p in chosen]
            conn.executemany("UPDATE frames SET image_path = NULL WHERE image_path = ?", rows)
            conn.executemany("UPDATE events SET image_path = NULL WHERE image_path = ?", rows)
        _remove(images_dir, chosen, tally)
        free = free_space(images_dir, disk_usage=disk_usage)
    return free


def make_room(images_dir: Path, *, need: int, disk_usage: DiskUsage = shutil.disk_usage) -> tuple[int, int]:
    """The last resort of a store that cannot even open on a full disk: delete image files, oldest
    first, until ``need`` bytes are free; (files removed, bytes freed).

    Used only before the store opens (SQLite needs free blocks to open a WAL database, so rows
    cannot be updated first); :meth:`edge.store.db.Store.forget_missing_images` then clears the
    rows that named them.
    """
    files = []
    for root, _, names in os.walk(images_dir):
        for name in names:
            with contextlib.suppress(OSError):
                path = Path(root, name)
                files.append((path.lstat().st_mtime, path))
    files.sort()
    removed = freed = 0
    for _, path in files:
        if free_space(images_dir, disk_usage=disk_usage) >= need:
            break
        size = _unlink(path)
        if size is not None:
            removed += 1
            freed += size
    if removed:
        logger.warning("disk full before the store could open: deleted the %d oldest images (%d bytes)", removed,
                       freed)
    return removed, freed


def _referenced(conn: Any, path: str) -> bool:
    row = conn.execute("SELECT 1 FROM frames WHERE image_path = ? UNION ALL "
                       "SELECT 1 FROM events WHERE image_path = ? LIMIT 1", (path, path)).fetchone()
    return row is not None


def _size(images_dir: Path, relative: str) -> int:
    try:
        return resolve(images_dir, relative).stat().st_size
    except (OSError, ValueError):
        return 0


def _remove(images_dir: Path, relatives: Iterable[str], tally: _Tally) -> None:
    for relative in relatives:
        try:
            path = resolve(images_dir, relative)
        except ValueError:
            logger.warning("not removing %r: outside the image store", relative)
            continue
        freed = _unlink(path)
        if freed is not None:
            tally.images += 1
            tally.freed += freed


def _unlink(path: Path, *, older_than: float | None = None) -> int | None:
    """Remove a file; its size, or None when it was absent, too young, or could not be removed."""
    try:
        st = path.lstat()
        if older_than is not None and st.st_mtime >= older_than:
            return None
        path.unlink()
    except FileNotFoundError:
        return None
    except OSError as err:
        logger.warning("cannot remove %s: %s", path, err.strerror or err)
        return None
    return st.st_size

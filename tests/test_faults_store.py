"""Faults of time and of the database file: a wall clock that jumps never makes anything old (the
outbox bound and retention age rows on a monotonic basis), and a database deleted or replaced under
a running daemon stops it with one line naming the cause."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from daemon_helpers import WILDEDGE, folder_config, frame_count, wait_until

from edge.clock import FakeClock
from edge.errors import StoreError
from edge.store import EventRecord, FrameRecord, OutboxMessage, Store, StoreGoneError, enforce, new_uid
from edge.triggers.control import ControlServer

EPOCH_DAY_1 = datetime(1970, 1, 2, tzinfo=timezone.utc)
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
MAX_AGE = timedelta(days=30)
QUEUE_AGE = timedelta(days=7)


def _open(root: Path, clock: FakeClock) -> Store:
    return Store(root / "state" / "wildedge.db", images_dir=root / "state" / "images", clock=clock)


def _event(store: Store, clock: FakeClock) -> EventRecord:
    """One trigger as the daemon records it: a frame with a detection, its event, one queued message."""
    burst = new_uid()
    frame = FrameRecord(new_uid(), clock.now(), clock.monotonic(), clock.boot_id(), clock.synchronised(),
                        "timelapse", burst, 0, 64, 48, 5.0)
    event = EventRecord(new_uid(), burst, clock.now(), clock.monotonic(), clock.boot_id(), clock.synchronised(),
                        "timelapse", None, frame.uid, {"best": {"label": "fox", "score": 0.9}})
    store.commit_burst([frame], event, [OutboxMessage("wildedge/trap-01/event", b"{}", event_uid=event.uid)])
    return event


def _record(store: Store, clock: FakeClock, count: int) -> list[EventRecord]:
    events = []
    for _ in range(count):
        events.append(_event(store, clock))
        clock.advance(60)
    return events


def _upkeep(store: Store, clock: FakeClock) -> tuple[int, int, int]:
    """What the daemon's upkeep does: the outbox bound, then retention; (dropped, frames, events) removed."""
    dropped = store.trim_outbox(max_messages=10_000, max_age=QUEUE_AGE)
    report = enforce(store, images_dir=store.images_dir, now=clock.now(), max_age=MAX_AGE, min_free=0)
    return dropped, report.deleted_frames, report.deleted_events


def _deliver(store: Store, events: list[EventRecord]) -> None:
    uids = {e.uid for e in events}
    store.ack_many([r.seq for r in store.pending(limit=10_000) if r.event_uid in uids])


# -- a wall clock that jumps -------------------------------------------------------------------------

def test_clock_from_1970_stepped_to_now_drops_and_deletes_nothing(tmp_path):
    # Booted without network or RTC, the broker down: twelve events recorded "in 1970".
    clock = FakeClock(EPOCH_DAY_1, synchronised=False, boot_id="boot-1")
    with _open(tmp_path, clock) as store:
        events = _record(store, clock, 12)
        # NTP arrives: the wall clock steps 56 years forward and is now trusted.
        clock.set(NOW)
        clock.is_synchronised = True
        assert _upkeep(store, clock) == (0, 0, 0)
        assert len(store.pending(limit=100)) == 12 and len(store.events()) == 12
        # Days later in the same boot the rows are days old, not 56 years: still within both bounds.
        clock.advance(3 * 86400)
        assert _upkeep(store, clock) == (0, 0, 0)
    # Next boot: the rows were written on an untrusted clock, so no wall-clock age is believed.
    later = FakeClock(NOW + 60 * DAY, synchronised=True, boot_id="boot-2")
    with _open(tmp_path, later) as store:
        assert _upkeep(store, later) == (0, 0, 0)
        assert store.outbox_dropped() == 0
        _deliver(store, events)
        assert all(store.delivered_at(e.uid) is not None for e in events)
        # Delivered now, but their age is still unknowable: kept rather than deleted on a guess.
        assert _upkeep(store, later) == (0, 0, 0)
        assert len(store.events()) == 12 and store.frame_count() == 12
        assert store.integrity_check() == "ok"


@pytest.mark.parametrize("synchronised_after", [True, False])
def test_wall_clock_step_of_400_days_drops_and_deletes_nothing(tmp_path, synchronised_after):
    clock = FakeClock(NOW, synchronised=True, boot_id="boot-1")
    with _open(tmp_path, clock) as store:
        events = _record(store, clock, 87)
        _deliver(store, events[:20])  # the link was up for a while, then the broker went away
        clock.set(NOW + 400 * DAY)  # settimeofday, a bad GPS fix, a confused RTC
        clock.is_synchronised = synchronised_after
        assert _upkeep(store, clock) == (0, 0, 0)
        assert len(store.pending(limit=1000)) == 67
        assert len(store.events()) == 87 and store.frame_count() == 87
        # Measured on the monotonic clock, 31 days later the delivered events are genuinely old: retention
        # removes them, and nothing else (the queue-age bound is applied separately below).
        clock.advance(31 * 86400)
        report = enforce(store, images_dir=store.images_dir, now=clock.now(), max_age=MAX_AGE, min_free=0)
        assert (report.deleted_events, report.deleted_frames) == (20, 20)
        assert {e.uid for e in store.events()} == {e.uid for e in events[20:]}
        # The configured age bound of the outbox, on the same basis: counted and reported.
        assert store.trim_outbox(max_messages=10_000, max_age=QUEUE_AGE) == 67
        assert store.outbox_dropped() == 67


@pytest.mark.parametrize(("written_synced", "now_synced", "removed"),
                         [(True, True, 1), (True, False, 0), (False, True, 0)])
def test_old_delivered_event_is_removed_across_boots_only_on_trusted_ages(tmp_path, written_synced, now_synced,
                                                                          removed):
    clock = FakeClock(NOW, synchronised=written_synced, boot_id="boot-1")
    with _open(tmp_path, clock) as store:
        event = _event(store, clock)
        _deliver(store, [event])
    later = FakeClock(NOW + 40 * DAY, synchronised=now_synced, boot_id="boot-2")
    with _open(tmp_path, later) as store:
        report = enforce(store, images_dir=store.images_dir, now=later.now(), max_age=MAX_AGE, min_free=0)
        assert (report.deleted_events, report.deleted_frames) == (removed, removed)
        assert len(store.events()) == 1 - removed


def test_undelivered_event_outlives_any_age_and_only_the_count_bound_drops_its_message(tmp_path):
    clock = FakeClock(NOW, synchronised=True, boot_id="boot-1")
    with _open(tmp_path, clock) as store:
        events = _record(store, clock, 5)
        clock.advance(400 * 86400)
        report = enforce(store, images_dir=store.images_dir, now=clock.now(), max_age=MAX_AGE, min_free=0)
        assert report.deleted_events == 0 and len(store.events()) == 5
        assert store.trim_outbox(max_messages=3) == 2
        assert [r.event_uid for r in store.pending(limit=10)] == [e.uid for e in events[2:]]
        assert store.outbox_dropped() == 2


# -- the database file vanishing -----------------------------------------------------------------------

@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_store_notices_its_file_deleted_or_replaced(tmp_path, how):
    clock = FakeClock(NOW, boot_id="boot-1")
    with _open(tmp_path, clock) as store:
        _event(store, clock)
        if how == "deleted":
            store.path.unlink()
        else:
            other = tmp_path / "other.db"
            other.write_bytes(b"")
            os.replace(other, store.path)
        with pytest.raises(StoreGoneError, match="deleted or replaced while the daemon ran") as caught:
            _event(store, clock)
        assert str(store.path) in str(caught.value)
        assert isinstance(caught.value, StoreError)
        with pytest.raises(StoreGoneError):
            store.outbox_depth()  # reads too: the daemon's status would otherwise go on counting


def test_control_socket_that_cannot_be_removed_does_not_hide_the_error(tmp_path, monkeypatch):
    server = ControlServer(tmp_path / "control.sock", lambda request: {"ok": True})
    server.start()

    def read_only(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(StoreError, match="the real cause"), server:
        raise StoreError("the real cause")


@pytest.mark.assets
def test_daemon_stops_when_its_database_is_deleted(tmp_path, assets, stamped):
    photos = tmp_path / "photos"
    photos.mkdir()
    images = sorted((assets / "camera_traps_lila/images").iterdir())
    shutil.copy(images[0], photos)
    state = tmp_path / "state"
    config = folder_config(tmp_path / "wildedge.toml", state=state, photos=photos, model=stamped["fastestdet"],
                           device='timezone = "UTC"', camera='mode = "watch"\nsettle = "0.2s"\npoll = "0.2s"')
    db = state / "wildedge.db"
    proc = subprocess.Popen([*WILDEDGE, "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: frame_count(db) == 1 or proc.poll() is not None, timeout=60)
        assert proc.poll() is None
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            path.unlink(missing_ok=True)
        deleted = time.monotonic()
        shutil.copy(images[1], photos)  # a result that would otherwise vanish into the deleted file
        _, stderr = proc.communicate(timeout=20)
        took = time.monotonic() - deleted
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [(f"error: store {db}: the database file was deleted or replaced while the daemon ran (no "
                       "file at that path any more); stopping so that nothing is recorded into a file nobody will read")]
    assert "control.sock" not in errors[0]
    assert took < 10


# -- a store written by an older wildedge -----------------------------------------------------------------

def _v2_store(path: Path) -> dict[str, str]:
    """A schema-2 store as wildedge wrote it before boot ids: a delivered synchronised event 60 days
    old, an undelivered one 60 days old, and an unsynchronised delivered one; the uids by role."""
    from edge.store import APPLICATION_ID, MIGRATIONS

    conn = sqlite3.connect(path)
    for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("PRAGMA user_version=2")
    uids = {}
    old = (NOW - 60 * DAY).isoformat()
    for role, synced, delivered in (("delivered", 1, old), ("queued", 1, None), ("unsynced", 0, old)):
        burst, frame, event = new_uid(), new_uid(), new_uid()
        conn.execute("INSERT INTO frames (uid, captured_at, monotonic, boot_id, clock_synced, trigger_reason, "
                     "burst_id, burst_index, width, height, inference_ms, person, recorded_at) "
                     "VALUES (?, ?, 5.0, 'old-boot', ?, 'timelapse', ?, 0, 64, 48, 5.0, 0, ?)",
                     (frame, old, synced, burst, old))
        conn.execute("INSERT INTO events (uid, burst_id, captured_at, monotonic, boot_id, clock_synced, "
                     "trigger_reason, best_frame_uid, summary, delivered_at, recorded_at) "
                     "VALUES (?, ?, ?, 5.0, 'old-boot', ?, 'timelapse', ?, '{}', ?, ?)",
                     (event, burst, old, synced, frame, delivered, old))
        if delivered is None:
            conn.execute("INSERT INTO outbox (topic, payload, qos, retain, event_uid, created_at) "
                         "VALUES ('wildedge/trap-01/event', x'00', 1, 0, ?, ?)", (event, old))
        uids[role] = event
    conn.commit()
    conn.close()
    return uids


def test_a_schema_2_store_is_migrated_and_its_rows_age_only_on_trusted_times(tmp_path):
    """Rows written before schema 3 have no boot: they are never "this boot", and they age by wall
    time only when their capture was synchronised and the clock is now; the undelivered one stays."""
    path = tmp_path / "state" / "wildedge.db"
    path.parent.mkdir()
    uids = _v2_store(path)
    clock = FakeClock(NOW, boot_id="new-boot")
    with Store(path, images_dir=tmp_path / "state" / "images", clock=clock) as store:
        assert store.query("PRAGMA user_version")[0][0] == 3
        assert {e.uid for e in store.events()} == set(uids.values())
        row = store.query("SELECT recorded_boot, recorded_synced FROM events WHERE uid = ?", (uids["queued"],))[0]
        assert (row[0], row[1]) == (None, 1)
        assert store.trim_outbox(max_messages=10_000, max_age=7 * DAY) == 1  # 60 days > 7, synchronised
        # The message is gone (its bound), the event is not: it is still undelivered.
        assert store.delivered_at(uids["queued"]) is None
        report = enforce(store, images_dir=store.images_dir, now=clock.now(), max_age=MAX_AGE, min_free=0)
        remaining = {e.uid for e in store.events()}
    # The synchronised delivered event and the one whose message was dropped by the bound are old;
    # the unsynchronised one has no trusted age and stays.
    assert report.deleted_events == 2
    assert remaining == {uids["unsynced"]}


def test_a_schema_2_store_on_an_unsynchronised_clock_deletes_nothing(tmp_path):
    path = tmp_path / "state" / "wildedge.db"
    path.parent.mkdir()
    uids = _v2_store(path)
    clock = FakeClock(NOW, synchronised=False, boot_id="new-boot")
    with Store(path, images_dir=tmp_path / "state" / "images", clock=clock) as store:
        assert store.trim_outbox(max_messages=10_000, max_age=7 * DAY) == 0
        report = enforce(store, images_dir=store.images_dir, now=clock.now(), max_age=MAX_AGE, min_free=0)
        assert report.deleted_events == report.deleted_frames == 0
        assert {e.uid for e in store.events()} == set(uids.values())

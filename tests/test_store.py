"""The local store on real SQLite files: crash safety under SIGKILL, the outbox, schema versions,
retention (orphans, age, disk floor) and atomic image writes."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections import namedtuple
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import StoreError
from edge.store import (
    MIGRATIONS,
    DetectionRecord,
    EventRecord,
    FrameRecord,
    OutboxMessage,
    Store,
    can_save,
    enforce,
    image_relpath,
    new_uid,
    records,
    resolve,
    save_jpeg,
    uid_time,
    write_atomic,
)
from edge.store import db as store_db
from edge.store import images as store_images

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


@pytest.fixture
def wall():
    """The store's bookkeeping clock (``recorded_at``); tests move it with ``wall["now"] = ...``."""
    return {"now": T0}


@pytest.fixture
def store(tmp_path, wall):
    with Store(tmp_path / "state" / "wildedge.db", images_dir=tmp_path / "state" / "images",
               now=lambda: wall["now"]) as opened:
        yield opened


def _image(seed: int, shape=(48, 64, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _burst(store: Store, burst_id: str, at: datetime, detections: list[int], *,
           sources: list[str] | None = None, save: bool = True, messages: int = 1,
           trigger: str = "timelapse"):
    """Frames with ``detections[k]`` objects each (images saved), an event if any, ``messages`` for it."""
    frames = []
    for k, count in enumerate(detections):
        uid = new_uid()
        when = at + timedelta(seconds=k)
        rel = image_relpath(when, uid) if save else None
        if rel:
            save_jpeg(store.images_dir, rel, _image(hash((burst_id, k)) & 0xFFFF), quality=80)
        dets = [DetectionRecord(k, f"label{k}", 0.5 + 0.1 * j, (0.1 * j, 0.1, 0.1 * j + 0.2, 0.5),
                                (7, "red fox", 0.75) if j == 0 else None, new=j % 2 == 0)
                for j in range(count)]
        frames.append(FrameRecord(uid, when, 100.0 + k, "boot-1", True, trigger, burst_id, k, 64, 48, 12.5,
                                  sources[k] if sources else None, rel, dets))
    event = None
    if any(detections):
        best = max(frames, key=lambda f: len(f.detections))
        event = EventRecord(new_uid(), burst_id, at, 100.0, "boot-1", True, trigger, best.image_path,
                            best.uid, {"label0": {"best": 0.5, "count": 1}, "vote": "red fox"})
    outbox = [OutboxMessage(f"wildedge/trap-01/event/{m}", f"{burst_id}:{m}".encode(), event_uid=event.uid)
              for m in range(messages)] if event else []
    store.commit_burst(frames, event, outbox)
    return frames, event


# -- records -----------------------------------------------------------------------------------------
def test_new_uid_is_uuid7_unique_and_sorted():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    ids = [new_uid() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == ids[0]
    assert before <= uid_time(ids[0]) <= uid_time(ids[-1]) <= datetime.now(timezone.utc)
    with pytest.raises(ValueError):
        uid_time(str(uuid.uuid4()))


def test_new_uid_stays_sorted_when_the_clock_steps_back(monkeypatch):
    source = records._UidSource()
    times = iter([2_000_000_000_000_000_000, 1_000_000_000_000_000_000, 1_000_000_000_000_000_000])
    monkeypatch.setattr(records.time, "time_ns", lambda: next(times))
    ids = [source.next() for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_times_round_trip_as_fixed_width_utc_text():
    local = datetime(2026, 11, 24, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    text = records.to_iso(local)
    assert text == "2026-11-23T23:30:00.000000Z"
    assert records.from_iso(text) == local
    with pytest.raises(ValueError, match="naive"):
        records.to_iso(datetime(2026, 1, 1))


# -- schema and opening ------------------------------------------------------------------------------
def test_fresh_store_settings(store):
    assert store.query("PRAGMA user_version")[0][0] == len(MIGRATIONS)
    assert store.query("PRAGMA application_id")[0][0] == store_db.APPLICATION_ID
    assert store.query("PRAGMA journal_mode")[0][0] == "wal"
    assert store.query("PRAGMA synchronous")[0][0] == 2  # FULL
    assert store.query("PRAGMA foreign_keys")[0][0] == 1
    assert store.integrity_check() == "ok"
    assert store.images_dir.is_dir()


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "w.db"
    Store(path, images_dir=tmp_path / "img").close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    with pytest.raises(StoreError, match="newer"):
        Store(path, images_dir=tmp_path / "img")


def test_other_sqlite_file_is_not_a_store(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE photos (name TEXT)")
    with pytest.raises(StoreError, match="not a wildedge store"):
        Store(path, images_dir=tmp_path / "img")


def test_garbage_file_is_refused(tmp_path):
    path = tmp_path / "w.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match=str(path)):
        Store(path, images_dir=tmp_path / "img")


def test_corrupt_store_is_reported(tmp_path):
    path = tmp_path / "w.db"
    with Store(path, images_dir=tmp_path / "img") as store:
        for i in range(200):
            store.set_meta(f"key{i}", "v" * 500)
    data = bytearray(path.read_bytes())
    data[3 * 4096:3 * 4096 + 3000] = b"\xab" * 3000  # scribble over a table page
    path.write_bytes(bytes(data))
    with Store(path, images_dir=tmp_path / "img") as store:
        assert store.integrity_check() != "ok"


def test_unwritable_location_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create store folder .*file"):
        Store(blocker / "state" / "w.db", images_dir=tmp_path / "img")


def test_migrations_apply_in_order_and_roll_back_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "w.db"
    with Store(path, images_dir=tmp_path / "img") as first:
        first.set_meta("device", "trap-01")
    broken = ("CREATE TABLE half (x)", "CREATE TABLE broken (")
    monkeypatch.setattr(store_db, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(StoreError, match="migrate"):
        Store(path, images_dir=tmp_path / "img")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0
    monkeypatch.setattr(store_db, "MIGRATIONS", [*MIGRATIONS, ("CREATE TABLE extra (x)",)])
    with Store(path, images_dir=tmp_path / "img") as upgraded:
        assert upgraded.query("PRAGMA user_version")[0][0] == len(MIGRATIONS) + 1
        assert upgraded.get_meta("device") == "trap-01"
        assert upgraded.query("SELECT count(*) FROM extra")[0][0] == 0


# -- results -----------------------------------------------------------------------------------------
def test_burst_round_trips(store):
    frames, event = _burst(store, "b1", T0, [0, 2, 1], sources=["/in/a.jpg", "/in/b.jpg", "/in/c.jpg"])
    assert store.frames() == frames
    assert store.frames(burst_id="b1", limit=1) == frames[:1]
    assert store.events() == [event]
    assert store.frame_count() == 3
    assert store.is_processed("/in/b.jpg") and not store.is_processed("/in/z.jpg")
    assert store.last_frame_detections() == frames[-1].detections


def test_duplicate_source_is_refused_and_nothing_of_the_burst_lands(store):
    _burst(store, "b1", T0, [1], sources=["/in/a.jpg"])
    depth = store.outbox_depth()
    with pytest.raises(StoreError, match="frames.source"):
        _burst(store, "b2", T0 + DAY, [1, 1], sources=["/in/new.jpg", "/in/a.jpg"])
    assert store.frame_count() == 1
    assert [e.burst_id for e in store.events()] == ["b1"]
    assert store.outbox_depth() == depth
    assert not store.is_processed("/in/new.jpg")


def test_commit_burst_rejects_caller_mistakes(store):
    frame = FrameRecord(new_uid(), datetime(2026, 1, 1), 1.0, "b", False, "motion", "b1", 0, 10, 10, 1.0)
    with pytest.raises(ValueError, match="naive"):
        store.commit_burst([frame], None)
    frame.captured_at = T0
    event = EventRecord(new_uid(), "other", T0, 1.0, "b", False, "motion", None, frame.uid, {})
    with pytest.raises(ValueError, match="burst"):
        store.commit_burst([frame], event)
    with pytest.raises(ValueError, match="JSON"):
        store.commit_burst([], EventRecord(new_uid(), "b1", T0, 1.0, "b", False, "motion", None, "x",
                                           {"when": T0}))
    assert store.frame_count() == 0 and store.events() == []


def test_processed_sources_many_rows(store):
    frames = [FrameRecord(new_uid(), T0, 1.0, "b", True, "folder", f"b{i}", 0, 10, 10, 1.0,
                          source=f"/in/{i}.jpg") for i in range(3000)]
    for start in range(0, len(frames), 500):
        for frame in frames[start:start + 500]:
            store.commit_burst([frame], None)
    assert store.processed_sources() == {f"/in/{i}.jpg" for i in range(3000)}


def test_effort_counts_frames_and_empty_frames_per_trigger(store):
    _burst(store, "old", T0 - DAY, [0, 0], save=False)
    _burst(store, "t", T0, [0, 1, 0], save=False)
    _burst(store, "m", T0 + timedelta(hours=1), [2], save=False, trigger="motion")
    effort = store.effort(T0)
    assert effort["frames"] == 4 and effort["empty"] == 2 and effort["events"] == 2
    assert effort["triggers"] == {"motion": {"frames": 1, "empty": 0}, "timelapse": {"frames": 3, "empty": 2}}


def test_last_frame_detections_empty_store(store):
    assert store.last_frame_detections() == []


# -- outbox ------------------------------------------------------------------------------------------
def test_outbox_order_ack_and_delivery(tmp_path):
    clock = {"now": T0}
    with Store(tmp_path / "w.db", images_dir=tmp_path / "img", now=lambda: clock["now"]) as store:
        first = store.enqueue(OutboxMessage("wildedge/trap-01/status", b"online", qos=1, retain=True))
        _, event = _burst(store, "b1", T0, [1], messages=2)
        last = store.enqueue(OutboxMessage("wildedge/trap-01/health", b"{}", qos=0))
        rows = store.pending(limit=10)
        assert [r.seq for r in rows] == sorted(r.seq for r in rows)
        assert rows[0].seq == first and rows[-1].seq == last
        assert [r.topic for r in rows][1:3] == ["wildedge/trap-01/event/0", "wildedge/trap-01/event/1"]
        assert rows[0].retain and rows[0].payload == b"online" and rows[-1].qos == 0
        assert [r.seq for r in store.pending(limit=1, after_seq=first)] == [rows[1].seq]
        depth = store.outbox_depth()
        assert (depth.count, depth.bytes, depth.oldest) == (4, sum(len(r.payload) for r in rows), T0)

        store.note_attempt(rows[1].seq)
        store.note_attempt(rows[1].seq)
        assert store.pending(limit=1, after_seq=first)[0].attempts == 2
        clock["now"] = T0 + timedelta(minutes=5)
        store.ack(rows[1].seq)
        assert store.delivered_at(event.uid) is None  # one of its messages is still queued
        store.ack(rows[2].seq)
        assert store.delivered_at(event.uid) == T0 + timedelta(minutes=5)
        store.ack(rows[2].seq)  # a repeated ack is harmless
        assert [r.seq for r in store.pending(limit=10)] == [first, last]
        with pytest.raises(ValueError):
            store.enqueue(OutboxMessage("t", b"x", qos=3))
        with pytest.raises(TypeError):
            store.enqueue(OutboxMessage("t", "text"))  # type: ignore[arg-type]


def test_outbox_message_for_unknown_event_is_refused(store):
    with pytest.raises(StoreError, match="FOREIGN KEY"):
        store.enqueue(OutboxMessage("t", b"x", event_uid="no-such-event"))


def test_concurrent_writers_share_one_store(store):
    def work(n):
        for i in range(40):
            store.enqueue(OutboxMessage(f"t/{n}", str(i).encode()))
    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = store.pending(limit=1000)
    assert len(rows) == 160 and len({r.seq for r in rows}) == 160
    for n in range(4):  # each writer's messages keep their order
        assert [r.payload for r in rows if r.topic == f"t/{n}"] == [str(i).encode() for i in range(40)]


def test_health_is_bounded_and_meta(tmp_path):
    with Store(tmp_path / "w.db", images_dir=tmp_path / "img", health_keep=3) as store:
        assert store.latest_health() is None
        for i in range(7):
            store.add_health({"n": i, "cpu_temp": 40.5}, T0 + timedelta(minutes=i))
        assert store.latest_health() == {"n": 6, "cpu_temp": 40.5}
        assert store.query("SELECT count(*) FROM health")[0][0] == 3
        store.set_meta("k", "1")
        store.set_meta("k", "2")
        assert store.get_meta("k") == "2" and store.get_meta("missing", "d") == "d"


# -- retention ---------------------------------------------------------------------------------------
Usage = namedtuple("Usage", "total used free")


class FakeDisk:
    """A disk of ``capacity`` bytes whose only content is the image store."""

    def __init__(self, images_dir: Path, capacity: int) -> None:
        self.images_dir, self.capacity = images_dir, capacity

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.images_dir.rglob("*") if p.is_file())

    def __call__(self, path) -> Usage:
        used = self.used()
        return Usage(self.capacity, used, self.capacity - used)


def _image_size(store: Store, frame: FrameRecord) -> int:
    return store.image_file(frame.image_path).stat().st_size


def test_orphan_sweep_removes_only_old_unreferenced_files(store):
    frames, _ = _burst(store, "b1", T0, [1])
    now = datetime.now(timezone.utc)
    old = now.timestamp() - 7200
    orphan = store.images_dir / "2026/03/01/crashed.jpg"
    temp = store.images_dir / "2026/03/01/.x.jpg.1234abcd.tmp"
    fresh = store.images_dir / "2026/03/01/being-written.jpg"
    empty_dir = store.images_dir / "2025/01/01"
    empty_dir.mkdir(parents=True)
    for path in (orphan, temp, fresh):
        path.write_bytes(b"\xff\xd8" + b"0" * 100)
    for path in (orphan, temp, store.image_file(frames[0].image_path), empty_dir,
                 empty_dir.parent, empty_dir.parent.parent):
        os.utime(path, (old, old))
    report = enforce(store, images_dir=store.images_dir, now=now, max_age=None, min_free=0)
    assert not orphan.exists() and not temp.exists() and not empty_dir.parent.parent.exists()
    assert fresh.exists() and store.image_file(frames[0].image_path).exists()
    assert (report.orphans, report.deleted_images, report.freed_bytes) == (2, 2, 204)
    assert report.deleted_frames == 0 and not report.disk_low


def test_max_age_never_deletes_what_waits_for_the_broker(store, wall):
    empty, _ = _burst(store, "empty", T0, [0, 0])
    pending, pending_event = _burst(store, "pending", T0, [1, 2])
    delivered, delivered_event = _burst(store, "delivered", T0, [0, 1])
    local, _ = _burst(store, "local", T0, [1], messages=0)
    wall["now"] = T0 + 35 * DAY
    young, _ = _burst(store, "young", T0 + 35 * DAY, [0])
    for row in store.pending(limit=10):
        if row.event_uid == delivered_event.uid:
            store.ack(row.seq)
    report = enforce(store, images_dir=store.images_dir, now=T0 + 40 * DAY, max_age=timedelta(days=30),
                     min_free=0)
    assert {f.burst_id for f in store.frames()} == {"pending", "young"}
    assert [e.uid for e in store.events()] == [pending_event.uid]
    assert (report.deleted_frames, report.deleted_events) == (5, 2)
    for frame in [*pending, *young]:
        assert store.image_file(frame.image_path).exists()
    for frame in [*empty, *delivered, *local]:
        assert not store.image_file(frame.image_path).exists()
    assert report.deleted_images == 5
    assert store.query("SELECT count(*) FROM detections")[0][0] == 3  # cascaded with their frames
    assert len(store.pending(limit=10)) == 1
    assert store.integrity_check() == "ok"
    # The foreign key is the backstop: an event with queued messages cannot be deleted at all.
    with pytest.raises(StoreError, match="FOREIGN KEY"), store.transaction("test") as conn:
        conn.execute("DELETE FROM events WHERE uid = ?", (pending_event.uid,))


def test_max_age_counts_from_recording_and_keeps_the_record_of_processed_files(store, wall):
    # A card dumped today holds photos taken years ago: their rows are young, whatever EXIF says.
    wall["now"] = T0 + 400 * DAY
    card, _ = _burst(store, "card", T0, [1, 0], sources=["DCIM/a.jpg", "DCIM/b.jpg"], messages=0)
    report = enforce(store, images_dir=store.images_dir, now=T0 + 401 * DAY, max_age=timedelta(days=30),
                     min_free=0)
    assert (report.deleted_frames, report.deleted_images) == (0, 0)
    assert all(store.image_file(f.image_path).exists() for f in card)
    # Once old, their images go but their rows stay: the files must never be processed again.
    report = enforce(store, images_dir=store.images_dir, now=T0 + 500 * DAY, max_age=timedelta(days=30),
                     min_free=0)
    assert report.deleted_frames == 0 and report.deleted_images == 2 and report.deleted_events == 1
    assert store.is_processed("DCIM/a.jpg") and store.is_processed("DCIM/b.jpg")
    assert [f.image_path for f in store.frames()] == [None, None]
    assert store.query("SELECT count(*) FROM detections")[0][0] == 1
    again = enforce(store, images_dir=store.images_dir, now=T0 + 600 * DAY, max_age=timedelta(days=30),
                    min_free=0)
    assert (again.deleted_frames, again.deleted_images) == (0, 0)


def test_disk_floor_drops_empty_frame_images_first_and_never_rows(store):
    pending, _ = _burst(store, "pending", T0 - 5 * DAY, [1])  # oldest, but still waiting for the broker
    empty_old, _ = _burst(store, "empty-old", T0, [0, 0])
    delivered, delivered_event = _burst(store, "delivered", T0 + timedelta(hours=1), [1])
    empty_new, _ = _burst(store, "empty-new", T0 + 2 * DAY, [0])
    for row in store.pending(limit=10):
        if row.event_uid == delivered_event.uid:
            store.ack(row.seq)
    disk = FakeDisk(store.images_dir, capacity=10_000_000)
    free = disk(None).free
    empties = sum(_image_size(store, f) for f in [*empty_old, *empty_new])
    before = {f.uid: f.image_path for f in store.frames()}
    report = enforce(store, images_dir=store.images_dir, now=T0 + 3 * DAY, max_age=None,
                     min_free=free + empties + 1, disk_usage=disk)
    after = {f.uid: f.image_path for f in store.frames()}
    assert len(after) == len(before) == 5
    assert [after[f.uid] for f in [*empty_old, *empty_new, *delivered]] == [None] * 4
    kept = before[pending[0].uid]
    assert after[pending[0].uid] == kept and store.image_file(kept).exists()
    assert store.events()[-1].image_path is None  # the delivered event's image was its best frame's
    assert not report.disk_low and report.deleted_images == 4 and report.deleted_frames == 0
    assert report.free_bytes >= free + empties + 1

    report = enforce(store, images_dir=store.images_dir, now=T0 + 3 * DAY, max_age=None,
                     min_free=disk.capacity + 1, disk_usage=disk)
    assert report.disk_low and report.deleted_images == 1
    assert all(f.image_path is None for f in store.frames()) and store.frame_count() == 5
    assert len(store.events()) == 2 and len(store.pending(limit=10)) == 1
    assert not can_save(store.images_dir, disk.capacity + 1, disk_usage=disk)
    assert can_save(store.images_dir, disk.capacity, disk_usage=disk)


def test_retention_refuses_an_image_store_holding_the_database(tmp_path):
    store = Store(tmp_path / "w.db", images_dir=tmp_path / "img")
    with store, pytest.raises(ValueError, match="must not contain"):
        enforce(store, images_dir=tmp_path, now=T0, max_age=None, min_free=0)


# -- images ------------------------------------------------------------------------------------------
def test_image_relpath_uses_the_utc_date():
    local = datetime(2026, 11, 25, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert image_relpath(local, "abc") == "2026/11/24/abc.jpg"
    with pytest.raises(ValueError):
        image_relpath(datetime(2026, 11, 25), "abc")
    with pytest.raises(ValueError):
        image_relpath(local, "../abc")
    for bad in ("../x.jpg", "/etc/x.jpg", "a/../../x.jpg", ""):
        with pytest.raises(ValueError):
            resolve(Path("/state/images"), bad)


def test_write_atomic_replaces_whole_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a" / "b.bin"
    write_atomic(path, b"old" * 1000)
    write_atomic(path, b"new" * 2000)
    assert path.read_bytes() == b"new" * 2000
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.bin"]


@pytest.mark.parametrize("fail", ["fsync", "replace"])
def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch, fail):
    path = tmp_path / "b.jpg"
    write_atomic(path, b"old")

    def boom(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(store_images.os, fail, boom)
    with pytest.raises(StoreError, match="No space left"):
        write_atomic(path, b"new" * 10_000)
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["b.jpg"]


def test_save_jpeg_round_trips(tmp_path):
    image = cv2.GaussianBlur(_image(3, (120, 160, 3)), (9, 9), 0)
    size = save_jpeg(tmp_path, "2026/03/01/x.jpg", image, quality=95)
    path = tmp_path / "2026/03/01/x.jpg"
    assert size == path.stat().st_size
    back = cv2.imread(str(path))
    assert back.shape == image.shape
    assert np.abs(back.astype(int) - image.astype(int)).mean() < 4
    with pytest.raises(ValueError, match="quality"):
        save_jpeg(tmp_path, "y.jpg", image, quality=0)
    with pytest.raises(ValueError, match="uint8"):
        save_jpeg(tmp_path, "y.jpg", image.astype(np.float32), quality=90)


@pytest.mark.assets
def test_save_jpeg_real_photo(assets, tmp_path):
    photo = min((assets / "camera_traps_lila" / "images").glob("*.jpg"))
    image = cv2.imread(str(photo))
    save_jpeg(tmp_path, "p.jpg", image, quality=90)
    back = cv2.imread(str(tmp_path / "p.jpg"))
    assert back.shape == image.shape and cv2.PSNR(back, image) > 30


# -- crash safety ------------------------------------------------------------------------------------
_CHILD = r'''
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
import numpy as np
from edge.store import (DetectionRecord, EventRecord, FrameRecord, OutboxMessage, Store, image_relpath,
                        new_uid, save_jpeg)

root, limit = Path(sys.argv[1]), int(sys.argv[2])
store = Store(root / "w.db", images_dir=root / "images")
done = store.processed_sources()
print("ready", flush=True)
i = 0
rng = np.random.default_rng()
while i < limit:
    if f"/in/{i}-0.jpg" in done:
        i += 1
        continue
    at = datetime(2026, 3, 1, tzinfo=timezone.utc) + timedelta(minutes=i)
    frames = []
    for k in range(3):
        uid = new_uid()
        rel = image_relpath(at, uid)
        save_jpeg(store.images_dir, rel, rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), quality=70)
        dets = [DetectionRecord(j, "animal", 0.9, (0.1, 0.1, 0.5, 0.5)) for j in range(k)]
        frames.append(FrameRecord(uid, at, float(i), "boot", True, "timelapse", f"b{i}", k, 32, 24, 1.0,
                                  f"/in/{i}-{k}.jpg", rel, dets))
    event = EventRecord(new_uid(), f"b{i}", at, float(i), "boot", True, "timelapse", frames[2].image_path,
                        frames[2].uid, {"animal": 0.9})
    store.commit_burst(frames, event, [OutboxMessage(f"e/{i}/{m}", b"x" * 50, event_uid=event.uid)
                                       for m in range(2)])
    print("committed", i, flush=True)
    for row in store.pending(limit=4):  # deliver the previous burst, one ack per transaction
        if row.topic.startswith(f"e/{i - 1}/"):
            store.ack(row.seq)
    i += 1
'''


def _run_child(script: Path, root: Path, limit: int, *, kill_after: float | None,
               wait_ready: bool = True) -> list[int]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(limit)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    if wait_ready:
        lines.append(proc.stdout.readline())
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    if kill_after is None:
        assert proc.returncode == 0, err
    lines += out.splitlines()
    return [int(line.split()[1]) for line in lines if line.startswith("committed")]


def _check_whole(root: Path, reported: set[int]) -> int:
    with Store(root / "w.db", images_dir=root / "images") as store:
        assert store.integrity_check() == "ok"
        frames = store.frames()
        events = {e.burst_id: e for e in store.events()}
        bursts = {f.burst_id for f in frames}
        assert bursts == set(events) == {f"b{i}" for i in range(len(bursts))}  # whole and contiguous
        assert reported <= {int(b[1:]) for b in bursts}  # every reported commit survived
        for burst_id, event in events.items():
            own = [f for f in frames if f.burst_id == burst_id]
            assert [len(f.detections) for f in own] == [0, 1, 2]
            queued = store.query("SELECT count(*) FROM outbox WHERE event_uid = ?", (event.uid,))[0][0]
            assert queued in (0, 1, 2)
            assert (store.delivered_at(event.uid) is not None) == (queued == 0)
        for frame in frames:
            image = cv2.imread(str(store.image_file(frame.image_path)))
            assert image is not None and image.shape == (24, 32, 3)
        return len(bursts)


def test_sigkill_at_random_points_never_leaves_a_partial_burst(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    root = tmp_path / "state"
    rng = random.Random(20260301)
    reported: set[int] = set()
    # The first kill may land while the store is being created.
    _run_child(script, root, 10_000, kill_after=rng.uniform(0.0, 0.4), wait_ready=False)
    for _ in range(5):
        reported |= set(_run_child(script, root, 10_000, kill_after=rng.uniform(0.0, 0.3)))
        count = _check_whole(root, reported)
    # After the kills, processing resumes where it stopped and records each remaining burst once.
    assert _run_child(script, root, count + 5, kill_after=None) == list(range(count, count + 5))
    assert _check_whole(root, reported) == count + 5
    # Images written but never committed (killed in between) are orphans; the sweep removes them.
    with Store(root / "w.db", images_dir=root / "images") as store:
        enforce(store, images_dir=root / "images", now=datetime.now(timezone.utc), max_age=None, min_free=0,
                orphan_age=timedelta(0))
        images = root / "images"
        files = {p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file()}
        assert files == {f.image_path for f in store.frames()}


def test_ack_many_delivers_events_and_trim_outbox_drops_oldest_counted(store, wall):
    bursts = [_burst(store, f"b{k}", T0 + k * DAY, [1], messages=2) for k in range(4)]
    rows = store.pending(limit=100)
    assert len(rows) == 8
    store.ack_many([rows[0].seq, rows[1].seq, rows[2].seq])
    first_event, second_event = bursts[0][1], bursts[1][1]
    assert store.delivered_at(first_event.uid) is not None  # both of its messages acked
    assert store.delivered_at(second_event.uid) is None  # one of two
    store.ack_many([])
    wall["now"] = T0 + 10 * DAY
    store.enqueue(OutboxMessage("wildedge/trap-01/effort", b"{}"))
    assert store.trim_outbox(max_messages=3) == 3  # 6 left: keep the newest 3
    assert [r.topic for r in store.pending(limit=10)][-1] == "wildedge/trap-01/effort"
    assert store.outbox_dropped() == 3
    # Age: everything queued at T0 is older than 5 days at T0 + 10 days; the effort message is not.
    assert store.trim_outbox(max_messages=100, max_age=timedelta(days=5)) == 2
    assert [r.topic for r in store.pending(limit=10)] == ["wildedge/trap-01/effort"]
    assert store.outbox_dropped() == 5
    assert store.integrity_check() == "ok"


def test_effort_window_counts_frames_empty_events_and_failures_per_trigger(store, wall):
    _burst(store, "t1", T0, [0, 2], trigger="timelapse")
    _burst(store, "t2", T0, [0], trigger="timelapse")
    _burst(store, "m1", T0, [1], trigger="motion")
    failed = FrameRecord(new_uid(), T0, 1.0, "boot-1", True, "file", "f1", 0, 0, 0, 0.0, "x.jpg",
                         failure="not an image")
    store.commit_burst([failed], None)
    wall["now"] = T0 + DAY
    _burst(store, "later", T0, [1], trigger="timelapse")
    effort = store.effort_window(T0, T0 + timedelta(hours=1))
    assert effort == {"timelapse": (3, 2, 1, 0), "motion": (1, 0, 1, 0), "file": (1, 0, 0, 1)}

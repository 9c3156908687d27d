"""A full disk degrades, never stops: on a real, small filesystem (tmpfs) filled by the daemon's own
images or by another program's file, every photo is still recorded, the disk reserve lets the store
open and retention run, and the outbox is bounded by bytes with crops the first to go."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from daemon_helpers import WILDEDGE, fill_disk, folder_config, frame_count, wait_until

from edge.clock import FakeClock
from edge.store import (
    DiskFullError,
    DiskReserve,
    EventRecord,
    FrameRecord,
    OutboxMessage,
    Store,
    is_disk_full,
    new_uid,
)

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
MB = 1 << 20


def _mount_small(folder: Path, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)], check=True,
                   capture_output=True)


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs) at ``tmp_path/disk``; needs root (CI runs as root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small filesystem needs root and mount(8); CI runs as root")
    folder = tmp_path / "disk"
    try:
        _mount_small(folder, 4 * MB)
    except subprocess.CalledProcessError as err:
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {err.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


# -- the pieces ----------------------------------------------------------------------------------------

def _frame_event(clock: FakeClock) -> tuple[FrameRecord, EventRecord]:
    burst = new_uid()
    frame = FrameRecord(new_uid(), clock.now(), clock.monotonic(), clock.boot_id(), clock.synchronised(),
                        "timelapse", burst, 0, 64, 48, 5.0)
    event = EventRecord(new_uid(), burst, clock.now(), clock.monotonic(), clock.boot_id(), clock.synchronised(),
                        "timelapse", None, frame.uid, {"best": {"label": "fox", "score": 0.9}})
    return frame, event


def test_store_write_on_a_full_disk_raises_disk_full_and_works_after_the_reserve_is_released(small_disk):
    clock = FakeClock(NOW)
    state = small_disk / "state"
    reserve = DiskReserve(state, size=MB)
    with Store(state / "wildedge.db", images_dir=state / "images", clock=clock) as store:
        assert reserve.ensure() and reserve.held
        fill_disk(small_disk)
        frames = []
        with pytest.raises(DiskFullError) as caught:
            for _ in range(2000):  # SQLite has a few free pages in hand: the disk shows after a few commits
                frame, event = _frame_event(clock)
                store.commit_burst([frame], event, [OutboxMessage("p/d/event", b"x" * 2000, event_uid=event.uid)])
                frames.append(frame)
                clock.advance(1)
        assert is_disk_full(caught.value)
        assert "database or disk is full" in str(caught.value)
        assert reserve.release("test") and not reserve.held
        frame, event = _frame_event(clock)
        store.commit_burst([frame], event, [])
        assert store.frame_count() == len(frames) + 1
        assert not reserve.ensure()  # less than twice the reserve free: not taken back yet
    (small_disk / "filler").unlink()
    assert reserve.ensure() and reserve.held
    assert reserve.path.stat().st_blocks * 512 >= MB  # real blocks, not a sparse file


def test_outbox_bound_by_bytes_drops_crops_first_then_the_oldest(tmp_path):
    clock = FakeClock(NOW)
    with Store(tmp_path / "s.db", images_dir=tmp_path / "images", clock=clock) as store:
        events = []
        for i in range(10):
            frame, event = _frame_event(clock)
            store.commit_burst([frame], event, [
                OutboxMessage("wildedge/trap-01/event", b"e" * 100, event_uid=event.uid),
                OutboxMessage(f"wildedge/trap-01/crop/{i:022d}", b"c" * 20_000, event_uid=event.uid)])
            events.append(event)
            clock.advance(60)
        # 10 events of 100 bytes + 10 crops of 20 kB: 201,000 bytes; a 100,000-byte bound drops 6 crops,
        # the oldest, and no event message.
        dropped = store.trim_outbox(max_messages=10_000, max_bytes=100_000, expendable="wildedge/trap-01/crop/")
        assert dropped == 6
        rows = store.pending(limit=100)
        assert sum(r.topic.endswith("/event") for r in rows) == 10
        crops = [r for r in rows if "/crop/" in r.topic]
        assert [r.topic[-2:] for r in crops] == ["06", "07", "08", "09"]
        assert store.outbox_depth().bytes <= 100_000
        assert (store.outbox_dropped(), store.outbox_dropped(expendable=True)) == (6, 6)
        # Below the crops' total, event messages go too, the oldest first, once every crop is gone.
        assert store.trim_outbox(max_messages=10_000, max_bytes=500, expendable="wildedge/trap-01/crop/") == 9
        assert [r.event_uid for r in store.pending(limit=100)] == [e.uid for e in events[5:]]
        assert (store.outbox_dropped(), store.outbox_dropped(expendable=True)) == (15, 10)
        # The count bound also takes crops first.
        frame, event = _frame_event(clock)
        store.commit_burst([frame], event, [OutboxMessage("wildedge/trap-01/crop/x", b"c", event_uid=event.uid)])
        assert store.trim_outbox(max_messages=5, expendable="wildedge/trap-01/crop/") == 1
        assert all("/crop/" not in r.topic for r in store.pending(limit=100))


# -- the daemon on a small real disk -------------------------------------------------------------------

def _config(tmp_path: Path, state: Path, photos: Path, model: Path, *, mode: str, extra: str = "") -> Path:
    # person = "blur": a low-score "person" must not keep an image from being saved here.
    return folder_config(
        tmp_path / f"wildedge-{uuid.uuid4().hex[:6]}.toml", state=state, photos=photos, model=model,
        device='timezone = "UTC"', camera=f'mode = "{mode}"\nsettle = "0.2s"\npoll = "0.2s"', detector="conf = 0.05",
        storage='save_images = "all"\njpeg_quality = 95\nmin_free = 0\nreserve = "512KB"',
        extra=f'[privacy]\nperson = "blur"\n[health]\ninterval = "1s"\n{extra}')


def _health(db: Path) -> dict:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return json.loads(conn.execute("SELECT snapshot FROM health ORDER BY id DESC LIMIT 1").fetchone()[0])


def _last_image(db: Path) -> str | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT image_path FROM frames ORDER BY id DESC LIMIT 1").fetchone()[0]


def _images(state: Path) -> int:
    return sum(1 for p in (state / "images").rglob("*.jpg"))


@pytest.mark.assets
def test_images_fill_the_disk_and_every_photo_is_still_recorded(tmp_path, small_disk, assets, stamped):
    """Every image saved (min_free 0) fills the 4 MiB disk after a few dozen photos: the daemon
    releases the reserve, frees what it can, and records all 72 photos; nothing exits."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for folder in ("voc2007_labeled/images", "camera_traps_lila/images"):
        for src in sorted((assets / folder).iterdir()):
            shutil.copy(src, photos)
    total = len(list(photos.iterdir()))
    state = small_disk / "state"
    config = _config(tmp_path, state, photos, stamped["fastestdet"], mode="replay")
    proc = subprocess.run([*WILDEDGE, "run", "--config", str(config)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    db = state / "wildedge.db"
    assert frame_count(db) == total == 72
    with sqlite3.connect(db) as conn:
        failures = conn.execute("SELECT count(*) FROM frames WHERE failure IS NOT NULL").fetchone()[0]
        without = conn.execute("SELECT count(*) FROM frames WHERE image_path IS NULL").fetchone()[0]
    assert failures == 0
    assert 0 < _images(state) < total and without == total - _images(state)
    # The database hit the full disk: the reserve went, the WAL was checkpointed and truncated (it is
    # most of what SQLite holds on a card), and every later burst was recorded.
    assert "released the 512000-byte disk reserve" in proc.stderr
    assert "not recorded" not in proc.stderr and "Traceback" not in proc.stderr
    health = _health(db)
    assert health["counts"]["unrecorded"] == 0 and health["counts"]["frames"] == total
    assert health["disk_full"] is False  # the last write succeeded
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size < MB


@pytest.mark.assets
def test_another_programs_filler_file_neither_stops_the_daemon_nor_its_restart(tmp_path, small_disk, assets,
                                                                             stamped):
    """A filler written by another program takes the last byte while the daemon runs: the next
    results are still recorded; restarted on the full disk, it opens, runs retention and records;
    with the filler gone, the reserve is held again and images are saved again."""
    photos = tmp_path / "photos"
    photos.mkdir()
    sources = sorted((assets / "camera_traps_lila/images").iterdir())
    state = small_disk / "state"
    db = state / "wildedge.db"
    config = _config(tmp_path, state, photos, stamped["fastestdet"], mode="watch")

    def start() -> subprocess.Popen:
        return subprocess.Popen([*WILDEDGE, "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def stop(proc: subprocess.Popen) -> str:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        return err

    proc = start()
    try:
        shutil.copy(sources[0], photos)
        wait_until(lambda: frame_count(db) == 1 or proc.poll() is not None, timeout=90)
        wait_until(lambda: (state / "reserve").exists() or proc.poll() is not None, timeout=30)
        assert proc.poll() is None
        assert _images(state) == 1
        filler = fill_disk(small_disk)
        for src in sources[1:5]:
            shutil.copy(src, photos)
        wait_until(lambda: frame_count(db) == 5 or proc.poll() is not None, timeout=90)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        wait_until(lambda: _health(db)["counts"]["frames"] == 5, timeout=30)
        health = _health(db)
        assert health["counts"]["unrecorded"] == 0
        assert health["disk_reserve_held"] is False and health["disk_low"] is True
        first = stop(proc)
        assert "released the 512000-byte disk reserve" in first
        assert "Traceback" not in first

        # Restarted on the full disk (the filler is still there): it opens and records.
        proc = start()
        for src in sources[5:7]:
            shutil.copy(src, photos)
        wait_until(lambda: frame_count(db) == 7 or proc.poll() is not None, timeout=90)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        filler.unlink()
        wait_until(lambda: _health(db)["disk_reserve_held"] is True, timeout=30)
        shutil.copy(sources[7], photos)
        wait_until(lambda: frame_count(db) == 8, timeout=60)
        assert _last_image(db) is not None  # images are saved again
        second = stop(proc)
        assert "disk space is back" in second and "Traceback" not in second

        # Filled to the last byte while the daemon is stopped, with the reserve held: the start
        # gives the reserve back before it opens the store, and records.
        filler = fill_disk(small_disk)
        proc = start()
        for src in sources[8:10]:
            shutil.copy(src, photos)
        wait_until(lambda: frame_count(db) == 10 or proc.poll() is not None, timeout=90)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        third = stop(proc)
        assert "less than the reserve free at start" in third and "Traceback" not in third
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert _health(db)["counts"]["unrecorded"] == 0


@pytest.mark.assets
def test_start_on_a_disk_full_to_the_last_byte_without_a_reserve(tmp_path, small_disk, assets, stamped):
    """No reserve left to give back (another program took that too): the start deletes the oldest
    images until the store can open, their rows forget them, and the new photos are recorded; with
    no image to delete either, one line says what to do."""
    photos = tmp_path / "photos"
    photos.mkdir()
    sources = sorted((assets / "camera_traps_lila/images").iterdir())
    for src in sources[:6]:
        shutil.copy(src, photos)
    state = small_disk / "state"
    db = state / "wildedge.db"
    config = _config(tmp_path, state, photos, stamped["fastestdet"], mode="replay")
    run = [*WILDEDGE, "run", "--config", str(config)]
    first = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    kept = _images(state)
    assert kept >= 2
    (state / "reserve").unlink()
    filler = fill_disk(small_disk)
    for src in sources[6:8]:
        shutil.copy(src, photos)
    second = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "disk full before the store could open: deleted the" in second.stderr
    assert frame_count(db) == 8
    with sqlite3.connect(db) as conn:
        paths = [r[0] for r in conn.execute("SELECT image_path FROM frames WHERE image_path IS NOT NULL")]
    assert all((state / "images" / p).exists() for p in paths)  # no row names a deleted file
    assert len(paths) < kept

    # Nothing of the daemon's own left to delete: one line, exit 1, no traceback.
    shutil.rmtree(state / "images")
    (state / "images").mkdir(mode=0o700)
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), state / "reserve"):
        path.unlink(missing_ok=True)
    fill_disk(small_disk, "filler-2")
    third = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert third.returncode == 1
    errors = [line for line in third.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is full" in errors[0] and "free some space on it" in errors[0], third.stderr
    assert "Traceback" not in third.stderr
    filler.unlink()


@pytest.mark.assets
def test_outbox_of_crops_is_bounded_by_bytes_while_the_broker_is_away(tmp_path, assets, stamped):
    """Crops on, no broker: the outbox stays under ``max_queue_bytes``; the crops go, every event
    message stays queued."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for folder in ("voc2007_labeled/images", "camera_traps_lila/images"):
        for src in sorted((assets / folder).iterdir()):
            shutil.copy(src, photos)
    state = tmp_path / "state"
    config = _config(tmp_path, state, photos, stamped["fastestdet"], mode="replay", extra="""
[mqtt]
url = "mqtt://127.0.0.1:9"
crops = true
crop_min_interval = "0s"
crop_max_bytes = "100KB"
max_queue_bytes = "300KB"
drain_timeout = "0s"
health = false
""")
    proc = subprocess.run([*WILDEDGE, "run", "--config", str(config)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    db = state / "wildedge.db"
    with sqlite3.connect(db) as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        kinds = dict(conn.execute("SELECT CASE WHEN topic LIKE '%/crop/%' THEN 'crop' WHEN topic LIKE '%/event' "
                                  "THEN 'event' ELSE 'other' END AS kind, count(*) FROM outbox GROUP BY kind"))
        size = conn.execute("SELECT sum(length(payload)) FROM outbox").fetchone()[0]
        dropped = dict(conn.execute("SELECT key, CAST(value AS INTEGER) FROM meta WHERE key LIKE 'outbox_dropped%'"))
    assert events > 40
    assert kinds["event"] == events  # not one event message lost
    assert size <= 300_000
    assert dropped["outbox_dropped_expendable"] == dropped["outbox_dropped"] > 0  # only crops went
    assert kinds.get("crop", 0) > 0  # the newest crops that fit are still there


def test_health_message_says_the_disk_is_full_and_how_many_frames_were_lost():
    import jsonschema

    import edge
    from edge import payload as wire
    from edge.payload_decode import decode_health

    schema = json.loads((Path(edge.__file__).parent / "data" / "wire-format-v1.schema.json").read_text("utf-8"))
    snapshot = {"at": "2026-12-07T10:00:00+00:00", "clock_synchronised": True, "boot_id": "b" * 32,
                "monotonic_s": 12.5, "disk_low": True, "disk_full": True, "disk_reserve_held": False,
                "counts": {"frames": 10, "events": 2, "failures": 0, "triggers": 10, "unrecorded": 3}}
    message = wire.encode_health(snapshot, device="trap-01")
    jsonschema.validate(json.loads(message), {**schema, "anyOf": [{"$ref": "#/$defs/health"}]})
    decoded = decode_health(message)
    assert (decoded["disk_low"], decoded["disk_full"], decoded["unrecorded"]) == (True, True, 3)
    assert b'"dx":1' in message and b'"ur":3' in message
    with pytest.raises(ValueError, match="disk_full must be a bool"):
        wire.encode_health({**snapshot, "disk_full": "yes"}, device="trap-01")

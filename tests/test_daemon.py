"""The daemon in-process: folder sessions over real photos, live triggers on a scripted camera,
commands over the control socket, camera failures and the disk floor."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from daemon_helpers import wait_until

from edge.capture import FakeCamera
from edge.clock import SystemClock
from edge.config import config_from_dict
from edge.daemon import Daemon, state_paths
from edge.errors import CaptureError
from edge.store import Store
from edge.triggers import send_command

pytestmark = pytest.mark.assets

PHOTOS = "camera_traps_lila/images"


def _config(tmp_path: Path, model: Path, **sections: Any) -> Any:
    data: dict[str, Any] = {
        "device": {"id": "trap-01", "state_dir": str(tmp_path / "state"), "timezone": "UTC"},
        "camera": {"type": "folder", "path": str(tmp_path / "photos")},
        # COCO detectors on night-time camera-trap photos: a low threshold so that most have boxes.
        "detector": {"model": str(model), "conf": 0.2},
        "storage": {"min_free": 0},
    }
    data.update(sections)
    return config_from_dict(data)


def _copy_photos(assets: Path, dst: Path, count: int | None = None) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    photos = sorted(p for p in (assets / PHOTOS).iterdir() if p.suffix.lower() == ".jpg")[:count]
    return [Path(shutil.copy(p, dst / p.name)) for p in photos]


def _store(config: Any) -> Store:
    db, images, _ = state_paths(Path(config.device.state_dir))
    return Store(db, images_dir=images)


def _run_thread(daemon: Daemon) -> threading.Thread:
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    return thread


# -- folder camera --------------------------------------------------------------------------------

def test_once_processes_a_folder_exactly_once_and_records_sources(tmp_path, assets, stamped):
    photos = _copy_photos(assets, tmp_path / "photos")
    config = _config(tmp_path, stamped["fastestdet"])
    assert Daemon(config, once=True).run() == 0
    with _store(config) as store:
        frames = store.frames()
        events = store.events()
        assert sorted(f.source for f in frames) == sorted(str(p) for p in photos)
        assert all(f.failure is None and f.trigger == "file" for f in frames)
        with_dets = [f for f in frames if f.detections]
        # One file, one trigger: each file with detections is exactly one event.
        assert len(events) == len(with_dets) >= 8
        assert {e.burst_id for e in events} == {f.burst_id for f in with_dets}
        by_uid = {f.uid: f for f in frames}
        persons = 0
        for event in events:
            # Privacy by default: a frame with a person keeps its detections but not its image.
            if by_uid[event.best_frame_uid].person:
                assert event.image_path is None
                persons += 1
            else:
                assert event.image_path is not None and store.image_file(event.image_path).is_file()
        assert persons and persons < len(events)
        # Frames without detections keep no image by default (save_images = "detections").
        assert all(f.image_path is None for f in frames if not f.detections)
    # A second session finds nothing new, even after a new file arrives it takes only that one.
    shutil.copy(photos[0], tmp_path / "photos" / "copy-of-first.jpg")
    assert Daemon(config, once=True).run() == 0
    with _store(config) as store:
        assert len(store.frames()) == len(photos) + 1
        assert store.is_processed(str(tmp_path / "photos" / "copy-of-first.jpg"))


def test_unreadable_file_is_recorded_as_failed_and_not_retried(tmp_path, assets, stamped):
    _copy_photos(assets, tmp_path / "photos", 2)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    config = _config(tmp_path, stamped["fastestdet"])
    assert Daemon(config, once=True).run() == 0
    with _store(config) as store:
        failed = [f for f in store.frames() if f.failure]
        assert [Path(f.source).name for f in failed] == ["broken.jpg"]
        assert len(store.frames()) == 3
    assert Daemon(config, once=True).run() == 0
    with _store(config) as store:
        assert len(store.frames()) == 3


def test_watch_mode_processes_new_files_as_they_settle(tmp_path, assets, stamped):
    photos = _copy_photos(assets, tmp_path / "incoming", 4)
    (tmp_path / "photos").mkdir()
    config = _config(tmp_path, stamped["fastestdet"],
                     camera={"type": "folder", "path": str(tmp_path / "photos"), "mode": "watch",
                             "settle": "0.2s", "poll": "0.1s"})
    daemon = Daemon(config)
    thread = _run_thread(daemon)
    try:
        for photo in photos:
            shutil.move(photo, tmp_path / "photos" / photo.name)
        wait_until(lambda: daemon.counts["frames"] == 4)
    finally:
        daemon.stop()
        thread.join(10)
    assert not thread.is_alive()
    with _store(config) as store:
        assert sorted(Path(f.source).name for f in store.frames()) == sorted(p.name for p in photos)


def test_missing_folder_fails_at_start_with_a_clear_error(tmp_path, stamped):
    config = _config(tmp_path, stamped["fastestdet"])
    with pytest.raises(CaptureError, match="cannot open"):
        Daemon(config, once=True).run()


# -- live cameras -----------------------------------------------------------------------------------

def _live(tmp_path: Path, model: Path, trigger: dict[str, Any], **sections: Any) -> Any:
    return _config(tmp_path, model, camera={"type": "opencv", "source": 0}, trigger=trigger,
                   health={"interval": "0.2s"}, **sections)


def _photo_frames(assets: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted((assets / PHOTOS).iterdir())[:4]]


def test_timelapse_bursts_become_one_event_each(tmp_path, assets, stamped):
    config = _live(tmp_path, stamped["fastestdet"],
                   {"type": "timelapse", "interval": "1s", "burst": 2, "burst_interval": "0.05s"})
    clock = SystemClock()
    camera = FakeCamera(_photo_frames(assets), clock=clock, loop=True)
    daemon = Daemon(config, clock=clock, camera_factory=lambda: camera)
    thread = _run_thread(daemon)
    try:
        wait_until(lambda: daemon.counts["triggers"] >= 3)
    finally:
        daemon.stop()
        thread.join(10)
    assert not thread.is_alive()
    with _store(config) as store:
        frames = store.frames()
        bursts: dict[str, list] = {}
        for frame in frames:
            bursts.setdefault(frame.burst_id, []).append(frame)
        assert len(bursts) >= 3
        # A stop may cut the last burst short (what it captured is kept); every other one is whole.
        complete = [bursts[key] for key in sorted(bursts)[:-1]]
        assert all(sorted(f.burst_index for f in group) == [0, 1] for group in complete)
        assert {f.trigger for f in frames} == {"timelapse"}
        # Wall-clock alignment: every burst starts on a whole second.
        starts = [min(group, key=lambda f: f.burst_index).captured_at for group in bursts.values()]
        assert all(s.microsecond < 300_000 for s in starts), starts
        events = store.events()
        assert len({e.burst_id for e in events}) == len(events)
        assert {e.burst_id for e in events} <= set(bursts)
        health = store.query("SELECT snapshot FROM health ORDER BY id")
        snapshot = json.loads(health[-1][0])
        assert snapshot["camera"]["state"] in ("ok", "closed")
        assert snapshot["device"] == "trap-01" and snapshot["inference_ms"] > 0


def test_commands_over_the_control_socket(tmp_path, assets, stamped):
    config = _live(tmp_path, stamped["fastestdet"], {"type": "external", "cooldown": "1h"})
    clock = SystemClock()
    camera = FakeCamera(_photo_frames(assets), clock=clock, loop=True)
    daemon = Daemon(config, clock=clock, camera_factory=lambda: camera)
    thread = _run_thread(daemon)
    _, _, socket_path = state_paths(Path(config.device.state_dir))
    try:
        wait_until(socket_path.exists)
        assert send_command(socket_path, {"cmd": "ping"}) == {"ok": True, "pong": True}
        assert send_command(socket_path, {"cmd": "capture", "burst": 3})["ok"]
        wait_until(lambda: daemon.counts["frames"] == 3)
        # Commands are not subject to the sensor cooldown.
        assert send_command(socket_path, {"cmd": "capture"})["ok"]
        wait_until(lambda: daemon.counts["frames"] == 4)
        bad = send_command(socket_path, {"cmd": "capture", "burst": 0})
        assert not bad["ok"] and "burst" in bad["error"]
        unknown = send_command(socket_path, {"cmd": "reboot"})
        assert not unknown["ok"] and "unknown command" in unknown["error"]
        status = send_command(socket_path, {"cmd": "status"})["status"]
        assert status["counts"]["frames"] == 4 and status["camera"]["state"] == "ok"
        # A sensor fire inside the cooldown is ignored.
        assert daemon.external.fire("external")
        assert not daemon.external.fire("external")
        wait_until(lambda: daemon.counts["frames"] == 5)
    finally:
        daemon.stop()
        thread.join(10)
    assert not thread.is_alive()
    with _store(config) as store:
        assert sorted(f.trigger for f in store.frames()) == ["command"] * 4 + ["external"]


def test_failed_camera_is_reopened_and_reported_in_health(tmp_path, assets, stamped):
    config = _live(tmp_path, stamped["fastestdet"], {"type": "timelapse", "interval": "1s"})
    clock = SystemClock()
    camera = FakeCamera(_photo_frames(assets), clock=clock, loop=True, fail_on={1, 2})
    daemon = Daemon(config, clock=clock, camera_factory=lambda: camera)
    thread = _run_thread(daemon)
    try:
        wait_until(lambda: hasattr(daemon, "camera"))
        wait_until(lambda: daemon.camera.reopened >= 1 and daemon.counts["frames"] >= 2, timeout=30)
        wait_until(lambda: daemon.camera.failures >= 2 and daemon.camera.state == "ok", timeout=30)
        time.sleep(0.3)  # one more health snapshot
    finally:
        daemon.stop()
        thread.join(10)
    with _store(config) as store:
        snapshots = [json.loads(r[0]) for r in store.query("SELECT snapshot FROM health ORDER BY id")]
    failed = [s for s in snapshots if s["camera"]["state"] == "failed"]
    assert failed and "simulated failure" in failed[0]["camera"]["last_error"]
    assert snapshots[-1]["camera"]["reopened"] >= 1 and snapshots[-1]["camera"]["failures"] >= 2
    assert camera.opens >= 2


def test_once_with_a_live_camera_captures_one_burst(tmp_path, assets, stamped):
    config = _live(tmp_path, stamped["fastestdet"], {"type": "timelapse", "interval": "6h", "burst": 3,
                                                     "burst_interval": "0s"})
    camera = FakeCamera(_photo_frames(assets), clock=SystemClock())
    started = time.monotonic()
    assert Daemon(config, once=True, camera_factory=lambda: camera).run() == 0
    assert time.monotonic() - started < 30  # no wait for the 6 h slot
    with _store(config) as store:
        assert [f.burst_index for f in store.frames()] == [0, 1, 2]


# -- disk floor ---------------------------------------------------------------------------------------

def test_disk_floor_drops_images_but_keeps_every_result(tmp_path, assets, stamped):
    photos = _copy_photos(assets, tmp_path / "photos", 8)
    config = _config(tmp_path, stamped["fastestdet"], storage={"min_free": 0, "save_images": "all"},
                     privacy={"person": "keep"})
    assert Daemon(config, once=True).run() == 0
    with _store(config) as store:
        assert all(f.image_path for f in store.frames())
        events_before = [e.uid for e in store.events()]
    for photo in photos:
        shutil.copy(photo, tmp_path / "photos" / f"later-{photo.name}")
    # A floor no disk can meet: retention drops every image it may, detection goes on without images.
    full = _config(tmp_path, stamped["fastestdet"], storage={"min_free": "1000TB", "save_images": "all"},
                   privacy={"person": "keep"})
    daemon = Daemon(full, once=True)
    assert daemon.run() == 0
    with _store(config) as store:
        frames = store.frames()
        assert len(frames) == 16
        assert all(f.image_path is None for f in frames)
        assert not any(store.images_dir.rglob("*.jpg"))
        assert [e.uid for e in store.events()][: len(events_before)] == events_before
        assert sum(bool(f.detections) for f in frames) == 2 * sum(
            bool(f.detections) for f in frames if not Path(f.source).name.startswith("later-"))
        snapshot = json.loads(store.query("SELECT snapshot FROM health ORDER BY id DESC LIMIT 1")[0][0])
    assert snapshot["disk_low"] is True


# -- pipeline stages through the daemon ----------------------------------------------------------

def test_classifier_runs_on_crops_and_the_burst_votes(tmp_path, assets, stamped, classifier_model):
    config = _live(tmp_path, stamped["fastestdet"], {"type": "timelapse", "interval": "6h", "burst": 3,
                                                     "burst_interval": "0s"},
                   classifier={"model": str(classifier_model), "margin": 0.0})
    frame = _photo_frames(assets)[0]
    camera = FakeCamera([frame] * 3, clock=SystemClock())
    assert Daemon(config, once=True, camera_factory=lambda: camera).run() == 0
    with _store(config) as store:
        frames = store.frames()
        (event,) = store.events()
    classified = [d.classification for f in frames for d in f.detections if d.classification]
    assert classified, "no detection crop was classified"
    assert all(1 <= cid < 1000 and 0 < prob <= 1 for cid, _label, prob in classified)
    vote = event.summary["classification"]
    # Three identical frames: each crop votes the same way in each, so every tally is a multiple of 3.
    per_frame = sum(d.classification is not None for d in frames[0].detections)
    assert vote["voters"] == 3 * per_frame == len(classified)
    assert vote["votes"] >= 3 and all(v["votes"] % 3 == 0 for v in vote["tally"]) and vote["label"]


def test_sticky_mode_reports_only_new_objects(tmp_path, assets, stamped):
    config = _live(tmp_path, stamped["fastestdet"], {"type": "timelapse", "interval": "6h"},
                   events={"mode": "sticky"})
    card = _photo_frames(assets)[1]
    assert Daemon(config, once=True, camera_factory=lambda: FakeCamera([card], clock=SystemClock())).run() == 0
    # The same card again (a restart in between): nothing new, so no event, yet the frame is recorded.
    assert Daemon(config, once=True, camera_factory=lambda: FakeCamera([card], clock=SystemClock())).run() == 0
    with _store(config) as store:
        first, second = store.frames()
        assert first.detections and all(d.new for d in first.detections)
        assert len(second.detections) == len(first.detections)
        assert not any(d.new for d in second.detections)
        assert [e.burst_id for e in store.events()] == [first.burst_id]

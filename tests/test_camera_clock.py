"""A folder camera's photo keeps its own (camera) time end to end, while a live camera's unsynchronised
event is still corrected: real EXIF, the real folder camera, pipeline and detector, the device's
event messages, the wire decoder, and the collector's ingest on a real SQLite database."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import cv2
import pytest
from sqlalchemy import select
from test_capture import _tiff, _with_exif

from collector.db import migrate, open_engine
from collector.db.schema import events
from collector.ingest import Incoming, day_of, store_batch
from edge import payload as wire
from edge import payload_decode as decode
from edge.capture import FakeCamera
from edge.capture.folder import FolderCamera
from edge.clock import FakeClock
from edge.config import config_from_dict
from edge.inference.detector import Detector
from edge.mqtt.device import EventMessages
from edge.pipeline import FramePipeline
from edge.store import new_uid

BOOT = "5f1c9a3e-8d2b-4c7a-9e1f-0a2b3c4d5e6f"
PHOTO_TIME = datetime(2018, 5, 12, 6, 41, 3, tzinfo=UTC)  # the camera's EXIF time
DEVICE_START = datetime(1970, 1, 1, 0, 1, 40, tzinfo=UTC)  # a Pi booted without network or RTC
SYNCED_AT = datetime(2026, 6, 1, 3, 15, tzinfo=UTC)  # NTP later: the health message gives the reference


def _config(camera: dict) -> object:
    return config_from_dict({"device": {"id": "trap-01"}, "camera": camera, "trigger": {"type": "timelapse",
                                                                                       "interval": "1h"},
                             "detector": {"model": "d.onnx", "conf": 0.15}, "mqtt": {"url": "mqtt://h"}})


def _messages(build: EventMessages, pipeline: FramePipeline, frame, trigger: str) -> bytes:
    processed = pipeline.process(frame, trigger=trigger, burst_id=new_uid(), index=0)
    event = pipeline.event([processed], trigger=trigger, burst_id=processed.record.burst_id)
    assert event is not None, "the photo must give a detection for this test to mean anything"
    (message,) = [m for m in build(event, [processed]) if m.topic.endswith("/event")]
    return message.payload


@pytest.mark.assets
def test_a_2018_folder_photo_stays_2018_while_a_live_unsynced_event_is_corrected(tmp_path: Path, assets: Path,
                                                                                   stamped: dict) -> None:
    photo = sorted((assets / "camera_traps_lila" / "images").iterdir())[1]
    folder = tmp_path / "card"
    (folder / "2018").mkdir(parents=True)
    exif = _tiff({}, {0x9003: PHOTO_TIME.strftime("%Y:%m:%d %H:%M:%S")})
    (folder / "2018" / "IMG_0007.JPG").write_bytes(_with_exif(photo.read_bytes(), exif))

    clock = FakeClock(DEVICE_START, synchronised=False, boot_id=BOOT)
    with Detector(stamped["fastestdet"], conf=0.15, spin=False) as detector:
        pipeline = FramePipeline(detector=detector, clock=clock, images_dir=tmp_path / "images", save_images="none")
        # The folder camera: a timelapse trigger reads the card (not trigger "file"), the clock unsynced.
        camera = FolderCamera(folder, clock=clock, tz=UTC)
        camera.open()
        frame = camera.capture()
        camera.close()
        assert frame is not None and frame.captured_at == PHOTO_TIME
        folder_payload = _messages(EventMessages(_config({"type": "folder", "path": str(folder)}),
                                                 model_id="7397320f", sticky=False), pipeline, frame, "timelapse")
        # A live camera on the same boot, 30 s later: its time is the unsynchronised device clock's.
        clock.advance(30)
        live_camera = FakeCamera([cv2.imread(str(photo))], clock=clock)
        live_camera.open()
        live_frame = live_camera.capture()
        live_payload = _messages(EventMessages(_config({"type": "opencv", "source": 0}), model_id="7397320f",
                                               sticky=False), pipeline, live_frame, "timelapse")
    live_boot_time = int(clock.monotonic())

    folder_msg, live_msg = json.loads(folder_payload), json.loads(live_payload)
    assert (folder_msg["t"], folder_msg["s"], folder_msg["c"], folder_msg["i"]) == \
        (int(PHOTO_TIME.timestamp()), 1, 1, "2018/IMG_0007.JPG")
    assert "b" not in folder_msg and "m" not in folder_msg
    assert (live_msg["s"], live_msg["m"], "c" in live_msg) == (0, live_boot_time, False)
    assert decode.decode_event(folder_payload)["camera_clock"] is True
    assert decode.decode_event(live_payload)["camera_clock"] is False

    # Later in the same boot the clock is synchronised: the health message is the boot's reference.
    clock.advance(600)
    clock.set(SYNCED_AT)
    clock.is_synchronised = True
    health = wire.encode_health({"at": clock.now().isoformat(), "clock_synchronised": True, "boot_id": BOOT,
                                 "monotonic_s": clock.monotonic()}, device="trap-01")
    engine = open_engine(f"sqlite:///{tmp_path / 'collector.db'}")
    migrate(engine)
    try:
        for batch in ([("event", folder_payload), ("event", live_payload)], [("health", health)]):
            with engine.begin() as conn:
                result = store_batch(conn, [Incoming(f"wildedge/trap-01/{kind}", data, 1_780_290_000)
                                            for kind, data in batch], prefix="wildedge", max_payload=1 << 20)
            assert [o.reject for o in result.outcomes] == [None] * len(batch)
        with engine.connect() as conn:
            stored = {row.id: row for row in conn.execute(select(events.c.id, events.c.time, events.c.day,
                                                                 events.c.clock))}
    finally:
        engine.dispose()
    folder_row = stored[str(uuid.UUID(decode.decode_event(folder_payload)["id"]))]
    live_row = stored[str(uuid.UUID(decode.decode_event(live_payload)["id"]))]
    assert (folder_row.time, folder_row.day, folder_row.clock) == \
        (int(PHOTO_TIME.timestamp()), "2018-05-12", "camera")
    offset = int(SYNCED_AT.timestamp()) - int(clock.monotonic())
    assert (live_row.time, live_row.clock) == (live_boot_time + offset, "corrected")
    assert live_row.day == day_of(live_boot_time + offset) == "2026-06-01"


@pytest.mark.parametrize("order", ["event_first", "reference_first"])
def test_camera_clock_events_of_any_trigger_are_never_rewritten(tmp_path: Path, order: str) -> None:
    """"c":1 marks a folder camera's photo whatever its trigger (here a timelapse reading the card); a live
    unsynchronised event of the same boot in the same batches is corrected."""
    boot, t_ref, m_ref = "5f1c9a3e", 1_780_283_700, 5_476

    def eid() -> str:
        return wire.encode_id(str(uuid.uuid4()))

    photo = {"v": 1, "d": "trap-01", "e": eid(), "t": 1_526_107_263, "s": 1, "c": 1, "g": "t",
             "i": "2018/IMG_0007.JPG", "x": [[0, 900, 100, 200, 300, 400]], "mv": "7397320f"}
    live = {"v": 1, "d": "trap-01", "e": eid(), "t": 90, "s": 0, "b": boot, "m": 90, "g": "t",
            "x": [[0, 900, 100, 200, 300, 400]], "mv": "7397320f"}
    health = {"v": 1, "d": "trap-01", "t": t_ref, "s": 1, "b": boot, "m": m_ref}
    batches = [[("event", photo), ("event", live)], [("health", health)]]
    engine = open_engine(f"sqlite:///{tmp_path / 'collector.db'}")
    migrate(engine)
    try:
        for batch in batches if order == "event_first" else reversed(batches):
            with engine.begin() as conn:
                result = store_batch(conn, [Incoming(f"wildedge/trap-01/{kind}", json.dumps(msg).encode(), 1)
                                            for kind, msg in batch], prefix="wildedge", max_payload=1 << 20)
            assert result.count("rejected") == 0
        with engine.connect() as conn:
            stored = {row.id: (row.time, row.day, row.clock) for row in conn.execute(
                select(events.c.id, events.c.time, events.c.day, events.c.clock))}
    finally:
        engine.dispose()
    assert stored[wire.decode_id(photo["e"])] == (1_526_107_263, "2018-05-12", "camera")
    offset = t_ref - m_ref
    assert stored[wire.decode_id(live["e"])] == (90 + offset, day_of(90 + offset), "corrected")

"""Field faults: photo times the wire cannot carry, and crops of people.

A photo whose EXIF time falls before 1970 UTC or in year 0001 once stopped ``wildedge run`` at the
payload encoder, at every restart (one photo of six recorded); with ``[mqtt] crops`` and privacy
``keep`` or ``blur``, crops of people were published. These tests run the real daemon over real
photos with a real mosquitto.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from daemon_helpers import WILDEDGE, folder_config
from mqtt_helpers import Subscriber

from edge.capture.exif import capture_time, exif_time_utc
from edge.group import PrivacyPolicy
from edge.inference.detector import Detection
from edge.payload import encode_id

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
FILE_TIME = datetime(2025, 5, 4, 3, 2, 1, tzinfo=timezone.utc)


def exif_app1(when: str, offset: str | None = None) -> bytes:
    """A JPEG APP1 segment with IFD0 -> Exif IFD: DateTimeOriginal ``when`` and OffsetTimeOriginal."""
    values = [(0x9003, when.encode() + b"\x00")]
    if offset is not None:
        values.append((0x9011, offset.encode() + b"\x00"))
    exif_at = 8 + 2 + 12 + 4
    data_at = exif_at + 2 + 12 * len(values) + 4
    entries, blob = b"", b""
    for tag, value in values:
        entries += struct.pack("<HHII", tag, 2, len(value), data_at + len(blob))
        blob += value
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<HHHII", 1, 0x8769, 4, 1, exif_at) + b"\x00" * 4
            + struct.pack("<H", len(values)) + entries + b"\x00" * 4 + blob)
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def with_exif(jpeg: bytes, segment: bytes) -> bytes:
    """``jpeg`` with its own APP1 segments removed and ``segment`` put right after SOI."""
    assert jpeg[:2] == b"\xff\xd8"
    out, pos = [b"\xff\xd8", segment], 2
    while jpeg[pos] == 0xFF and jpeg[pos + 1] not in (0xDA, 0xD9):
        length = struct.unpack(">H", jpeg[pos + 2:pos + 4])[0]
        if jpeg[pos + 1] != 0xE1:
            out.append(jpeg[pos:pos + 2 + length])
        pos += 2 + length
    out.append(jpeg[pos:])
    return b"".join(out)


# -- unit level -------------------------------------------------------------------------------------
BAD_TIMES = [("1970:01:01 00:30:00", "+02:00"), ("0001:01:01 00:00:00", None), ("0001:01:01 00:00:00", "-05:00"),
             ("0001:01:01 00:00:00", "+05:00")]


@pytest.mark.parametrize(("when", "offset"), BAD_TIMES)
def test_an_exif_time_outside_1970_9999_falls_back_to_the_file_then_the_clock(when, offset):
    data = with_exif(b"\xff\xd8\xff\xd9", exif_app1(when, offset))
    assert capture_time(data, mtime=FILE_TIME.timestamp(), now=NOW, tz=timezone.utc) == (FILE_TIME, "file")
    assert capture_time(data, mtime=-3600.0, now=NOW, tz=timezone.utc) == (NOW, "clock")
    assert capture_time(data, mtime=1e20, now=NOW, tz=timezone.utc) == (NOW, "clock")


def test_a_good_exif_time_and_its_offset_are_kept():
    data = with_exif(b"\xff\xd8\xff\xd9", exif_app1("1970:01:01 02:30:00", "+02:00"))
    assert exif_time_utc(data) == datetime(1970, 1, 1, 0, 30, tzinfo=timezone.utc)
    assert capture_time(data, mtime=FILE_TIME.timestamp(), now=NOW) == (
        datetime(1970, 1, 1, 0, 30, tzinfo=timezone.utc), "exif")


def test_people_beside_a_cropped_animal_are_pixelated_in_every_mode():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    person = Detection(box=(10.0, 10.0, 90.0, 190.0), score=0.2, class_id=0, label="Person")
    animal = Detection(box=(150.0, 50.0, 290.0, 150.0), score=0.9, class_id=16, label="dog")
    for mode in ("keep", "blur", "drop"):
        policy = PrivacyPolicy(mode=mode, min_score=0.5)  # the person's score is below it: still hidden
        out = policy.for_crop(image, [person, animal])
        assert out is not image and not policy.crop_allowed(person) and policy.crop_allowed(animal)
        assert np.array_equal(out[:, 110:], image[:, 110:])  # the animal is untouched
        assert np.abs(out[10:190, 10:90].astype(int) - image[10:190, 10:90]).mean() > 40
        assert policy.for_crop(image, [animal]) is image


# -- the daemon, as a process, with a real broker ---------------------------------------------------
def _config(tmp_path: Path, *, model: Path, photos: Path, url: str, person: str = "keep", crops: bool = False) -> Path:
    return folder_config(
        tmp_path / f"wildedge-{person}.toml", state=tmp_path / f"state-{person}", photos=photos, model=model,
        device='timezone = "UTC"', detector="conf = 0.15",
        extra=f'[privacy]\nperson = "{person}"\n[mqtt]\nurl = "{url}"\nkeepalive = "5s"\ndrain_timeout = "30s"\n'
              f'crops = {str(crops).lower()}\ncrop_min_interval = "0s"')


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.assets
def test_photos_with_times_outside_1970_9999_are_all_recorded_and_delivered(tmp_path, assets, stamped, broker):
    photos = tmp_path / "card"
    photos.mkdir()
    sources = sorted((assets / "coco_val2017_animal_samples").glob("*.jpg"))
    times = BAD_TIMES + [("1970:01:01 00:30:00", "+01:00"), ("2024:05:01 12:00:00", "+02:00")]
    for i, (src, (when, offset)) in enumerate(zip(sources, times)):
        dst = photos / f"IMG_{i}.jpg"
        dst.write_bytes(with_exif(src.read_bytes(), exif_app1(when, offset)))
        os.utime(dst, (FILE_TIME.timestamp(), FILE_TIME.timestamp()))
    os.utime(photos / "IMG_4.jpg", (-86400.0, -86400.0))  # and a file time before 1970: the clock's
    config = _config(tmp_path, model=stamped["yolox"], photos=photos, url=broker.url)
    sub = Subscriber(broker.host, broker.port)
    try:
        started = datetime.now(timezone.utc)
        run = subprocess.run([*WILDEDGE, "run", "--config", str(config), "--once"], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "Traceback" not in run.stderr
        db = tmp_path / "state-keep" / "wildedge.db"
        frames = dict(_rows(db, "SELECT source, captured_at FROM frames WHERE failure IS NULL"))
        assert len(frames) == 6  # before: 1 of 6, then the same crash at every restart
        got = {Path(s).name: datetime.fromisoformat(t) for s, t in frames.items()}
        for name in ("IMG_0.jpg", "IMG_1.jpg", "IMG_2.jpg", "IMG_3.jpg"):
            assert got[name] == FILE_TIME
        assert started - timedelta(seconds=1) <= got["IMG_4.jpg"] <= datetime.now(timezone.utc)
        assert got["IMG_5.jpg"] == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
        events = _rows(db, "SELECT uid FROM events")
        assert len(events) == 6  # one event per photo: each shows animals
        assert _rows(db, "SELECT count(*) FROM outbox") == [(0,)]
        sub.wait_for(lambda: len(sub.on("/event")) == len(events))
        assert {m["e"] for m in sub.json("/event")} == {encode_id(uid) for (uid,) in events}
        assert all(m["t"] >= 0 for m in sub.json("/event"))
        # A second run finds every file done: nothing to crash on, nothing recorded twice.
        again = subprocess.run([*WILDEDGE, "run", "--config", str(config), "--once"], capture_output=True,
                               text=True, timeout=120)
        assert again.returncode == 0 and _rows(db, "SELECT count(*) FROM frames") == [(6,)]
    finally:
        sub.close()


@pytest.mark.assets
@pytest.mark.parametrize("person", ["keep", "blur", "drop"])
def test_no_crop_of_a_person_is_ever_published(tmp_path, assets, stamped, broker, person):
    photos = tmp_path / "card"
    photos.mkdir()
    for folder in ("voc2007_labeled/images", "coco_val2017_animal_samples"):
        for src in sorted((assets / folder).glob("*.jpg")):
            shutil.copy(src, photos / src.name)
    config = _config(tmp_path, model=stamped["yolox"], photos=photos, url=broker.url, person=person, crops=True)
    sub = Subscriber(broker.host, broker.port)
    try:
        run = subprocess.run([*WILDEDGE, "run", "--config", str(config), "--once"], capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        db = tmp_path / f"state-{person}" / "wildedge.db"
        events = {encode_id(uid): json.loads(summary)["best"]["label"]
                  for uid, summary in _rows(db, "SELECT uid, summary FROM events")}
        sub.wait_for(lambda: len(sub.on("/event")) == len(events))
        crops = {m.topic.rsplit("/", 1)[1]: m.payload for m in sub.messages if "/crop/" in m.topic}
        people = {e for e, label in events.items() if label == "person"}
        assert len(people) >= 10  # the VOC photos have many people
        leaked = set(crops) & people
        assert not leaked, f"{len(leaked)} crops of people of {len(people)} person events"  # before: keep, blur
        animals = {e for e in crops if events[e] != "person"}
        assert len(animals) >= 3 and set(crops) == animals
        for data in crops.values():
            assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    finally:
        sub.close()


@pytest.mark.assets
def test_an_event_that_cannot_be_encoded_is_stored_and_counted_not_fatal(tmp_path, assets, stamped, broker):
    from edge.config import config_from_dict
    from edge.daemon import Daemon

    photos = tmp_path / "card"
    photos.mkdir()
    for src in sorted((assets / "coco_val2017_animal_samples").glob("*.jpg"))[:3]:
        shutil.copy(src, photos / src.name)
    config = config_from_dict({
        "device": {"id": "trap-01", "state_dir": str(tmp_path / "state"), "timezone": "UTC"},
        "camera": {"type": "folder", "path": str(photos)},
        "detector": {"model": str(stamped["yolox"]), "conf": 0.15},
        "storage": {"min_free": 0},
        "mqtt": {"url": broker.url, "keepalive": "5s"},
    })
    calls = []

    def unencodable(event, frames):
        calls.append(event.uid)
        raise ValueError("time outside 1970..9999: a bug elsewhere")

    daemon = Daemon(config, once=True, messages=unencodable)
    assert daemon.run() == 0
    db = tmp_path / "state" / "wildedge.db"
    assert _rows(db, "SELECT count(*) FROM frames") == [(3,)]
    assert sorted(uid for (uid,) in _rows(db, "SELECT uid FROM events")) == sorted(calls) and len(calls) == 3
    assert daemon.counts["unsendable"] == 3 and daemon.counts["events"] == 3

"""Capture backends: folder replay/watch, EXIF time, OpenCV, picamera2 (faked module), fake, reopening."""

from __future__ import annotations

import logging
import os
import random
import shutil
import struct
import sys
import threading
import types
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest

from edge.capture import (
    FakeCamera,
    FolderCamera,
    OpenCVCamera,
    Picamera2Camera,
    ReopeningCamera,
    describe_source,
    exif_time_utc,
    read_exif_datetime,
)
from edge.clock import FakeClock
from edge.errors import CaptureError, ConfigError, ImageReadError

START = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def photos(assets: Path) -> list[Path]:
    """Three real camera-trap photos, two of them with EXIF DateTimeOriginal."""
    folder = assets / "camera_traps_lila" / "images"
    names = ["ena24_7904.jpg", "idaho_camera_traps_loc_0062_loc_0062_im_004678.jpg",
             "snapshot_karoo_KAR_S1_E03_E03_R1_KAR_S1_E03_R1_IMAG0440.JPG"]
    return [folder / name for name in names]


def _image(path: Path, value: int = 128, size: tuple[int, int] = (32, 24)) -> Path:
    """A small flat image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix.lower(), np.full((size[1], size[0], 3), value, np.uint8))
    assert ok
    path.write_bytes(data.tobytes())
    return path


# -- EXIF -----------------------------------------------------------------------------------------
def _tiff(ifd0: dict[int, str], exif: dict[int, str] | None, order: str = "<") -> bytes:
    """A TIFF block: IFD0 with ASCII tags, an Exif IFD (pointer 0x8769) when ``exif`` is given."""
    entries0: dict[int, str | None] = dict(ifd0)
    if exif is not None:
        entries0[0x8769] = None
    exif_offset = 8 + 2 + 12 * len(entries0) + 4
    data_offset = exif_offset + (2 + 12 * len(exif) + 4 if exif is not None else 0)
    blob = bytearray()

    def ifd(entries: dict[int, str | None]) -> bytes:
        out = struct.pack(order + "H", len(entries))
        for tag in sorted(entries):
            value = entries[tag]
            if value is None:
                out += struct.pack(order + "HHII", tag, 4, 1, exif_offset)
                continue
            raw = value.encode() + b"\x00"
            if len(raw) <= 4:
                out += struct.pack(order + "HHI", tag, 2, len(raw)) + raw.ljust(4, b"\x00")
            else:
                out += struct.pack(order + "HHII", tag, 2, len(raw), data_offset + len(blob))
                blob.extend(raw)
        return out + struct.pack(order + "I", 0)

    body = ifd(entries0) + (ifd(exif) if exif is not None else b"")
    return (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8) + body + bytes(blob)


def _with_exif(jpeg: bytes, tiff: bytes) -> bytes:
    """``jpeg`` with an APP1 Exif segment right after its SOI marker."""
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _jpeg(value: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((16, 16, 3), value, np.uint8))
    assert ok
    return data.tobytes()


def test_exif_datetime_original_preferred_over_datetime_both_byte_orders():
    for order in "<>":
        tiff = _tiff({0x0132: "2020:01:01 00:00:00"}, {0x9003: "2023:06:01 21:30:05", 0x9291: "25"}, order)
        data = _with_exif(_jpeg(), tiff)
        assert read_exif_datetime(data) == datetime(2023, 6, 1, 21, 30, 5, 250000)
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (16, 16, 3)


def test_exif_falls_back_to_datetime_and_reads_offsets():
    assert read_exif_datetime(_with_exif(_jpeg(), _tiff({0x0132: "2021:02:03 04:05:06"}, None))) == \
        datetime(2021, 2, 3, 4, 5, 6)
    tiff = _tiff({}, {0x9003: "2023:06:01 21:30:05", 0x9011: "-03:30"})
    when = read_exif_datetime(_with_exif(_jpeg(), tiff))
    assert when == datetime(2023, 6, 2, 1, 0, 5, tzinfo=timezone.utc)
    # An explicit offset wins over the device zone.
    assert exif_time_utc(_with_exif(_jpeg(), tiff), tz=ZoneInfo("Asia/Tokyo")) == when


def test_exif_local_time_read_in_the_device_zone():
    data = _with_exif(_jpeg(), _tiff({}, {0x9003: "2023:06:01 21:30:05"}))
    assert exif_time_utc(data, tz=ZoneInfo("Europe/Amsterdam")) == datetime(2023, 6, 1, 19, 30, 5, tzinfo=timezone.utc)
    assert exif_time_utc(data, tz=ZoneInfo("America/New_York")) == datetime(2023, 6, 2, 1, 30, 5, tzinfo=timezone.utc)


def test_exif_matches_pillow_on_real_camera_trap_photos(assets):
    image_module = pytest.importorskip("PIL.Image")
    found = 0
    for path in sorted((assets / "camera_traps_lila" / "images").iterdir()):
        with image_module.open(path) as image:
            exif = image.getexif()
        text = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)
        expected = datetime.strptime(text.strip("\x00 "), "%Y:%m:%d %H:%M:%S") if text else None
        mine = read_exif_datetime(path.read_bytes())
        assert mine == expected, path.name
        found += mine is not None
    assert found >= 5


@pytest.mark.parametrize("junk", [
    b"", b"\xff", b"\xff\xd8", b"\xff\xd8\xff\xe1\x00", b"II*\x00", b"MM\x00*\xff\xff\xff\xff",
    b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00II*\x00\x08\x00", b"\x89PNG\r\n\x1a\n" + bytes(64), bytes(1000),
])
def test_exif_junk_returns_none(junk):
    assert read_exif_datetime(junk) is None
    assert exif_time_utc(junk) is None


def test_exif_never_raises_on_truncated_or_corrupted_blocks():
    good = _with_exif(_jpeg(), _tiff({0x0132: "2021:02:03 04:05:06"}, {0x9003: "2023:06:01 21:30:05"}))
    # A cut may lose DateTimeOriginal and keep IFD0's DateTime, or lose both.
    allowed = (None, datetime(2023, 6, 1, 21, 30, 5), datetime(2021, 2, 3, 4, 5, 6))
    results = [read_exif_datetime(good[:end]) for end in range(len(good) // 2)]
    assert set(results) == set(allowed)
    rng = random.Random(4)
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(2, 120)] = rng.randrange(256)
        result = read_exif_datetime(bytes(data))
        assert result is None or isinstance(result, datetime)


def test_exif_unset_camera_clock_and_self_pointing_ifd_give_none():
    assert read_exif_datetime(_with_exif(_jpeg(), _tiff({}, {0x9003: "0000:00:00 00:00:00"}))) is None
    loop = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<HHHII", 1, 0x8769, 4, 1, 8) + struct.pack("<I", 0)
    assert read_exif_datetime(loop) is None


# -- folder: replay -------------------------------------------------------------------------------
def _trap_card(root: Path) -> None:
    for name in ["IMG_10.JPG", "IMG_2.jpg", "img_1.PNG", "sub/IMG_3.jpg", "Sub2/IMG_1.jpeg", ".hidden.jpg",
                 "._IMG_5.JPG", ".Trashes/IMG_6.jpg", "notes/IMG_7.bmp"]:
        _image(root / name)
    (root / "notes.txt").write_text("not an image")


def _drain(camera) -> list[str]:
    sources = []
    while (frame := camera.capture()) is not None:
        sources.append(frame.source)
    return sources


def test_replay_natural_order_skips_hidden_and_other_files(tmp_path, clock):
    _trap_card(tmp_path)
    with FolderCamera(tmp_path, clock=clock) as camera:
        assert camera.pending() == 6
        assert camera.preview() is None
        sources = _drain(camera)
        assert camera.exhausted and camera.pending() == 0
    relative = [os.path.relpath(s, tmp_path) for s in sources]
    assert relative == ["img_1.PNG", "IMG_2.jpg", "IMG_10.JPG", "notes/IMG_7.bmp", "sub/IMG_3.jpg", "Sub2/IMG_1.jpeg"]
    assert all(os.path.isabs(s) for s in sources)


def test_replay_not_recursive_and_custom_extensions(tmp_path, clock):
    _trap_card(tmp_path)
    with FolderCamera(tmp_path, recursive=False, extensions=("jpg",), clock=clock) as camera:
        assert [Path(s).name for s in _drain(camera)] == ["IMG_2.jpg", "IMG_10.JPG"]


def test_replay_skips_processed_files(tmp_path, clock):
    _trap_card(tmp_path)
    done = {str(tmp_path / "IMG_2.jpg"), str(tmp_path / "sub" / "IMG_3.jpg")}
    asked: list[str] = []

    def is_processed(path: str) -> bool:
        asked.append(path)
        return path in done

    with FolderCamera(tmp_path, is_processed=is_processed, clock=clock) as camera:
        assert camera.pending() == 4
        sources = _drain(camera)
    assert not done & set(sources) and len(sources) == 4
    assert len(asked) == 6  # each file asked once, when the listing was built


def test_replay_real_photos_with_exif_and_mtime_times(tmp_path, clock, photos):
    for i, photo in enumerate(photos):
        shutil.copy(photo, tmp_path / f"IMG_{i + 1:04d}.JPG")
    mtime = datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc).timestamp()
    os.utime(tmp_path / "IMG_0001.JPG", (mtime, mtime))  # ena24_7904.jpg has no EXIF date
    clock.advance(5)
    with FolderCamera(tmp_path, clock=clock, tz=ZoneInfo("America/Denver")) as camera:
        frames = [camera.capture() for _ in photos]
        assert camera.capture() is None
    for frame, photo in zip(frames, photos):
        assert np.array_equal(frame.image, cv2.imread(str(photo)))
        assert frame.monotonic == clock.monotonic()
    assert frames[0].captured_at == datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)
    # Idaho, 2016-02-03 10:45 local (MST, UTC-7).
    assert frames[1].captured_at == datetime(2016, 2, 3, 17, 45, tzinfo=timezone.utc)


def test_undecodable_file_raises_image_read_error_then_continues(tmp_path, clock, photos, caplog):
    _image(tmp_path / "IMG_1.jpg")
    (tmp_path / "IMG_2.jpg").write_bytes(b"this is not a JPEG at all")
    data = photos[0].read_bytes()
    (tmp_path / "IMG_3.jpg").write_bytes(data[: len(data) // 2])  # a copy cut short
    _image(tmp_path / "IMG_4.jpg")
    with FolderCamera(tmp_path, clock=clock) as camera:
        assert camera.capture().source.endswith("IMG_1.jpg")
        for bad in ("IMG_2.jpg", "IMG_3.jpg"):
            with caplog.at_level(logging.WARNING), pytest.raises(ImageReadError) as info:
                camera.capture()
            assert info.value.source == str(tmp_path / bad)
        assert camera.capture().source.endswith("IMG_4.jpg")
        assert camera.capture() is None
    assert sum("IMG_3.jpg" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING) == 1


def test_file_deleted_after_listing_is_an_image_read_error(tmp_path, clock):
    _image(tmp_path / "a.jpg")
    _image(tmp_path / "b.jpg")
    with FolderCamera(tmp_path, clock=clock) as camera:
        (tmp_path / "a.jpg").unlink()
        with pytest.raises(ImageReadError) as info:
            camera.capture()
        assert info.value.source == str(tmp_path / "a.jpg")
        assert camera.capture().source == str(tmp_path / "b.jpg")


def test_missing_or_unusable_folder_is_a_capture_error(tmp_path, clock):
    with pytest.raises(CaptureError, match="does not exist"):
        FolderCamera(tmp_path / "nope", clock=clock).open()
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(CaptureError, match="does not exist"):
        FolderCamera(tmp_path / "file.jpg", clock=clock).open()
    with pytest.raises(ValueError, match="mode"):
        FolderCamera(tmp_path, mode="live", clock=clock)  # type: ignore[arg-type]


# -- folder: watch --------------------------------------------------------------------------------
def test_watch_returns_a_file_only_after_it_settled(tmp_path, clock):
    camera = FolderCamera(tmp_path, mode="watch", settle=timedelta(seconds=2), poll=timedelta(seconds=2),
                          clock=clock)
    with camera:
        assert camera.capture() is None  # empty folder
        _image(tmp_path / "IMG_1.jpg")
        assert camera.capture() is None  # no rescan before ``poll``
        clock.advance(2)
        assert camera.capture() is None  # seen now, not yet unchanged for ``settle``
        assert camera.pending() == 1
        # A second file is still being written: it grows between scans.
        partial = tmp_path / "IMG_2.jpg"
        data = _jpeg()
        partial.write_bytes(data[:40])
        clock.advance(2)
        frame = camera.capture()
        assert frame is not None and frame.source == str(tmp_path / "IMG_1.jpg")
        assert camera.capture() is None
        partial.write_bytes(data[:80])
        clock.advance(2)
        assert camera.capture() is None  # changed since the last scan
        partial.write_bytes(data)
        clock.advance(2)
        assert camera.capture() is None
        clock.advance(2)
        assert camera.capture().source == str(partial)
        assert not camera.exhausted
        # Touching or rewriting a returned file never brings it back.
        _image(tmp_path / "IMG_1.jpg", value=10)
        for _ in range(3):
            clock.advance(2)
            assert camera.capture() is None
        assert camera.pending() == 0


def test_watch_skips_processed_hidden_and_empty_files(tmp_path, clock):
    _image(tmp_path / "old.jpg")
    _image(tmp_path / ".partial.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    asked: list[str] = []

    def is_processed(path: str) -> bool:
        asked.append(path)
        return path.endswith("old.jpg")

    with FolderCamera(tmp_path, mode="watch", settle=timedelta(0), is_processed=is_processed,
                      clock=clock) as camera:
        for _ in range(3):
            assert camera.capture() is None
            clock.advance(2)
        _image(tmp_path / "new.jpg")
        clock.advance(2)
        assert camera.capture().source == str(tmp_path / "new.jpg")
    assert asked.count(str(tmp_path / "old.jpg")) == 1  # asked once, remembered after


def test_watch_folder_removed_is_a_capture_error(tmp_path, clock):
    root = tmp_path / "card"
    root.mkdir()
    with FolderCamera(root, mode="watch", clock=clock) as camera:
        assert camera.capture() is None
        root.rmdir()
        clock.advance(2)
        with pytest.raises(CaptureError, match="disappeared"):
            camera.capture()


# -- OpenCV ---------------------------------------------------------------------------------------
def _video(path: Path, count: int = 12, size: tuple[int, int] = (160, 120), step: int = 16) -> Path:
    """An MJPG .avi whose frame i is flat grey at ``step * i``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened()
    for i in range(count):
        writer.write(np.full((size[1], size[0], 3), step * i, np.uint8))
    writer.release()
    return path


def _index(image: np.ndarray, step: int = 16) -> int:
    return round(float(image.mean()) / step)


def test_opencv_video_file_frames_in_order_then_none(tmp_path, clock):
    video = _video(tmp_path / "clip.avi")
    with OpenCVCamera(str(video), clock=clock) as camera:
        assert not camera.live
        frames = _drain_frames(camera)
        assert camera.exhausted
        assert camera.capture() is None
    assert [_index(f.image) for f in frames] == list(range(12))
    assert frames[0].image.shape == (120, 160, 3) and frames[0].image.dtype == np.uint8
    assert frames[0].captured_at == START and frames[0].source is None


def _drain_frames(camera) -> list:
    frames = []
    while (frame := camera.capture()) is not None:
        frames.append(frame)
    return frames


def test_opencv_preview_is_small_grey_and_the_next_capture_is_its_frame(tmp_path, clock):
    video = _video(tmp_path / "clip.avi", count=4)
    with OpenCVCamera(str(video), preview_width=80, clock=clock) as camera:
        camera.capture()
        preview = camera.preview()
        assert preview.shape == (60, 80) and preview.dtype == np.uint8
        assert abs(float(preview.mean()) - 16) < 3
        assert _index(camera.capture().image) == 1  # the frame the preview saw
        assert _index(camera.capture().image) == 2


def test_opencv_live_source_gives_fresh_frames_then_fails_when_the_stream_ends(tmp_path, clock):
    video = _video(tmp_path / "clip.avi", count=40, step=6)
    camera = OpenCVCamera(str(video), live=True, timeout=5.0, clock=clock)
    seen: list[int] = []
    with camera:
        with pytest.raises(CaptureError, match="stopped delivering"):
            for _ in range(50):
                seen.append(_index(camera.capture().image, step=6))
    assert seen == sorted(set(seen)) and len(seen) <= 40  # never an old frame twice
    assert not [t for t in threading.enumerate() if t.name.startswith("grab ")]


def test_opencv_bad_sources_are_capture_errors(tmp_path, clock):
    missing = tmp_path / "missing.avi"
    with pytest.raises(CaptureError, match="missing.avi"):
        OpenCVCamera(str(missing), clock=clock).open()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 2048)
    with pytest.raises(CaptureError, match="junk.mp4"):
        OpenCVCamera(str(junk), clock=clock).open()
    with pytest.raises(ValueError):
        OpenCVCamera(-2, clock=clock)
    with pytest.raises(ValueError, match="live cameras"):
        OpenCVCamera(str(tmp_path / "clip.avi"), width=640, clock=clock)


def test_stream_passwords_stay_out_of_names_and_errors():
    assert describe_source("rtsp://admin:hunter2@10.0.0.5:554/h264") == "rtsp://admin:***@10.0.0.5:554/h264"
    assert describe_source("http://cam.local/snapshot.mjpg") == "http://cam.local/snapshot.mjpg"
    assert describe_source(0) == "camera 0"
    camera = OpenCVCamera("rtsp://admin:hunter2@10.0.0.5/live", clock=FakeClock(START))
    assert camera.live and "hunter2" not in camera.name


# -- picamera2 (faked module) ---------------------------------------------------------------------
class _FakePicamera2:
    """The part of picamera2's API the backend uses, logging every call."""

    instances: list[_FakePicamera2] = []
    fail_init: Exception | None = None

    def __init__(self, clock: FakeClock) -> None:
        if _FakePicamera2.fail_init is not None:
            raise _FakePicamera2.fail_init
        self.clock = clock
        self.calls: list[tuple] = []
        self.config: dict = {}
        self.fail_capture: Exception | None = None
        _FakePicamera2.instances.append(self)

    def create_still_configuration(self, main=None, lores=None, **kwargs):
        self.calls.append(("create_still_configuration", main, lores))
        return {"main": dict(main), "lores": dict(lores), **kwargs}

    def configure(self, config):
        self.calls.append(("configure",))
        self.config = config
        self.config["lores"]["size"] = (320, 240)  # libcamera keeps the requested size

    def camera_configuration(self):
        return self.config

    def start(self):
        self.calls.append(("start", self.clock.monotonic()))

    def capture_metadata(self):
        self.calls.append(("capture_metadata", self.clock.monotonic()))
        return {"ExposureTime": 12000, "AnalogueGain": 2.5, "ColourGains": (1.8, 1.4), "Lux": 300.0}

    def set_controls(self, controls):
        self.calls.append(("set_controls", dict(controls)))

    def capture_array(self, name="main"):
        self.calls.append(("capture_array", name))
        if self.fail_capture is not None:
            raise self.fail_capture
        if name == "main":
            image = np.zeros((480, 640, 3), np.uint8)
            image[..., 0] = 200  # blue channel first in memory, as picamera2's "RGB888" is
            return image
        yuv = np.full((240 * 3 // 2, 384), 128, np.uint8)  # stride padded to 384
        yuv[:240, :320] = 77
        return yuv

    def stop(self):
        self.calls.append(("stop",))

    def close(self):
        self.calls.append(("close",))


@pytest.fixture
def picamera2(monkeypatch, clock):
    _FakePicamera2.instances = []
    _FakePicamera2.fail_init = None
    module = types.ModuleType("picamera2")
    module.Picamera2 = lambda: _FakePicamera2(clock)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return _FakePicamera2


def test_picamera2_configures_settles_locks_and_closes(picamera2, clock):
    camera = Picamera2Camera(width=640, height=480, settle=timedelta(seconds=3), lock_exposure=True, clock=clock)
    with camera:
        fake = picamera2.instances[0]
        assert fake.calls[0] == ("create_still_configuration", {"size": (640, 480), "format": "RGB888"},
                                 {"size": (320, 240), "format": "YUV420"})
        started = fake.calls[2][1]
        assert [c[0] for c in fake.calls] == ["create_still_configuration", "configure", "start",
                                              "capture_metadata", "set_controls"]
        assert fake.calls[3][1] == started + 3.0  # metadata read after the settle time
        assert fake.calls[4][1] == {"AeEnable": False, "AwbEnable": False, "ExposureTime": 12000,
                                    "AnalogueGain": 2.5, "ColourGains": (1.8, 1.4)}
        frame = camera.capture()
        assert frame.image.shape == (480, 640, 3) and frame.image[0, 0].tolist() == [200, 0, 0]  # BGR as is
        assert frame.captured_at == clock.now()
        preview = camera.preview()
        assert preview.shape == (240, 320) and (preview == 77).all() and preview.flags.c_contiguous
    assert fake.calls[-2:] == [("stop",), ("close",)]
    assert clock.sleeps == [3.0]


def test_picamera2_without_lock_sets_no_controls(picamera2, clock):
    with Picamera2Camera(width=640, height=480, clock=clock):
        names = [c[0] for c in picamera2.instances[0].calls]
    assert "set_controls" not in names and "capture_metadata" not in names


def test_picamera2_errors_map_to_capture_error(picamera2, clock):
    picamera2.fail_init = IndexError("list index out of range")  # what picamera2 raises without a camera
    with pytest.raises(CaptureError, match="cannot start the Raspberry Pi camera"):
        Picamera2Camera(width=640, height=480, clock=clock).open()
    picamera2.fail_init = None
    camera = Picamera2Camera(width=640, height=480, clock=clock)
    with camera:
        picamera2.instances[-1].fail_capture = RuntimeError("Camera frontend has timed out!")
        with pytest.raises(CaptureError, match="timed out"):
            camera.capture()
        with pytest.raises(CaptureError, match="lores"):
            camera.preview()
    assert picamera2.instances[-1].calls[-1] == ("close",)


def test_picamera2_missing_is_a_config_error_naming_apt(monkeypatch, clock):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes ``import picamera2`` fail
    with pytest.raises(ConfigError, match="apt install python3-picamera2"):
        Picamera2Camera(width=640, height=480, clock=clock).open()
    with pytest.raises(ValueError):
        Picamera2Camera(width=320, height=240, lores_width=640, clock=clock)


# -- fake camera ----------------------------------------------------------------------------------
def test_fake_camera_frames_failures_and_counts(clock):
    frames = [np.full((4, 4, 3), v, np.uint8) for v in (10, 20, 30)]
    camera = FakeCamera(frames, clock=clock, fail_on={1}, fail_open=2)
    with pytest.raises(CaptureError):
        camera.open()
    with pytest.raises(CaptureError):
        camera.open()
    with camera:
        got = [camera.capture().image[0, 0, 0]]
        with pytest.raises(CaptureError, match="capture 1"):
            camera.capture()
        got += [camera.capture().image[0, 0, 0], camera.capture().image[0, 0, 0]]
        assert camera.capture() is None and camera.exhausted
        assert camera.preview() is None
    assert got == [10, 20, 30] and frames[0][0, 0, 0] == 10  # frames handed out are copies
    assert (camera.open_attempts, camera.opens, camera.closes, camera.captures) == (3, 1, 1, 5)


def test_fake_camera_function_loop_and_previews(clock):
    camera = FakeCamera(lambda i: np.full((2, 2, 3), i, np.uint8), clock=clock,
                        previews=[np.zeros((2, 2), np.uint8), np.ones((2, 2), np.uint8)], loop=True)
    with camera:
        assert [int(camera.capture().image[0, 0, 0]) for _ in range(4)] == [0, 1, 2, 3]
        assert [int(camera.preview()[0, 0]) for _ in range(3)] == [0, 1, 0]
        assert not camera.exhausted
    with pytest.raises(RuntimeError):
        camera.capture()


# -- reopening ------------------------------------------------------------------------------------
def _attempt_times(camera: ReopeningCamera, fake: FakeCamera, clock: FakeClock, seconds: float) -> list[float]:
    """Monotonic times at which ``camera`` tried to open ``fake``, stepping the clock by 0.5 s."""
    times, attempts = [], fake.open_attempts
    end = clock.monotonic() + seconds
    while clock.monotonic() < end:
        camera.capture()
        if fake.open_attempts != attempts:
            attempts = fake.open_attempts
            times.append(clock.monotonic())
        clock.advance(0.5)
    return times


def test_reopen_backs_off_exponentially_then_recovers(clock):
    frame = np.zeros((4, 4, 3), np.uint8)
    fake = FakeCamera([frame], loop=True, clock=clock, fail_open=5)
    camera = ReopeningCamera(lambda: fake, clock=clock)
    start = clock.monotonic()
    camera.open()  # fails, does not raise
    assert camera.state == "failed" and camera.failures == 1
    assert "simulated open failure 1" in camera.last_error
    assert camera.capture() is None
    times = _attempt_times(camera, fake, clock, 40)
    assert [t - start for t in times] == [1, 3, 7, 15, 31]  # waits of 1, 2, 4, 8, 16 s
    assert camera.state == "ok" and camera.failures == 5 and camera.reopened == 1
    assert camera.capture() is not None
    camera.close()
    assert camera.state == "closed" and fake.closes == 1


def test_reopen_backoff_is_capped_and_logs_once_per_state_change(clock, caplog):
    fake = FakeCamera([np.zeros((2, 2, 3), np.uint8)], loop=True, clock=clock, fail_open=7)
    camera = ReopeningCamera(lambda: fake, clock=clock, backoff_initial=1.0, backoff_max=5.0)
    with caplog.at_level(logging.INFO, logger="edge.capture.reopen"):
        camera.open()
        times = _attempt_times(camera, fake, clock, 40)
    gaps = [b - a for a, b in zip([100.0, *times], times)]
    assert gaps == [1, 2, 4, 5, 5, 5, 5]
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert len(messages) == 2
    assert messages[0][0] == logging.WARNING and "failed" in messages[0][1]
    assert "is back" in messages[1][1]


def test_reopen_after_capture_failure_makes_a_fresh_camera(clock):
    made: list[FakeCamera] = []

    def factory() -> FakeCamera:
        fails = {2} if not made else {1}
        made.append(FakeCamera([np.zeros((2, 2, 3), np.uint8)], loop=True, clock=clock, fail_on=fails))
        return made[-1]

    with ReopeningCamera(factory, clock=clock) as camera:
        assert camera.capture() is not None and camera.capture() is not None
        assert camera.capture() is None  # the device failed
        assert camera.state == "failed" and "capture 2" in camera.last_error
        assert made[0].closes == 1 and camera.preview() is None
        assert camera.retry_at == clock.monotonic() + 1
        clock.advance(1)
        assert camera.capture() is not None
        assert camera.state == "ok" and camera.reopened == 1 and len(made) == 2
        assert camera.capture() is None and camera.failures == 2
        # Frames flowed in between, so this outage starts again at the initial delay (not 2 s).
        assert camera.retry_at == clock.monotonic() + 1
    assert camera.state == "closed"


def test_reopen_passes_image_read_errors_through(tmp_path, clock):
    _image(tmp_path / "IMG_1.jpg")
    (tmp_path / "IMG_2.jpg").write_bytes(b"junk")
    _image(tmp_path / "IMG_3.jpg")
    with ReopeningCamera(lambda: FolderCamera(tmp_path, clock=clock), clock=clock) as camera:
        assert camera.name == f"folder:{tmp_path}"
        assert camera.capture() is not None
        with pytest.raises(ImageReadError) as info:
            camera.capture()
        assert info.value.source == str(tmp_path / "IMG_2.jpg")
        assert camera.state == "ok" and camera.failures == 0
        assert camera.capture().source == str(tmp_path / "IMG_3.jpg")
        assert camera.capture() is None and camera.exhausted


def test_reopen_lets_config_errors_out(monkeypatch, clock):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    camera = ReopeningCamera(lambda: Picamera2Camera(width=64, height=48, lores_width=32, lores_height=24,
                                                     clock=clock), clock=clock)
    with pytest.raises(ConfigError):
        camera.open()


def test_watch_says_once_which_photos_it_cannot_read(tmp_path, clock, caplog):
    """HEIC and raw files are not passed over silently: one warning per scan that finds new ones."""
    _trap_card(tmp_path)
    (tmp_path / "IMG_20.HEIC").write_bytes(b"\x00" * 64)
    (tmp_path / "sub" / "IMG_21.cr2").write_bytes(b"\x00" * 64)
    caplog.set_level("WARNING", logger="edge.capture.folder")
    with FolderCamera(tmp_path, mode="watch", settle=timedelta(0), clock=clock) as camera:
        assert camera.capture() is not None
        warned = [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()]
        assert len(warned) == 1 and "1 .cr2 file" in warned[0] and "1 .heic file" in warned[0]
        assert "convert them to JPEG first" in warned[0]
        caplog.clear()
        _drain(camera)
        clock.advance(5)
        camera.capture()
        assert not [r for r in caplog.records if "cannot read" in r.getMessage()]  # not again
        (tmp_path / "IMG_22.heif").write_bytes(b"\x00" * 64)
        clock.advance(5)
        camera.capture()
        again = [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()]
        assert len(again) == 1 and "1 .heif file" in again[0]

"""Faults that come in as files: decode bombs, a folder that vanishes mid-replay, symlinks out of a
watched folder. Each test tries to break a promise of docs/cameras.md."""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import threading
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from daemon_helpers import WILDEDGE, copy_photos, frame_count, wait_until
from typer.testing import CliRunner

from edge.batch.sources import collect
from edge.capture import FolderCamera, ReopeningCamera
from edge.cli import app
from edge.clock import FakeClock
from edge.config import config_from_dict
from edge.daemon import Daemon, state_paths
from edge.errors import CaptureError, ImageReadError
from edge.imaging import decode_image, image_size, read_image
from edge.store import Store

START = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PHOTOS = "camera_traps_lila/images"


# -- bombs: a few bytes whose header claims a huge image ------------------------------------------

def _encode(suffix: str, size: tuple[int, int] = (16, 16), params: list[int] | None = None) -> bytes:
    ok, data = cv2.imencode(suffix, np.full((size[1], size[0], 3), 128, np.uint8), params or [])
    assert ok
    return data.tobytes()


def jpeg_bomb(side: int = 20000) -> bytes:
    """A valid small baseline JPEG whose SOF0 says ``side`` x ``side``."""
    data = bytearray(_encode(".jpg"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int = 30000) -> bytes:
    """A complete, valid RGB PNG of ``side`` x ``side`` black pixels (2.6 MB for 30000: 2.7 GB decoded).

    Deflating 2.7 GB would take seconds, so one 1 MiB block is compressed after a full flush (which
    makes it independent of what came before) and repeated; the Adler-32 of n zeros is (n << 16) | 1.
    """
    total = (1 + side * 3) * side  # each row: filter byte 0, then the pixels
    block = 1 << 20
    comp = zlib.compressobj(9)
    head = comp.compress(b"\0" * block) + comp.flush(zlib.Z_FULL_FLUSH)
    repeat = comp.compress(b"\0" * block) + comp.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(total, block)
    tail = comp.compress(b"\0" * rest) + comp.flush()
    stream = head + repeat * (full - 1) + tail[:-4] + struct.pack(">I", ((total % 65521) << 16) | 1)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def bmp_bomb(side: int = 20000) -> bytes:
    data = bytearray(_encode(".bmp"))
    data[18:26] = struct.pack("<ii", side, -side)  # a top-down bitmap has a negative height
    return bytes(data)


def tiff_bomb(side: int = 20000) -> bytes:
    data = bytearray(_encode(".tif"))
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack_from(order + "I", data, 4)[0]
    for i in range(struct.unpack_from(order + "H", data, ifd)[0]):
        at = ifd + 2 + 12 * i
        if struct.unpack_from(order + "H", data, at)[0] in (256, 257):
            struct.pack_into(order + "HI", data, at + 2, 4, 1)
            struct.pack_into(order + "I", data, at + 8, side)
    return bytes(data)


def webp_bomb(side: int = 16383) -> bytes:
    data = bytearray(_encode(".webp", params=[cv2.IMWRITE_WEBP_QUALITY, 80]))
    assert data[12:16] == b"VP8 "
    data[26:30] = struct.pack("<HH", side, side)
    return bytes(data)


BOMBS = {"jpg": jpeg_bomb, "png": png_bomb, "bmp": bmp_bomb, "tif": tiff_bomb, "webp": webp_bomb}


@pytest.mark.parametrize("suffix", ["jpg", "png", "bmp", "tif", "webp"])
def test_header_sizes_without_decoding(suffix):
    assert image_size(_encode(f".{suffix}", (53, 37)))[1:] == (53, 37)
    side = 16383 if suffix == "webp" else 30000 if suffix == "png" else 20000
    assert image_size(BOMBS[suffix]())[1:] == (side, side)


def test_lossless_webp_and_grey_tiff_headers():
    assert image_size(_encode(".webp", (53, 37), [cv2.IMWRITE_WEBP_QUALITY, 101]))[1:] == (53, 37)
    _, grey = cv2.imencode(".tif", np.zeros((37, 53), np.uint8))
    assert image_size(grey.tobytes())[1:] == (53, 37)


@pytest.mark.parametrize("suffix", ["jpg", "png", "bmp", "tif", "webp"])
def test_a_bomb_is_refused_before_decoding(suffix, monkeypatch):
    decodes = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decodes.append(a))
    with pytest.raises(ImageReadError, match="over the limit of 100 megapixels"):
        decode_image(BOMBS[suffix](), name=f"bomb.{suffix}")
    assert decodes == []


def test_the_limit_is_a_parameter(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(_encode(".png", (400, 300)))
    assert read_image(path).full_width == 400
    with pytest.raises(ImageReadError, match=r"400x300 \(0 megapixels\) is over the limit of 0.1 megapixels"):
        read_image(path, max_pixels=100_000)
    assert read_image(path, max_pixels=None).full_width == 400


def test_a_format_whose_size_cannot_be_read_is_not_decoded():
    # OpenCV decodes by content: a PPM named .jpg would be decoded without any size check.
    with pytest.raises(ImageReadError, match="not a readable image"):
        decode_image(b"P6\n30000 30000\n255\n" + b"\0" * 1000, name="x.jpg")
    with pytest.raises(ImageReadError, match="not a readable image"):
        decode_image(b"\x89PNG\r\n\x1a\n\0\0", name="short.png")  # header cut off


def _vm_hwm_kb(pid: int) -> int:
    """The process's peak resident size so far (kB); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _daemon_config(tmp_path: Path, model: Path, photos: Path) -> Path:
    config = tmp_path / "trap.toml"
    config.write_text(
        f'[device]\nid = "trap-01"\nstate_dir = "{tmp_path / "state"}"\ntimezone = "UTC"\n'
        f'[camera]\ntype = "folder"\npath = "{photos}"\n'
        f'[detector]\nmodel = "{model}"\nconf = 0.2\n'
        '[storage]\nmin_free = 0\n')
    return config


def _real_photos(assets: Path, dst: Path, count: int) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    photos = sorted(p for p in (assets / PHOTOS).iterdir() if p.suffix.lower() == ".jpg")[:count]
    return [Path(shutil.copy(p, dst / p.name)) for p in photos]


def _frames(state: Path) -> list:
    db, images, _ = state_paths(state)
    with Store(db, images_dir=images) as store:
        return store.frames()


@pytest.mark.assets
def test_daemon_records_bombs_as_failures_and_processes_the_rest_in_bounded_memory(tmp_path, assets, stamped):
    photos_dir = tmp_path / "photos"
    photos = _real_photos(assets, photos_dir, 3)
    # Named to come first: before the limit, the run died on them and processed 0 of the folder.
    (photos_dir / "A_bomb.jpg").write_bytes(jpeg_bomb())
    (photos_dir / "A_bomb.png").write_bytes(png_bomb())
    config = _daemon_config(tmp_path, stamped["fastestdet"], photos_dir)
    proc = subprocess.Popen([*WILDEDGE, "run", "--config", str(config), "--once"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # The peak of the program itself: VmHWM of the process after exec, polled while it runs. (wait4's
    # ru_maxrss also counts the pages the child shared with pytest between fork and exec: 1.4 GB in
    # the full suite.)
    peak_kb = 0
    while proc.poll() is None:
        peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
        time.sleep(0.02)
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode == 0, stderr
    peak_mb = peak_kb / 1024
    # Decoding the bombs costs 2.3 GB and 5.2 GB; the run itself stays near its usual 130 MB.
    assert peak_mb < 400, peak_mb
    frames = _frames(tmp_path / "state")
    failed = {Path(f.source).name: f.failure for f in frames if f.failure}
    assert set(failed) == {"A_bomb.jpg", "A_bomb.png"}
    assert all("over the limit" in reason for reason in failed.values())
    assert sorted(f.source for f in frames if f.failure is None) == sorted(str(p) for p in photos)


@pytest.mark.assets
def test_detect_writes_a_bomb_as_a_failure(tmp_path, assets, stamped):
    folder = tmp_path / "photos"
    _real_photos(assets, folder, 1)
    (folder / "bomb.png").write_bytes(png_bomb())
    out = tmp_path / "results.json"
    result = CliRunner().invoke(app, ["detect", str(folder), "-m", str(stamped["fastestdet"]), "-o", str(out), "-q"])
    assert result.exit_code == 1, result.output
    images = {img["file"]: img for img in json.loads(out.read_text())["images"]}
    assert "over the limit" in images["bomb.png"]["failure"]
    assert sum(1 for img in images.values() if not img.get("failure")) == 1


# -- a folder that vanishes for a moment ----------------------------------------------------------

def _image(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_encode(path.suffix, (32, 24)))
    return path


def test_a_vanished_folder_is_a_device_failure_and_replay_goes_on(tmp_path):
    clock = FakeClock(START)
    folder = tmp_path / "card"
    for name in ("IMG_1.jpg", "IMG_2.jpg", "IMG_3.jpg"):
        _image(folder / name)
    done: set[str] = set()
    camera = ReopeningCamera(lambda: FolderCamera(folder, clock=clock, is_processed=done.__contains__), clock=clock)
    with camera:
        done.add(camera.capture().source)
        folder.rename(tmp_path / "away")
        assert camera.capture() is None  # not an ImageReadError: nothing is recorded for IMG_2
        assert camera.state == "failed" and "folder disappeared" in camera.last_error
        clock.advance(1.0)
        assert camera.capture() is None  # still away: the retry fails, the next is in 2 s
        (tmp_path / "away").rename(folder)
        clock.advance(2.0)
        rest = [camera.capture().source, camera.capture().source]
        assert camera.capture() is None and camera.exhausted
    assert rest == [str(folder / "IMG_2.jpg"), str(folder / "IMG_3.jpg")]
    assert camera.failures == 2 and camera.reopened == 1


def test_a_vanished_subfolder_is_a_device_failure(tmp_path):
    clock = FakeClock(START)
    _image(tmp_path / "card" / "DCIM" / "IMG_1.jpg")
    with FolderCamera(tmp_path / "card", clock=clock) as camera:
        (tmp_path / "card" / "DCIM").rename(tmp_path / "elsewhere")
        with pytest.raises(CaptureError, match="folder disappeared") as info:
            camera.capture()
        assert not isinstance(info.value, ImageReadError)


def test_an_unreadable_file_in_a_present_folder_is_still_a_failed_frame(tmp_path, monkeypatch):
    clock = FakeClock(START)
    _image(tmp_path / "IMG_1.jpg")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)  # chmod 0 does not stop root
    with FolderCamera(tmp_path, clock=clock) as camera, pytest.raises(ImageReadError) as info:
        camera.capture()
    assert info.value.source == str(tmp_path / "IMG_1.jpg")


@pytest.mark.assets
def test_daemon_replay_survives_the_folder_vanishing_for_two_seconds(tmp_path, assets, stamped):
    photos = tmp_path / "photos"
    count = copy_photos(assets, photos)
    config = config_from_dict({
        "device": {"id": "trap-01", "state_dir": str(tmp_path / "state"), "timezone": "UTC"},
        "camera": {"type": "folder", "path": str(photos)},
        "detector": {"model": str(stamped["fastestdet"]), "conf": 0.2},
        "storage": {"min_free": 0, "save_images": "none"},
    })
    db = state_paths(tmp_path / "state")[0]
    daemon = Daemon(config)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run()), daemon=True)
    thread.start()
    wait_until(lambda: frame_count(db) >= 5, timeout=60)
    photos.rename(tmp_path / "away")
    time.sleep(2.0)
    (tmp_path / "away").rename(photos)
    thread.join(120)
    assert codes == [0]
    frames = _frames(tmp_path / "state")
    assert [f.failure for f in frames if f.failure] == []
    assert sorted(f.source for f in frames) == sorted(str(p) for p in photos.iterdir())
    assert len(frames) == count
    assert daemon.camera.failures >= 1 and daemon.camera.reopened == 1


# -- symlinks -------------------------------------------------------------------------------------

def _links(tmp_path: Path) -> Path:
    """A watched folder with a photo, a link to it, and links leading out of the folder."""
    folder = tmp_path / "incoming"
    _image(folder / "a.jpg")
    outside = _image(tmp_path / "private" / "b.jpg")
    (folder / "inside.jpg").symlink_to(folder / "a.jpg")
    (folder / "relative.jpg").symlink_to("a.jpg")
    (folder / "photo.jpg").symlink_to(outside)
    (folder / "escape.jpg").symlink_to("../private/b.jpg")
    (folder / "passwd.jpg").symlink_to("/etc/passwd")
    (folder / "environ.png").symlink_to("/proc/self/environ")
    (folder / "dir").symlink_to(tmp_path / "private", target_is_directory=True)
    return folder


def _all(camera: FolderCamera) -> list[str]:
    sources = []
    while True:
        frame = camera.capture()
        if frame is None:
            return sources
        sources.append(Path(frame.source).name)


def test_links_out_of_the_folder_are_never_read(tmp_path, caplog, monkeypatch):
    folder = _links(tmp_path)
    opened: list[str] = []
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: opened.append(str(self)) or real_read(self))
    with caplog.at_level(logging.WARNING), FolderCamera(folder, clock=FakeClock(START)) as camera:
        assert camera.pending() == 3
        assert _all(camera) == ["a.jpg", "inside.jpg", "relative.jpg"]
    assert all(p.startswith(str(folder)) and os.path.realpath(p).startswith(str(folder)) for p in opened)
    warned = {name for r in caplog.records for name in ("photo.jpg", "escape.jpg", "passwd.jpg", "environ.png")
              if name in r.getMessage() and "outside the folder" in r.getMessage()}
    assert warned == {"photo.jpg", "escape.jpg", "passwd.jpg", "environ.png"}


def test_a_watched_folder_warns_once_per_link(tmp_path, caplog):
    folder = _links(tmp_path)
    clock = FakeClock(START)
    with caplog.at_level(logging.WARNING), FolderCamera(folder, mode="watch", clock=clock) as camera:
        for _ in range(4):
            while camera.capture() is not None:
                pass
            clock.advance(5.0)
    assert sum("passwd.jpg" in r.getMessage() for r in caplog.records) == 1


def test_a_file_replaced_by_a_link_after_listing_is_skipped(tmp_path):
    folder = tmp_path / "incoming"
    _image(folder / "a.jpg")
    _image(folder / "b.jpg")
    with FolderCamera(folder, clock=FakeClock(START)) as camera:
        (folder / "a.jpg").unlink()
        (folder / "a.jpg").symlink_to("/etc/passwd")
        assert _all(camera) == ["b.jpg"]


def test_a_folder_that_is_itself_a_link_is_read(tmp_path):
    _image(tmp_path / "mnt" / "card" / "a.jpg")
    (tmp_path / "incoming").symlink_to(tmp_path / "mnt" / "card", target_is_directory=True)
    with FolderCamera(tmp_path / "incoming", clock=FakeClock(START)) as camera:
        assert _all(camera) == ["a.jpg"]


def test_detect_follows_links_and_walks_a_loop_once(tmp_path):
    folder = tmp_path / "selection"
    _image(folder / "own.jpg")
    _image(tmp_path / "library" / "2024" / "fox.jpg")
    (folder / "linked.jpg").symlink_to(tmp_path / "library" / "2024" / "fox.jpg")
    (folder / "year").symlink_to(tmp_path / "library" / "2024", target_is_directory=True)
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    items, base = collect([folder])
    assert base == folder
    assert [item.name for item in items] == ["linked.jpg", "own.jpg", "year/fox.jpg"]

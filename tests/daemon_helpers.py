"""Shared by the daemon and delivery tests: waiting for a condition, the real photos a run
processes, and running ``wildedge run`` as a process that is SIGKILLed mid-stream."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: The installed console script: what systemd and users run.
WILDEDGE = [str(Path(sys.executable).with_name("wildedge"))]
#: 60 VOC photos and 12 camera-trap photos from the shared assets.
PHOTO_FOLDERS = ("voc2007_labeled/images", "camera_traps_lila/images")


def wait_until(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def copy_photos(assets: Path, dst: Path, *, copies: int = 1) -> int:
    """Copy the photos of ``PHOTO_FOLDERS`` into ``dst`` ``copies`` times (``2-`` ... name prefixes
    for the extra copies, so a stream lasts long enough to be interrupted); how many."""
    dst.mkdir(parents=True, exist_ok=True)
    for folder in PHOTO_FOLDERS:
        for src in sorted((assets / folder).iterdir()):
            for copy in range(copies):
                shutil.copy(src, dst / (src.name if copy == 0 else f"{copy + 1}-{src.name}"))
    return len(list(dst.iterdir()))


def frame_count(db: Path) -> int:
    """Frames committed so far, read while the daemon writes (0 before the store exists)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM frames").fetchone()[0]
    except sqlite3.Error:
        return 0  # created but not migrated yet


def run_and_kill(config: Path, db: Path, rng: random.Random, *, max_delay: float,
                 meanwhile: Callable[[], None] | None = None) -> bool:
    """Start ``wildedge run``, wait until it has committed a frame, then SIGKILL it after a random
    time up to ``max_delay`` while ``meanwhile`` runs (so however long that takes, the kill comes
    mid-stream); False when it finished by itself first.

    ``meanwhile`` runs in this thread and the kill in a timer thread: a broker that ``meanwhile``
    restarts dies with the thread that started it (PR_SET_PDEATHSIG), so it must be this one.
    """
    before = frame_count(db)
    proc = subprocess.Popen([*WILDEDGE, "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    killed = threading.Event()

    def kill() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed.set()

    try:
        deadline = time.monotonic() + 120
        while frame_count(db) <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        timer = threading.Timer(rng.uniform(0.0, max_delay), kill)
        timer.start()
        if meanwhile is not None:
            meanwhile()
        timer.join()
        return killed.is_set()
    finally:
        proc.kill()
        proc.wait(30)


def external_trigger_config(tmp_path: Path, *, model: Path, broker_url: str) -> dict:
    """A daemon config (as a dict) with a scripted camera, an external trigger and MQTT to ``broker_url``."""
    return {
        "device": {"id": "trap-01", "state_dir": str(tmp_path / "state")},
        "camera": {"type": "opencv", "source": 0},
        "trigger": {"type": "external"},
        "detector": {"model": str(model), "conf": 0.15},
        "privacy": {"person": "keep"},
        "storage": {"min_free": 0},
        "mqtt": {"url": broker_url, "keepalive": "5s"},
    }


@contextmanager
def daemon_in_thread(config: object, photo: Path) -> Iterator[tuple[object, threading.Thread]]:
    """An in-process ``Daemon`` for ``config`` whose camera shows ``photo`` over and over, and the thread
    it runs in; stopped on exit."""
    import cv2

    from edge.capture import FakeCamera
    from edge.clock import SystemClock
    from edge.daemon import Daemon

    camera = FakeCamera([cv2.imread(str(photo))], clock=SystemClock(), loop=True)
    daemon = Daemon(config, camera_factory=lambda: camera)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        yield daemon, thread
    finally:
        daemon.stop()
        thread.join(15)


def folder_config(path: Path, *, state: Path, photos: Path, model: Path, device: str = "", camera: str = "",
                  detector: str = "", storage: str = "min_free = 0", extra: str = "") -> Path:
    """Write a daemon config for device ``trap-01`` with a folder camera at ``path``; the keyword
    arguments add TOML lines to their section (``extra``: whole sections after them)."""
    path.write_text(f"""
[device]
id = "trap-01"
state_dir = "{state}"
{device}
[camera]
type = "folder"
path = "{photos}"
{camera}
[detector]
model = "{model}"
{detector}
[storage]
{storage}
{extra}
""")
    return path


def fill_disk(folder: Path, name: str = "filler") -> Path:
    """What another program does: write into ``folder`` until its disk is full (ENOSPC), down to the
    last 512 bytes; the filler's path."""
    path = folder / name
    block = os.urandom(64 * 1024)
    with open(path, "wb", buffering=0) as fh:
        for size in (len(block), 4096, 512):
            try:
                while True:
                    fh.write(block[:size])
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
    return path

"""``wildedge run`` as a real process: SIGKILL at random points over real photos, clean SIGTERM
with sd_notify, and bad input that must end in one message and a non-zero exit."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from daemon_helpers import WILDEDGE, copy_photos, frame_count, run_and_kill

from edge.daemon import state_paths
from edge.store import Store


def _write_config(path: Path, *, state: Path, photos: Path, model: Path, extra: str = "") -> Path:
    path.write_text(f"""
[device]
id = "trap-kill"
state_dir = "{state}"
timezone = "UTC"

[camera]
type = "folder"
path = "{photos}"

[detector]
model = "{model}"
conf = 0.2

[privacy]
person = "keep"

[storage]
save_images = "all"
min_free = 0
{extra}
""")
    return path


def _summary(state: Path) -> dict[str, tuple]:
    """source file name -> (detection count, classes, has event) for a finished store."""
    db, images, _ = state_paths(state)
    with Store(db, images_dir=images) as store:
        frames = store.frames()
        event_bursts = [e.burst_id for e in store.events()]
    assert len(event_bursts) == len(set(event_bursts)), "an event was recorded twice"
    return {Path(f.source).name: (len(f.detections), tuple(sorted(d.class_id for d in f.detections)),
                                  f.burst_id in event_bursts) for f in frames}


@pytest.mark.assets
@pytest.mark.slow
def test_sigkill_at_random_points_loses_and_repeats_nothing(tmp_path, assets, stamped):
    photos = tmp_path / "photos"
    count = copy_photos(assets, photos)
    model = stamped["nanodet"]
    reference = tmp_path / "reference"
    cfg_ref = _write_config(tmp_path / "ref.toml", state=reference, photos=photos, model=model)
    subprocess.run([*WILDEDGE, "run", "--config", str(cfg_ref), "--once"], check=True, capture_output=True,
                   timeout=300)
    expected = _summary(reference)
    assert len(expected) == count

    state = tmp_path / "state"
    cfg = _write_config(tmp_path / "kill.toml", state=state, photos=photos, model=model)
    db, images, _ = state_paths(state)
    rng = random.Random(20261124)
    kills = 0
    for _ in range(6):
        if frame_count(db) == count:
            break
        kills += run_and_kill(cfg, db, rng, max_delay=0.5)
    assert kills >= 3, "the daemon finished before it could be killed enough times"
    done = subprocess.run([*WILDEDGE, "run", "--config", str(cfg), "--once"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr

    assert _summary(state) == expected  # every file once, same detections, one event per file with any
    with Store(db, images_dir=images) as store:
        assert store.integrity_check() == "ok"
        paths = [f.image_path for f in store.frames()]
        assert all(paths) and len(set(paths)) == count
        # No row points at a missing or partial file (images are written before their rows commit).
        for path in paths:
            assert store.image_file(path).stat().st_size > 1000
    leftovers = [p for p in images.rglob("*") if p.is_file() and p.suffix == ".tmp"]
    assert len(leftovers) <= kills  # at most one write in flight per kill; swept later by retention


def _notify_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    return sock, path


def _messages_until(sock: socket.socket, wanted: str) -> list[str]:
    seen = []
    while True:
        data = sock.recv(4096).decode()
        seen.append(data)
        if wanted in data.split("\n"):
            return seen


@pytest.mark.assets
def test_sigterm_stops_cleanly_and_systemd_hears_ready_and_stopping(tmp_path, stamped):
    (tmp_path / "watched").mkdir()
    cfg = _write_config(tmp_path / "c.toml", state=tmp_path / "state", photos=tmp_path / "watched",
                        model=stamped["fastestdet"])
    cfg.write_text(cfg.read_text().replace('type = "folder"', 'type = "folder"\nmode = "watch"'))
    sock, address = _notify_socket(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"}
    env.pop("WATCHDOG_PID", None)  # without it the watchdog is for whoever reads WATCHDOG_USEC
    proc = subprocess.Popen([*WILDEDGE, "run", "--config", str(cfg)], env=env, stderr=subprocess.PIPE,
                            text=True)
    try:
        _messages_until(sock, "READY=1")
        watchdog = _messages_until(sock, "WATCHDOG=1")
        assert watchdog
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _messages_until(sock, "STOPPING=1")
        _, stderr = proc.communicate(timeout=10)
        took = time.monotonic() - sent
        rc = proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sock.close()
    assert rc == 0, stderr
    assert took < 5, f"SIGTERM took {took:.1f} s"
    assert "stopping (SIGTERM)" in stderr and "Traceback" not in stderr


# -- bad input --------------------------------------------------------------------------------------

def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*WILDEDGE, *args], capture_output=True, text=True, timeout=timeout)


def _assert_one_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr + result.stdout, (needle, result.stderr)


@pytest.fixture
def good(tmp_path, stamped) -> dict[str, Path]:
    photos = tmp_path / "photos"
    photos.mkdir()
    return {"state": tmp_path / "state", "photos": photos, "model": stamped["fastestdet"]}


@pytest.mark.assets
def test_invalid_config_lists_every_problem_by_key_path(tmp_path, good):
    cfg = _write_config(tmp_path / "c.toml", **good, extra='[trigger]\ntype = "timelapse"\ninterval = "0s"\n'
                        'intervall = "5m"\n')
    for command in ("run", "check"):
        result = _cli(command, "--config", str(cfg))
        _assert_one_error(result, 2, "trigger.interval: must be more than 0",
                          "trigger.intervall: unknown key (did you mean 'interval'?)")
    result = _cli("run", "--config", str(cfg), "--set", "trigger.interval=5m", "--set", "detector.conf=2")
    _assert_one_error(result, 2, "detector.conf:", "trigger.intervall: unknown key")
    _assert_one_error(_cli("run", "--config", str(tmp_path / "absent.toml")), 2, "absent.toml: no such file")


@pytest.mark.assets
def test_missing_model_camera_and_state_dir_fail_with_one_message(tmp_path, good):
    missing_model = _write_config(tmp_path / "m.toml", **{**good, "model": tmp_path / "nope.onnx"})
    _assert_one_error(_cli("run", "--config", str(missing_model)), 1, "nope.onnx")
    no_camera = _write_config(tmp_path / "cam.toml", **{**good, "photos": tmp_path / "no-such-folder"})
    _assert_one_error(_cli("run", "--config", str(no_camera), "--once"), 1, "cannot open", "no-such-folder")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad_state = _write_config(tmp_path / "s.toml", **{**good, "state": blocker / "state"})
    _assert_one_error(_cli("run", "--config", str(bad_state), "--once"), 1, str(blocker))
    # check reports each of them and fails; a good config passes.
    for cfg, needle in ((missing_model, "FAIL detector"), (no_camera, "FAIL camera"), (bad_state, "FAIL state dir")):
        result = _cli("check", "--config", str(cfg))
        _assert_one_error(result, 1, needle)
    ok = _cli("check", "--config", str(_write_config(tmp_path / "ok.toml", **good)))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok   detector" in ok.stdout and "ok   camera" in ok.stdout and "clock" in ok.stdout


@pytest.mark.assets
def test_trigger_without_a_running_daemon(tmp_path, good):
    cfg = _write_config(tmp_path / "c.toml", **good)
    _assert_one_error(_cli("trigger", "--config", str(cfg)), 1, "no wildedge daemon is listening")

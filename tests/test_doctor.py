"""``wildedge check``, the field doctor: it reports and never creates or changes anything (no state
folder, no migration of an old store, no file left behind), times the models, and reads the
firmware's power flags and the watchdog where they exist."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from daemon_helpers import WILDEDGE, folder_config

from edge.cli.doctor import check_power, check_state_dir, check_watchdog


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _config(tmp_path: Path, state: Path, model: Path, photo: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    shutil.copy(photo, photos)
    return folder_config(tmp_path / "trap.toml", state=state, photos=photos, model=model)


@pytest.mark.assets
def test_check_creates_nothing_and_times_the_detector(tmp_path, assets, stamped):
    state = tmp_path / "var" / "lib" / "wildedge"
    config = _config(tmp_path, state, stamped["fastestdet"], sorted((assets / "camera_traps_lila/images").iterdir())[0])
    before = _tree(tmp_path)
    done = subprocess.run([*WILDEDGE, "check", "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / "var").exists()  # it used to create the state directory
    assert _tree(tmp_path) == before
    lines = {line[5:16].strip(): line for line in done.stdout.splitlines()}
    assert "not created yet" in lines["state dir"]
    assert " ms a frame" in lines["detector"] and lines["detector"].startswith("ok")
    assert "watchdog" in lines


@pytest.mark.assets
def test_check_reads_an_old_store_without_migrating_or_touching_it(tmp_path, assets, stamped):
    from test_faults_store import _v2_store

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    _v2_store(state / "wildedge.db")
    config = _config(tmp_path, state, stamped["fastestdet"], sorted((assets / "camera_traps_lila/images").iterdir())[0])
    before = _tree(state)
    done = subprocess.run([*WILDEDGE, "check", "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "store ok, 1 messages waiting" in done.stdout
    assert _tree(state) == before  # no migration, no WAL or shm left, no images folder
    with sqlite3.connect(state / "wildedge.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2


def test_state_dir_problems_are_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Exception, match="is not a folder"):
        check_state_dir(blocker)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(Exception, match="is not writable"):
            check_state_dir(locked / "state")


@pytest.mark.parametrize(("word", "ok", "text"), [
    ("0", True, "no under-voltage or throttling since boot"),
    ("50005", None, "under voltage, throttled NOW (0x50005)"),
    ("50000", None, "under voltage, throttled since boot"),
])
def test_power_reads_the_firmwares_word(tmp_path, word, ok, text):
    firmware = tmp_path / "sys/devices/platform/soc/soc:firmware"
    firmware.mkdir(parents=True)
    (firmware / "get_throttled").write_text(word + "\n")
    result = check_power(tmp_path)
    assert result is not None and result[0] is ok and text in result[1], result
    assert check_power(tmp_path / "elsewhere") is None  # not a Raspberry Pi: no line


def test_watchdog_is_reported_as_it_is(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    ok, text = check_watchdog(dev, tmp_path / "no-systemd")
    assert ok is None and "no /dev/watchdog" in text and "dtparam=watchdog=on" in text
    (dev / "watchdog0").touch()
    ok, text = check_watchdog(dev, tmp_path / "no-systemd")
    assert ok is None and "systemd is not running" in text


def test_check_logs_in_with_the_password_the_unit_is_handed(tmp_path, broker_factory, monkeypatch):
    """Run by hand, check finds the broker password where install.sh keeps it for LoadCredential=."""
    from edge.cli.doctor import check_mqtt
    from edge.config import config_from_dict

    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    broker = broker_factory(passwords={"trap-01": "s3cret"})
    cfg = config_from_dict({
        "device": {"id": "trap-01", "state_dir": str(tmp_path / "state")},
        "camera": {"type": "folder", "path": str(tmp_path)},
        "detector": {"model": str(tmp_path / "m.onnx")},
        "mqtt": {"url": broker.url, "username": "trap-01"},
    })
    credstore = tmp_path / "wildedge.mqtt-password"
    ok, detail = check_mqtt(cfg, credstore=credstore)  # absent: anonymous, refused
    assert ok is False and "refused" in detail, detail
    credstore.write_text("s3cret\n")
    credstore.chmod(0o600)
    ok, detail = check_mqtt(cfg, credstore=credstore)
    assert ok is True and "connected" in detail, detail
    credstore.write_text("wrong\n")
    assert check_mqtt(cfg, credstore=credstore)[0] is False

"""Local exposure and oversized commands: what the daemon writes is its owner's only (0700 folders,
0600 files, a 0600 control socket serving captures, not settings), an old 0644 store is tightened at
start, a password file others may read is refused, and a huge MQTT command never reaches the device.

Tests run as root here, so permissions are checked on the mode bits, never by failing to open.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import WILDEDGE, daemon_in_thread, external_trigger_config, folder_config, wait_until
from mqtt_helpers import Subscriber

from edge.config import config_from_dict
from edge.errors import ConfigError
from edge.mqtt import Publisher
from edge.mqtt.connect import MAX_PACKET, read_password
from edge.store import Store
from edge.triggers.control import CONTROL_COMMANDS, ControlServer, send_command

PHOTOS = "camera_traps_lila/images"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _open_to_others(root: Path) -> list[str]:
    """Every file or folder at or under ``root`` that group or others may use, with its mode."""
    found = []
    for path in [root, *root.rglob("*")]:
        if _mode(path) & 0o077:
            found.append(f"{path.relative_to(root.parent)} {_mode(path):04o}")
    return found


@pytest.fixture
def umask_022():
    """The usual login umask: the daemon's modes must not depend on it being stricter."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


# -- a running daemon --------------------------------------------------------------------------------

@pytest.mark.assets
def test_a_running_daemon_keeps_its_state_to_its_owner(tmp_path, assets, stamped, broker, umask_022):
    from edge.daemon import state_paths

    config = config_from_dict(external_trigger_config(tmp_path, model=stamped["fastestdet"], broker_url=broker.url))
    state = tmp_path / "state"
    db, images, sock = state_paths(state)
    with daemon_in_thread(config, sorted((assets / PHOTOS).iterdir())[0]) as (daemon, thread):
        sub = Subscriber(broker.host, broker.port, topic="wildedge/trap-01/cmd/result")
        try:
            wait_until(lambda: daemon.publisher is not None and daemon.publisher.state.listening)
            assert send_command(sock, {"cmd": "capture", "burst": 2})["ok"]
            wait_until(lambda: daemon.counts["frames"] == 2 and list(images.rglob("*.jpg")))
            sub.publish("wildedge/trap-01/cmd/set", '{"id": "s1", "values": {"detector.conf": 0.3}}')
            sub.wait_for(lambda: sub.json("/cmd/result"))
            assert sub.json("/cmd/result")[0]["ok"] is True

            # the control socket: what `wildedge trigger` needs, never settings
            assert _mode(sock) == 0o600 and stat.S_ISSOCK(sock.lstat().st_mode)
            assert send_command(sock, {"cmd": "ping"}) == {"ok": True, "pong": True}
            assert send_command(sock, {"cmd": "status"})["ok"] is True
            refused = send_command(sock, {"cmd": "set", "values": {"detector.conf": 0.9}})
            assert refused["ok"] is False and "not served on the control socket" in refused["error"]
            assert daemon.config.detector.conf == 0.3

            # while it runs: the WAL and shared-memory files exist, and nothing is open to others
            for path in (state, db, Path(f"{db}-wal"), Path(f"{db}-shm"), state / "remote-settings.json"):
                assert path.exists(), path
            assert _mode(state) == 0o700 and _mode(db) == 0o600
            assert _mode(Path(f"{db}-wal")) == 0o600 and _mode(Path(f"{db}-shm")) == 0o600
            assert _mode(state / "remote-settings.json") == 0o600
            saved = list(images.rglob("*.jpg"))
            assert saved and all(_mode(p) == 0o600 for p in saved)
            assert all(_mode(p) == 0o700 for p in [images, *images.rglob("*")] if p.is_dir())
            assert _open_to_others(state) == []
        finally:
            sub.close()
    assert not thread.is_alive()
    assert _open_to_others(state) == []


def test_the_control_socket_is_0600_and_refuses_settings(tmp_path, umask_022):
    seen = []

    def handler(request: dict) -> dict:
        seen.append(request["cmd"])
        return {"ok": True}

    path = tmp_path / "control.sock"
    with ControlServer(path, handler):
        assert _mode(path) == 0o600
        refused = send_command(path, {"cmd": "set", "values": {"detector.conf": 0.9}})
        assert refused["ok"] is False and "MQTT" in refused["error"]
    with ControlServer(path, handler, commands=CONTROL_COMMANDS | {"set"}):  # "set" stays refused
        assert send_command(path, {"cmd": "set", "values": {}})["ok"] is False
        unknown = send_command(path, {"cmd": "reboot"})
        assert unknown["ok"] is False and "unknown command 'reboot' (capture, ping, status)" in unknown["error"]
        for cmd in ("capture", "status", "ping"):
            assert send_command(path, {"cmd": cmd})["ok"] is True
    assert seen == ["capture", "status", "ping"]  # the handler never saw what was refused


# -- an older store ----------------------------------------------------------------------------------

@pytest.mark.assets
def test_wildedge_run_tightens_an_old_store_once(tmp_path, assets, stamped, umask_022):
    state = tmp_path / "state"
    with Store(state / "wildedge.db", images_dir=state / "images"):
        pass
    old_image = state / "images" / "2025" / "06" / "01" / "old.jpg"
    old_image.parent.mkdir(parents=True)
    old_image.write_bytes(b"\xff\xd8old")
    (state / "remote-settings.json").write_text('{"detector.conf": 0.25}')
    (state / "notes.txt").write_text("the user's own file: not ours to change")
    for path in [state, *state.rglob("*")]:  # what an older wildedge left: 0755 folders, 0644 files
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in sorted((assets / PHOTOS).iterdir())[:2]:
        shutil.copy(src, photos / src.name)
    cfg = folder_config(tmp_path / "wildedge.toml", state=state, photos=photos, model=stamped["fastestdet"],
                        device='timezone = "UTC"', detector="conf = 0.15", extra='[privacy]\nperson = "keep"')
    done = subprocess.run([*WILDEDGE, "run", "--config", str(cfg), "--once"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("tightened permissions") == 1, done.stderr
    assert "cannot tighten" not in done.stderr
    assert _mode(state) == 0o700 and _mode(state / "wildedge.db") == 0o600
    assert _mode(old_image) == 0o600 and _mode(old_image.parent) == 0o700
    assert _mode(state / "remote-settings.json") == 0o600
    assert _mode(state / "notes.txt") == 0o644  # the state directory itself is not searched
    new_images = [p for p in (state / "images").rglob("*.jpg") if p != old_image]
    assert new_images, "the run saved no image"
    assert _open_to_others(state) == [f"state/notes.txt {0o644:04o}"]

    again = subprocess.run([*WILDEDGE, "run", "--config", str(cfg), "--once"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert "tightened permissions" not in again.stderr  # logged when it happens, not at every start


# -- the MQTT password file --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_password_file_others_may_read_is_refused_in_one_line(tmp_path, mode):
    path = tmp_path / "mqtt-password"
    path.write_text("s3cret\n")
    os.chmod(path, mode)
    with pytest.raises(ConfigError) as err:
        read_password(path, environ={})
    message = str(err.value)
    assert "\n" not in message and str(path) in message and f"chmod 600 {path}" in message
    assert f"{mode:04o}" in message and "s3cret" not in message


def test_a_private_password_file_is_read(tmp_path):
    path = tmp_path / "mqtt-password"
    path.write_text("s3cret\n")
    os.chmod(path, 0o600)
    assert read_password(path, environ={}) == "s3cret"
    os.chmod(path, 0o400)
    assert read_password(path, environ={}) == "s3cret"


def test_a_systemd_credential_is_exempt(tmp_path):
    creds = tmp_path / "credentials" / "wildedge.service"
    creds.mkdir(parents=True)
    (creds / "mqtt-password").write_text("s3cret\n")
    os.chmod(creds / "mqtt-password", 0o440)  # systemd's choice for a credential shared with a group
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert read_password(None, environ=env) == "s3cret"
    assert read_password(creds / "mqtt-password", environ=env) == "s3cret"
    # the same file outside the credential directory is checked like any other
    outside = tmp_path / "copy"
    shutil.copy(creds / "mqtt-password", outside)
    os.chmod(outside, 0o440)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_password(outside, environ=env)


# -- a huge command over MQTT ------------------------------------------------------------------------

SENDER = """
import sys
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = paho.Client(CallbackAPIVersion.VERSION2, client_id="sender", protocol=paho.MQTTv5)
client.connect(host, port, 30)
client.loop_start()
client.publish("wildedge/trap-01/cmd/ping", b"x" * size, qos=1).wait_for_publish(120)
client.publish("wildedge/trap-01/cmd/ping", b'{"id": "small"}', qos=1).wait_for_publish(30)
client.disconnect()
client.loop_stop()
"""


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/self/status")


def _reset_peak_rss() -> None:
    """Start VmHWM (the peak RSS) afresh: a message received then freed shows only in the peak."""
    Path("/proc/self/clear_refs").write_text("5")


def test_a_50_mb_command_never_reaches_the_device(broker, tmp_path):
    size = 50 * 1024 * 1024
    cfg = config_from_dict({"device": {"id": "trap-01"}, "camera": {"type": "folder", "path": "."},
                            "detector": {"model": "d.onnx"},
                            "mqtt": {"url": broker.url, "keepalive": "5s"}}).mqtt
    received: list[Any] = []
    sub = Subscriber(broker.host, broker.port, topic="wildedge/trap-01/cmd/result")
    try:
        with Store(tmp_path / "wildedge.db", images_dir=tmp_path / "images") as store, \
                Publisher(cfg, device="trap-01", store=store,
                          on_command=lambda c: received.append(c) or {"ok": True, "pong": True}) as pub:
            wait_until(lambda: pub.state.listening)
            before = _status_bytes("VmRSS")
            _reset_peak_rss()
            # Another process sends, so this one's memory holds only what the device received.
            sender = subprocess.run([sys.executable, "-c", SENDER, broker.host, str(broker.port), str(size)],
                                    capture_output=True, text=True, timeout=180)
            assert sender.returncode == 0, sender.stderr
            sub.wait_for(lambda: sub.json("/cmd/result"), timeout=60)
            grown = _status_bytes("VmHWM") - before
            replies = sub.json("/cmd/result")
            assert [r.get("id") for r in replies] == ["small"] and replies[0]["ok"] is True, replies
            assert pub.state.commands == 1 and len(received) == 1  # the big one never arrived
            # Measured: the peak stayed within 0.1 MiB; it grew by 155 MiB without the Maximum Packet Size.
            assert grown < 20 * 1024 * 1024, f"the peak RSS grew by {grown / 2**20:.1f} MiB"
    finally:
        sub.close()
    assert MAX_PACKET < 64 * 1024


"""Signed commands (HMAC-SHA256 over a canonical form, ``ts`` within 300 s) and ``[mqtt] remote_set``."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from daemon_helpers import daemon_in_thread, wait_until
from mqtt_helpers import Subscriber

import edge
from edge.clock import FakeClock, SystemClock
from edge.commands import CommandError, canonical_command, parse_command, sign_command
from edge.config import InvalidConfigError, config_from_dict
from edge.errors import ConfigError
from edge.mqtt import Publisher
from edge.mqtt.connect import read_command_key
from edge.mqtt.device import apply_set
from edge.store import Store

KEY = b"correct horse battery staple"
TS = 1767225600  # 2026-01-01T00:00:00Z
# The worked example of docs/wire-format.md ("Signed commands"), checked there with openssl.
GOLDEN_CANONICAL = b'set\n{"id":"r1","ts":1767225600,"values":{"detector.conf":0.3,"trigger.interval":"10m"}}'
GOLDEN_SIG = "f6301fbcd8ea142dbcc4a970b29ac39fb8db7fd44e9b700679810c86aa3fb0f0"
SCHEMA = json.loads((Path(edge.__file__).parent / "data" / "wire-format-v1.schema.json").read_text("utf-8"))


def _golden() -> dict:
    return sign_command("set", {"values": {"trigger.interval": "10m", "detector.conf": 0.3}, "id": "r1"}, KEY, ts=TS)


# -- the recipe -----------------------------------------------------------------------------------------

def test_golden_vector():
    signed = _golden()
    assert canonical_command("set", signed) == GOLDEN_CANONICAL
    assert signed["sig"] == GOLDEN_SIG and signed["ts"] == TS
    doc = (Path(edge.__file__).parent.parent / "docs" / "wire-format.md").read_text("utf-8")
    assert GOLDEN_SIG in doc and GOLDEN_CANONICAL.decode().split("\n")[1] in doc


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_a_server_in_another_language_computes_the_same_signature():
    script = r"""
const crypto = require("crypto");
const sorted = v => Array.isArray(v) ? v.map(sorted) : (v !== null && typeof v === "object")
  ? Object.fromEntries(Object.keys(v).sort().map(k => [k, sorted(v[k])])) : v;
const cmd = {id: "r1", values: {"trigger.interval": "10m", "detector.conf": 0.3}, ts: 1767225600};
const text = "set\n" + JSON.stringify(sorted(cmd));
process.stdout.write(crypto.createHmac("sha256", "correct horse battery staple").update(text, "utf8").digest("hex"));
"""
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout == GOLDEN_SIG


def test_the_wire_spelling_does_not_matter_only_the_parsed_values():
    signed = _golden()
    respelled = (f'{{ "sig": "{signed["sig"].upper()}", "values": {{"detector.conf": 0.30, '
                 f'"trigger.interval": "10m"}},\n "ts": {TS}, "id": "r1" }}').encode()
    command = parse_command("set", respelled, key=KEY, now=TS + 299)
    assert command.correlation == "r1"
    assert command.args == {"values": {"detector.conf": 0.3, "trigger.interval": "10m"}}  # no sig, no ts
    nested = sign_command("set", {"values": {"trigger.active": ["sunrise-1h..sunset+1h"], "storage.min_free": 5}},
                          KEY, ts=TS)
    assert parse_command("set", json.dumps(nested).encode(), key=KEY, now=None).args["values"]["storage.min_free"] == 5


@pytest.mark.parametrize(("payload", "words"), [
    ({"id": "u1"}, "unsigned"),
    ({"id": "u1", "ts": TS, "sig": "00" * 32}, "does not match"),
    ({"id": "u1", "ts": TS, "sig": "xyz"}, "64 hex digits"),
    ({"id": "u1", "sig": "00" * 32}, "needs \"ts\""),
    ({"id": "u1", "ts": "1767225600", "sig": "00" * 32}, "needs \"ts\""),
])
def test_unsigned_and_malformed_signatures_are_refused(payload, words):
    with pytest.raises(CommandError) as err:
        parse_command("ping", json.dumps(payload).encode(), key=KEY, now=TS)
    assert err.value.code == "bad_signature" and words in err.value.message
    assert err.value.correlation == "u1"


def test_wrong_key_tampering_and_other_command_are_refused():
    signed = sign_command("set", {"values": {"detector.conf": 0.3}}, b"another key", ts=TS)
    with pytest.raises(CommandError, match="does not match"):
        parse_command("set", json.dumps(signed).encode(), key=KEY, now=TS)
    signed = sign_command("set", {"values": {"detector.conf": 0.3}}, KEY, ts=TS)
    tampered = {**signed, "values": {"detector.conf": 0.8}}
    with pytest.raises(CommandError, match="does not match"):
        parse_command("set", json.dumps(tampered).encode(), key=KEY, now=TS)
    ping = sign_command("ping", {}, KEY, ts=TS)
    with pytest.raises(CommandError, match="does not match"):  # the name is signed too
        parse_command("capture", json.dumps(ping).encode(), key=KEY, now=TS)
    with pytest.raises(CommandError) as err:  # unknown commands are not told apart before the signature
        parse_command("reboot", b"{}", key=KEY, now=TS)
    assert err.value.code == "bad_signature"


def test_ts_must_be_within_300_s_of_a_synchronised_clock_only():
    signed = json.dumps(sign_command("ping", {}, KEY, ts=TS)).encode()
    assert parse_command("ping", signed, key=KEY, now=TS + 300).name == "ping"
    assert parse_command("ping", signed, key=KEY, now=TS - 300).name == "ping"
    for now in (TS + 301, TS - 301, TS + 86400):
        with pytest.raises(CommandError, match="from the device clock") as err:
            parse_command("ping", signed, key=KEY, now=now)
        assert err.value.code == "bad_signature"
    assert parse_command("ping", signed, key=KEY, now=None).name == "ping"  # unsynchronised: not compared


def test_a_lone_surrogate_cannot_be_signed_or_verified():
    payload = b'{"id":"a","values":{"detector.conf":"\\ud800"},"ts":1767225600,"sig":"' + b"0" * 64 + b'"}'
    with pytest.raises(CommandError) as err:
        parse_command("set", payload, key=KEY, now=None)
    assert err.value.code == "bad_signature"
    with pytest.raises(ValueError):
        sign_command("set", {"values": {"detector.conf": "\ud800"}}, KEY, ts=TS)


def test_without_a_key_sig_and_ts_are_allowed_and_never_reach_the_handler():
    assert parse_command("ping", json.dumps(sign_command("ping", {}, KEY, ts=TS)).encode()).args == {}
    with pytest.raises(CommandError) as err:
        parse_command("ping", b'{"ts": -1}')
    assert err.value.code == "bad_args"


def test_sign_command_refuses_caller_mistakes():
    with pytest.raises(TypeError):
        sign_command("ping", {}, "text key", ts=TS)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sign_command("ping", {}, KEY, ts=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sign_command("ping", {}, KEY, ts=-1)


@pytest.mark.parametrize("name", ["capture", "ping", "status", "set"])
def test_signed_commands_match_the_schema(name):
    args = {"capture": {"burst": 2}, "set": {"values": {"detector.conf": 0.3}}}.get(name, {})
    signed = sign_command(name, {"id": "s1", **args}, KEY, ts=TS)
    jsonschema.Draft202012Validator({**SCHEMA, "anyOf": [{"$ref": f"#/$defs/cmd_{name}"}]}).validate(signed)
    assert "bad_signature" in SCHEMA["$defs"]["result"]["properties"]["code"]["description"]


# -- the key file -------------------------------------------------------------------------------------

def _key_file(tmp_path: Path, mode: int = 0o600, text: bytes = KEY + b"\n") -> Path:
    path = tmp_path / "command-key"
    path.write_bytes(text)
    path.chmod(mode)
    return path


def test_key_file_read_and_checked(tmp_path):
    assert read_command_key(_key_file(tmp_path), environ={}) == KEY
    assert read_command_key(None, environ={}) is None
    with pytest.raises(ConfigError, match="is empty"):
        read_command_key(_key_file(tmp_path, text=b"\n"), environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        read_command_key(tmp_path / "missing", environ={})


def test_systemd_credential_is_used_and_not_mode_checked(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "command-key").write_bytes(KEY)
    (creds / "command-key").chmod(0o440)
    assert read_command_key(None, environ={"CREDENTIALS_DIRECTORY": str(creds)}) == KEY


def test_a_key_file_others_may_read_stops_the_publisher_with_one_line(tmp_path):
    path = _key_file(tmp_path, mode=0o644)
    with pytest.raises(ConfigError) as err:
        read_command_key(path, environ={})
    text = str(err.value)
    assert "\n" not in text and "mqtt.command_key_file" in text and "0644" in text and "chmod 600" in text
    cfg = config_from_dict(_config(tmp_path, "mqtt://127.0.0.1:1", command_key_file=str(path))).mqtt
    with Store(tmp_path / "db.sqlite", images_dir=tmp_path / "img") as store, pytest.raises(ConfigError, match="0644"):
        Publisher(cfg, device="trap-01", store=store)


# -- [mqtt] remote_set ----------------------------------------------------------------------------------

def _config(tmp_path: Path, url: str, **mqtt) -> dict:
    return {
        "device": {"id": "trap-01", "state_dir": str(tmp_path / "state")},
        "camera": {"type": "opencv", "source": 0},
        "trigger": {"type": "external"},
        "detector": {"model": str(tmp_path / "det.onnx"), "conf": 0.15},
        "privacy": {"person": "keep"},
        "storage": {"min_free": 0},
        "mqtt": {"url": url, "keepalive": "5s", **mqtt},
    }


@pytest.mark.parametrize(("pattern", "words"), [
    ("privacy.person", "privacy policy"), ("privacy.*", "privacy policy"), ("device.state_dir", "identity and paths"),
    ("camera.source", "camera"), ("detector.model", "model path"), ("classifier.model", "model path"),
    ("mqtt.url", "broker"), ("mqtt.password_file", "broker"), ("mqtt.command_key_file", "broker"),
    ("mqtt.remote_set", "broker"), ("trigger.type", "kind"), ("detector.cnf", "did you mean detector.conf"),
    ("*", "not \"section.key\""),
])
def test_remote_set_refuses_what_can_never_be_set_remotely(tmp_path, pattern, words):
    with pytest.raises(InvalidConfigError) as err:
        config_from_dict(_config(tmp_path, "mqtt://h", remote_set=["detector.conf", pattern]))
    (problem,) = err.value.problems
    assert problem.startswith("mqtt.remote_set: ") and words in problem and "\n" not in problem


def test_remote_set_default_keeps_the_old_settable_keys(tmp_path):
    from edge.config.models import remote_settable

    cfg = config_from_dict(_config(tmp_path, "mqtt://h"))
    allowed = cfg.mqtt.remote_set
    for key in ("detector.conf", "detector.iou", "classifier.min_confidence", "classifier.margin",
                "events.match_iou", "trigger.interval", "trigger.cooldown", "trigger.active", "storage.max_age",
                "storage.min_free", "storage.save_images", "storage.jpeg_quality", "health.interval",
                "mqtt.effort_interval", "mqtt.health", "mqtt.crops", "mqtt.crop_min_interval"):
        assert remote_settable(key, allowed), key
    for key in ("trigger.type", "detector.model", "detector.threads", "privacy.person", "device.id", "mqtt.url",
                "mqtt.crop_max_bytes", "camera.source", "storage.*"):
        assert not remote_settable(key, allowed), key
    assert not remote_settable("trigger.type", ["trigger.*"])
    assert remote_settable("mqtt.crops", ["mqtt.*"]) and not remote_settable("mqtt.prefix", ["mqtt.*"])


def test_apply_set_obeys_the_allow_list(tmp_path):
    cfg = config_from_dict(_config(tmp_path, "mqtt://h", remote_set=["detector.conf"]))
    (tmp_path / "state").mkdir()
    new = apply_set(cfg, {"detector.conf": 0.4}, state_dir=tmp_path / "state")
    assert new.detector.conf == 0.4
    with pytest.raises(ConfigError) as err:
        apply_set(cfg, {"detector.conf": 0.4, "storage.max_age": "30d"}, state_dir=tmp_path / "state")
    assert str(err.value).startswith("not settable remotely: storage.max_age") and "\n" not in str(err.value)
    off = config_from_dict(_config(tmp_path, "mqtt://h", remote_set=[]))
    with pytest.raises(ConfigError, match="turned off"):
        apply_set(off, {"detector.conf": 0.4}, state_dir=tmp_path / "state")
    assert json.loads((tmp_path / "state" / "remote-settings.json").read_text()) == {"detector.conf": 0.4}


# -- against a real mosquitto and a running daemon ----------------------------------------------------------

@pytest.fixture
def signed_daemon(tmp_path, assets, stamped, broker):
    """An in-process daemon that needs signed commands (key file 0600) and may set only detector.conf."""
    config = config_from_dict({
        **_config(tmp_path, broker.url, command_key_file=str(_key_file(tmp_path)),
                  remote_set=["detector.conf"]),
        "detector": {"model": str(stamped["fastestdet"]), "conf": 0.15},
    })
    with daemon_in_thread(config, min((assets / "camera_traps_lila" / "images").iterdir())) as (daemon, _thread):
        sub = Subscriber(broker.host, broker.port, topic="wildedge/trap-01/#")
        try:
            wait_until(lambda: daemon.publisher is not None and daemon.publisher.state.listening)
            # The container's clock is not NTP-synchronised; a device with a trusted clock checks ts.
            daemon.publisher.clock = SystemClock(rtc=True)
            yield daemon, sub
        finally:
            sub.close()


def _ask(sub: Subscriber, name: str, payload: dict | bytes, *, correlation: bytes | None = None) -> dict:
    before = len(sub.on("/cmd/result"))
    sub.publish(f"wildedge/trap-01/cmd/{name}", payload if isinstance(payload, bytes) else json.dumps(payload),
                correlation=correlation)
    sub.wait_for(lambda: len(sub.on("/cmd/result")) > before)
    return json.loads(sub.on("/cmd/result")[before].payload)


@pytest.mark.assets
def test_unsigned_wrongly_signed_and_stale_commands_are_refused(signed_daemon):
    daemon, sub = signed_daemon
    now = int(time.time())
    unsigned = _ask(sub, "ping", {"id": "p1"})
    assert unsigned == {**unsigned, "ok": False, "code": "bad_signature", "id": "p1"}
    wrong = _ask(sub, "capture", sign_command("capture", {"id": "c1"}, b"the broker's key", ts=now))
    assert wrong["code"] == "bad_signature" and "does not match" in wrong["err"]
    stale = _ask(sub, "capture", sign_command("capture", {"id": "c2"}, KEY, ts=now - 3600))
    assert stale["code"] == "bad_signature" and "from the device clock" in stale["err"]
    tampered = {**sign_command("set", {"id": "s1", "values": {"detector.conf": 0.5}}, KEY, ts=now),
                "values": {"detector.conf": 0.8}}
    assert _ask(sub, "set", tampered)["code"] == "bad_signature"
    assert _ask(sub, "ping", b"{not json")["code"] == "bad_json"
    time.sleep(0.5)
    assert daemon.counts["frames"] == 0 and daemon.pipeline.detector.conf == 0.15
    assert not (daemon.state_dir / "remote-settings.json").exists()


@pytest.mark.assets
def test_signed_commands_run_once_and_replays_are_not_run_again(signed_daemon):
    daemon, sub = signed_daemon
    now = int(time.time())
    assert _ask(sub, "ping", sign_command("ping", {"id": "p1"}, KEY, ts=now)) == {
        "v": 1, "d": "trap-01", "id": "p1", "ok": True, "r": {"pong": True}}
    capture = sign_command("capture", {"id": "c1", "burst": 2}, KEY, ts=now)
    assert _ask(sub, "capture", capture, correlation=b"first")["ok"] is True
    wait_until(lambda: daemon.counts["frames"] == 2)
    ignored = daemon.publisher.state.commands_ignored
    # The same signed bytes with new MQTT 5 correlation data (not signed): answered, not run again.
    assert _ask(sub, "capture", capture, correlation=b"replayed")["ok"] is True
    assert daemon.publisher.state.commands_ignored == ignored + 1
    reply = _ask(sub, "set", sign_command("set", {"id": "s1", "values": {"detector.conf": 0.5}}, KEY, ts=now))
    assert reply["ok"], reply
    wait_until(lambda: daemon.pipeline.detector.conf == 0.5)
    outside = _ask(sub, "set", sign_command("set", {"id": "s2", "values": {"storage.max_age": "30d"}}, KEY, ts=now))
    assert not outside["ok"] and outside["err"].startswith("not settable remotely: storage.max_age")
    time.sleep(0.5)
    assert daemon.counts["frames"] == 2


@pytest.mark.assets
def test_with_an_unsynchronised_clock_ts_is_not_compared_and_ids_stop_replays(signed_daemon):
    daemon, sub = signed_daemon
    daemon.publisher.clock = FakeClock(datetime(2000, 1, 1, tzinfo=UTC), synchronised=False)
    old = sign_command("capture", {"id": "c-old"}, KEY, ts=int(time.time()) - 86400)
    assert _ask(sub, "capture", old)["ok"] is True
    wait_until(lambda: daemon.counts["frames"] == 1)
    assert _ask(sub, "capture", old)["ok"] is True  # the replay gets the first answer
    time.sleep(0.5)
    assert daemon.counts["frames"] == 1


@pytest.mark.assets
def test_the_daemon_refuses_to_start_with_a_key_others_may_read(tmp_path, stamped):
    import numpy as np

    from edge.capture import FakeCamera
    from edge.daemon import Daemon

    config = config_from_dict({
        **_config(tmp_path, "mqtt://127.0.0.1:1", command_key_file=str(_key_file(tmp_path, mode=0o644))),
        "detector": {"model": str(stamped["fastestdet"])},
    })
    camera = FakeCamera([np.zeros((240, 320, 3), np.uint8)], clock=SystemClock(), loop=True)
    with pytest.raises(ConfigError, match=r"^mqtt\.command_key_file: .* \(mode 0644\): run `chmod 600 "):
        Daemon(config, camera_factory=lambda: camera).run()


def test_replay_guard_refuses_seen_signatures_and_stale_ts_across_restarts(tmp_path):
    from edge.mqtt.replay import META_KEY, ReplayGuard

    def guard(store):
        return ReplayGuard(lambda: store.get_meta(META_KEY), lambda text: store.set_meta(META_KEY, text))

    now = 1_800_000_000
    first = sign_command("capture", {"id": "c1"}, KEY, ts=now)
    with Store(tmp_path / "s.db", images_dir=tmp_path / "img") as store:
        g = guard(store)
        assert g.refuse(first) is None
        g.note(first)
        assert "already run" in g.refuse(first)
    with Store(tmp_path / "s.db", images_dir=tmp_path / "img") as store:  # a restart
        g = guard(store)
        assert "already run" in g.refuse(first)
        newer = sign_command("ping", {"id": "p"}, KEY, ts=now + 3600)
        assert g.refuse(newer) is None
        g.note(newer)
        # A command signed before the newest one run by more than the window: it may have been forgotten.
        late = sign_command("capture", {"id": "c2"}, KEY, ts=now + 3600 - 601)
        assert "older than the newest signed command" in g.refuse(late)
        assert g.refuse(sign_command("capture", {"id": "c3"}, KEY, ts=now + 3600 - 599)) is None
        assert len(g.seen) == 1  # the first one fell out of the window
    store_file = tmp_path / "bad.db"
    with Store(store_file, images_dir=tmp_path / "img") as store:
        store.set_meta(META_KEY, "{not json")
        assert guard(store).seen == {}  # unreadable memory: starts empty, logged


@pytest.mark.assets
def test_a_signed_command_replayed_after_a_restart_is_refused(tmp_path, assets, stamped, broker):
    config = config_from_dict({
        **_config(tmp_path, broker.url, command_key_file=str(_key_file(tmp_path)), remote_set=["detector.conf"]),
        "detector": {"model": str(stamped["fastestdet"]), "conf": 0.15},
    })
    photo = min((assets / "camera_traps_lila" / "images").iterdir())
    captured = sign_command("set", {"id": "s1", "values": {"detector.conf": 0.4}}, KEY, ts=int(time.time()))
    sub = Subscriber(broker.host, broker.port, topic="wildedge/trap-01/#")
    try:
        for run, expected in ((1, True), (2, False)):
            with daemon_in_thread(config, photo) as (daemon, _thread):
                wait_until(lambda: daemon.publisher is not None and daemon.publisher.state.listening)
                reply = _ask(sub, "set", captured)
                assert reply["ok"] is expected, (run, reply)
                if not expected:
                    assert reply["code"] == "replayed" and "already run" in reply["err"]
    finally:
        sub.close()

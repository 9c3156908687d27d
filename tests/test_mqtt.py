"""Delivery against a real mosquitto: outbox drained at least once, TLS and passwords, ACL refusals,
the protocol fallback, and the daemon's commands (with a hypothesis fuzz)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from daemon_helpers import WILDEDGE, daemon_in_thread, external_trigger_config, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mqtt_helpers import Subscriber, V311OnlyProxy

from edge.config import config_from_dict
from edge.mqtt import Publisher
from edge.store import EventRecord, OutboxMessage, Store, new_uid

T0 = datetime(2026, 6, 1, 4, 30, tzinfo=timezone.utc)


def _mqtt(url: str, **keys: Any) -> Any:
    data = {"device": {"id": "trap-01"}, "camera": {"type": "folder", "path": "."},
            "detector": {"model": "d.onnx"}, "mqtt": {"url": url, "keepalive": "5s", **keys}}
    return config_from_dict(data).mqtt


def _queue(store: Store, count: int, *, prefix: str = "wildedge") -> list[str]:
    """``count`` events, each with one queued message whose payload names it; their uids."""
    uids = []
    for k in range(count):
        event = EventRecord(new_uid(), new_uid(), T0, 1.0 + k, "boot", True, "timelapse", None, new_uid(), {})
        payload = json.dumps({"e": event.uid, "k": k}).encode()
        store.commit_burst([], event, [OutboxMessage(f"{prefix}/trap-01/event", payload, event_uid=event.uid)])
        uids.append(event.uid)
    return uids


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "wildedge.db", images_dir=tmp_path / "images") as opened:
        yield opened


def test_outbox_drains_in_order_with_retained_status_and_model(broker, store):
    uids = _queue(store, 50)
    sub = Subscriber(broker.host, broker.port)
    try:
        with Publisher(_mqtt(broker.url, max_inflight=5), device="trap-01", store=store, model=b'{"v":1}') as pub:
            sub.wait_for(lambda: len(sub.on("/event")) >= 50)
            wait_until(lambda: store.outbox_depth().count == 0)
            assert pub.state.connected and pub.state.acked == 50
        got = [json.loads(m.payload)["e"] for m in sub.on("/event")]
        assert got == uids  # in order, each once (no reconnect happened)
        assert all(store.delivered_at(uid) is not None for uid in uids)
        # "stopped" was acknowledged by the broker before the publisher stopped; it reaches us a moment later
        sub.wait_for(lambda: json.loads(sub.on("/status")[-1].payload)["st"] == "stopped")
        states = [json.loads(m.payload)["st"] for m in sub.on("/status")]
        assert states == ["online", "stopped"]
        assert [m.payload for m in sub.on("/model")] == [b'{"v":1}']
    finally:
        sub.close()
    # Retained: a late subscriber still learns the model and that the device stopped cleanly.
    late = Subscriber(broker.host, broker.port, client_id="late")
    try:
        late.wait_for(lambda: late.on("/model") and late.on("/status"))
        assert json.loads(late.on("/status")[-1].payload)["st"] == "stopped"
    finally:
        late.close()


def test_nothing_is_lost_while_the_broker_goes_down_and_comes_back(broker_factory, store):
    broker = broker_factory(autosave_interval=1)
    sub = Subscriber(broker.host, broker.port)
    uids = _queue(store, 40)
    try:
        with Publisher(_mqtt(broker.url, max_inflight=3), device="trap-01", store=store) as pub:
            for _round in range(3):
                wait_until(lambda: pub.state.connected and store.outbox_depth().count < 10)
                broker.stop()
                uids += _queue(store, 20)  # recorded while the link is down
                time.sleep(0.5)
                broker.start()
            wait_until(lambda: store.outbox_depth().count == 0, timeout=60)
            assert pub.state.disconnects >= 3
        sub.wait_for(lambda: {json.loads(m.payload)["e"] for m in sub.on("/event")} >= set(uids), timeout=30)
    finally:
        sub.close()


def test_tls_with_client_certificates(broker_factory, store, tls_files):
    broker = broker_factory(tls=tls_files, client_certs=True)
    _queue(store, 3)
    cfg = _mqtt(broker.url.replace("mqtt://", "mqtts://"), ca_file=str(tls_files.ca),
                cert_file=str(tls_files.client_cert), key_file=str(tls_files.client_key))
    with Publisher(cfg, device="trap-01", store=store) as pub:
        wait_until(lambda: store.outbox_depth().count == 0)
        assert pub.state.connected
    rogue = _mqtt(broker.url.replace("mqtt://", "mqtts://"), ca_file=str(tls_files.ca),
                  cert_file=str(tls_files.rogue_cert), key_file=str(tls_files.rogue_key))
    _queue(store, 2)
    with Publisher(rogue, device="trap-01", store=store) as pub:
        wait_until(lambda: pub.state.last_error is not None)
        time.sleep(0.5)
        assert not pub.state.connected
    assert store.outbox_depth().count == 2  # nothing lost


def test_passwords_right_and_wrong(broker_factory, store, tmp_path, monkeypatch):
    broker = broker_factory(passwords={"trap-01": "s3cret"})
    _queue(store, 4)
    wrong = tmp_path / "wrong"
    wrong.write_text("guess\n")
    wrong.chmod(0o600)  # a password file others may read is refused before any connection
    with Publisher(_mqtt(broker.url, username="trap-01", password_file=str(wrong)), device="trap-01",
                   store=store) as pub:
        wait_until(lambda: pub.state.last_error is not None and "refused" in pub.state.last_error)
        assert "Not authorized" in pub.state.last_error or "password" in pub.state.last_error
        assert not pub.state.connected
    assert store.outbox_depth().count == 4
    # The right password, from a systemd credential directory.
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    with Publisher(_mqtt(broker.url, username="trap-01"), device="trap-01", store=store) as pub:
        wait_until(lambda: store.outbox_depth().count == 0)
        assert pub.state.acked == 4


def test_acl_refusal_is_reported_and_the_message_kept(broker_factory, store):
    acl = ("user trap-01\ntopic readwrite wildedge/trap-01/status\ntopic readwrite wildedge/trap-01/model\n"
           "topic readwrite wildedge/trap-01/cmd/#\n")
    broker = broker_factory(passwords={"trap-01": "pw"}, acl=acl)
    store.path.parent.joinpath("pw").write_text("pw")
    store.path.parent.joinpath("pw").chmod(0o600)
    _queue(store, 2)
    cfg = _mqtt(broker.url, username="trap-01", password_file=str(store.path.parent / "pw"))
    with Publisher(cfg, device="trap-01", store=store) as pub:
        wait_until(lambda: pub.state.refused >= 2)
        assert pub.state.connected
        assert "Not authorized" in pub.state.last_error
    assert store.outbox_depth().count == 2


def test_mqtt_311_delivers_too(broker, store):
    uids = _queue(store, 5)
    sub = Subscriber(broker.host, broker.port)
    try:
        with Publisher(_mqtt(broker.url, protocol="3.1.1"), device="trap-01", store=store) as pub:
            wait_until(lambda: store.outbox_depth().count == 0)
            assert pub.state.protocol == "3.1.1"
        sub.wait_for(lambda: len(sub.on("/event")) == 5)
        assert [json.loads(m.payload)["e"] for m in sub.on("/event")] == uids
    finally:
        sub.close()


@pytest.mark.parametrize("reply", [V311OnlyProxy.V311_REFUSAL, V311OnlyProxy.V5_REFUSAL], ids=["rc1", "0x84"])
def test_auto_falls_back_to_311_when_the_broker_refuses_mqtt_5(broker, store, reply):
    proxy = V311OnlyProxy(broker.host, broker.port, reply=reply)
    uids = _queue(store, 5)
    sub = Subscriber(broker.host, broker.port)
    try:
        with Publisher(_mqtt(f"mqtt://127.0.0.1:{proxy.port}"), device="trap-01", store=store) as pub:
            wait_until(lambda: store.outbox_depth().count == 0)
            assert pub.state.protocol == "3.1.1" and proxy.refused >= 1
        sub.wait_for(lambda: len(sub.on("/event")) == 5)
        assert [json.loads(m.payload)["e"] for m in sub.on("/event")] == uids
    finally:
        sub.close()
        proxy.close()


# -- commands through a running daemon ----------------------------------------------------------------

@pytest.fixture
def running(tmp_path, assets, stamped, broker):
    """An in-process daemon (scripted camera, external trigger) connected to ``broker``, and a client."""
    config = config_from_dict(external_trigger_config(tmp_path, model=stamped["fastestdet"], broker_url=broker.url))
    photo = sorted((assets / "camera_traps_lila" / "images").iterdir())[0]
    with daemon_in_thread(config, photo) as (daemon, thread):
        sub = Subscriber(broker.host, broker.port, topic="wildedge/trap-01/#")
        try:
            # commands sent before the broker acknowledged the daemon's subscription would be lost
            wait_until(lambda: daemon.publisher is not None and daemon.publisher.state.listening)
            yield daemon, sub, thread
        finally:
            sub.close()


def _ask(sub: Subscriber, name: str, payload: bytes | str, *, correlation: bytes | None = None) -> dict:
    before = len(sub.on("/cmd/result"))
    sub.publish(f"wildedge/trap-01/cmd/{name}", payload, correlation=correlation)
    sub.wait_for(lambda: len(sub.on("/cmd/result")) > before)
    return json.loads(sub.on("/cmd/result")[before].payload)


@pytest.mark.assets
def test_commands_are_answered_with_their_correlation(running):
    daemon, sub, _thread = running
    before = len(sub.on("/cmd/result"))
    sub.publish("wildedge/trap-01/cmd/ping", b"{}", correlation=b"abc-123")
    sub.wait_for(lambda: len(sub.on("/cmd/result")) > before)
    reply = sub.on("/cmd/result")[before]
    assert reply.properties.CorrelationData == b"abc-123"
    assert json.loads(reply.payload)["ok"] is True
    assert _ask(sub, "ping", '{"id": "r1"}')["id"] == "r1"  # the JSON id for MQTT 3.1.1 clients
    assert _ask(sub, "capture", '{"burst": 2}')["ok"] is True
    wait_until(lambda: daemon.counts["frames"] == 2)
    status = _ask(sub, "status", "{}")
    assert status["ok"] and status["r"]["status"]["counts"]["frames"] == 2
    assert status["r"]["status"]["mqtt"]["connected"] is True and "queue_depth" in status["r"]["status"]
    sub.wait_for(lambda: sub.on("/event"))
    event = json.loads(sub.on("/event")[0].payload)
    assert event["d"] == "trap-01" and event["g"] == "c"


@pytest.mark.assets
def test_set_validates_persists_and_applies(running):
    daemon, sub, _thread = running
    reply = _ask(sub, "set", '{"values": {"detector.conf": 0.55, "trigger.cooldown": "2s"}}')
    assert reply["ok"], reply
    wait_until(lambda: daemon.pipeline.detector.conf == 0.55)
    persisted = json.loads((daemon.state_dir / "remote-settings.json").read_text())
    assert persisted == {"detector.conf": 0.55, "trigger.cooldown": "2s"}
    bad = _ask(sub, "set", '{"values": {"detector.conf": 7}}')
    assert not bad["ok"] and "detector.conf" in bad["err"]
    refused = _ask(sub, "set", '{"values": {"privacy.person": "keep"}}')
    assert not refused["ok"] and "not settable" in refused["err"]
    assert daemon.pipeline.detector.conf == 0.55


@pytest.mark.assets
def test_malformed_and_unknown_commands_get_errors(running):
    _daemon, sub, _thread = running
    assert _ask(sub, "ping", b"{not json")["code"] == "bad_json"
    assert _ask(sub, "reboot", b"{}")["code"] == "unknown_command"
    assert _ask(sub, "capture", '{"burst": 1000}')["code"] == "bad_args"


@pytest.mark.assets
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["capture", "set", "status", "ping", "rm", "exec", "x" * 40]),
       body=st.one_of(st.binary(max_size=300),
                      st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                                   | st.text(max_size=20),
                                   lambda inner: st.lists(inner, max_size=4)
                                   | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                                   max_leaves=10).map(lambda v: json.dumps(v).encode())))
def test_fuzzed_commands_always_get_an_answer_and_never_crash(running, name, body):
    daemon, sub, thread = running
    reply = _ask(sub, name, body)
    assert set(reply) >= {"v", "d", "ok"}
    assert thread.is_alive() and daemon.publisher.state.connected


@pytest.mark.assets
def test_once_session_delivers_event_and_a_capped_crop(tmp_path, assets, stamped, broker):
    import cv2
    import numpy as np

    from edge.capture import FakeCamera
    from edge.clock import SystemClock
    from edge.daemon import Daemon

    config = config_from_dict({
        "device": {"id": "trap-01", "state_dir": str(tmp_path / "state")},
        "camera": {"type": "opencv", "source": 0},
        "trigger": {"type": "timelapse", "interval": "1h", "burst": 2, "burst_interval": "0s"},
        "detector": {"model": str(stamped["fastestdet"]), "conf": 0.15},
        "privacy": {"person": "keep"},
        "storage": {"min_free": 0},
        "mqtt": {"url": broker.url, "keepalive": "5s", "crops": True, "crop_max_bytes": 3000},
    })
    frame = cv2.imread(str(sorted((assets / "camera_traps_lila" / "images").iterdir())[1]))
    sub = Subscriber(broker.host, broker.port)
    try:
        camera = FakeCamera([frame, frame], clock=SystemClock())
        assert Daemon(config, once=True, camera_factory=lambda: camera).run() == 0  # delivers, then exits
        sub.wait_for(lambda: sub.on("/event") and [m for m in sub.messages if "/crop/" in m.topic])
        (event,) = sub.json("/event")
        (crop,) = [m for m in sub.messages if "/crop/" in m.topic]
        assert crop.topic == f"wildedge/trap-01/crop/{event['e']}"
        assert len(crop.payload) <= 3000
        image = cv2.imdecode(np.frombuffer(crop.payload, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and max(image.shape[:2]) <= 320
        with Store(tmp_path / "state" / "wildedge.db", images_dir=tmp_path / "state" / "images") as store:
            assert store.outbox_depth().count == 0
    finally:
        sub.close()


def test_crops_are_rate_limited_and_capped():
    import numpy as np

    from edge.crops import encode_crop
    from edge.mqtt.device import EventMessages
    from edge.pipeline import Processed
    from edge.store import FrameRecord

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)  # incompressible: forces small sizes
    small = encode_crop(noise, (100, 100, 700, 500), max_bytes=4000)
    assert small is not None and len(small) <= 4000
    assert encode_crop(noise, (10, 10, 10, 10), max_bytes=4000) is None  # no area
    assert encode_crop(noise, (100, 100, 700, 500), max_bytes=200) is None  # cannot fit: not sent
    config = config_from_dict({"device": {"id": "trap-01"}, "camera": {"type": "opencv", "source": 0},
                               "trigger": {"type": "external"}, "detector": {"model": "d.onnx"},
                               "mqtt": {"url": "mqtt://h", "crops": True, "crop_min_interval": "60s"}})
    clock = {"t": 0.0}
    build = EventMessages(config, model_id="0" * 8, sticky=False, monotonic=lambda: clock["t"])
    sent = []
    for t in (0.0, 30.0, 61.0):
        clock["t"] = t
        frame = FrameRecord(new_uid(), T0, t, "boot", True, "external", new_uid(), 0, 800, 600, 1.0)
        event = EventRecord(new_uid(), frame.burst_id, T0, t, "boot", True, "external", None, frame.uid,
                            {"frames": 1, "frames_with_detections": 0, "classes": [],
                             "best": {"frame_uid": frame.uid, "index": 0, "class_id": 0, "label": "x",
                                      "score": 0.5, "box": [0, 0, 1, 1]}})
        sent.append(sum("/crop/" in m.topic for m in build(event, [Processed(frame, crop=small)])))
    assert sent == [1, 0, 1] and build.crops_skipped == 1


@pytest.mark.assets
def test_home_assistant_discovery_and_state(tmp_path, assets, stamped, broker):
    import cv2

    from edge.capture import FakeCamera
    from edge.clock import SystemClock
    from edge.daemon import Daemon

    config = config_from_dict({
        "device": {"id": "trap-01", "state_dir": str(tmp_path / "state")},
        "camera": {"type": "opencv", "source": 0},
        "trigger": {"type": "timelapse", "interval": "1h"},
        "detector": {"model": str(stamped["fastestdet"]), "conf": 0.15},
        "privacy": {"person": "keep"},
        "storage": {"min_free": 0},
        "mqtt": {"url": broker.url, "keepalive": "5s", "ha_discovery": True},
    })
    frame = cv2.imread(str(sorted((assets / "camera_traps_lila" / "images").iterdir())[1]))
    clock = SystemClock(rtc=True)  # a synchronised clock: the event is tallied
    assert Daemon(config, once=True, clock=clock,
                  camera_factory=lambda: FakeCamera([frame], clock=clock)).run() == 0
    late = Subscriber(broker.host, broker.port, topic="#", client_id="home-assistant")
    try:
        late.wait_for(lambda: late.on("/ha") and len([m for m in late.messages if m.topic.startswith(
            "homeassistant/")]) >= 6)
        configs = [json.loads(m.payload) for m in late.messages if m.topic.startswith("homeassistant/sensor/trap-01/")]
        assert {c["unique_id"] for c in configs} >= {"wildedge_trap-01_cpu_temperature",
                                                      "wildedge_trap-01_detections_today"}
        state = json.loads(late.on("/ha")[-1].payload)
        assert state["today"] == 1 and state["last"]
    finally:
        late.close()


@pytest.mark.assets
def test_check_reports_the_broker(tmp_path, stamped, broker_factory):
    import subprocess

    broker = broker_factory(passwords={"trap-01": "pw"})
    (tmp_path / "photos").mkdir()
    (tmp_path / "pw").write_text("pw")
    (tmp_path / "bad").write_text("nope")
    for name in ("pw", "bad"):
        (tmp_path / name).chmod(0o600)
    for password, mark in (("pw", "ok   mqtt"), ("bad", "FAIL mqtt")):
        cfg = tmp_path / f"{password}.toml"
        cfg.write_text(f"""
[device]
id = "trap-01"
state_dir = "{tmp_path / 'state'}"
[camera]
type = "folder"
path = "{tmp_path / 'photos'}"
[detector]
model = "{stamped['fastestdet']}"
[mqtt]
url = "{broker.url}"
username = "trap-01"
password_file = "{tmp_path / password}"
""")
        result = subprocess.run([*WILDEDGE, "check", "--config", str(cfg)], capture_output=True, text=True,
                                timeout=60)
        assert mark in result.stdout, result.stdout + result.stderr
        assert result.returncode == (0 if password == "pw" else 1)

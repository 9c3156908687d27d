"""The collector against a real mosquitto: stored once, acknowledged only after commit, bad input refused."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as paho
from collector_helpers import (
    collector_process,
    event_ids,
    publish_all,
    publisher,
    rows,
    running_collector,
    wait_for_events,
)
from daemon_helpers import wait_until
from paho.mqtt.enums import CallbackAPIVersion

from collector.consumer import BrokerOptions, Collector
from collector.db import migrate, open_engine
from edge.payload import encode_event, encode_model, encode_status
from edge.store import DetectionRecord, EventRecord, FrameRecord, new_uid

T0 = datetime(2026, 6, 1, 4, 30, tzinfo=timezone.utc)


def make_events(device: str, count: int, *, start: datetime = T0) -> list[tuple[str, bytes, str]]:
    """``count`` event messages of ``device``: (topic, payload, event id)."""
    out = []
    for k in range(count):
        frame = FrameRecord(new_uid(), start + timedelta(minutes=k), 100.0 + k, "boot-1", True, "motion", "b",
                            0, 1920, 1080, 50.0, detections=[DetectionRecord(0, "animal", 0.9, (0.1, 0.2, 0.3, 0.4))])
        event = EventRecord(new_uid(), "b", frame.captured_at, frame.monotonic, "boot-1", True, "motion", None,
                            frame.uid, {"classes": [{"class_id": 0, "count": 1}]})
        out.append((f"wildedge/{device}/event", encode_event(event, frame, device=device, model_id="0badcafe",
                                                             image=None), event.uid))
    return out


def test_events_are_stored_once_however_often_they_arrive(broker, tmp_path):
    db = tmp_path / "c.db"
    events = make_events("trap-01", 30)
    client = publisher(broker.host, broker.port)
    try:
        with running_collector(f"sqlite:///{db}", broker.url) as collector:
            publish_all(client, [(t, p) for t, p, _ in events])
            publish_all(client, [(t, p) for t, p, _ in events[::3]])  # resent after a device crash
            wait_until(lambda: collector.stats.stored + collector.stats.duplicates >= 40)
            assert collector.stats.stored == 30 and collector.stats.duplicates == 10
    finally:
        client.loop_stop()
    assert sorted(event_ids(db)) == sorted(uid for *_, uid in events)
    assert rows(db, "SELECT count(*) FROM detections")[0][0] == 30


def test_retained_state_and_bad_input_never_stop_the_stream(broker, tmp_path):
    db = tmp_path / "c.db"
    client = publisher(broker.host, broker.port)
    try:
        from edge.payload import ModelInfo
        det = ModelInfo("det.onnx", "a" * 64, ["animal", "<script>alert(1)</script>"], 0.2, 0.45)
        publish_all(client, [("wildedge/trap-01/model", encode_model(device="trap-01", detector=det, classifier=None,
                                                                    at=T0, clock_synced=True)),
                             ("wildedge/trap-01/status", encode_status(device="trap-01", state="online", at=T0,
                                                                       clock_synced=True))], retain=True)
        bad = [("wildedge/trap-01/event", b"{not json"), ("wildedge/trap-01/event", b'{"v":7,"d":"trap-01"}'),
               ("wildedge/trap-01/event", b'{"v":1,"d":"trap-01","e":1}'),
               ("wildedge/trap-02/event", make_events("trap-01", 1)[0][1]),
               ("wildedge/trap-01/crop/AZ6BLMhUdOCAhWK-24tgzg", b"not a jpeg"),
               ("wildedge/trap-01/event", b"x" * (70_000))]
        good = make_events("trap-01", 5)
        with running_collector(f"sqlite:///{db}", broker.url, max_payload=65_536) as collector:
            publish_all(client, bad + [(t, p) for t, p, _ in good])
            wait_until(lambda: collector.stats.stored >= 5 + 2 and collector.stats.rejected >= len(bad))
    finally:
        client.loop_stop()
    assert len(event_ids(db)) == 5
    reasons = dict(rows(db, "SELECT name, value FROM counters"))
    assert reasons == {"rejected.bad_json": 1, "rejected.bad_version": 1, "rejected.invalid": 1,
                       "rejected.device_mismatch": 1, "rejected.bad_crop": 1, "rejected.too_large": 1}
    assert rows(db, "SELECT state FROM devices WHERE device = 'trap-01'") == [("online",)]
    assert ("<script>alert(1)</script>",) in rows(db, "SELECT label FROM labels")


def test_a_huge_payload_is_never_delivered_to_the_collector(broker, tmp_path):
    """MQTT 5 Maximum Packet Size: the broker drops what is far over the limit; the stream goes on."""
    db = tmp_path / "c.db"
    client = publisher(broker.host, broker.port)
    try:
        with running_collector(f"sqlite:///{db}", broker.url, max_payload=65_536) as collector:
            publish_all(client, [("wildedge/trap-01/event", b"x" * (8 << 20))])
            events = make_events("trap-01", 3)
            publish_all(client, [(t, p) for t, p, _ in events])
            wait_for_events(db, 3)
            assert collector.stats.received == 3  # the 8 MB message never reached the process
    finally:
        client.loop_stop()


def test_allow_list(broker, tmp_path):
    db = tmp_path / "c.db"
    client = publisher(broker.host, broker.port)
    try:
        with running_collector(f"sqlite:///{db}", broker.url, allow=frozenset({"trap-01"})) as collector:
            publish_all(client, [(t, p) for t, p, _ in make_events("trap-01", 2) + make_events("intruder", 3)])
            wait_until(lambda: collector.stats.stored + collector.stats.rejected >= 5)
    finally:
        client.loop_stop()
    assert len(event_ids(db)) == 2
    assert rows(db, "SELECT value FROM counters WHERE name = 'rejected.not_allowed'") == [(3,)]


def test_nothing_is_acknowledged_before_it_is_committed(broker, tmp_path):
    """The database is locked (as when it is lost): messages wait unacknowledged; the collector is
    SIGKILLed; the broker resends them to the restarted collector and each is stored once."""
    db = tmp_path / "c.db"
    url = f"sqlite:///{db}"
    log = tmp_path / "collector.log"
    proc = collector_process(url, broker.url, log=log)
    client = publisher(broker.host, broker.port)
    events = make_events("trap-01", 20)
    try:
        wait_until(lambda: rows(db, "SELECT version FROM schema_version"), 30)
        time.sleep(1.0)  # subscribed (the broker keeps the session from here on)
        publish_all(client, [(t, p) for t, p, _ in events[:5]])
        wait_for_events(db, 5)
        blocker = sqlite3.connect(db, isolation_level=None, timeout=30)
        blocker.execute("BEGIN EXCLUSIVE")  # nobody else can write (or read, in rollback mode) now
        publish_all(client, [(t, p) for t, p, _ in events[5:]])
        time.sleep(2.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        blocker.execute("ROLLBACK")
        blocker.close()
        assert len(event_ids(db)) == 5
        proc = collector_process(url, broker.url, log=log)
        wait_for_events(db, 20)
        time.sleep(1.0)
        assert sorted(event_ids(db)) == sorted(uid for *_, uid in events)
    finally:
        client.loop_stop()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_unreachable_database_at_start_is_one_line(tmp_path):
    import subprocess

    from daemon_helpers import WILDEDGE

    result = subprocess.run([*WILDEDGE, "collect", "run", "--broker", "mqtt://127.0.0.1:1", "--db",
                             "postgresql://nobody@/nothing?host=/nonexistent"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open the collector database"), result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run([*WILDEDGE, "collect", "run", "--broker", "http://x", "--db", f"sqlite:///{tmp_path}/c.db"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: --broker"), result.stderr


def test_postgresql_lost_while_running_loses_nothing(broker, postgres, pg_url):
    """The database refuses connections and drops the open ones mid-stream: the collector retries,
    acknowledges nothing it could not store, and a collector started after it stores everything once."""
    from sqlalchemy.engine import make_url

    name = make_url(pg_url).database
    events = make_events("trap-01", 30)
    client = publisher(broker.host, broker.port)
    try:
        with running_collector(pg_url, broker.url, client_id="pg-collector") as collector:
            publish_all(client, [(t, p) for t, p, _ in events[:10]])
            wait_until(lambda: collector.stats.stored >= 10)
            postgres.sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            postgres.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
            publish_all(client, [(t, p) for t, p, _ in events[10:]])
            wait_until(lambda: collector.stats.db_failures > 0, 30)
            assert collector.stats.stored == 10
        postgres.sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        with running_collector(pg_url, broker.url, client_id="pg-collector") as collector:
            wait_until(lambda: collector.stats.stored >= 20, 30)
        import sqlalchemy

        engine = sqlalchemy.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            stored = {r[0] for r in conn.execute(sqlalchemy.text("SELECT id FROM events"))}
        engine.dispose()
        assert stored == {uid for *_, uid in events}
    finally:
        client.loop_stop()


def test_tls_with_a_client_certificate(broker_factory, tls_files, tmp_path):
    broker = broker_factory(tls=tls_files, client_certs=True)
    db = tmp_path / "c.db"
    events = make_events("trap-01", 3)
    options = {"ca_file": tls_files.ca, "cert_file": tls_files.client_cert, "key_file": tls_files.client_key}
    with running_collector(f"sqlite:///{db}", broker.url, broker=options) as collector:
        assert collector.broker.tls
        device = paho.Client(CallbackAPIVersion.VERSION2, client_id="trap-01", protocol=paho.MQTTv5)
        device.tls_set(ca_certs=str(tls_files.ca), certfile=str(tls_files.client_cert),
                       keyfile=str(tls_files.client_key))
        device.connect(broker.host, broker.port)
        device.loop_start()
        try:
            publish_all(device, [(t, p) for t, p, _ in events])
            wait_for_events(db, 3)
        finally:
            device.loop_stop()


def test_a_wrong_password_is_logged_and_nothing_is_stored(broker_factory, tmp_path, caplog):
    broker = broker_factory(passwords={"collector": "s3cret"})
    wrong = tmp_path / "wrong"
    wrong.write_text("guess\n")
    wrong.chmod(0o600)
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    collector = Collector(engine, broker=BrokerOptions(url=broker.url, client_id="c", username="collector",
                                                       password_file=wrong))
    thread = threading.Thread(target=collector.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: "refused the connection" in caplog.text, 20)
        assert not collector.subscribed.is_set()
    finally:
        collector.stop()
        thread.join(20)
        engine.dispose()
    right = tmp_path / "right"
    right.write_text("s3cret\n")
    right.chmod(0o600)
    with running_collector(f"sqlite:///{tmp_path / 'c.db'}", broker.url, client_id="c",
                           broker={"username": "collector", "password_file": right}):
        pass  # subscribed: the right password from the file is accepted


def test_a_message_that_breaks_the_code_is_kept_and_the_stream_goes_on(broker, tmp_path, monkeypatch):
    from collector import ingest

    real = ingest._event_row

    def buggy(conn, parsed, received):
        if parsed.data["id"] == poison:
            raise RuntimeError("a bug")
        return real(conn, parsed, received)

    events = make_events("trap-01", 6)
    poison = events[2][2]
    monkeypatch.setattr(ingest, "_event_row", buggy)
    db = tmp_path / "c.db"
    client = publisher(broker.host, broker.port)
    try:
        with running_collector(f"sqlite:///{db}", broker.url) as collector:
            publish_all(client, [(t, p) for t, p, _ in events])
            wait_until(lambda: collector.stats.stored + collector.stats.rejected >= 6)
            assert collector.stats.by_reason == {"internal": 1}
    finally:
        client.loop_stop()
    assert sorted(event_ids(db)) == sorted(uid for *_, uid in events if uid != poison)
    assert rows(db, "SELECT reason, device FROM rejects") == [("internal", None)]
    assert rows(db, "SELECT value FROM counters WHERE name = 'rejected.internal'") == [(1,)]


def test_collector_tells_systemd_it_is_ready_alive_and_stopping(broker, tmp_path):
    """Type=notify with WatchdogSec= for wildedge-collector.service: READY once connecting, a
    keep-alive at least every half watchdog period (also while the database is away), STOPPING."""
    import socket

    from edge.sdnotify import Notifier

    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
    collector = Collector(engine, broker=BrokerOptions(url=broker.url, client_id="c"), notifier=notifier)
    thread = threading.Thread(target=collector.run, daemon=True)
    thread.start()
    got: list[str] = []
    try:
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            got += sock.recv(4096).decode().split("\n")
    finally:
        collector.stop()
        thread.join(20)
        engine.dispose()
    got += sock.recv(4096).decode().split("\n")
    sock.close()
    assert got[0] == "READY=1"
    assert got.count("WATCHDOG=1") >= 5  # every 0.2 s for 1.5 s: at least 5 even on a busy machine
    assert got[-1] == "STOPPING=1"

"""``wildedge collect status`` on a SQLite database filled from real wire messages; the seed helper the web tests share."""

from __future__ import annotations

import json
import time
import uuid

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from collector import queries
from collector.cli import app
from collector.cmd_status import ago, render_table
from collector.db import migrate, open_engine
from collector.ingest import Incoming, store_batch
from edge.payload import ModelInfo, dumps, encode_health, encode_id, encode_model, encode_status, model_id

PREFIX = "wildedge"
XSS_LABEL = "<script>alert(1)</script>"
XSS_TOPIC = "wildedge/<img src=x onerror=alert(2)>/event"
DET = ModelInfo("md_v5a.0.0.onnx", "ef07334231bdbf727bb5ad1c8f6e30b1a435e2407ebac9bc547fe3915357e940",
                ["animal", "person", "vehicle"], 0.2, 0.45)
CLS = ModelInfo("species.onnx", "7245855c803660a7b841fb6cca298826c604d53dcc7f18355f0e6fe24eca76b5",
                ["red fox", "roe deer", XSS_LABEL], 0.5)
MV = model_id(DET.sha256, CLS.sha256)
DAY = 86400


def _msg(device: str, kind: str, payload: bytes, received: int) -> Incoming:
    return Incoming(f"{PREFIX}/{device}/{kind}", payload, received)


def _health(device: str, t: int) -> Incoming:
    snap = {"at": float(t), "clock_synchronised": True, "boot_id": "5f1c9a3e-0000", "monotonic_s": t % 10**6,
            "cpu_temp_c": 48.3, "disk_free_bytes": 45807 << 20, "disk_total_bytes": 59392 << 20, "queue_depth": 3,
            "camera": {"state": "ok"}, "disk_low": False}
    return _msg(device, "health", encode_health(snap, device=device), t)


def _event(device: str, t: int, rows: list[list[int]], *, n: list[list[int]] | None = None,
           w: list[int] | None = None) -> tuple[str, Incoming]:
    uid = str(uuid.uuid4())
    msg = {"v": 1, "d": device, "e": encode_id(uid), "t": t, "s": 1, "g": "m", "x": rows, "mv": MV}
    if n:
        msg["n"] = n
    if w:
        msg["w"] = w
    return uid, _msg(device, "event", dumps(msg), t + 5)


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    """A small solid-colour JPEG."""
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[:] = colour
    image[size[1] // 4: size[1] * 3 // 4, size[0] // 4: size[0] * 3 // 4] = 255
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def seed(url: str, now: int) -> dict[str, list[str]]:
    """A database of three devices: trap-01 well, trap-02 gone (Last Will, silent), trap-03 silent.

    Returns the event ids by kind (``crops``: the events that have a crop, newest first).
    """
    engine = open_engine(url)
    migrate(engine)
    model = encode_model(device="trap-01", detector=DET, classifier=CLS, at=now - 3 * DAY, clock_synced=True)
    batch = [_msg("trap-01", "model", model, now - 3 * DAY),
             _msg("trap-01", "status", encode_status(device="trap-01", state="online", at=now - 3 * DAY,
                                                     clock_synced=True), now - 3 * DAY)]
    batch += [_health("trap-01", now - 60 - 300 * i) for i in range(6)]
    fox1, e1 = _event("trap-01", now - 600, [[0, 900, 100, 100, 300, 300, 0, 880]], n=[[0, 2]])
    fox2, e2 = _event("trap-01", now - 1200, [[0, 900, 100, 100, 300, 300, 0, 800]])
    xss, e3 = _event("trap-01", now - DAY, [[0, 800, 100, 100, 300, 300, 2, 700]], w=[2, 3, 4])
    person, e4 = _event("trap-01", now - DAY - 100, [[1, 700, 500, 100, 700, 900]])
    empty, e5 = _event("trap-01", now - 2 * DAY, [])
    batch += [e1, e2, e3, e4, e5]
    batch += [_msg("trap-01", f"crop/{encode_id(uid)}", jpeg(c), now - i)
              for i, (uid, c) in enumerate(((fox1, (0, 90, 200)), (fox2, (30, 160, 30)), (xss, (160, 40, 40))))]
    batch += [_health("trap-02", now - 3 * 3600 - 300 * i) for i in range(4)]
    batch.append(_msg("trap-02", "status", encode_status(device="trap-02", state="offline"), now - 3 * 3600))
    batch += [_health("trap-03", now - 600 - 60 * i) for i in range(5)]
    batch.append(Incoming(XSS_TOPIC, b"{}", now - 30))
    with engine.begin() as conn:
        result = store_batch(conn, batch, prefix=PREFIX, max_payload=1 << 20)
    engine.dispose()
    assert result.count("rejected") == 1, [o for o in result.outcomes if o.reject]
    return {"fox": [fox1, fox2], "xss": [xss], "person": [person], "empty": [empty], "crops": [fox1, fox2, xss]}


@pytest.fixture
def seeded(collector_url: str) -> tuple[str, int, dict[str, list[str]]]:
    """(url, now, event ids) of a seeded database, once SQLite and once PostgreSQL."""
    now = int(time.time())
    return collector_url, now, seed(collector_url, now)


def _rows(url: str, now: int) -> dict[str, queries.DeviceRow]:
    engine = open_engine(url, read_only=True)
    with engine.connect() as conn:
        rows = queries.device_rows(conn, now=now)
    engine.dispose()
    return {r.device: r for r in rows}


def test_device_rows_fields_and_marks(seeded):
    url, now, _ids = seeded
    rows = _rows(url, now)
    assert list(rows) == ["trap-01", "trap-02", "trap-03"]
    one = rows["trap-01"]
    assert (one.state, one.clock, one.disk_free_mib, one.disk_total_mib, one.temp_c, one.queue_depth) == \
        ("online", "synced", 45807, 59392, 48.3, 3)
    assert one.camera == "ok" and one.disk_low is False
    assert one.expected_s == 900 and not one.silent and one.marks == []
    # Today's events: the UTC day of now; the two fox events are today unless now is just past midnight.
    assert one.events_today == sum(queries.utc_day(t) == queries.utc_day(now) for t in (now - 600, now - 1200))
    two = rows["trap-02"]
    assert two.state == "offline" and two.silent and two.marks == ["OFFLINE", "SILENT"]
    three = rows["trap-03"]
    assert three.expected_s == 180 and three.silent and three.marks == ["SILENT"]


def test_expected_interval_defaults_without_health_history(seeded):
    url, now, _ids = seeded
    engine = open_engine(url, read_only=True)
    with engine.connect() as conn:
        assert queries.expected_interval(conn, "nobody") == queries.DEFAULT_INTERVAL_S
    engine.dispose()
    rows = _rows(url, now + 2 * 3600)  # two hours on: trap-01 (15 min expected) goes silent as well
    assert rows["trap-01"].silent


def test_status_table(seeded):
    url, _now, _ids = seeded
    result = CliRunner().invoke(app, ["status", "--db", url])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["DEVICE", "STATE"]
    by_device = {line.split()[0]: line for line in lines[1:]}
    assert set(by_device) == {"trap-01", "trap-02", "trap-03"}
    assert "44.7 GiB (77%)" in by_device["trap-01"] and "48.3 C" in by_device["trap-01"]
    assert "synced" in by_device["trap-01"] and not by_device["trap-01"].endswith("SILENT")
    assert by_device["trap-02"].endswith("OFFLINE SILENT")
    assert by_device["trap-03"].endswith("SILENT") and "OFFLINE" not in by_device["trap-03"]


def test_status_json(seeded):
    url, _now, _ids = seeded
    result = CliRunner().invoke(app, ["status", "--db", url, "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["device"]: r for r in json.loads(result.output)}
    assert rows["trap-02"]["marks"] == ["OFFLINE", "SILENT"] and rows["trap-02"]["state"] == "offline"
    assert rows["trap-01"]["silent"] is False and rows["trap-01"]["temp_c"] == 48.3
    assert set(rows["trap-01"]) >= {"last_seen", "age_s", "clock", "disk_free_mib", "queue_depth", "events_today"}


def test_status_missing_db_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["status", "--db", f"sqlite:///{tmp_path / 'nope.db'}"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "no database at" in result.output
    assert "Traceback" not in result.output


def test_status_empty_db(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    engine.dispose()
    result = CliRunner().invoke(app, ["status", "--db", f"sqlite:///{tmp_path / 'c.db'}"])
    assert result.exit_code == 0 and "no devices yet" in result.output


def test_render_helpers():
    assert [ago(s) for s in (5, 61, 7200, 3 * DAY)] == ["5s ago", "1m ago", "2h ago", "3d ago"]
    assert render_table([]).startswith("DEVICE")

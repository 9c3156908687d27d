"""The collector's ingest on SQLite and PostgreSQL: exactly once, clock correction, status history,
hostile messages (each a reject, the rest of the batch stored), concurrent collectors, migrations."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from sqlalchemy import Engine, func, select, text, update

from collector import ingest
from collector.db import VERSION, migrate, open_engine
from collector.db.schema import (
    clock_refs,
    counters,
    crops,
    detections,
    devices,
    effort,
    effort_counts,
    event_counts,
    events,
    health,
    labels,
    models,
    rejects,
    schema_version,
    status_history,
)
from collector.ingest import BatchResult, Incoming, day_of, store_batch
from edge.errors import CollectorError
from edge.payload import encode_id, model_id

GOLDEN = Path(__file__).parent / "golden" / "wire"
PREFIX = "wildedge"
MAX_PAYLOAD = 1_000_000
RECEIVED = 1_780_290_000
BOOT_A, BOOT_B = "5f1c9a3e", "0badf00d"
DET_SHA, CLS_SHA = "ef07334231bdbf727bb5ad1c8f6e30b1a435e2407ebac9bc547fe3915357e940", "7245855c803660a7b841fb6cca298826c604d53dcc7f18355f0e6fe24eca76b5"
MV = model_id(DET_SHA, None)


# -- helpers ---------------------------------------------------------------------------------------

@pytest.fixture
def engine(collector_url: str) -> Iterator[Engine]:
    """A migrated collector database on SQLite or PostgreSQL."""
    eng = open_engine(collector_url)
    migrate(eng)
    try:
        yield eng
    finally:
        eng.dispose()


def new_id() -> str:
    """A fresh 22-character wire id."""
    return encode_id(str(uuid.uuid4()))


def incoming(kind: str, message: dict[str, Any] | bytes, *, device: str | None = None,
             received: int = RECEIVED) -> Incoming:
    """``message`` (a dict is encoded as JSON) on ``<prefix>/<device>/<kind>``."""
    payload = message if isinstance(message, bytes) else json.dumps(message).encode()
    if device is None:
        device = message["d"] if isinstance(message, dict) else "trap-01"
    return Incoming(f"{PREFIX}/{device}/{kind}", payload, received)


def event(device: str = "trap-01", *, t: int = 1_780_283_655, s: int = 1, b: str | None = None,
          m: int | None = None, g: str = "m", eid: str | None = None, **extra: Any) -> dict[str, Any]:
    """An event message with one detection."""
    msg: dict[str, Any] = {"v": 1, "d": device, "e": eid or new_id(), "t": t, "s": s, "g": g,
                           "x": [[0, 900, 100, 200, 300, 400]], "mv": MV, **extra}
    if b is not None:
        msg |= {"b": b, "m": m}
    return msg


def health_msg(device: str = "trap-01", *, t: int, s: int, b: str, m: int, **extra: Any) -> dict[str, Any]:
    """A health message with a few fields."""
    return {"v": 1, "d": device, "t": t, "s": s, "b": b, "m": m, "df": 1000, "q": 0, "cam": "o", **extra}


def effort_msg(device: str = "trap-01", *, t0: int, t1: int, s: int, b: str, m: int,
               eid: str | None = None) -> dict[str, Any]:
    """An effort message for the timelapse trigger."""
    return {"v": 1, "d": device, "e": eid or new_id(), "t0": t0, "t1": t1, "s": s, "b": b, "m": m,
            "f": {"t": [4, 3, 1, 0]}}


def status_msg(device: str = "trap-01", st: str = "online", t: int | None = 1_780_283_655) -> dict[str, Any]:
    """A status message (``t`` None: the Last Will)."""
    return {"v": 1, "d": device, "st": st} | ({} if t is None else {"t": t, "s": 1})


def model_msg(device: str = "trap-01", det_labels: list[str] | None = None) -> dict[str, Any]:
    """A model message (detector only)."""
    return {"v": 1, "d": device, "t": 1_780_283_655, "s": 1, "mv": MV,
            "det": {"n": "md.onnx", "sha": DET_SHA, "l": det_labels or ["animal", "person"], "conf": 0.2}}


def jpeg() -> bytes:
    """A small real JPEG."""
    ok, data = cv2.imencode(".jpg", np.full((16, 16, 3), 127, np.uint8))
    assert ok
    return data.tobytes()


def store(eng: Engine, batch: list[Incoming], *, allow: frozenset[str] | None = None,
          max_payload: int = MAX_PAYLOAD) -> BatchResult:
    """``batch`` stored in one transaction."""
    with eng.begin() as conn:
        return store_batch(conn, batch, prefix=PREFIX, max_payload=max_payload, allow=allow)


def count(eng: Engine, table: Any, *where: Any) -> int:
    with eng.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def rows(eng: Engine, query: Any) -> list[Any]:
    with eng.connect() as conn:
        return list(conn.execute(query).all())


def golden() -> list[Incoming]:
    """Every golden message the collector stores (not commands and results), on its topic."""
    found = []
    for path in sorted(GOLDEN.glob("*.json")):
        kind = path.stem.split("_")[0]
        if kind in ("event", "effort", "health", "model", "status"):
            found.append(incoming(kind, path.read_bytes(), device="trap-01"))
    return found


TABLES = (events, detections, event_counts, effort, effort_counts, health, models, labels, crops, clock_refs)


def table_counts(eng: Engine) -> dict[str, int]:
    return {t.name: count(eng, t) for t in TABLES}


# -- exactly once ----------------------------------------------------------------------------------

def test_all_golden_messages_are_stored(engine: Engine) -> None:
    """Every golden message is valid to the collector and lands in its tables."""
    batch = golden()
    crop_id = json.loads((GOLDEN / "event_1_detection.json").read_text())["e"]
    batch.append(Incoming(f"{PREFIX}/trap-01/crop/{crop_id}", jpeg(), RECEIVED))
    result = store(engine, batch)
    assert [o.reject for o in result.outcomes] == [None] * len(batch)
    assert table_counts(engine) == {"events": 7, "detections": 11, "event_counts": 8, "effort": 2,
                                    "effort_counts": 4, "health": 1, "models": 1, "labels": 15, "crops": 1,
                                    "clock_refs": 1}
    (state, model, disk), = rows(engine, select(devices.c.state, devices.c.model_id, devices.c.disk_free_mib))
    assert (state, model, disk) == ("online", "7397320f", 45807)
    assert count(engine, rejects) == 0


def test_each_message_twice_in_one_batch_and_across_batches_is_stored_once(engine: Engine) -> None:
    """At-least-once delivery: a repeat in the same batch or a later one adds no row."""
    batch = golden()
    first = store(engine, batch + batch)
    once = table_counts(engine)
    statuses = sum(i.topic.endswith("/status") for i in batch)
    assert first.count("duplicate") >= len(batch) - statuses  # statuses are applied, not duplicates
    again = store(engine, list(reversed(batch)))
    assert table_counts(engine) == once
    assert again.count("rejected") == 0
    assert again.count("stored") == sum(i.topic.endswith("/status") for i in batch)
    assert once["events"] == 7 and once["detections"] == 11 and once["labels"] == 15


# -- clock correction -------------------------------------------------------------------------------

T_REF, M_REF = 1_780_283_700, 5_476
OFFSET = T_REF - M_REF


def _clock_of(eng: Engine, table: Any, eid: str) -> tuple[Any, ...]:
    cols = (table.c.time, table.c.day, table.c.clock) if table is events else (table.c.start, table.c.end,
                                                                              table.c.clock)
    (row,) = rows(eng, select(*cols).where(table.c.id == str(uuid.UUID(bytes=_raw(eid)))))
    return tuple(row)


def _raw(eid: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(eid + "==")


@pytest.mark.parametrize("reference", ["health", "effort"])
@pytest.mark.parametrize("order", ["event_first", "reference_first", "same_batch_event_first"])
def test_unsynced_event_is_corrected_by_a_synced_message_of_its_boot(engine: Engine, order: str,
                                                                     reference: str) -> None:
    """m + (t_ref - m_ref), whichever arrives first; its day follows the corrected time."""
    ev = event(t=90, s=0, b=BOOT_A, m=90)
    if reference == "health":
        ref = incoming("health", health_msg(t=T_REF, s=1, b=BOOT_A, m=M_REF))
    else:
        ref = incoming("effort", effort_msg(t0=T_REF - 600, t1=T_REF, s=1, b=BOOT_A, m=M_REF))
    if order == "event_first":
        store(engine, [incoming("event", ev)])
        assert _clock_of(engine, events, ev["e"]) == (90, "1970-01-01", "unsynced")
        store(engine, [ref])
    elif order == "reference_first":
        store(engine, [ref])
        store(engine, [incoming("event", ev)])
    else:
        store(engine, [incoming("event", ev), ref])
    assert _clock_of(engine, events, ev["e"]) == (90 + OFFSET, day_of(90 + OFFSET), "corrected")


@pytest.mark.parametrize("order", ["event_first", "reference_first"])
def test_unsynced_effort_is_corrected_and_keeps_its_length(engine: Engine, order: str) -> None:
    """An effort window's end moves to m + offset and its start by the same amount."""
    eff = effort_msg(t0=5, t1=605, s=0, b=BOOT_A, m=610)
    batches = [[incoming("effort", eff)], [incoming("health", health_msg(t=T_REF, s=1, b=BOOT_A, m=M_REF))]]
    for batch in batches if order == "event_first" else reversed(batches):
        store(engine, batch)
    assert _clock_of(engine, effort, eff["e"]) == (610 + OFFSET - 600, 610 + OFFSET, "corrected")


@pytest.mark.parametrize("order", ["event_first", "reference_first"])
def test_folder_camera_events_are_never_rewritten(engine: Engine, order: str) -> None:
    """Trigger f carries the photo's EXIF time: kept as sent, whatever the device clock did."""
    ev = event(t=1_500_000_000, s=0, b=BOOT_A, m=90, g="f", i="site/IMG_1.JPG")
    batches = [[incoming("event", ev)], [incoming("health", health_msg(t=T_REF, s=1, b=BOOT_A, m=M_REF))]]
    for batch in batches if order == "event_first" else reversed(batches):
        store(engine, batch)
    assert _clock_of(engine, events, ev["e"]) == (1_500_000_000, "2017-07-14", "camera")


def test_boots_and_devices_are_not_mixed(engine: Engine) -> None:
    """A reference corrects its own device and boot only."""
    same = event(t=90, s=0, b=BOOT_A, m=90)
    other_boot = event(t=95, s=0, b=BOOT_B, m=95)
    other_device = event("trap-02", t=97, s=0, b=BOOT_A, m=97)
    store(engine, [incoming("event", same), incoming("event", other_boot), incoming("event", other_device),
                   incoming("health", health_msg(t=T_REF, s=1, b=BOOT_A, m=M_REF))])
    assert _clock_of(engine, events, same["e"])[2] == "corrected"
    assert _clock_of(engine, events, other_boot["e"]) == (95, "1970-01-01", "unsynced")
    assert _clock_of(engine, events, other_device["e"]) == (97, "1970-01-01", "unsynced")
    store(engine, [incoming("effort", effort_msg(t0=T_REF, t1=T_REF + 60, s=1, b=BOOT_B, m=1000))])
    assert _clock_of(engine, events, other_boot["e"]) == (95 + T_REF + 60 - 1000,
                                                         day_of(95 + T_REF + 60 - 1000), "corrected")


def test_an_unsynced_health_gives_no_reference(engine: Engine) -> None:
    """Only a synchronised message is a reference."""
    ev = event(t=90, s=0, b=BOOT_A, m=90)
    store(engine, [incoming("health", health_msg(t=100, s=0, b=BOOT_A, m=100)), incoming("event", ev)])
    assert _clock_of(engine, events, ev["e"])[2] == "unsynced"
    assert count(engine, clock_refs) == 0


# -- status ----------------------------------------------------------------------------------------

def test_repeated_retained_status_adds_no_history(engine: Engine) -> None:
    """A retained status resent at every reconnect changes nothing; a change is one history row."""
    online, will = status_msg(t=100), status_msg(st="offline", t=None)
    store(engine, [incoming("status", online), incoming("status", online)])
    store(engine, [incoming("status", online)])
    assert rows(engine, select(status_history.c.state, status_history.c.t)) == [("online", 100)]
    store(engine, [incoming("status", will)])
    store(engine, [incoming("status", will), incoming("status", will)])
    store(engine, [incoming("status", status_msg(t=200))])
    history = rows(engine, select(status_history.c.state, status_history.c.t).order_by(status_history.c.id))
    assert history == [("online", 100), ("offline", None), ("online", 200)]
    assert rows(engine, select(devices.c.state, devices.c.state_t)) == [("online", 200)]


# -- hostile input ---------------------------------------------------------------------------------

def _good_event() -> dict[str, Any]:
    return json.loads((GOLDEN / "event_5_detections.json").read_text()) | {"e": new_id()}


def _with(**changes: Any) -> bytes:
    msg = _good_event() | changes
    return json.dumps({k: v for k, v in msg.items() if v is not ...}).encode()


SCRIPT = "<script>alert(1)</script>"
DEEP = 100_000
HOSTILE: dict[str, tuple[str, bytes, str]] = {
    # name: (topic, payload, reason)
    "malformed_json": (f"{PREFIX}/trap-01/event", b'{"v":1,"d":"trap-01",', "bad_json"),
    "empty": (f"{PREFIX}/trap-01/event", b"", "bad_json"),
    "not_utf8": (f"{PREFIX}/trap-01/event", b'\xff\xfe{"v":1}', "bad_json"),
    "array": (f"{PREFIX}/trap-01/event", b"[1,2,3]", "bad_json"),
    "nan": (f"{PREFIX}/trap-01/event", _with(t=0).replace(b'"t": 0', b'"t": NaN'), "bad_json"),
    "infinity": (f"{PREFIX}/trap-01/health",
                 json.dumps(health_msg(t=1, s=1, b=BOOT_A, m=1)).replace('"df": 1000', '"df": Infinity').encode(),
                 "bad_json"),
    "huge_number_text": (f"{PREFIX}/trap-01/event", _with(t=0).replace(b'"t": 0', b'"t": 1' + b"0" * 5000),
                         "bad_json"),
    "wrong_type": (f"{PREFIX}/trap-01/event", _with(t="yesterday"), "invalid"),
    "float_time": (f"{PREFIX}/trap-01/event", _with(t=1_780_283_655.0), "invalid"),
    "bool_synced": (f"{PREFIX}/trap-01/event", _with(s=True), "invalid"),
    "negative_monotonic": (f"{PREFIX}/trap-01/event", _with(s=0, b=BOOT_A, m=-1), "invalid"),
    "missing_key": (f"{PREFIX}/trap-01/event", _with(e=...), "invalid"),
    "unsynced_without_boot": (f"{PREFIX}/trap-01/event", _with(s=0), "invalid"),
    "unknown_version": (f"{PREFIX}/trap-01/event", _with(v=2), "bad_version"),
    "no_version": (f"{PREFIX}/trap-01/event", _with(v=...), "bad_version"),
    "oversize": (f"{PREFIX}/trap-01/event", _with(pad="x" * MAX_PAYLOAD), "too_large"),
    "device_mismatch": (f"{PREFIX}/trap-02/event", _with(), "device_mismatch"),
    "not_allowed": (f"{PREFIX}/intruder/event", _with(d="intruder"), "not_allowed"),
    "script_in_topic": (f"{PREFIX}/{SCRIPT}/event", _with(d=SCRIPT), "bad_topic"),
    "unknown_topic": (f"{PREFIX}/trap-01/telemetry", _with(), "bad_topic"),
    "foreign_prefix": ("other/trap-01/event", _with(), "bad_topic"),
    "class_id_2_40": (f"{PREFIX}/trap-01/event", _with(x=[[2**40, 900, 0, 0, 10, 10]]), "invalid"),
    "count_2_40": (f"{PREFIX}/trap-01/event", _with(n=[[0, 2**40]]), "invalid"),
    "non_canonical_id": (f"{PREFIX}/trap-01/event", _with(e="AZ6BLMhUdOCAhWK-24tgzh"), "invalid"),
    "short_id": (f"{PREFIX}/trap-01/event", _with(e="AZ6BLMhUdOCAhWK"), "invalid"),
    "box_inverted": (f"{PREFIX}/trap-01/event", _with(x=[[0, 900, 500, 0, 100, 10]]), "invalid"),
    "bad_model_id": (f"{PREFIX}/trap-01/model", json.dumps(model_msg() | {"mv": "00000000"}).encode(), "invalid"),
    "crop_not_jpeg": (f"{PREFIX}/trap-01/crop/AZ6BLMhUdOCAhWK-24tgzg", b"<svg onload=alert(1)>", "bad_crop"),
    "crop_bad_id": (f"{PREFIX}/trap-01/crop/../../etc", b"\xff\xd8\xff", "bad_topic"),
    "deep_nesting": (f"{PREFIX}/trap-01/event", b'{"v":1,"x":' + b"[" * DEEP + b"]" * DEEP + b"}", "bad_json"),
    "deep_nesting_unknown_key": (f"{PREFIX}/trap-01/event",
                                 _with(deep=0).replace(b'"deep": 0', b'"deep": ' + b"[" * 900 + b"]" * 900), "stored"),
    # Values JSON and the schema allow but a database column cannot hold, or holds differently per dialect:
    "huge_monotonic": (f"{PREFIX}/trap-01/health",
                       json.dumps(health_msg(t=1, s=0, b=BOOT_A, m=2**64)).encode(), "invalid"),
    "huge_temperature": (f"{PREFIX}/trap-01/health",
                         json.dumps(health_msg(t=1, s=0, b=BOOT_A, m=7, tc=2**40)).encode(), "invalid"),
    "huge_effort_count": (f"{PREFIX}/trap-01/effort",
                          json.dumps(effort_msg(t0=1, t1=2, s=0, b=BOOT_A, m=3) | {"f": {"t": [2**63, 0, 0, 0]}})
                          .encode(), "invalid"),
    "nul_in_label": (f"{PREFIX}/trap-01/model", json.dumps(model_msg(det_labels=["a\u0000b"])).encode(), "invalid"),
    "lone_surrogate_in_label": (f"{PREFIX}/trap-01/model",
                                json.dumps(model_msg(det_labels=["\ud800"])).encode(), "invalid"),
    "nul_in_image_path": (f"{PREFIX}/trap-01/event", _with(g="f", i="a\u0000.jpg", j=...), "invalid"),
}


def _batch_around(topic: str, payload: bytes) -> tuple[list[Incoming], list[str]]:
    before, after = _good_event(), _good_event()
    batch = [incoming("event", before), Incoming(topic, payload, RECEIVED), incoming("event", after)]
    return batch, [before["e"], after["e"]]


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_message_is_a_reject_and_the_rest_of_the_batch_is_stored(engine: Engine, name: str) -> None:
    """One bad message: a reject row with its reason and counter, its neighbours stored."""
    topic, payload, reason = HOSTILE[name]
    batch, good = _batch_around(topic, payload)
    result = store(engine, batch, allow=frozenset({"trap-01", "trap-02", SCRIPT}) if name == "not_allowed" else None)
    stored = count(engine, events)
    if reason == "stored":
        assert [o.reject for o in result.outcomes] == [None, None, None]
        assert stored == 3
        return
    assert [o.reject for o in result.outcomes] == [None, reason, None], result.outcomes
    assert stored == 2 and count(engine, detections) == 10
    assert {i for (i,) in rows(engine, select(events.c.id))} == {str(uuid.UUID(bytes=_raw(e))) for e in good}
    (row,) = rows(engine, select(rejects.c.topic, rejects.c.reason, rejects.c.size, rejects.c.payload,
                                 rejects.c.detail))
    assert (row.topic, row.reason, row.size) == (topic, reason, len(payload))
    assert bytes(row.payload) == payload[:1024]
    assert row.detail and "\n" not in row.detail
    assert rows(engine, select(counters.c.name, counters.c.value)) == [(f"rejected.{reason}", 1)]
    assert {d for (d,) in rows(engine, select(devices.c.device))} == {"trap-01"}


def test_html_in_a_label_is_stored_verbatim_as_data(engine: Engine) -> None:
    """Labels are data: kept byte for byte (escaping is the web page's job, not the database's)."""
    label = '<img src=x onerror="alert(1)">\'; DROP TABLE events; --'
    result = store(engine, [incoming("model", model_msg(det_labels=["animal", label]))])
    assert result.count("stored") == 1
    assert rows(engine, select(labels.c.class_id, labels.c.label).order_by(labels.c.class_id)) == [
        (0, "animal"), (1, label)]


def test_rejects_are_counted_per_reason_across_batches(engine: Engine) -> None:
    """Counters per reason add up over batches."""
    bad = [Incoming(f"{PREFIX}/trap-01/event", b"{", RECEIVED), Incoming(f"{PREFIX}/trap-01/event", _with(v=2),
                                                                          RECEIVED)]
    store(engine, bad + bad[:1])
    store(engine, bad + [incoming("event", _good_event())])
    assert dict(rows(engine, select(counters.c.name, counters.c.value))) == {"rejected.bad_json": 3,
                                                                           "rejected.bad_version": 2}
    assert count(engine, rejects) == 5 and count(engine, events) == 1


def test_rejects_table_keeps_the_newest(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rejects table is trimmed to REJECTS_KEEP rows (the newest); the counters keep the total."""
    monkeypatch.setattr(ingest, "REJECTS_KEEP", 5)
    for i in range(4):
        store(engine, [Incoming(f"{PREFIX}/trap-01/event", f"bad {i}.{j}".encode(), RECEIVED) for j in range(3)])
        assert count(engine, rejects) == min(5, 3 * (i + 1))
    kept = [bytes(p).decode() for (p,) in rows(engine, select(rejects.c.payload).order_by(rejects.c.id))]
    assert kept == ["bad 2.1", "bad 2.2", "bad 3.0", "bad 3.1", "bad 3.2"]
    assert rows(engine, select(counters.c.value)) == [(12,)]


# -- concurrency -----------------------------------------------------------------------------------

def _traffic(n_events: int = 200, n_devices: int = 5) -> list[Incoming]:
    """Events of several devices and boots (synced and not), with health, effort and status for each."""
    rng = random.Random(7)
    names = [f"trap-{i:02d}" for i in range(n_devices)]
    msgs = []
    for i in range(n_events):
        device = names[i % n_devices]
        boot = BOOT_A if i % 3 else BOOT_B
        msgs.append(incoming("event", event(device, t=100 + i, s=i % 2, b=boot, m=100 + i) if i % 2 == 0
                             else event(device, t=T_REF + i)))
    for device in names:
        for boot in (BOOT_A, BOOT_B):
            msgs.append(incoming("health", health_msg(device, t=T_REF, s=1, b=boot, m=rng.randrange(1, 999))))
            msgs.append(incoming("effort", effort_msg(device, t0=T_REF - 60, t1=T_REF, s=1, b=boot, m=1000)))
        msgs += [incoming("status", status_msg(device, t=T_REF)), incoming("model", model_msg(device))]
        msgs.append(Incoming(f"{PREFIX}/{device}/event", b"{broken", RECEIVED))
    return msgs


def _shuffled_batches(msgs: list[Incoming], seed: int, size: int = 25) -> list[list[Incoming]]:
    """``msgs`` shuffled and cut into batches, each also holding status and health of several devices."""
    rng = random.Random(seed)
    order = msgs[:]
    rng.shuffle(order)
    state = [m for m in msgs if m.topic.endswith(("/status", "/health"))]
    return [order[i:i + size] + rng.sample(state, min(6, len(state))) for i in range(0, len(order), size)]


@pytest.mark.parametrize("traffic", ["mixed", "synced_events"])
def test_two_collectors_storing_the_same_messages_at_once(engine: Engine, traffic: str) -> None:
    """Two writers, same 200 events in different orders at the same time: each once, no error, no deadlock.

    ``synced_events`` takes no clock lock: only the storing order keeps the writers from deadlocking.
    """
    msgs = _traffic()
    if traffic == "synced_events":
        msgs = [incoming("event", event(f"trap-{i % 5:02d}", t=T_REF + i)) for i in range(200)]
        msgs += [incoming("status", status_msg(f"trap-{i:02d}", t=T_REF)) for i in range(5)]
    errors: list[BaseException] = []
    start = threading.Barrier(2)
    for round_ in range(3):
        with engine.begin() as conn:
            for table in (detections, event_counts, events, effort_counts, effort, health, clock_refs, labels,
                          models, status_history, devices, rejects, counters):
                conn.execute(table.delete())

        def writer(seed: int) -> None:
            try:
                start.wait(10)
                for batch in _shuffled_batches(msgs, seed):
                    store(engine, batch)
            except BaseException as err:  # noqa: BLE001 (reported below)
                errors.append(err)

        threads = [threading.Thread(target=writer, args=(round_ * 2 + k,)) for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors[0]
        assert count(engine, events) == 200
        assert count(engine, detections) == 200
        assert count(engine, devices) == 5 and count(engine, status_history) == 5
        if traffic == "synced_events":
            continue
        assert count(engine, health) == 10 and count(engine, effort) == 10 and count(engine, models) == 5
        # Every unsynced event of a boot with a reference was corrected, whichever writer stored it.
        assert count(engine, events, events.c.clock == "unsynced") == 0
        assert dict(rows(engine, select(counters.c.name, counters.c.value))) == {"rejected.bad_json": 10}


# -- migrations ------------------------------------------------------------------------------------

def test_second_migrate_is_a_no_op(collector_url: str) -> None:
    """Migrating an up-to-date database changes nothing."""
    eng = open_engine(collector_url)
    try:
        assert migrate(eng) == 0
        store(eng, [incoming("event", _good_event())])
        assert migrate(eng) == VERSION
        assert count(eng, events) == 1
        assert rows(eng, select(schema_version.c.version)) == [(VERSION,)]
    finally:
        eng.dispose()


def test_two_collectors_opening_a_new_sqlite_file_at_once_both_start(tmp_path: Path) -> None:
    """Switching a new file to WAL, SQLite answers "database is locked" at once to the second
    connection (no busy wait): 21 of 300 such races failed before the engine retried it. Without the
    retry this test, 200 races, failed 6 runs out of 6 (about 2 s)."""
    failures = []
    for attempt in range(200):
        engines = [open_engine(f"sqlite:///{tmp_path}/race{attempt}.db") for _ in range(2)]
        start = threading.Barrier(2)

        def run(eng: Engine) -> None:
            try:
                start.wait(10)
                migrate(eng)
            except BaseException as err:  # noqa: BLE001 (reported below)
                failures.append(err)

        threads = [threading.Thread(target=run, args=(eng,)) for eng in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for eng in engines:
            eng.dispose()
    assert failures == []


def test_two_collectors_migrating_at_once(collector_url: str) -> None:
    """Two processes starting at once on an empty database: one migrates, the other waits and finds it done."""
    engines = [open_engine(collector_url) for _ in range(2)]
    start = threading.Barrier(2)
    found: list[int | BaseException] = []

    def run(eng: Engine) -> None:
        try:
            start.wait(10)
            found.append(migrate(eng))
        except BaseException as err:  # noqa: BLE001 (reported below)
            found.append(err)

    threads = [threading.Thread(target=run, args=(eng,)) for eng in engines]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(found) == [0, VERSION], found  # type: ignore[type-var]
        assert rows(engines[0], select(schema_version.c.version)) == [(VERSION,)]
    finally:
        for eng in engines:
            eng.dispose()


def test_a_newer_database_fails_with_one_line(engine: Engine) -> None:
    """A database from a newer wildedge is refused, untouched."""
    with engine.begin() as conn:
        conn.execute(update(schema_version).values(version=VERSION + 1))
    with pytest.raises(CollectorError) as err:
        migrate(engine)
    message = str(err.value)
    assert "\n" not in message and f"schema version {VERSION + 1}" in message and "upgrade wildedge" in message
    assert rows(engine, select(schema_version.c.version)) == [(VERSION + 1,)]


def test_a_database_with_other_tables_is_refused(collector_url: str) -> None:
    """An empty-of-wildedge database that holds someone else's tables is not taken over."""
    eng = open_engine(collector_url)
    try:
        with eng.begin() as conn:
            conn.execute(text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
        with pytest.raises(CollectorError, match="holds other tables"):
            migrate(eng)
    finally:
        eng.dispose()


def test_an_unreachable_postgresql_fails_fast_with_one_line(tmp_path: Path) -> None:
    """No server behind the socket: one line naming the database, within a few seconds."""
    eng = open_engine(f"postgresql://wildedge:secret@/collector?host={tmp_path}")
    began = time.monotonic()
    with pytest.raises(CollectorError) as err:
        migrate(eng)
    eng.dispose()
    assert time.monotonic() - began < 5
    message = str(err.value)
    assert "\n" not in message and "cannot open the collector database" in message
    assert "secret" not in message and str(tmp_path) in message


# -- device locations (schema 2) -----------------------------------------------------------------------

def test_a_reported_location_is_kept_and_used_by_the_camtrapdp_export(engine: Engine, tmp_path: Path) -> None:
    """Status ``la``/``lo`` land on the device row; a later Last Will without them keeps them; the Camtrap DP
    export then needs no locations file, and a file still wins."""
    from collector.export import export_to

    located = status_msg() | {"la": 46_500_000, "lo": 8_250_000}
    store(engine, [incoming("status", located), incoming("event", event()),
                   incoming("effort", effort_msg(t0=1_780_280_000, t1=1_780_283_600, s=1, b=BOOT_A, m=100))])
    store(engine, [incoming("status", status_msg(st="offline", t=None))])
    assert rows(engine, select(devices.c.state, devices.c.latitude_e6, devices.c.longitude_e6)) == [
        ("offline", 46_500_000, 8_250_000)]
    package = export_to(engine, "camtrapdp", tmp_path / "pkg")
    deployment = (package / "deployments.csv").read_text().splitlines()[1].split(",")
    assert deployment[0] == "trap-01" and "46.5" in deployment and "8.25" in deployment
    again = export_to(engine, "camtrapdp", tmp_path / "pkg2", locations={"trap-01": (47.0, 9.0)})
    assert "47.0" in (again / "deployments.csv").read_text()


def test_migration_2_adds_the_location_columns_to_a_version_1_database(collector_url: str) -> None:
    """A database made by schema 1 (no location columns) gains them; its rows are kept."""
    eng = open_engine(collector_url)
    try:
        migrate(eng)
        store(eng, [incoming("status", status_msg())])
        with eng.begin() as conn:  # back to what schema 1 made
            for column in ("latitude_e6", "longitude_e6"):
                conn.execute(text(f"ALTER TABLE devices DROP COLUMN {column}"))
            conn.execute(update(schema_version).values(version=1))
        assert migrate(eng) == 1
        assert rows(eng, select(schema_version.c.version)) == [(VERSION,)]
        store(eng, [incoming("status", status_msg() | {"la": -1, "lo": 2})])
        assert rows(eng, select(devices.c.state, devices.c.latitude_e6, devices.c.longitude_e6)) == [("online", -1, 2)]
    finally:
        eng.dispose()


@pytest.mark.parametrize("message", [
    {"v": 1, "d": "trap-01", "e": "AZ6BLMhUdOCAhWK-24tgzg", "t": 5, "s": 1, "g": "m", "mv": MV, "x": [[0, 2000, 1, 2, 3, 4]]},
    {"v": 1, "d": "trap-01", "e": "AZ6BLMhUdOCAhWK-24tgzg", "t": 5, "s": 0, "g": "m", "mv": MV},
    {"v": 1, "d": "trap-01", "e": 7, "t": 5, "s": 1, "g": "m", "mv": MV},
    {"v": 1, "d": "trap-01", "st": "online", "la": 1},
])
def test_the_compiled_and_the_python_schema_check_refuse_alike(message: dict[str, Any], monkeypatch) -> None:
    """jsonschema-rs where it is installed, the jsonschema package elsewhere: the same problem, same path."""
    from collector import wire

    kind = "status" if "st" in message else "event"
    found = []
    for blocked in (False, True):
        wire._validators.cache_clear()
        if blocked:
            monkeypatch.setitem(sys.modules, "jsonschema_rs", None)  # import now raises ImportError
        found.append(wire._validators()[kind](message))
    wire._validators.cache_clear()
    assert found[0] is not None and found[1] is not None
    assert found[0][0] == found[1][0]  # the same place in the message


def test_a_row_the_database_refuses_is_a_reject_and_the_rest_of_the_batch_is_stored(engine: Engine) -> None:
    """The batch's events go in as one statement; when the database refuses one row, they are stored one by
    one so that only that event is refused (here a trigger refuses an image name, on either dialect)."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.image = 'poison' "
                              "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"))
        else:
            conn.execute(text("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.image = 'poison' THEN "
                              "RAISE EXCEPTION 'refused by a trigger' USING ERRCODE = 'check_violation'; END IF; "
                              "RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse()"))
    good = [event() for _ in range(4)]
    result = store(engine, [incoming("event", m) for m in good[:2]] + [incoming("event", event(i="poison"))]
                   + [incoming("event", m) for m in good[2:]])
    assert [o.reject for o in result.outcomes] == [None, None, "db_refused", None, None]
    assert count(engine, events) == 4 and count(engine, detections) == 4
    assert rows(engine, select(counters.c.name, counters.c.value)) == [("rejected.db_refused", 1)]

"""The MQTT wire format v1: golden files, JSON Schema, round trips, byte budgets, bad input, commands.

The golden files under ``tests/golden/wire`` are the contract: fixed records encode to exactly their
bytes. After a deliberate format change, rewrite them with ``WILDEDGE_UPDATE_GOLDEN=1`` and review
the diff (a change to an existing key breaks v1: see docs/wire-format.md, "Versioning").
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edge
from edge import payload as wire
from edge import payload_decode as decode
from edge.commands import Command, CommandError, encode_result, parse_command
from edge.errors import WildedgeError
from edge.group.burst import FrameDetections, summarise_burst
from edge.inference.detector import Detection
from edge.mqtt import homeassistant as ha
from edge.store.images import image_relpath
from edge.store.records import DetectionRecord, EventRecord, FrameRecord

GOLDEN = Path(__file__).parent / "golden" / "wire"
SCHEMA = json.loads((Path(edge.__file__).parent / "data" / "wire-format-v1.schema.json").read_text("utf-8"))
DEVICE = "trap-01"
BOOT = "5f1c9a3e-8d2b-4c7a-9e1f-0a2b3c4d5e6f"
T = datetime(2026, 6, 1, 3, 14, 15, 926000, tzinfo=timezone.utc)
DET_SHA = hashlib.sha256(b"md_v5a.0.0.onnx").hexdigest()
CLS_SHA = hashlib.sha256(b"species_alps.onnx").hexdigest()
DETECTOR = wire.ModelInfo("md_v5a.0.0.onnx", DET_SHA, ["animal", "person", "vehicle"], 0.2, 0.45)
CLASSIFIER = wire.ModelInfo("species_alps.onnx", CLS_SHA, [
    "red fox", "roe deer", "red deer", "wild boar", "badger", "chamois", "alpine ibex", "brown hare",
    "pine marten", "lynx", "wolf", "brown bear"], 0.5)
MV = wire.model_id(DET_SHA, CLS_SHA)
MV_DET = wire.model_id(DET_SHA, None)


def _uid(n: int, at: datetime = T) -> str:
    """A fixed UUIDv7 whose time is ``at`` (so ids sort like the records they name)."""
    ms = (at - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)
    rand = int.from_bytes(hashlib.sha256(b"%d" % n).digest()[:10], "big")
    value = ms << 80 | 7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _det(class_id: int, score: float, box: tuple[float, float, float, float], cls: tuple[int, float] | None = None,
         *, new: bool = True) -> DetectionRecord:
    classification = None if cls is None else (cls[0], CLASSIFIER.labels[cls[0]], cls[1])
    return DetectionRecord(class_id, DETECTOR.labels[class_id], score, box, classification, new)


def _case(detections: list[DetectionRecord], *, counts: dict[int, int] | None = None,
          vote: tuple[int, int, int] | None = None, frames: int = 1, trigger: str = "motion", synced: bool = True,
          at: datetime = T, monotonic: float = 5432.1, image: str | None | bool = True, n: int = 1
          ) -> tuple[EventRecord, FrameRecord, str | None]:
    """An event, its best frame and the image argument, consistent with each other."""
    detections = [replace(d) for d in detections]  # tests change them; the module-level ones stay put
    frame_uid, event_uid = _uid(2 * n, at), _uid(2 * n + 1, at + timedelta(milliseconds=350))
    path = image_relpath(at, frame_uid) if image is True else (image or None)
    frame = FrameRecord(frame_uid, at, monotonic, BOOT, synced, trigger, _uid(99, at), 0, 1920, 1080, 83.2,
                        image_path=path, detections=detections)
    if counts is None:
        counts = {}
        for det in detections:
            counts[det.class_id] = counts.get(det.class_id, 0) + 1
    best = max(detections, key=lambda d: d.score) if detections else _det(0, 0.5, (0.1, 0.1, 0.2, 0.2))
    summary = {
        "frames": frames, "frames_with_detections": frames,
        "classes": [{"class_id": c, "label": DETECTOR.labels[c], "count": k, "best_score": best.score,
                     "best_frame_uid": frame_uid, "new": None} for c, k in counts.items()],
        "best": {"frame_uid": frame_uid, "index": 0, "class_id": best.class_id, "label": best.label,
                 "score": best.score, "box": list(best.box)},
        "classification": None if vote is None else {
            "class_id": vote[0], "label": CLASSIFIER.labels[vote[0]], "votes": vote[1], "voters": vote[2],
            "mean_prob": 0.9, "tally": []},
    }
    event = EventRecord(event_uid, frame.burst_id, at, monotonic, BOOT, synced, trigger, path, frame_uid, summary)
    return event, frame, path


FOLDER_2018 = datetime(2018, 5, 12, 6, 41, 3, tzinfo=timezone.utc)
ROE = _det(0, 0.9263, (0.10412, 0.25, 0.70049, 0.98333), (1, 0.9012))
HERD = [_det(0, s, b, (5, p)) for s, b, p in [
    (0.9411, (0.0521, 0.4113, 0.2388, 0.7342), 0.9712), (0.9127, (0.2609, 0.3801, 0.4472, 0.6916), 0.9388),
    (0.8836, (0.4701, 0.4457, 0.6204, 0.7125), 0.8841), (0.7315, (0.6452, 0.4012, 0.8125, 0.6688), 0.7904),
    (0.5208, (0.8311, 0.4526, 0.9473, 0.6020), 0.6127)]]

CASES: dict[str, Callable[[], tuple[EventRecord, FrameRecord, str | None, dict[str, Any]]]] = {
    "event_1_detection": lambda: (*_case([ROE], vote=(1, 1, 1)), {}),
    "event_0_detections": lambda: (*_case([_det(0, 0.88, (0.3, 0.4, 0.5, 0.7), new=False),
                                           _det(0, 0.61, (0.6, 0.42, 0.71, 0.66), new=False)],
                                          trigger="timelapse", frames=3, n=2), {"sticky": True}),
    "event_5_detections": lambda: (*_case(HERD, counts={0: 6}, vote=(5, 12, 15), frames=3, trigger="timelapse",
                                          n=3), {}),
    "event_unsynced": lambda: (*_case([_det(0, 0.7702, (0.3333, 0.5, 0.4, 0.6667))], synced=False,
                                      at=datetime(1970, 1, 1, 0, 1, 30, 250000, tzinfo=timezone.utc),
                                      monotonic=90.37, n=4), {"model_id": MV_DET}),
    "event_folder": lambda: (*_case([_det(0, 0.8125, (0.5, 0.125, 0.75, 0.5), (0, 0.95)),
                                     _det(1, 0.4021, (0.0, 0.6, 0.08, 1.0))], vote=(0, 1, 1), trigger="file",
                                    image="site_b/2026-05/IMG_0042.JPG", n=5), {"camera_clock": True}),
    # A 2018 photo replayed by a device whose clock is not synchronised: t is the photo's (camera) time.
    "event_folder_unsynced": lambda: (*_case([_det(0, 0.9021, (0.25, 0.3, 0.6, 0.9))], trigger="timelapse",
                                             synced=False, at=FOLDER_2018, monotonic=75.2,
                                             image="2018/IMG_0007.JPG", n=7), {"camera_clock": True}),
    "event_classification": lambda: (*_case([_det(0, 0.9604, (0.41, 0.2, 0.66, 0.87), (2, 0.8133))],
                                            vote=(2, 3, 3), frames=3, n=6), {}),
}


def _event_bytes(name: str) -> bytes:
    event, frame, image, options = CASES[name]()
    return wire.encode_event(event, frame, device=DEVICE, model_id=options.get("model_id", MV), image=image,
                             sticky=options.get("sticky", False), camera_clock=options.get("camera_clock", False))


SNAPSHOT: dict[str, Any] = {
    "at": "2026-06-01T03:15:00.123456+00:00", "cpu_temp_c": 48.312,
    "throttled": {"raw": 0x50000, "under_voltage": False}, "load_avg": [0.42, 0.37, 0.3],
    "mem_total_bytes": 4_124_876_800, "mem_available_bytes": 2_937_462_784, "rss_bytes": 187_318_272,
    "peak_rss_bytes": 203_145_216, "disk_total_bytes": 62_277_025_792, "disk_free_bytes": 48_031_965_184,
    "uptime_s": 5476.53, "process_cpu": 0.2311, "device": DEVICE,
    "camera": {"name": "picamera2", "state": "ok", "failures": 1, "reopened": 1, "last_error": None},
    "clock_synchronised": True, "boot_id": BOOT, "monotonic_s": 5476.512, "queue_depth": 3, "queue_bytes": 512,
    "inference_ms": 83.4, "disk_low": False, "counts": {"frames": 1234, "events": 56, "failures": 0, "triggers": 410},
}

OTHERS: dict[str, Callable[[], bytes]] = {
    "effort": lambda: wire.encode_effort(
        device=DEVICE, uid=_uid(7), start=datetime(2026, 6, 1, 2, tzinfo=timezone.utc),
        end=datetime(2026, 6, 1, 3, tzinfo=timezone.utc), clock_synced=True, boot_id=BOOT, monotonic=1800.2,
        counts={"timelapse": (12, 11, 1, 0), "motion": (9, 4, 2, 0), "external": (3, 3, 0, 0)}),
    "effort_unsynced": lambda: wire.encode_effort(
        device=DEVICE, uid=_uid(8), start=datetime(1970, 1, 1, 0, 0, 5, tzinfo=timezone.utc),
        end=datetime(1970, 1, 1, 0, 10, 5, tzinfo=timezone.utc), clock_synced=False, boot_id=BOOT, monotonic=610.9,
        counts={"t": (2, 2, 0, 0)}),
    "status_online": lambda: wire.encode_status(device=DEVICE, state="online", at=T, clock_synced=True),
    "status_offline_will": lambda: wire.encode_status(device=DEVICE, state="offline"),
    "status_location": lambda: wire.encode_status(device=DEVICE, state="online", at=T, clock_synced=True,
                                                  location=(46.5, 8.25)),
    "health": lambda: wire.encode_health(SNAPSHOT, device=DEVICE),
    "model": lambda: wire.encode_model(device=DEVICE, detector=DETECTOR, classifier=CLASSIFIER, at=T,
                                       clock_synced=True),
    "ha": lambda: ha.ha_state(device=DEVICE, last_label="red fox", last_time=T, today=3),
    "result_ok": lambda: encode_result(device=DEVICE, correlation="req-17", ok=True,
                                       result={"status": {"frames": 1234, "camera": {"state": "ok", "error": None}}}),
    "result_error": lambda: encode_result(device=DEVICE, correlation="req-18", ok=False,
                                          error="burst must be an integer within 1..100, got 500", code="bad_args"),
}
ENCODERS: dict[str, Callable[[], bytes]] = {**{name: (lambda n=name: _event_bytes(n)) for name in CASES}, **OTHERS}
#: Golden command payloads (inputs a server sends): name -> (command name, schema entry).
COMMAND_FILES = {"cmd_capture": ("capture", "cmd_capture"), "cmd_set": ("set", "cmd_set")}
SCHEMA_DEF = {**{name: "event" for name in CASES}, "effort": "effort", "effort_unsynced": "effort",
              "status_online": "status", "status_offline_will": "status", "status_location": "status", "health": "health", "model": "model", "ha": "ha",
              "result_ok": "result", "result_error": "result"}


def _validator(definition: str | None = None) -> jsonschema.Draft202012Validator:
    schema = SCHEMA if definition is None else {**SCHEMA, "anyOf": [{"$ref": f"#/$defs/{definition}"}]}
    return jsonschema.Draft202012Validator(schema)


# --- golden files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoding_matches_the_golden_file(name):
    data = ENCODERS[name]()
    path = GOLDEN / f"{name}.json"
    if os.environ.get("WILDEDGE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert data == path.read_bytes(), f"{name}: the wire format changed; see this module's docstring"


def test_every_golden_file_has_a_case():
    assert {p.stem for p in GOLDEN.glob("*.json")} == set(ENCODERS) | set(COMMAND_FILES)


@pytest.mark.parametrize("name", sorted(SCHEMA_DEF))
def test_golden_messages_follow_the_schema_and_use_only_documented_keys(name):
    message = json.loads((GOLDEN / f"{name}.json").read_bytes())
    _validator(SCHEMA_DEF[name]).validate(message)
    _validator().validate(message)
    assert set(message) <= set(SCHEMA["$defs"][SCHEMA_DEF[name]]["properties"])
    assert "null" not in (GOLDEN / f"{name}.json").read_text("utf-8")


@pytest.mark.parametrize("name", sorted(COMMAND_FILES))
def test_golden_command_payloads_parse_and_follow_the_schema(name):
    command, definition = COMMAND_FILES[name]
    data = (GOLDEN / f"{name}.json").read_bytes()
    _validator(definition).validate(json.loads(data))
    assert parse_command(command, data).correlation is not None


def test_the_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


# --- round trips ------------------------------------------------------------------------------------

def test_ids_round_trip_and_only_canonical_text_decodes():
    uid = _uid(5)
    text = wire.encode_id(uid)
    assert len(text) == 22 and wire.decode_id(text) == uid
    assert wire.decode_id(wire.encode_id(uid.upper())) == uid
    # The 22nd character holds the last 2 bits and 4 padding bits: only A, Q, g and w are canonical.
    assert text[-1] in "AQgw"
    with pytest.raises(ValueError, match="non-canonical"):
        wire.decode_id(text[:-1] + chr(ord(text[-1]) + 1))


def test_event_decodes_to_what_was_encoded():
    event, _frame, image, _ = CASES["event_1_detection"]()
    got = decode.decode_event(_event_bytes("event_1_detection"))
    assert got["id"] == event.uid and got["device"] == DEVICE and got["model_id"] == MV
    assert got["time"] == T.replace(microsecond=0) and got["clock_synced"] is True and got["boot"] is None
    assert got["trigger"] == "motion" and got["image"] == image and len(image) == 51
    (det,) = got["detections"]
    assert det["class_id"] == 0 and det["score"] == pytest.approx(0.9263, abs=5e-4)
    assert det["box"] == pytest.approx(ROE.box, abs=5e-4)
    assert det["classification"] == {"class_id": 1, "prob": pytest.approx(0.9012, abs=5e-4)}
    assert got["counts"] == {0: 1} and got["vote"] == {"class_id": 1, "votes": 1, "voters": 1}


def test_event_variants_decode():
    herd = decode.decode_event(_event_bytes("event_5_detections"))
    assert len(herd["detections"]) == 5 and herd["counts"] == {0: 6}
    assert herd["vote"] == {"class_id": 5, "votes": 12, "voters": 15} and herd["trigger"] == "timelapse"
    empty = decode.decode_event(_event_bytes("event_0_detections"))
    assert empty["detections"] == [] and empty["counts"] == {0: 2} and empty["vote"] is None
    late = decode.decode_event(_event_bytes("event_unsynced"))
    assert late["clock_synced"] is False and late["boot"] == "5f1c9a3e" and late["monotonic"] == 90
    assert late["image"].startswith("1970/01/01/")
    folder = decode.decode_event(_event_bytes("event_folder"))
    assert folder["image"] == "site_b/2026-05/IMG_0042.JPG" and folder["trigger"] == "file"
    assert folder["counts"] == {0: 1, 1: 1} and folder["vote"] == {"class_id": 0, "votes": 1, "voters": 1}
    voted = decode.decode_event(_event_bytes("event_classification"))
    assert voted["vote"] == {"class_id": 2, "votes": 3, "voters": 3}
    assert not any(decode.decode_event(_event_bytes(n))["camera_clock"] for n in CASES if "folder" not in n)


def test_a_folder_photo_is_marked_camera_clock_and_carries_no_boot_reference():
    """A 2018 photo replayed by an unsynchronised device: its t is the camera's, nothing to correct."""
    event, frame, _, _ = CASES["event_folder_unsynced"]()
    assert event.clock_synced is False  # the device clock was not synchronised while it processed it
    message = json.loads(_event_bytes("event_folder_unsynced"))
    assert message["t"] == int(FOLDER_2018.timestamp()) and message["s"] == 1 and message["c"] == 1
    assert "b" not in message and "m" not in message  # no boot pairing: a server has nothing to correct
    got = decode.decode_event(_event_bytes("event_folder_unsynced"))
    assert got["camera_clock"] is True and got["time"] == FOLDER_2018 and got["boot"] is None
    # The same records as a live camera's event: unsynchronised, with b and m, no c.
    live = json.loads(wire.encode_event(event, frame, device=DEVICE, model_id=MV, image=None))
    assert (live["s"], "c" in live, live["m"]) == (0, False, 75)
    with pytest.raises(ValueError):
        wire.encode_event(event, frame, device=DEVICE, model_id=MV, image=None, camera_clock=1)


@pytest.mark.parametrize("change", [{"c": 0}, {"c": 2}, {"c": True}, {"c": 1, "s": 0, "b": "5f1c9a3e", "m": 4}])
def test_a_bad_camera_clock_marker_is_refused_by_decoder_and_schema(change):
    message = {**json.loads(_event_bytes("event_folder")), **change}
    with pytest.raises(ValueError):
        decode.decode_event(json.dumps(message))
    assert list(_validator("event").iter_errors(message))


def test_a_v1_reader_that_predates_the_marker_keeps_the_photo_time():
    """The marker is an optional key: a reader that ignores it sees s 1 and no b/m, so it corrects nothing."""
    message = json.loads(_event_bytes("event_folder_unsynced"))
    old_schema = json.loads(json.dumps(SCHEMA))
    del old_schema["$defs"]["event"]["properties"]["c"], old_schema["$defs"]["event"]["dependentSchemas"]
    jsonschema.Draft202012Validator({**old_schema, "anyOf": [{"$ref": "#/$defs/event"}]}).validate(message)
    assert message["s"] == 1 and not {"b", "m"} & set(message)


def test_the_ha_message_is_in_the_schema_with_its_device():
    message = json.loads(ha.ha_state(device=DEVICE, last_label=None, last_time=None, today=0))
    assert message == {"v": 1, "d": DEVICE, "today": 0}
    _validator("ha").validate(message)
    _validator().validate(message)
    unknown_day = json.loads(ha.ha_state(device=DEVICE, last_label="fox", last_time=None, today=None))
    assert unknown_day == {"v": 1, "d": DEVICE, "last": "fox"}
    _validator("ha").validate(unknown_day)
    for bad in ({"v": 1, "today": 0}, {"v": 1, "d": DEVICE, "today": -1},
                {"v": 1, "d": DEVICE, "at": "2026-06-01T04:30:00+02:00"}, {"v": 1, "d": DEVICE, "last": ""}):
        assert list(_validator("ha").iter_errors(bad)), bad


def test_an_image_path_dated_otherwise_is_sent_as_is():
    # A burst across UTC midnight: the image's date is not the date of t, so "j" cannot name it.
    event, frame, _, _ = CASES["event_1_detection"]()
    image = image_relpath(T + timedelta(days=1), frame.uid)
    message = json.loads(wire.encode_event(event, frame, device=DEVICE, model_id=MV, image=image))
    assert message["i"] == image and "j" not in message
    assert decode.decode_event(wire.encode_event(event, frame, device=DEVICE, model_id=MV, image=image))["image"] == image
    no_image = json.loads(wire.encode_event(event, frame, device=DEVICE, model_id=MV, image=None))
    assert "i" not in no_image and "j" not in no_image


def test_an_event_from_the_real_summariser_encodes():
    frames = [FrameDetections(_uid(40 + i), [Detection((192.0, 108.0, 576.0, 540.0), 0.8 + i / 100, 0, "animal",
                                                       [(1, 0.9), (0, 0.05)])] * (1 + i), 1920, 1080)
              for i in range(3)]
    summary = summarise_burst(frames, classifier_labels=CLASSIFIER.labels)
    assert summary is not None
    dets = [_det(0, 0.82, (0.1, 0.1, 0.3, 0.5), (1, 0.9))] * 3
    frame = FrameRecord(_uid(42), T, 1.0, BOOT, True, "motion", "b", 2, 1920, 1080, 80.0, detections=dets)
    event = EventRecord(_uid(43), "b", T, 1.0, BOOT, True, "motion", None, _uid(42), summary.to_dict())
    got = decode.decode_event(wire.encode_event(event, frame, device=DEVICE, model_id=MV, image=None))
    assert got["counts"] == {0: 3} and got["vote"] == {"class_id": 1, "votes": 6, "voters": 6}


def test_effort_status_health_and_model_decode():
    effort = decode.decode_effort(OTHERS["effort"]())
    assert effort["counts"]["motion"] == {"frames": 9, "empty": 4, "events": 2, "failed": 0}
    assert effort["end"] - effort["start"] == timedelta(hours=1) and effort["id"] == _uid(7)
    assert decode.decode_effort(OTHERS["effort_unsynced"]())["monotonic"] == 610
    will = decode.decode_status(OTHERS["status_offline_will"]())
    assert will == {"device": DEVICE, "state": "offline", "time": None, "clock_synced": None, "location": None}
    assert decode.decode_status(OTHERS["status_location"]())["location"] == (46.5, 8.25)
    health = decode.decode_health(OTHERS["health"]())
    assert health["cpu_temp_c"] == 48.3 and health["load_1m"] == 0.42 and health["mem_available_mib"] == 2801
    assert health["camera_state"] == "ok" and health["disk_low"] is False and "camera_error" not in health
    assert health["boot"] == "5f1c9a3e" and health["monotonic"] == 5476 and health["frames"] == 1234
    model = decode.decode_model(OTHERS["model"]())
    assert model["detector"] == DETECTOR and model["classifier"] == CLASSIFIER and model["model_id"] == MV


def test_health_leaves_out_what_could_not_be_read():
    sparse = {"at": T, "clock_synchronised": False, "boot_id": "unknown", "monotonic_s": 12.0,
              "cpu_temp_c": -12.46, "load_avg": None, "throttled": None, "camera": {"state": "failed",
                                                                                    "last_error": "x" * 500}}
    message = json.loads(wire.encode_health(sparse, device=DEVICE))
    assert message["tc"] == -125 and message["cam"] == "f" and len(message["ce"]) == 200
    assert set(message) == {"v", "d", "t", "s", "b", "m", "tc", "cam", "ce"}
    assert message["b"] == hashlib.sha256(b"unknown").hexdigest()[:8]
    _validator("health").validate(message)


def test_readers_ignore_keys_they_do_not_know():
    message = json.loads(_event_bytes("event_1_detection"))
    message["zz"] = {"added": "in v1.1"}
    assert decode.decode_event(json.dumps(message).encode())["id"] == CASES["event_1_detection"]()[0].uid


def test_topics():
    topics = wire.topics("wildedge/site-a", DEVICE)
    assert topics.event == "wildedge/site-a/trap-01/event" and topics.cmd_filter == "wildedge/site-a/trap-01/cmd/+"
    assert topics.cmd_result == "wildedge/site-a/trap-01/cmd/result" and topics.model.endswith("/model")
    assert topics.crop(_uid(3)) == f"wildedge/site-a/trap-01/crop/{wire.encode_id(_uid(3))}"
    for prefix in ("", "a//b", "/a", "a/", "a/+", "#"):
        with pytest.raises(ValueError):
            wire.topics(prefix, DEVICE)
    with pytest.raises(ValueError):
        wire.topics("wildedge", "trap/01")


# --- byte budgets ------------------------------------------------------------------------------------

def test_one_detection_event_fits_160_bytes():
    assert len(_event_bytes("event_1_detection")) <= 160


def test_each_further_detection_costs_at_most_40_bytes():
    worst = _det(2, 0.9999, (0.1234, 0.5678, 0.9876, 0.9999), (11, 0.9999))
    event, frame, image, _ = CASES["event_1_detection"]()
    sizes = []
    for extra in range(5):
        frame.detections = [ROE] + [worst] * extra
        event.summary["classes"] = [{"class_id": 0, "count": 1}] + ([{"class_id": 2, "count": extra}] if extra else [])
        event.summary["classification"] = {"class_id": 1, "votes": 1 + extra, "voters": 1 + extra}
        sizes.append(len(wire.encode_event(event, frame, device=DEVICE, model_id=MV, image=image)))
    further = [b - a for a, b in itertools.pairwise(sizes[1:])]
    assert max(further) <= 40, sizes


def test_health_and_effort_stay_small():
    assert len(OTHERS["health"]()) <= 320 and len(OTHERS["effort"]()) <= 200


# --- bad input ---------------------------------------------------------------------------------------

def _bad_event(change: Callable[[EventRecord, FrameRecord], Any], **options: Any) -> None:
    event, frame, image, _ = CASES["event_1_detection"]()
    change(event, frame)
    with pytest.raises(ValueError):
        wire.encode_event(event, frame, device=options.get("device", DEVICE), model_id=options.get("model_id", MV),
                          image=options.get("image", image))


@pytest.mark.parametrize("change", [
    lambda e, f: setattr(e, "captured_at", T.replace(tzinfo=None)),
    lambda e, f: setattr(e, "best_frame_uid", _uid(77)),
    lambda e, f: setattr(e, "trigger", "sunrise"),
    lambda e, f: setattr(e, "uid", "not-a-uuid"),
    lambda e, f: setattr(e, "clock_synced", 1),
    lambda e, f: (setattr(e, "clock_synced", False), setattr(e, "monotonic", -1.0)),
    lambda e, f: setattr(f.detections[0], "score", 1.2),
    lambda e, f: setattr(f.detections[0], "score", float("nan")),
    lambda e, f: setattr(f.detections[0], "box", (0.7, 0.2, 0.1, 0.9)),
    lambda e, f: setattr(f.detections[0], "box", (0.1, 0.2, 0.3)),
    lambda e, f: setattr(f.detections[0], "class_id", -1),
    lambda e, f: setattr(f.detections[0], "classification", (True, "x", 0.5)),
    lambda e, f: e.summary.pop("classes"),
    lambda e, f: e.summary.update(classes=[{"class_id": 0, "count": 0}]),
    lambda e, f: e.summary.update(classification={"class_id": 1, "votes": 3, "voters": 2}),
], ids=lambda _: "")
def test_encode_event_rejects_bad_records(change):
    _bad_event(change)


def test_records_that_disagree_still_encode_with_a_warning(caplog):
    # The daemon encodes inside its commit: a summary bug must not cost the event itself.
    event, frame, image, _ = CASES["event_1_detection"]()
    event.summary.update(classes=[{"class_id": 2, "count": 1}], classification=None)
    got = decode.decode_event(wire.encode_event(event, frame, device=DEVICE, model_id=MV, image=image))
    assert got["counts"] == {0: 1, 2: 1} and len(caplog.records) == 2


@pytest.mark.parametrize("options", [{"device": "trap 01"}, {"device": ""}, {"model_id": "ABCDEF12"},
                                     {"model_id": "1234"}, {"image": ""}, {"image": "a\nb.jpg"}, {"image": 5}])
def test_encode_event_rejects_bad_options(options):
    _bad_event(lambda e, f: None, **options)


def test_other_encoders_reject_bad_input():
    start = datetime(2026, 6, 1, 2, tzinfo=timezone.utc)
    effort = {"device": DEVICE, "uid": _uid(7), "start": start, "end": start + timedelta(hours=1),
              "clock_synced": True, "boot_id": BOOT, "monotonic": 1.0, "counts": {}}
    assert json.loads(wire.encode_effort(**effort))["f"] == {}
    for change in ({"end": start}, {"counts": {"t": (1, 1, 0, 1)}}, {"counts": {"t": (1, -1, 0, 0)}},
                   {"counts": {"sunrise": (1, 1, 0, 0)}}, {"counts": {"t": (1, 1, 0)}}, {"uid": "x"},
                   {"start": start.replace(tzinfo=None)}):
        with pytest.raises(ValueError):
            wire.encode_effort(**{**effort, **change})
    merged = json.loads(wire.encode_effort(**{**effort, "counts": {"external": (2, 1, 1, 0), "gpio": (1, 1, 0, 0)}}))
    assert merged["f"] == {"x": [3, 2, 1, 0]}
    for kwargs in ({"state": "sleeping"}, {"state": "online", "clock_synced": True}, {"state": "online", "at": -5}):
        with pytest.raises(ValueError):
            wire.encode_status(device=DEVICE, **kwargs)
    for change in ({"boot_id": None}, {"monotonic_s": None}, {"at": None}, {"cpu_temp_c": "hot"},
                   {"camera": {"state": "asleep"}}, {"disk_low": "no"}, {"queue_depth": -1}, {"camera": "ok"}):
        with pytest.raises(ValueError):
            wire.encode_health({**SNAPSHOT, **change}, device=DEVICE)
    for args in (("m", "A" * 64, [], 0.2), ("m", DET_SHA, "abc", 0.2), ("m", DET_SHA, [], 1.5), ("", DET_SHA, [], 0.2)):
        with pytest.raises(ValueError):
            wire.ModelInfo(*args)
    for kwargs in ({"ok": True, "error": "x"}, {"ok": False}, {"ok": False, "error": "x", "result": {}},
                   {"ok": False, "error": "x", "code": "Bad Code"}, {"ok": True, "correlation": "x" * 65},
                   {"ok": True, "result": {"a": [1, None]}}, {"ok": "yes"}):
        with pytest.raises(ValueError):
            encode_result(**{"device": DEVICE, "correlation": None, **kwargs})


@pytest.mark.parametrize("data", [
    b"", b"[]", b'{"v":2,"d":"trap-01"}', b'{"v":1.0,"d":"trap-01"}', b'{"v":true,"d":"trap-01"}', b"\xff",
    b'{"v":1,"d":"trap-01","e":"AZehssPVcACavN7wEjRWeA","t":1,"s":1,"g":"m","mv":"76f79efd","x":[[0,1,2,3,4]]}',
    b'{"v":1,"d":"trap-01","e":"AZehssPVcACavN7wEjRWeA","t":1,"s":0,"g":"m","mv":"76f79efd"}',
    b'{"v":1,"d":"trap-01","e":"AZehssPVcACavN7wEjRWeB","t":1,"s":1,"g":"m","mv":"76f79efd"}',
    b'{"v":1,"d":"trap-01","e":"AZehssPVcACavN7wEjRWeA","t":1,"s":1,"g":"m","mv":"76f79efd","w":[1,2,1]}',
    b'{"v":1,"d":"trap-01","e":"AZehssPVcACavN7wEjRWeA","t":1,"s":1,"g":"m","mv":"76f79efd","x":[[0,1,9,0,4,5]]}',
    b'{"v":1,"d":"trap-01","e":"AZehssPVcACavN7wEjRWeA","t":NaN,"s":1,"g":"m","mv":"76f79efd"}',
    b"[" * 100_000,
])
def test_decode_event_rejects_what_is_not_a_v1_event(data):
    with pytest.raises(ValueError):
        decode.decode_event(data)


def test_decode_model_checks_the_model_id():
    message = json.loads(OTHERS["model"]())
    message["mv"] = "00000000"
    with pytest.raises(ValueError, match="mv"):
        decode.decode_model(json.dumps(message))


# --- commands ----------------------------------------------------------------------------------------

def test_commands_parse():
    assert parse_command("ping", b"") == Command("ping", None, {})
    assert parse_command("capture", b'{"id":"r1","burst":5}') == Command("capture", "r1", {"burst": 5})
    command = parse_command("set", b'{"values":{"detector.conf":0.3,"trigger.interval":"10m"}}')
    assert command.args == {"values": {"detector.conf": 0.3, "trigger.interval": "10m"}}
    assert isinstance(CommandError("bad_json", "x"), WildedgeError)


@pytest.mark.parametrize(("name", "data", "code"), [
    ("capture", b"{", "bad_json"),
    ("capture", b'"burst"', "bad_json"),
    ("capture", b'{"burst":NaN}', "bad_json"),
    ("capture", b"\xfe\xff", "bad_json"),
    ("capture", b"[" * 4000, "bad_json"),
    ("reboot", b'{"id":"r2"}', "unknown_command"),
    ("result", b'{"v":1,"d":"trap-01","ok":true}', "unknown_command"),
    ("capture", b'{"burst":0}', "bad_args"),
    ("capture", b'{"burst":true}', "bad_args"),
    ("capture", b'{"burst":101}', "bad_args"),
    ("capture", b'{"bursts":3}', "bad_args"),
    ("ping", b'{"x":1}', "bad_args"),
    ("ping", b'{"id":5}', "bad_args"),
    ("ping", b'{"id":""}', "bad_args"),
    ("ping", ('{"id":"' + "x" * 65 + '"}').encode(), "bad_args"),
    ("set", b"{}", "bad_args"),
    ("set", b'{"values":{}}', "bad_args"),
    ("set", b'{"values":{"conf":0.3}}', "bad_args"),
    ("set", b'{"values":{"Detector.conf":0.3}}', "bad_args"),
    ("set", b'{"values":{"detector.conf":null}}', "bad_args"),
    ("set", json.dumps({"values": {f"a.k{'_' * i}": 1 for i in range(21)}}).encode(), "bad_args"),
    ("ping", b" " * 4097, "too_large"),
])
def test_bad_commands_raise_command_error(name, data, code):
    with pytest.raises(CommandError) as caught:
        parse_command(name, data)
    assert caught.value.code == code


def test_a_command_error_keeps_the_correlation_id():
    with pytest.raises(CommandError) as caught:
        parse_command("capture", b'{"id":"r9","burst":0}')
    assert caught.value.correlation == "r9"
    reply = json.loads(encode_result(device=DEVICE, correlation=caught.value.correlation, ok=False,
                                     error=str(caught.value), code=caught.value.code))
    assert reply["id"] == "r9" and reply["code"] == "bad_args" and "burst" in reply["err"]


def _answer(name: str, data: bytes) -> None:
    """parse_command raises only CommandError, and every outcome can be answered."""
    try:
        command = parse_command(name, data)
    except CommandError as err:
        assert err.code in ("bad_json", "unknown_command", "bad_args", "too_large")
        reply = encode_result(device=DEVICE, correlation=err.correlation, ok=False, error=str(err), code=err.code)
    else:
        reply = encode_result(device=DEVICE, correlation=command.correlation, ok=True, result={"accepted": True})
    _validator("result").validate(json.loads(reply))


NAMES = st.sampled_from(["capture", "ping", "status", "set", "reboot", "", "result"]) | st.text(max_size=10)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                    max_leaves=25)
ARGS = st.fixed_dictionaries({}, optional={
    "id": st.text(max_size=70) | st.integers(), "burst": st.integers(-5, 120) | st.booleans(),
    "values": st.dictionaries(st.from_regex(r"[a-z_]+(\.[a-z_]+)*", fullmatch=True) | st.text(max_size=8), JSON,
                              max_size=22) | JSON}) | st.dictionaries(st.text(max_size=10), JSON, max_size=5)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, data=st.binary(max_size=5000))
def test_parse_command_only_raises_command_error_on_any_bytes(name, data):
    _answer(name, data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, body=JSON | ARGS)
def test_parse_command_only_raises_command_error_on_any_json(name, body):
    _answer(name, json.dumps(body).encode())


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 80), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1),
                               st.floats(0, 1), st.floats(0, 1), st.none() | st.tuples(st.integers(0, 999),
                                                                                        st.floats(0, 1))),
                     min_size=1, max_size=8),
       synced=st.booleans())
def test_any_event_round_trips_within_rounding_and_follows_the_schema(rows, synced):
    dets = [DetectionRecord(c, "x", s, (min(a, b), min(y, z), max(a, b), max(y, z)),
                            None if k is None else (k[0], "y", k[1])) for c, s, a, y, b, z, k in rows]
    classified = [d.classification[0] for d in dets if d.classification]
    vote = (classified[0], len(classified), len(classified)) if classified else None
    counts: dict[int, int] = {}
    for det in dets:
        counts[det.class_id] = counts.get(det.class_id, 0) + 1
    frame = FrameRecord(_uid(1), T, 7.9, BOOT, synced, "motion", "b", 0, 640, 480, 1.0, detections=dets)
    summary = {"classes": [{"class_id": c, "count": n} for c, n in counts.items()],
               "classification": None if vote is None else dict(zip(("class_id", "votes", "voters"), vote))}
    event = EventRecord(_uid(2), "b", T, 7.9, BOOT, synced, "motion", None, _uid(1), summary)
    data = wire.encode_event(event, frame, device=DEVICE, model_id=MV, image=None)
    _validator("event").validate(json.loads(data))
    got = decode.decode_event(data)
    assert got["counts"] == counts and got["clock_synced"] is synced
    assert got["vote"] == (None if vote is None else dict(zip(("class_id", "votes", "voters"), vote)))
    for det, back in zip(dets, got["detections"]):
        assert back["score"] == pytest.approx(det.score, abs=5e-4)
        assert back["box"] == pytest.approx(det.box, abs=5e-4)


@pytest.mark.parametrize("location", [(90.0, 180.0), (-90.0, -180.0), (0.0000004, -0.0000006), (46.123456, 8.987654)])
def test_location_round_trips_to_the_micro_degree(location):
    got = decode.decode_status(wire.encode_status(device=DEVICE, state="online", at=T, clock_synced=True,
                                                  location=location))["location"]
    assert all(abs(a - b) <= 0.5e-6 for a, b in zip(got, location))


@pytest.mark.parametrize("location", [(90.1, 0), (0, -180.5), (float("nan"), 0), (1,), "46,8", (True, 0)])
def test_a_bad_location_is_refused(location):
    with pytest.raises(ValueError):
        wire.encode_status(device=DEVICE, state="online", at=T, clock_synced=True, location=location)


@pytest.mark.parametrize("payload", [b'{"v":1,"d":"t","st":"online","la":1}', b'{"v":1,"d":"t","st":"online","la":1,"lo":190000000}'])
def test_a_half_or_out_of_range_location_is_refused_by_decoder_and_schema(payload):
    with pytest.raises(ValueError):
        decode.decode_status(payload)
    assert list(_validator("status").iter_errors(json.loads(payload)))

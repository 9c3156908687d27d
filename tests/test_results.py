"""``wildedge results``: the device's summary and its exports, read-only beside a writing daemon."""

from __future__ import annotations

import csv
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.outputs.megadetector import validate_megadetector
from edge.store import DetectionRecord, EventRecord, FrameRecord, OutboxMessage, Store, new_uid

DET_LABELS = ["deer", "<b>fox</b>", "person"]
CLS_LABELS = ["red fox", "roe <i>deer</i>"]
T0 = datetime(2026, 5, 1, 10, 0, 0, tzinfo=UTC)
SIZE = (1920, 1080)
BOOT = "5f1c9a3e-0000-4000-8000-000000000000"


# -- building a device ------------------------------------------------------------------------------

def tiny_onnx(path: Path, meta: dict[str, str]) -> Path:
    """A two-node ONNX graph carrying Ultralytics-style metadata (read as a model card)."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())
    return path


def write_config(tmp: Path, *, location: bool = True) -> Path:
    det = tiny_onnx(tmp / "det.onnx", {"names": repr(dict(enumerate(DET_LABELS))), "imgsz": "[640, 640]",
                                        "description": "tiny-det", "task": "detect"})
    cls = tiny_onnx(tmp / "cls.onnx", {"names": repr(dict(enumerate(CLS_LABELS))), "imgsz": "[224, 224]",
                                        "description": "tiny-cls", "task": "classify"})
    where = "latitude = 46.5\nlongitude = 8.25\n" if location else ""
    path = tmp / "wildedge.toml"
    path.write_text(f'[device]\nid = "trap-01"\nstate_dir = "{tmp / "state"}"\n{where}\n'
                    f'[camera]\ntype = "folder"\npath = "{tmp / "photos"}"\n\n'
                    f'[detector]\nmodel = "{det}"\nconf = 0.25\n\n'
                    f'[classifier]\nmodel = "{cls}"\nmin_confidence = 0.5\n', encoding="utf-8")
    return path


def det(class_id: int, score: float, box: tuple[float, float, float, float],
        cls: tuple[int, float] | None = None) -> DetectionRecord:
    classification = None if cls is None else (cls[0], CLS_LABELS[cls[0]], cls[1])
    return DetectionRecord(class_id, DET_LABELS[class_id], score, box, classification)


def add_event(store: Store, when: datetime, dets: list[DetectionRecord], *, counts: dict[int, int] | None = None,
              trigger: str = "motion", synced: bool = True, image: bool = True,
              vote: tuple[int, int, int] | None = None) -> tuple[EventRecord, FrameRecord]:
    """One burst of one frame and its event (with one queued message), committed as the daemon does."""
    burst, frame_uid = new_uid(), new_uid()
    path = f"{when:%Y/%m/%d}/{frame_uid}.jpg" if image else None
    frame = FrameRecord(frame_uid, when, 100.0, BOOT, synced, trigger, burst, 0, SIZE[0], SIZE[1], 12.0, None, path,
                        dets)
    counts = counts if counts is not None else {d.class_id: sum(x.class_id == d.class_id for x in dets) for d in dets}
    classes = [{"class_id": c, "label": DET_LABELS[c], "count": n, "best_score": 0.9, "best_frame_uid": frame_uid,
                "new": None} for c, n in sorted(counts.items())]
    summary: dict[str, Any] = {"frames": 1, "frames_with_detections": int(bool(dets)), "classes": classes,
                               "best": None, "classification": None}
    if vote is not None:
        summary["classification"] = {"class_id": vote[0], "label": CLS_LABELS[vote[0]], "votes": vote[1],
                                     "voters": vote[2], "mean_prob": 0.8, "tally": []}
    event = EventRecord(new_uid(), burst, when, 100.0, BOOT, synced, trigger, path, frame_uid, summary)
    store.commit_burst([frame], event, [OutboxMessage("wildedge/trap-01/event", b"{}", event_uid=event.uid)])
    return event, frame


def populate(state: Path) -> list[tuple[EventRecord, FrameRecord]]:
    """Four events: classified fox pair, deer burst, person without image, one with no best-frame detections."""
    with Store(state / "wildedge.db", images_dir=state / "images") as store:
        out = [
            add_event(store, T0, [det(1, 0.92637, (0.10449, 0.2, 0.5, 0.7), (0, 0.8126)),
                                  det(1, 0.61, (0.6, 0.1, 0.9, 0.4), (1, 0.55))], vote=(0, 1, 2)),
            add_event(store, T0 + timedelta(hours=1), [det(0, 0.5, (0.0, 0.0, 0.25, 0.5))], counts={0: 3},
                      trigger="timelapse"),
            add_event(store, T0 + timedelta(days=1), [det(2, 0.77, (0.3, 0.3, 0.4, 0.9))], image=False,
                      synced=False),
            add_event(store, T0 + timedelta(days=2), [], counts={}),
        ]
        store.commit_burst([FrameRecord(new_uid(), T0 + timedelta(days=2, hours=1), 5.0, BOOT, True, "timelapse",
                                        "empty-burst", 0, SIZE[0], SIZE[1], 10.0)], None)
    return out


@pytest.fixture()
def device(tmp_path: Path) -> Path:
    config = write_config(tmp_path)
    populate(tmp_path / "state")
    return config


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["results", *args])


# -- validating what was written --------------------------------------------------------------------

def real_megadetector_problems(doc: dict[str, Any]) -> list[str]:
    """Errors of MegaDetector's own validator (skips when the megadetector package is not installed)."""
    try:
        from megadetector.postprocessing.validate_batch_results import (
            ValidateBatchResultsOptions,
            validate_batch_results,
        )
    except ImportError as err:
        pytest.skip(f"megadetector's validator is not importable ({err}): pip install --no-deps megadetector "
                    "jsonpickle")
    options = ValidateBatchResultsOptions()
    options.raise_errors = False
    results = validate_batch_results(doc, options)["validation_results"]
    return list(results["errors"])


def camtrapdp_problems(folder: Path, assets: Path) -> list[str]:
    """Problems found by jsonschema (package profile) and frictionless (tables), offline, against 1.0.2."""
    frictionless = pytest.importorskip("frictionless")
    import jsonschema
    import referencing

    schemas = assets / "camtrap_dp_1.0.2"
    descriptor = json.loads((folder / "datapackage.json").read_text(encoding="utf-8"))
    profile = json.loads((schemas / "camtrap-dp-profile.json").read_text(encoding="utf-8"))
    geojson = json.loads((Path(frictionless.__file__).parent / "assets/profiles/geojson.json").read_text())
    # The generic Data Package profile is not available offline: a minimal stand-in checks its core rules.
    data_package = {"type": "object", "required": ["resources"],
                    "properties": {"resources": {"type": "array", "minItems": 1,
                                                 "items": {"type": "object", "required": ["name"]}}}}
    registry = referencing.Registry().with_resources([
        ("https://specs.frictionlessdata.io/schemas/data-package.json",
         referencing.Resource.from_contents(data_package, default_specification=referencing.jsonschema.DRAFT4)),
        ("http://json.schemastore.org/geojson.json",
         referencing.Resource.from_contents(geojson, default_specification=referencing.jsonschema.DRAFT7)),
    ])
    validator = jsonschema.Draft4Validator(profile, registry=registry, format_checker=jsonschema.FormatChecker())
    problems = [f"datapackage.json {'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(descriptor)]
    local = dict(descriptor, resources=[
        dict(r, schema=json.loads((schemas / f"{r['name']}-table-schema.json").read_text(encoding="utf-8")))
        for r in descriptor["resources"]])
    local.pop("profile")  # a URL frictionless would fetch; the profile was checked above
    report = frictionless.Package(local, basepath=str(folder)).validate()
    problems += [f"{e.type}: {e.message}" for task in report.tasks for e in task.errors]
    problems += [f"{e.type}: {e.message}" for e in report.errors]
    return problems


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


# -- tests --------------------------------------------------------------------------------------------

def test_summary_lists_frames_classes_last_event_and_outbox(device: Path) -> None:
    result = run("--config", str(device))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "frames       5" in lines and "events       4" in lines
    assert any(line.split() == ["<b>fox</b>", "1"] for line in lines)
    assert "last event   2026-05-03 10:00:00 UTC" in lines
    assert any(line.startswith("outbox       4 messages waiting") for line in lines)


def test_missing_store_fails_in_one_line_and_creates_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run("--config", str(config), "-o", str(tmp_path / "out.json"))
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("error: no store at ")
    assert not (tmp_path / "state" / "wildedge.db").exists()


def test_bad_options_give_one_line(device: Path, tmp_path: Path) -> None:
    for args in (["--format", "xml"], ["--since", "yesterday"], ["--until", "2026-13-01"]):
        result = run("--config", str(device), *args, "-o", str(tmp_path / "x"))
        assert result.exit_code == 2 and result.output.count("\n") == 1, (args, result.output)
        assert result.output.startswith("error: ")


def test_megadetector_export_passes_both_validators(device: Path, tmp_path: Path) -> None:
    out = tmp_path / "md.json"
    result = run("--config", str(device), "-o", str(out))
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert validate_megadetector(doc) == []
    assert real_megadetector_problems(doc) == []
    assert doc["detection_categories"] == {"1": "deer", "2": "<b>fox</b>", "3": "person"}
    assert doc["classification_categories"] == {"0": "red fox", "1": "roe <i>deer</i>"}
    assert doc["info"]["detector"] == "tiny-det" and doc["info"]["classifier"] == "tiny-cls"
    # The device kept scores >= 0.25: thresholds describe that, never below MegaDetector's defaults.
    assert doc["info"]["detector_metadata"]["typical_detection_threshold"] == 0.25
    assert doc["info"]["detector_metadata"]["conservative_detection_threshold"] == 0.25
    files = [image["file"] for image in doc["images"]]
    assert len(files) == 3 and all(f.startswith("trap-01/2026/05/0") for f in files)  # no image: left out
    first = doc["images"][0]["detections"][0]
    # The wire's precision: thousandths, rounded half up as the encoder does.
    assert first == {"category": "2", "conf": 0.926, "bbox": [0.104, 0.2, 0.396, 0.5],
                     "classifications": [["0", 0.813]]}
    assert doc["images"][2]["detections"] == []


def test_csv_rows_per_detection_and_per_empty_event(device: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    assert run("--config", str(device), "--format", "csv", "-o", str(out)).exit_code == 0
    rows = read_csv(out)
    assert len(rows) == 5  # 2 + 1 + 1 detections, and one event without any
    assert [r["class_id"] for r in rows] == ["2", "2", "1", "3", ""]
    assert rows[0]["label"] == "<b>fox</b>" and rows[0]["classification"] == "red fox"
    assert rows[0]["vote"] == "red fox" and (rows[0]["vote_votes"], rows[0]["vote_voters"]) == ("1", "2")
    assert rows[2]["count"] == "3" and rows[2]["width"] == "1920" and rows[2]["trigger"] == "timelapse"
    assert rows[3]["file"] == "" and rows[3]["clock"] == "unsynced"
    assert rows[4]["label"] == "" and rows[4]["event_id"]


def test_coco_uses_the_frame_sizes(device: Path, tmp_path: Path) -> None:
    out = tmp_path / "coco.json"
    assert run("--config", str(device), "--format", "coco", "-o", str(out)).exit_code == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert [(i["width"], i["height"]) for i in doc["images"]] == [SIZE] * 3
    ann = doc["annotations"][0]
    assert ann["category_id"] == 2 and ann["bbox"] == [round(0.104 * 1920, 2), 216.0, round(0.396 * 1920, 2), 540.0]
    assert [c["name"] for c in doc["categories"]] == DET_LABELS


def test_camtrapdp_is_valid_and_carries_location(device: Path, tmp_path: Path, assets: Path) -> None:
    out = tmp_path / "package"
    result = run("--config", str(device), "--format", "camtrapdp", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert camtrapdp_problems(out, assets) == []
    deployments = read_csv(out / "deployments.csv")
    assert [(d["deploymentID"], d["latitude"], d["longitude"]) for d in deployments] == [("trap-01", "46.5", "8.25")]
    assert deployments[0]["timestampIssues"] == "true"  # one event was made with an unsynchronised clock
    assert deployments[0]["deploymentStart"] == "2026-05-01T10:00:00Z"
    assert deployments[0]["deploymentEnd"] == "2026-05-03T11:00:00Z"
    media = read_csv(out / "media.csv")
    assert len(media) == 3 and media[0]["captureMethod"] == "activityDetection"
    observations = read_csv(out / "observations.csv")
    boxes = [o for o in observations if o["observationLevel"] == "media"]
    assert boxes[0]["bboxX"] == "0.104" and boxes[0]["classifiedBy"] == "tiny-cls"
    assert boxes[0]["scientificName"] == "red fox" and boxes[0]["classificationMethod"] == "machine"
    assert any(o["observationType"] == "blank" for o in observations)
    # Written again over itself: replaced whole.
    assert run("--config", str(device), "--format", "camtrapdp", "-o", str(out)).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".package")) == []


def test_camtrapdp_without_location_fails_in_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, location=False)
    populate(tmp_path / "state")
    result = run("--config", str(config), "--format", "camtrapdp", "-o", str(tmp_path / "pkg"))
    assert result.exit_code == 2
    assert result.output.splitlines()[-1].startswith("error: ") and "missing for: trap-01" in result.output
    assert not (tmp_path / "pkg").exists()


def test_since_until_filter_on_capture_time(device: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    result = run("--config", str(device), "--format", "csv", "--since", "2026-05-01T10:30:00",
                 "--until", "2026-05-02", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert [r["time"] for r in read_csv(out)] == ["2026-05-01T11:00:00Z", "2026-05-02T10:00:00Z"]


def test_reads_while_another_connection_writes(device: Path, tmp_path: Path) -> None:
    db = tmp_path / "state" / "wildedge.db"
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # the daemon in the middle of a burst: holds the write lock
        writer.execute("DELETE FROM outbox")
        out = tmp_path / "out.csv"
        result = run("--config", str(device), "--format", "csv", "-o", str(out))
        assert result.exit_code == 0, result.output
        assert "outbox       4 messages waiting" in result.output  # the uncommitted delete is not seen
        assert len(read_csv(out)) == 5
        writer.execute("COMMIT")  # and the reader never took a lock the writer waits on
    finally:
        writer.close()
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] >= 1


def test_megadetector_categories_on_the_device_and_refused_for_other_formats(device: Path, tmp_path: Path) -> None:
    out = tmp_path / "md.json"
    result = run("--config", str(device), "--categories", "megadetector", "-o", str(out))
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert validate_megadetector(doc) == [] and real_megadetector_problems(doc) == []
    assert doc["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    native = tmp_path / "native.json"
    assert run("--config", str(device), "-o", str(native)).exit_code == 0
    before = json.loads(native.read_text(encoding="utf-8"))
    names = before["detection_categories"]
    # deer and fox are no COCO names and the card gives no map: left out; person stays person.
    people = [d for image in before["images"] for d in image["detections"] if names[d["category"]] == "person"]
    written = [d for image in doc["images"] for d in image["detections"]]
    assert len(written) == len(people) and {d["category"] for d in written} <= {"2"}
    assert [i["file"] for i in doc["images"]] == [i["file"] for i in before["images"]]  # no image lost
    assert sum(len(i["detections"]) for i in before["images"]) > len(written)  # something was left out
    refused = run("--config", str(device), "--categories", "megadetector", "-f", "csv", "-o", str(tmp_path / "x"))
    assert refused.exit_code == 2 and "applies to --format megadetector only" in refused.output

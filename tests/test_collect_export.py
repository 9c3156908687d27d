"""``wildedge collect export``: the collector's database through the device's writers."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_results import (
    CLS_LABELS,
    DET_LABELS,
    camtrapdp_problems,
    populate,
    read_csv,
    real_megadetector_problems,
    run,
    write_config,
)
from typer.testing import CliRunner

pytest.importorskip("sqlalchemy")

from collector.cli import app as collect_app
from collector.db import migrate, open_engine
from collector.export import export_to
from collector.ingest import Incoming, store_batch
from edge import payload as wire
from edge.outputs.megadetector import validate_megadetector
from edge.store import Store

GOLDEN = Path(__file__).parent / "golden" / "wire"
PREFIX = "wildedge"


def _kind(name: str) -> str:
    return name.split("_")[0]


def seed(url: str, messages: list[tuple[str, bytes]]) -> None:
    engine = open_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        result = store_batch(conn, [Incoming(t, p, 1780290000) for t, p in messages], prefix=PREFIX,
                             max_payload=1 << 20)
    engine.dispose()
    assert result.count("rejected") == 0


def golden_messages(device: str = "trap-01") -> list[tuple[str, bytes]]:
    out = []
    for name in ("model", "effort", "event_0_detections", "event_1_detection", "event_5_detections",
                 "event_classification", "event_folder", "event_unsynced"):
        payload = (GOLDEN / f"{name}.json").read_bytes().strip()
        if device != "trap-01":  # a second device: its own name and its own message ids
            raw = json.loads(payload)
            raw["d"] = device
            if "e" in raw:
                raw["e"] = wire.encode_id(str(uuid.uuid5(uuid.NAMESPACE_URL, device + raw["e"])))
            payload = wire.dumps(raw)
        out.append((f"{PREFIX}/{device}/{_kind(name)}", payload))
    return out


@pytest.fixture()
def golden_db(collector_url: str) -> str:
    """The golden messages of two devices in a collector database (SQLite, then PostgreSQL)."""
    seed(collector_url, golden_messages() + golden_messages("trap-02"))
    return collector_url


def collect(*args: str) -> Any:
    return CliRunner().invoke(collect_app, ["export", *args])


def test_megadetector_from_golden_messages_passes_both_validators(golden_db: str, tmp_path: Path) -> None:
    out = tmp_path / "md.json"
    result = collect("--db", golden_db, "-o", str(out))
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert validate_megadetector(doc) == [] and real_megadetector_problems(doc) == []
    # The unsynchronised golden event names a model whose message never arrived: its class has no name.
    assert doc["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle", "4": "class 0"}
    assert doc["info"]["detector"] == "md_v5a.0.0.onnx, unknown model 20f212bd"
    assert doc["info"]["classifier"] == "species_alps.onnx"
    files = {image["file"] for image in doc["images"]}
    assert "trap-01/site_b/2026-05/IMG_0042.JPG" in files and "trap-02/site_b/2026-05/IMG_0042.JPG" in files
    folder = next(i for i in doc["images"] if i["file"] == "trap-01/site_b/2026-05/IMG_0042.JPG")
    assert folder["detections"][0] == {"category": "1", "conf": 0.813, "bbox": [0.5, 0.125, 0.25, 0.375],
                                       "classifications": [["0", 0.95]]}


def test_device_filter_and_period(golden_db: str, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    assert collect("--db", golden_db, "--format", "csv", "--device", "trap-02", "-o", str(out)).exit_code == 0
    rows = read_csv(out)
    assert {r["device"] for r in rows} == {"trap-02"}
    assert {r["class_id"] for r in rows if r["class_id"]} == {"1", "2", "4"}  # 4: "class 0" of an unknown model
    assert all(r["detector"] in ("md_v5a.0.0.onnx", "unknown model 20f212bd") for r in rows)
    # The unsynchronised event (boot 5f1c9a3e) was corrected by the effort message to 02:31:30; the others
    # are at 03:14:15. --since and --until work on the best-known time.
    corrected = [r for r in rows if r["clock"] == "corrected"]
    assert [r["time"] for r in corrected] == ["2026-06-01T02:31:30Z"]
    assert collect("--db", golden_db, "-f", "csv", "--since", "2026-06-01T03:00:00", "-o", str(out)).exit_code == 0
    assert {r["time"] for r in read_csv(out)} == {"2026-06-01T03:14:15Z"}
    assert {r["device"] for r in read_csv(out)} == {"trap-01", "trap-02"}
    assert collect("--db", golden_db, "-f", "csv", "--until", "2026-06-01T03:00:00+00:00", "--device", "trap-01",
                   "-o", str(out)).exit_code == 0
    assert [(r["device"], r["time"]) for r in read_csv(out)] == [("trap-01", "2026-06-01T02:31:30Z")]
    assert collect("--db", golden_db, "-f", "csv", "--until", "2026-05-31", "-o", str(out)).exit_code == 0
    assert read_csv(out) == []


def test_camtrapdp_needs_locations_and_validates_with_them(golden_db: str, tmp_path: Path, assets: Path) -> None:
    out = tmp_path / "pkg"
    result = collect("--db", golden_db, "--format", "camtrapdp", "-o", str(out))
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "missing for: trap-01, trap-02" in result.output and not out.exists()
    places = tmp_path / "locations.csv"
    places.write_text("device,latitude,longitude\ntrap-01,46.5,8.25\n", encoding="utf-8")
    result = collect("--db", golden_db, "--format", "camtrapdp", "--locations", str(places), "-o", str(out))
    assert result.exit_code == 2 and "missing for: trap-02" in result.output
    places.write_text("device,latitude,longitude\ntrap-01,46.5,8.25\ntrap-02,46.6,8.3\n", encoding="utf-8")
    result = collect("--db", golden_db, "--format", "camtrapdp", "--locations", str(places), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert camtrapdp_problems(out, assets) == []
    deployments = read_csv(out / "deployments.csv")
    assert [d["deploymentID"] for d in deployments] == ["trap-01", "trap-02"]
    assert deployments[0]["timestampIssues"] == "false"  # its one unsynchronised event was corrected
    assert deployments[0]["deploymentStart"] == "2026-06-01T02:00:00Z"  # the effort period's start
    observations = read_csv(out / "observations.csv")
    assert any(o["classifiedBy"] == "species_alps.onnx" and o["scientificName"] == "red fox" for o in observations)


def test_the_validators_catch_a_broken_package(golden_db: str, tmp_path: Path, assets: Path) -> None:
    places = tmp_path / "locations.csv"
    places.write_text("trap-01,46.5,8.25\ntrap-02,46.6,8.3\n", encoding="utf-8")
    out = tmp_path / "pkg"
    assert collect("--db", golden_db, "-f", "camtrapdp", "--locations", str(places), "-o", str(out)).exit_code == 0
    text = (out / "deployments.csv").read_text(encoding="utf-8")
    (out / "deployments.csv").write_text(text.replace(",46.5,", ",146.5,"), encoding="utf-8")
    descriptor = json.loads((out / "datapackage.json").read_text(encoding="utf-8"))
    del descriptor["project"]
    (out / "datapackage.json").write_text(json.dumps(descriptor), encoding="utf-8")
    problems = camtrapdp_problems(out, assets)
    assert any("project" in p for p in problems) and any("constraint" in p for p in problems)


def test_coco_needs_a_frame_size_on_the_server(golden_db: str, tmp_path: Path) -> None:
    out = tmp_path / "coco.json"
    result = collect("--db", golden_db, "--format", "coco", "-o", str(out))
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "--frame-size" in result.output
    result = collect("--db", golden_db, "--format", "coco", "--frame-size", "2000x1000", "-o", str(out))
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert {(i["width"], i["height"]) for i in doc["images"]} == {(2000, 1000)}
    ann = next(a for a in doc["annotations"] if a["bbox"][0] == 1000.0)  # the folder event's 0.5 x
    assert ann["bbox"] == [1000.0, 125.0, 500.0, 375.0]


@pytest.mark.parametrize("args, words", [
    (["--format", "xml"], "--format"),
    (["--device", "nope"], "unknown device nope"),
    (["--since", "soon"], "--since"),
    (["--since", "2026-05-02", "--until", "2026-05-01"], "--until must be after --since"),
    (["--frame-size", "big"], "--frame-size"),
    (["--locations", "/nonexistent/places.csv"], "cannot read locations file"),
])
def test_bad_options_give_one_line(golden_db: str, tmp_path: Path, args: list[str], words: str) -> None:
    result = collect("--db", golden_db, "-o", str(tmp_path / "x.json"), *args)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ") and words in result.output


def test_missing_database_is_one_line(tmp_path: Path) -> None:
    result = collect("--db", f"sqlite:///{tmp_path / 'none.db'}", "-o", str(tmp_path / "x.json"))
    assert result.exit_code != 0 and result.output.count("\n") == 1 and result.output.startswith("error: ")


# -- the same events from both sides -------------------------------------------------------------------

def _device_messages(state: Path) -> list[tuple[str, bytes]]:
    """What the device's outbox would have carried: the model message, then each event's message."""
    det = wire.ModelInfo("tiny-det", "a" * 64, DET_LABELS, 0.25, 0.45)
    cls = wire.ModelInfo("tiny-cls", "b" * 64, CLS_LABELS, 0.5)
    topics = wire.topics(PREFIX, "trap-01")
    messages = [(topics.model, wire.encode_model(device="trap-01", detector=det, classifier=cls,
                                                 at=1780283655, clock_synced=True))]
    model_id = wire.model_id(det.sha256, cls.sha256)
    with Store(state / "wildedge.db", images_dir=state / "images") as store:
        frames = {f.uid: f for f in store.frames()}
        for event in store.events():
            data = wire.encode_event(event, frames[event.best_frame_uid], device="trap-01", model_id=model_id,
                                     image=event.image_path)
            messages.append((topics.event, data))
    return messages


@pytest.fixture()
def both_sides(tmp_path: Path) -> tuple[Path, str]:
    config = write_config(tmp_path)
    populate(tmp_path / "state")
    url = f"sqlite:///{tmp_path / 'collector.db'}"
    seed(url, _device_messages(tmp_path / "state"))
    return config, url


def test_device_and_server_export_the_same_detections(both_sides: tuple[Path, str], tmp_path: Path) -> None:
    config, url = both_sides
    for fmt in ("megadetector", "csv"):
        here, there = tmp_path / f"device.{fmt}", tmp_path / f"server.{fmt}"
        assert run("--config", str(config), "--format", fmt, "-o", str(here)).exit_code == 0
        assert collect("--db", url, "--format", fmt, "-o", str(there)).exit_code == 0
        if fmt == "megadetector":
            mine, theirs = (json.loads(p.read_text(encoding="utf-8")) for p in (here, there))
            assert mine["images"] == theirs["images"]
            assert mine["detection_categories"] == theirs["detection_categories"]
            assert mine["classification_categories"] == theirs["classification_categories"]
        else:
            ignore = {"width", "height"}  # the wire does not carry frame sizes
            strip = [{k: v for k, v in r.items() if k not in ignore} for r in read_csv(here)]
            assert strip == [{k: v for k, v in r.items() if k not in ignore} for r in read_csv(there)]
            assert any(r["label"] == "<b>fox</b>" for r in strip)  # markup is data, kept as written


def test_html_in_labels_survives_as_data(both_sides: tuple[Path, str], tmp_path: Path) -> None:
    _config, url = both_sides
    engine = open_engine(url)
    try:
        md = export_to(engine, "megadetector", tmp_path / "md.json")
        out = export_to(engine, "csv", tmp_path / "out.csv")
    finally:
        engine.dispose()
    doc = json.loads(md.read_text(encoding="utf-8"))
    assert "<b>fox</b>" in doc["detection_categories"].values()
    assert "roe <i>deer</i>" in doc["classification_categories"].values()
    with open(out, encoding="utf-8", newline="") as stream:
        labels = {r["label"] for r in csv.DictReader(stream)}
    assert "<b>fox</b>" in labels


def test_the_camtrapdp_writer_never_replaces_a_folder_that_is_not_a_package(golden_db: str, tmp_path: Path) -> None:
    """Whoever calls it (a command, the web page): a folder with other files in it is refused, untouched."""
    engine = open_engine(golden_db)
    locations = {"trap-01": (46.5, 8.25), "trap-02": (46.6, 8.3)}
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.txt").write_text("years of work")
    with pytest.raises(ValueError, match="holds other files"):
        export_to(engine, "camtrapdp", out, locations=locations)
    assert [p.name for p in out.iterdir()] == ["chapter1.txt"]
    package = tmp_path / "pkg"
    export_to(engine, "camtrapdp", package, locations=locations)
    export_to(engine, "camtrapdp", package, locations=locations)  # an earlier package is replaced
    assert sorted(p.name for p in package.iterdir()) == ["datapackage.json", "deployments.csv", "media.csv",
                                                          "observations.csv"]
    engine.dispose()


def test_megadetector_categories_keep_each_boxs_own_class_as_a_classification(golden_db: str,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "md.json"
    result = collect("--db", golden_db, "--categories", "megadetector", "-o", str(out))
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert validate_megadetector(doc) == [] and real_megadetector_problems(doc) == []
    assert doc["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    cats = doc["classification_categories"]
    assert {"animal", "person", "vehicle"} <= set(cats.values())
    folder = next(i for i in doc["images"] if i["file"] == "trap-01/site_b/2026-05/IMG_0042.JPG")
    own = next(k for k, v in cats.items() if v == "animal")
    # The classifier's vote first, then the detector's own class with its score: nothing is lost.
    assert folder["detections"][0] == {"category": "1", "conf": 0.813, "bbox": [0.5, 0.125, 0.25, 0.375],
                                       "classifications": [["0", 0.95], [own, 0.813]]}
    # The unknown model's detections cannot be mapped: left out, not guessed.
    assert all(d["category"] in {"1", "2", "3"} for image in doc["images"] for d in image["detections"])


@pytest.mark.parametrize(("args", "message"), [
    (["--categories", "megadetector", "--format", "csv"], "applies to --format megadetector only"),
    (["--categories", "md"], "choose native or megadetector"),
])
def test_bad_categories_are_refused_in_one_line(golden_db: str, tmp_path: Path, args, message) -> None:
    result = collect("--db", golden_db, *args, "-o", str(tmp_path / "x"))
    assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1, result.output

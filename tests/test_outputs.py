"""The output writers of ``wildedge detect``: MegaDetector 1.6 (golden file + validator), COCO, CSV."""

from __future__ import annotations

import copy
import csv
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.batch.results import FileResult, ModelInfo, RunInfo
from edge.inference.detector import Detection
from edge.outputs import WRITERS, write_results
from edge.outputs.csv import COLUMNS
from edge.outputs.megadetector import read_megadetector, to_megadetector, validate_megadetector

GOLDEN = Path(__file__).parent / "golden" / "megadetector_1_6.json"
DETECTOR = ModelInfo(name="md_v5a.0.0.onnx", labels=["animal", "person", "vehicle"], conf=0.2,
                     input_size=(960, 1280))
CLASSIFIER = ModelInfo(name="species_tiny.onnx", labels=["fox", "elk", "wolf", "bear"], conf=0.5,
                       input_size=(224, 224))
RUN = RunInfo(detector=DETECTOR, classifier=CLASSIFIER, completed="2026-05-26 19:11:27")


def _results() -> list[FileResult]:
    return [
        FileResult("site_a/IMG_0001.JPG", 2000, 1000, [
            Detection((200.0, 100.0, 700.0, 600.0), 0.92637, 0, "animal",
                      [(3, 0.90123), (1, 0.07149), (2, 0.02502)]),
            Detection((1500.4, 250.2, 1800.6, 450.8), 0.0614, 1, "person"),
        ]),
        FileResult("site_a/IMG_0002.JPG", 2000, 1000),
        FileResult("site_b/broken.jpg", failure="cannot decode image: truncated JPEG"),
        FileResult("site_b/clip.mp4", 1920, 1080, [
            Detection((192.0, 108.0, 576.0, 540.0), 0.8712, 0, "animal", frame=0),
            Detection((960.0, 540.0, 1344.0, 1080.0), 0.7738, 0, "animal", frame=30),
        ], frame_rate=30.0, frames_processed=[0, 30, 60]),
        FileResult("site_c/edge.jpg", 1000, 800, [
            Detection((-50.0, 700.0, 300.0, 900.0), 0.5557, 2, "vehicle"),  # sticks out left and bottom
            Detection((1100.0, 100.0, 1200.0, 200.0), 0.3, 0, "animal"),  # wholly outside: dropped
        ]),
    ]


def _golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def _canonical(doc: Any) -> str:
    # json text, not ==, so key order and 1 vs 1.0 count (MegaDetector's validator wants float confs).
    return json.dumps(doc, indent=1)


# --- MegaDetector writer ----------------------------------------------------------------------------


def test_megadetector_output_equals_golden_file(tmp_path: Path) -> None:
    out = write_results("megadetector", _results(), tmp_path / "md.json", run=RUN)
    assert _canonical(json.loads(out.read_text(encoding="utf-8"))) == _canonical(_golden())


def test_golden_file_is_valid_1_6() -> None:
    assert validate_megadetector(_golden()) == []


def test_completion_time_defaults_to_now() -> None:
    doc = to_megadetector([], run=RunInfo(detector=DETECTOR))
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", doc["info"]["detection_completion_time"])


def test_without_classifier_there_are_no_classification_fields() -> None:
    results = [FileResult("a.jpg", 100, 100, [Detection((0, 0, 50, 50), 0.9, 0, "animal")])]
    doc = to_megadetector(results, run=RunInfo(detector=DETECTOR, completed="2026-01-01 00:00:00"))
    assert "classification_categories" not in doc
    assert not {"classifier", "classification_completion_time", "classifier_metadata"} & set(doc["info"])
    assert doc["images"][0]["detections"] == [{"category": "1", "conf": 0.9, "bbox": [0.0, 0.0, 0.5, 0.5]}]


def test_classifications_without_classifier_are_refused() -> None:
    results = [FileResult("a.jpg", 100, 100, [Detection((0, 0, 50, 50), 0.9, 0, "animal", [(1, 0.8)])])]
    with pytest.raises(ValueError, match="classification"):
        to_megadetector(results, run=RunInfo(detector=DETECTOR))


def test_classifications_are_written_best_first() -> None:
    det = Detection((0, 0, 50, 50), 0.9, 0, "animal", [(0, 0.1), (2, 0.7), (1, 0.2)])
    doc = to_megadetector([FileResult("a.jpg", 100, 100, [det])], run=RUN)
    assert doc["images"][0]["detections"][0]["classifications"] == [["2", 0.7], ["1", 0.2], ["0", 0.1]]


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_processed_file_without_size_is_a_bug(fmt: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="width and height"):
        write_results(fmt, [FileResult("a.jpg", 0, 480)], tmp_path / "out", run=RUN)


def test_unknown_class_id_is_refused() -> None:
    results = [FileResult("a.jpg", 100, 100, [Detection((0, 0, 50, 50), 0.9, 7, "?")])]
    with pytest.raises(ValueError, match="detection_categories"):
        to_megadetector(results, run=RUN)


# --- MegaDetector validator and reader -------------------------------------------------------------


def test_real_megadetector_file_reads_as_an_older_version(assets: Path) -> None:
    path = assets / "camera_traps_lila" / "expected_output_DRAFT.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert validate_megadetector(doc, allow_older=True) == []
    assert [p.split(":")[0] for p in validate_megadetector(doc)] == ["info.format_version"]
    read = read_megadetector(path)
    assert read["info"]["format_version"] == "1.1"
    assert len(read["images"]) == 31
    assert read["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}


def test_reader_reads_golden_and_fills_failed_detections(tmp_path: Path) -> None:
    doc = _golden()
    del doc["images"][2]["detections"]  # the spec allows omitting it for a failure
    path = tmp_path / "md.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert read_megadetector(path)["images"][2]["detections"] is None


def test_video_fields_are_only_required_from_1_4() -> None:
    doc = _golden()
    doc["info"]["format_version"] = "1.3"
    image = doc["images"][3]
    del image["frame_rate"], image["frames_processed"]
    for det in image["detections"]:
        del det["frame_number"]
    assert validate_megadetector(doc, allow_older=True) == []
    doc["info"]["format_version"] = "1.4"
    assert len(validate_megadetector(doc, allow_older=True)) == 4


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    (json.dumps({"info": {"format_version": "2.0"}, "detection_categories": {}, "images": []}),
     "info.format_version"),
    (json.dumps([1, 2]), "<root>"),
])
def test_reader_rejects_bad_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(match)):
        read_megadetector(path)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting ``path`` ("images.0.detections.1.bbox") to ``value``; ``...`` deletes the key."""
    *parents, last = path.split(".")

    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        key: Any = int(last) if isinstance(node, list) else last
        if value is ...:
            del node[key]
        else:
            node[key] = value
    return mutate


def _rename_category(doc: dict[str, Any]) -> None:
    doc["detection_categories"]["animal"] = doc["detection_categories"].pop("1")


BROKEN = {
    "missing format_version": (_set("info.format_version", ...), "info.format_version"),
    "float format_version": (_set("info.format_version", 1.6), "info.format_version"),
    "older version when 1.6 is wanted": (_set("info.format_version", "1.5"), "info.format_version"),
    "missing detection_categories": (_set("detection_categories", ...), "detection_categories"),
    "non-integer category id": (_rename_category, "detection_categories['animal']"),
    "blank category name": (_set("detection_categories.2", " "), "detection_categories['2']"),
    "bad classification category id": (_set("classification_categories.-1", "x"),
                                       "classification_categories['-1']"),
    "images not a list": (_set("images", {}), "images"),
    "int detection category": (_set("images.0.detections.0.category", 1), "images[0].detections[0].category"),
    "unmapped detection category": (_set("images.0.detections.0.category", "9"),
                                    "images[0].detections[0].category"),
    "conf above 1": (_set("images.0.detections.1.conf", 1.5), "images[0].detections[1].conf"),
    "int conf": (_set("images.0.detections.1.conf", 1), "images[0].detections[1].conf"),
    "missing conf": (_set("images.0.detections.1.conf", ...), "images[0].detections[1].conf"),
    "bbox out of range": (_set("images.0.detections.1.bbox", [0.5, -0.2, 0.1, 0.1]),
                          "images[0].detections[1].bbox"),
    "bbox with 3 numbers": (_set("images.0.detections.1.bbox", [0.1, 0.1, 0.2]),
                            "images[0].detections[1].bbox"),
    "bbox in pixels": (_set("images.4.detections.0.bbox", [0, 700, 300, 100]),
                       "images[4].detections[0].bbox"),
    "bbox past the right edge": (_set("images.4.detections.0.bbox", [0.8, 0.1, 0.3, 0.1]),
                                 "images[4].detections[0].bbox"),
    "missing file": (_set("images.1.file", ...), "images[1].file"),
    "success without detections": (_set("images.1.detections", ...), "images[1].detections"),
    "null detections without failure": (_set("images.1.detections", None), "images[1].detections"),
    "failure with detections list": (_set("images.2.detections", []), "images[2].detections"),
    "non-string failure": (_set("images.2.failure", 42), "images[2].failure"),
    "unsorted classifications": (_set("images.0.detections.0.classifications", [["1", 0.071], ["3", 0.901]]),
                                 "images[0].detections[0].classifications"),
    "unknown classification id": (_set("images.0.detections.0.classifications.0", ["7", 0.901]),
                                  "images[0].detections[0].classifications[0]"),
    "int classification id": (_set("images.0.detections.0.classifications.0", [3, 0.901]),
                              "images[0].detections[0].classifications[0]"),
    "classification probability above 1": (_set("images.0.detections.0.classifications.0", ["3", 2.0]),
                                           "images[0].detections[0].classifications[0]"),
    "classifications without categories": (_set("classification_categories", ...),
                                           "images[0].detections[0].classifications"),
    "video without frame_number": (_set("images.3.detections.1.frame_number", ...),
                                   "images[3].detections[1].frame_number"),
    "negative frame_number": (_set("images.3.detections.0.frame_number", -1),
                              "images[3].detections[0].frame_number"),
    "frame_number not processed": (_set("images.3.detections.1.frame_number", 31),
                                   "images[3].detections[1].frame_number"),
    "video without frame_rate": (_set("images.3.frame_rate", ...), "images[3].frame_rate"),
    "zero frame_rate": (_set("images.3.frame_rate", 0), "images[3].frame_rate"),
    "video without frames_processed": (_set("images.3.frames_processed", ...), "images[3].frames_processed"),
    "float frames_processed": (_set("images.3.frames_processed", [0, 30.0, 60]),
                               "images[3].frames_processed"),
    "video by extension without fields": (_set("images.1.file", "site_a/clip.MOV"), "images[1].frame_rate"),
}


@pytest.mark.parametrize("mutate, where", list(BROKEN.values()), ids=list(BROKEN))
def test_validator_rejects_broken_documents(mutate: Callable[[dict[str, Any]], None], where: str) -> None:
    doc = _golden()
    mutate(doc)
    problems = validate_megadetector(doc)
    assert any(p.startswith(f"{where}: ") for p in problems), problems


def test_validator_rejects_a_non_object() -> None:
    assert validate_megadetector([]) == ["<root>: must be a JSON object"]


# --- COCO --------------------------------------------------------------------------------------------


def test_coco_output_loads_with_pycocotools(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from pycocotools.coco import COCO

    with caplog.at_level(logging.WARNING, logger="edge.outputs.coco"):
        out = write_results("coco", _results(), tmp_path / "coco.json", run=RUN)
    assert "1 failed files" in caplog.text
    doc = json.loads(out.read_text(encoding="utf-8"))
    # 2 photos + 3 video frames + 1 photo; the failed file has no entry.
    assert [(im["file_name"], im.get("frame_index")) for im in doc["images"]] == [
        ("site_a/IMG_0001.JPG", None), ("site_a/IMG_0002.JPG", None), ("site_b/clip.mp4", 0),
        ("site_b/clip.mp4", 30), ("site_b/clip.mp4", 60), ("site_c/edge.jpg", None)]
    assert doc["categories"] == [{"id": 1, "name": "animal"}, {"id": 2, "name": "person"},
                                 {"id": 3, "name": "vehicle"}]

    gt = COCO()
    gt.dataset = {"images": doc["images"], "categories": doc["categories"], "annotations": []}
    gt.createIndex()
    dt = gt.loadRes(copy.deepcopy(doc["annotations"]))
    capsys.readouterr()  # pycocotools prints progress
    assert len(dt.getAnnIds()) == 5
    assert [len(dt.getAnnIds(imgIds=[im["id"]])) for im in doc["images"]] == [2, 0, 1, 1, 0, 1]
    for ann in doc["annotations"]:
        loaded = dt.anns[ann["id"]]
        assert loaded["area"] == pytest.approx(ann["area"], abs=0.01)
        assert loaded["iscrowd"] == 0 and loaded["score"] == ann["score"]
    by_file = {doc["images"][a["image_id"] - 1]["file_name"]: a for a in doc["annotations"]}
    assert by_file["site_c/edge.jpg"]["bbox"] == [0.0, 700.0, 300.0, 100.0]  # clipped to the frame
    assert by_file["site_c/edge.jpg"]["area"] == 30000.0
    assert by_file["site_c/edge.jpg"]["category_id"] == 3
    first = doc["annotations"][0]
    assert first["bbox"] == [200.0, 100.0, 500.0, 500.0] and first["score"] == 0.92637


# --- CSV ---------------------------------------------------------------------------------------------


def test_csv_round_trip(tmp_path: Path) -> None:
    out = write_results("csv", _results(), tmp_path / "out.csv", run=RUN)
    with out.open(encoding="utf-8", newline="") as stream:
        reader = csv.DictReader(stream)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        rows = list(reader)
    assert [r["file"] for r in rows] == [
        "site_a/IMG_0001.JPG", "site_a/IMG_0001.JPG", "site_a/IMG_0002.JPG", "site_b/broken.jpg",
        "site_b/clip.mp4", "site_b/clip.mp4", "site_c/edge.jpg"]
    first = rows[0]
    assert (first["width"], first["height"], first["frame"], first["label"], first["class_id"]) == \
        ("2000", "1000", "", "animal", "0")
    assert float(first["confidence"]) == 0.92637
    assert [float(first[k]) for k in ("x_min", "y_min", "x_max", "y_max")] == [200.0, 100.0, 700.0, 600.0]
    assert (first["classification"], float(first["classification_prob"])) == ("bear", 0.90123)
    assert rows[1]["classification"] == rows[1]["classification_prob"] == ""
    empty = rows[2]
    assert (empty["width"], empty["height"]) == ("2000", "1000")
    assert all(empty[k] == "" for k in COLUMNS[3:])
    failed = rows[3]
    assert failed["failure"] == "cannot decode image: truncated JPEG"
    assert all(failed[k] == "" for k in COLUMNS[1:-1])
    assert [r["frame"] for r in rows[4:6]] == ["0", "30"]
    edge = rows[6]
    assert [float(edge[k]) for k in ("x_min", "y_min", "x_max", "y_max")] == [0.0, 700.0, 300.0, 800.0]
    assert edge["label"] == "vehicle"


def test_csv_survives_awkward_file_names(tmp_path: Path) -> None:
    name = 'site "a", cam 1/IMG\n1.jpg'
    out = write_results("csv", [FileResult(name, 10, 10)], tmp_path / "out.csv", run=RUN)
    with out.open(encoding="utf-8", newline="") as stream:
        assert [r["file"] for r in csv.DictReader(stream)] == [name]


# --- write_results ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_write_replaces_existing_file_and_leaves_no_temp_files(fmt: str, tmp_path: Path) -> None:
    target = tmp_path / "results.out"
    target.write_text("old contents", encoding="utf-8")
    write_results(fmt, _results(), target, run=RUN)
    assert "old contents" not in target.read_text(encoding="utf-8")
    assert "site_a/IMG_0001.JPG" in target.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["results.out"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "md.json"
    target.write_text("old contents", encoding="utf-8")
    with pytest.raises(ValueError):
        write_results("megadetector", [FileResult("a.jpg")], target, run=RUN)  # no size: a bug
    assert target.read_text(encoding="utf-8") == "old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["md.json"]


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="megadetector"):
        write_results("yaml", [], tmp_path / "x", run=RUN)
    assert list(tmp_path.iterdir()) == []


def test_base_dir_makes_absolute_paths_relative(tmp_path: Path) -> None:
    photo = tmp_path / "photos" / "site a" / "IMG_1.jpg"
    results = [FileResult(str(photo), 100, 100), FileResult("already/relative.jpg", 100, 100)]
    out = write_results("megadetector", results, tmp_path / "md.json", run=RUN, base_dir=tmp_path / "photos")
    files = [im["file"] for im in json.loads(out.read_text(encoding="utf-8"))["images"]]
    assert files == ["site a/IMG_1.jpg", "already/relative.jpg"]
    with pytest.raises(ValueError, match="not inside"):
        write_results("csv", results, tmp_path / "out.csv", run=RUN, base_dir=tmp_path / "elsewhere")

"""The output writers of ``wildedge detect``: MegaDetector 1.6 (golden files + validator), COCO, CSV, categories."""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge import __version__
from edge.batch.results import FileResult, ModelInfo, RunInfo
from edge.inference.detector import Detection
from edge.inference.labels import read_labels
from edge.outputs import WRITERS, write_results
from edge.outputs.categories import COCO_IDS, categories_for, coco_name, megadetector, native
from edge.outputs.coco import coco_images_path
from edge.outputs.csv import COLUMNS
from edge.outputs.megadetector import read_megadetector, to_megadetector, validate_megadetector

GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN = GOLDEN_DIR / "megadetector_1_6.json"
GOLDEN_MD_CATEGORIES = GOLDEN_DIR / "megadetector_coco_detector_md_categories.json"
COCO80 = read_labels(Path(__file__).resolve().parent.parent / "edge" / "data" / "coco80.txt")
# conf is the run's threshold, typical_conf the card's: the file's typical threshold must be the card's.
DETECTOR = ModelInfo(name="md_v5a.0.0.onnx", labels=["animal", "person", "vehicle"], conf=0.05,
                     input_size=(960, 1280), typical_conf=0.2)
CLASSIFIER = ModelInfo(name="species_tiny.onnx", labels=["fox", "elk", "wolf", "bear"], conf=0.0,
                       input_size=(224, 224), typical_conf=0.6)
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
        # A video that could not be opened, as the runner reports it...
        FileResult("site_d/corrupt.avi", failure="Failure video access: cannot open the video",
                   frame_rate=-1.0, frames_processed=[]),
        # ...and as an older checkpoint holds it (no video fields): the name still makes it a video.
        FileResult("site_d/old.MOV", failure="Failure video access: no frame could be decoded"),
    ]


def _golden(path: Path = GOLDEN) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["info"]["custom_metadata"]["generator"] = f"wildedge {__version__}"  # the golden files say 0.1.0
    return doc


def _canonical(doc: Any) -> str:
    # json text, not ==, so key order and 1 vs 1.0 count (MegaDetector's validator wants float confs).
    return json.dumps(doc, indent=1)


# --- MegaDetector writer ----------------------------------------------------------------------------


def test_megadetector_output_equals_golden_file(tmp_path: Path) -> None:
    out = write_results("megadetector", _results(), tmp_path / "md.json", run=RUN)
    assert _canonical(json.loads(out.read_text(encoding="utf-8"))) == _canonical(_golden())


def test_golden_file_is_valid_1_6() -> None:
    assert validate_megadetector(_golden()) == []


def test_info_describes_the_model_and_records_the_run() -> None:
    info = to_megadetector(_results(), run=RUN)["info"]
    # MegaDetector's typical/conservative pair for a model it does not know is 0.2/0.1: typical from the card.
    assert info["detector_metadata"] == {"image_size": 1280, "typical_detection_threshold": 0.2,
                                         "conservative_detection_threshold": 0.1}
    assert info["classifier_metadata"]["typical_classification_threshold"] == 0.6
    assert info["custom_metadata"]["detection_threshold"] == 0.05
    unknown = to_megadetector([], run=RunInfo(detector=ModelInfo("x.onnx", ["a"], 0.01, (640, 640)),
                                              classifier=ModelInfo("c.onnx", ["b"], 0.0, (224, 224))))["info"]
    assert unknown["detector_metadata"]["typical_detection_threshold"] == 0.2  # MegaDetector's default
    assert unknown["classifier_metadata"]["typical_classification_threshold"] == 0.5  # not 0.0


def test_failed_videos_are_written_as_megadetector_writes_them() -> None:
    images = {im["file"]: im for im in to_megadetector(_results(), run=RUN)["images"]}
    for name in ("site_d/corrupt.avi", "site_d/old.MOV"):
        assert images[name]["frame_rate"] == -1.0 and images[name]["frames_processed"] == []
        assert images[name]["detections"] is None and images[name]["failure"].startswith("Failure video")
    assert "frame_rate" not in images["site_b/broken.jpg"]


def test_megadetector_categories_golden_file(tmp_path: Path) -> None:
    """A COCO-80 detector written in MegaDetector's scheme: animal/person/vehicle, other classes dropped,
    the detector's class kept as a classification, with and without a classifier."""
    labels = COCO80
    det = ModelInfo(name="yolox_nano.onnx", labels=labels, conf=0.01, input_size=(416, 416), typical_conf=0.25)
    idx = {name: i for i, name in enumerate(labels)}

    def d(box, score, name, frame=None, cls=None):
        return Detection(box, score, idx[name], name, cls or [], frame=frame)

    results = [
        FileResult("cam1/bear.jpg", 640, 480, [d((10, 10, 300, 400), 0.91, "bear", cls=[(3, 0.8), (0, 0.15)]),
                                               d((400, 50, 500, 300), 0.42, "person"),
                                               d((0, 300, 200, 470), 0.33, "chair")]),
        FileResult("cam1/car.jpg", 640, 480, [d((100, 100, 400, 300), 0.77, "motorbike"),
                                              d((50, 60, 80, 90), 0.12, "teddy bear")]),
        FileResult("cam1/empty.jpg", 640, 480),
        FileResult("cam2/broken.jpg", failure="Failure image access: truncated JPEG"),
        FileResult("cam2/zebra.mp4", 1280, 720, [d((0, 0, 640, 360), 0.88, "zebra", frame=10),
                                                 d((600, 300, 700, 400), 0.5, "aeroplane", frame=10)],
                   frame_rate=25.0, frames_processed=[0, 10, 20]),
        FileResult("cam2/unreadable.mp4", failure="Failure video access: cannot open the video",
                   frame_rate=-1.0, frames_processed=[]),
    ]
    run = RunInfo(detector=det, classifier=CLASSIFIER, completed="2026-05-26 19:11:27",
                  categories=megadetector(labels))
    out = write_results("megadetector", results, tmp_path / "md.json", run=run)
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert _canonical(doc) == _canonical(_golden(GOLDEN_MD_CATEGORIES))
    assert validate_megadetector(doc) == []
    assert doc["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    bear, car = doc["images"][0]["detections"], doc["images"][1]["detections"]
    assert [x["category"] for x in bear] == ["1", "2"] and car[0]["category"] == "3"  # chair, teddy bear: out
    classes = doc["classification_categories"]
    assert classes[bear[0]["classifications"][0][0]] == "bear"  # the classifier's (class 3 = bear)
    assert classes[bear[1]["classifications"][0][0]] == "person"  # no classifier crop: the detector's class
    assert classes[car[0]["classifications"][0][0]] == "motorbike" and car[0]["classifications"][0][1] == 0.77
    assert len(classes) == 4 + 16  # the classifier's 4, the 16 COCO classes that map (10 animals, person, 5)
    video = doc["images"][4]
    assert [x["category"] for x in video["detections"]] == ["1"] and video["detections"][0]["frame_number"] == 10


def test_native_categories_use_coco_ids_for_a_coco_detector() -> None:
    cats = native(COCO80)
    assert cats.coco and cats.id_of(0) == 1 and cats.names[16] == "bird" and cats.names[25] == "giraffe"
    assert cats.id_of(COCO80.index("toothbrush")) == 90 and cats.names[4] == "motorbike"
    assert sorted(cats.names) == sorted(COCO_IDS.values())
    md = native(["animal", "person", "vehicle"])  # MegaDetector: its own ids, untouched
    assert not md.coco and md.names == {1: "animal", 2: "person", 3: "vehicle"}
    assert megadetector(["animal", "person", "vehicle"]).names == md.names
    assert not megadetector(["animal", "person", "vehicle"]).keep_classes
    assert native(["fox", "person"]).ids == (1, 2)  # not all COCO names: index + 1


def test_official_coco_ids_match_torchvision() -> None:
    weights = pytest.importorskip("torchvision.models.detection").FasterRCNN_ResNet50_FPN_Weights
    names = weights.DEFAULT.meta["categories"]  # index = COCO category id, "N/A" for the gaps
    assert {name: i for i, name in enumerate(names) if name not in ("N/A", "__background__")} == COCO_IDS
    assert all(coco_name(label) for label in COCO80)


def test_megadetector_scheme_refusals() -> None:
    with pytest.raises(ValueError, match="none of the detector's labels"):
        megadetector(["fox", "badger"])
    assert megadetector(["fox", "badger"], {"fox": "animal"}).ids == (1, None)
    with pytest.raises(ValueError, match="lacks: wolf"):
        megadetector(["fox"], {"wolf": "animal"})
    with pytest.raises(ValueError, match="plant is not animal"):
        megadetector(["fox"], {"fox": "plant"})
    with pytest.raises(ValueError, match="unknown category scheme"):
        categories_for(["fox"], "coco")


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
    with pytest.raises(ValueError, match="class id 7 is outside"):
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


def test_video_fields_are_only_required_from_1_4_and_1_5() -> None:
    doc = _golden()
    del doc["images"][5:]
    doc["info"]["format_version"] = "1.3"
    image = doc["images"][3]
    del image["frame_rate"], image["frames_processed"]
    for det in image["detections"]:
        del det["frame_number"]
    assert validate_megadetector(doc, allow_older=True) == []
    doc["info"]["format_version"] = "1.4"  # frame_rate and frame_number (as MegaDetector's validator)
    assert len(validate_megadetector(doc, allow_older=True)) == 3
    doc["info"]["format_version"] = "1.5"  # and frames_processed
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
    "failed video without frames_processed": (_set("images.5.frames_processed", ...),
                                              "images[5].frames_processed"),
    "failed video without frame_rate": (_set("images.5.frame_rate", ...), "images[5].frame_rate"),
    "flv video without fields": (_set("images.1.file", "site_a/clip.flv"), "images[1].frames_processed"),
    "negative frame_rate without failure": (_set("images.3.frame_rate", -1.0), "images[3].frame_rate"),
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


def test_coco_output_is_a_results_list_with_its_image_list(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from pycocotools.coco import COCO

    with caplog.at_level(logging.WARNING, logger="edge.outputs.coco"):
        out = write_results("coco", _results(), tmp_path / "coco.json", run=RUN)
    assert "3 failed files" in caplog.text
    images_file = coco_images_path(out)
    assert images_file == tmp_path / "coco.images.json"
    listed = json.loads(images_file.read_text(encoding="utf-8"))
    # 2 photos + 3 video frames + 1 photo; the failed files have no entry.
    assert [(im["file_name"], im.get("frame_index")) for im in listed["images"]] == [
        ("site_a/IMG_0001.JPG", None), ("site_a/IMG_0002.JPG", None), ("site_b/clip.mp4", 0),
        ("site_b/clip.mp4", 30), ("site_b/clip.mp4", 60), ("site_c/edge.jpg", None)]
    assert [(c["id"], c["name"]) for c in listed["categories"]] == [(1, "animal"), (2, "person"), (3, "vehicle")]
    anns = json.loads(out.read_text(encoding="utf-8"))
    assert isinstance(anns, list) and set(anns[0]) == {"image_id", "category_id", "bbox", "score"}

    dt = COCO(str(images_file)).loadRes(str(out))  # the documented pair, loaded as files
    capsys.readouterr()  # pycocotools prints progress
    assert len(dt.getAnnIds()) == 5
    assert [len(dt.getAnnIds(imgIds=[im["id"]])) for im in listed["images"]] == [2, 0, 1, 1, 0, 1]
    edge = dt.loadAnns(dt.getAnnIds(imgIds=[6]))[0]
    assert edge["bbox"] == [0.0, 700.0, 300.0, 100.0] and edge["area"] == 30000.0  # clipped to the frame
    assert edge["category_id"] == 3 and edge["iscrowd"] == 0
    first = anns[0]
    assert first["bbox"] == [200.0, 100.0, 500.0, 500.0] and first["score"] == 0.92637


def test_coco_ids_for_a_coco_detector_are_official(tmp_path: Path) -> None:
    det = ModelInfo(name="yolox.onnx", labels=COCO80, conf=0.25, input_size=(416, 416))
    results = [FileResult("a.jpg", 100, 100, [Detection((0, 0, 50, 50), 0.9, COCO80.index(name), name)])
               for name in ("bird", "giraffe", "toothbrush", "motorbike")]
    out = write_results("coco", results, tmp_path / "c.json", run=RunInfo(detector=det))
    assert [a["category_id"] for a in json.loads(out.read_text())] == [16, 25, 90, 4]
    listed = json.loads(coco_images_path(out).read_text())
    assert {c["id"]: c["name"] for c in listed["categories"]}[4] == "motorbike"


def test_coco_with_ground_truth_takes_its_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pycocotools.coco import COCO

    from edge.outputs.coco import load_coco_gt

    gt_doc = {"images": [{"id": 42, "file_name": "IMG_0001.JPG", "width": 2000, "height": 1000},
                         {"id": 7, "file_name": "site_c/edge.jpg", "width": 1000, "height": 800}],
              "categories": [{"id": 5, "name": "vehicle"}, {"id": 9, "name": "animal"}],
              "annotations": []}
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(gt_doc))
    out = write_results("coco", _results(), tmp_path / "r.json", run=RUN, coco_gt=load_coco_gt(gt_file))
    assert not coco_images_path(out).exists()
    anns = json.loads(out.read_text())
    # IMG_0001 by base name, edge.jpg by path; the person has no GT category, other files no GT image.
    assert [(a["image_id"], a["category_id"]) for a in anns] == [(42, 9), (7, 5)]
    assert len(COCO(str(gt_file)).loadRes(str(out)).getAnnIds()) == 2
    capsys.readouterr()


@pytest.mark.parametrize("content, match", [
    (None, "no such file"), ("{", "not valid JSON"), ("[]", "not a COCO file"),
    (json.dumps({"images": [{"id": 1}], "categories": []}), "an image lacks 'file_name'"),
])
def test_bad_coco_ground_truth_is_named(tmp_path: Path, content: str | None, match: str) -> None:
    from edge.outputs.coco import load_coco_gt

    path = tmp_path / "gt.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=f"--coco-gt {re.escape(str(path))}: {match}"):
        load_coco_gt(path)


# --- CSV ---------------------------------------------------------------------------------------------


def test_csv_round_trip(tmp_path: Path) -> None:
    out = write_results("csv", _results(), tmp_path / "out.csv", run=RUN)
    with out.open(encoding="utf-8", newline="") as stream:
        reader = csv.DictReader(stream)
        header = tuple(reader.fieldnames or ())
        rows = list(reader)
    # All three classifications of the first box: --top-k columns after the first pair.
    assert header == COLUMNS[:-1] + ("classification_2", "classification_prob_2", "classification_3",
                                     "classification_prob_3", "failure")
    assert [r["file"] for r in rows] == [
        "site_a/IMG_0001.JPG", "site_a/IMG_0001.JPG", "site_a/IMG_0002.JPG", "site_b/broken.jpg",
        "site_b/clip.mp4", "site_b/clip.mp4", "site_c/edge.jpg", "site_d/corrupt.avi", "site_d/old.MOV"]
    first = rows[0]
    assert (first["width"], first["height"], first["frame"], first["label"], first["class_id"]) == \
        ("2000", "1000", "-1", "animal", "1")  # counted from 1, as in the JSON formats
    assert float(first["confidence"]) == 0.92637
    assert [float(first[k]) for k in ("x_min", "y_min", "x_max", "y_max")] == [200.0, 100.0, 700.0, 600.0]
    assert [(first[f"classification{s}"], float(first[f"classification_prob{s}"])) for s in ("", "_2", "_3")] \
        == [("bear", 0.90123), ("elk", 0.07149), ("wolf", 0.02502)]
    assert rows[1]["classification"] == rows[1]["classification_prob"] == ""
    empty = rows[2]
    assert (empty["width"], empty["height"], empty["frame"], empty["class_id"]) == ("2000", "1000", "-1", "0")
    assert empty["label"] == empty["confidence"] == empty["failure"] == ""
    failed = rows[3]
    assert failed["failure"] == "cannot decode image: truncated JPEG"
    assert (failed["width"], failed["height"], failed["class_id"]) == ("0", "0", "0")
    assert [r["frame"] for r in rows[4:6]] == ["0", "30"]
    edge = rows[6]
    assert [float(edge[k]) for k in ("x_min", "y_min", "x_max", "y_max")] == [0.0, 700.0, 300.0, 800.0]
    assert (edge["label"], edge["class_id"]) == ("vehicle", "3")


def test_csv_integer_columns_stay_integers_in_pandas(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    for results in (_results(), _results()[2:4], [FileResult("empty.jpg", 10, 10)]):
        out = write_results("csv", results, tmp_path / "out.csv", run=RUN)
        frame = pd.read_csv(out)
        for column in ("width", "height", "frame", "class_id"):
            assert pd.api.types.is_integer_dtype(frame[column]), (column, frame[column].dtype)
        assert pd.api.types.is_float_dtype(frame["confidence"])


def test_csv_megadetector_categories_keep_the_detector_label(tmp_path: Path) -> None:
    det = ModelInfo(name="yolox.onnx", labels=COCO80, conf=0.25, input_size=(416, 416))
    results = [FileResult("a.jpg", 100, 100, [Detection((0, 0, 50, 50), 0.9, COCO80.index(name), name)
                                              for name in ("zebra", "chair", "truck")])]
    run = RunInfo(detector=det, categories=megadetector(COCO80))
    out = write_results("csv", results, tmp_path / "out.csv", run=run)
    with out.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["label"], r["class_id"], r["detector_label"]) for r in rows] == [
        ("animal", "1", "zebra"), ("vehicle", "3", "truck")]


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
    written = target.read_text(encoding="utf-8") if fmt != "coco" else coco_images_path(target).read_text()
    assert "site_a/IMG_0001.JPG" in written
    assert sorted(p.name for p in tmp_path.iterdir()) == (
        ["results.out", "results.out.images.json"] if fmt == "coco" else ["results.out"])


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


def test_addaxai_names_split_photos_and_videos(tmp_path: Path) -> None:
    from edge.outputs import write_addaxai

    written = write_addaxai(_results(), tmp_path, run=RUN)
    assert [p.name for p in written] == ["image_recognition_file.json", "video_recognition_file.json"]
    photos, videos = (json.loads(p.read_text()) for p in written)
    assert [im["file"] for im in photos["images"]] == [
        "site_a/IMG_0001.JPG", "site_a/IMG_0002.JPG", "site_b/broken.jpg", "site_c/edge.jpg"]
    assert [im["file"] for im in videos["images"]] == ["site_b/clip.mp4", "site_d/corrupt.avi", "site_d/old.MOV"]
    assert validate_megadetector(photos) == validate_megadetector(videos) == []
    assert [p.name for p in write_addaxai(_results()[:1], tmp_path, run=RUN)] == [
        "image_recognition_file.json"]


def test_event_exports_thresholds_never_fall_below_megadetectors_defaults():
    """A device run at conf 0.05 must not make Timelapse take 0.05 as the file's threshold."""
    from edge.outputs.event_writers import _model_info
    from edge.outputs.events import ModelRef

    low = ModelRef("yolox", ("animal",), 0.05)
    assert _model_info([low], "detection")[1] == {"typical_detection_threshold": 0.2,
                                                  "conservative_detection_threshold": 0.1}
    high = ModelRef("yolox", ("animal",), 0.4)
    assert _model_info([high], "detection")[1] == {"typical_detection_threshold": 0.4,
                                                   "conservative_detection_threshold": 0.4}
    assert _model_info([ModelRef("cls", ("fox",), 0.0)], "classification")[1] == {
        "typical_classification_threshold": 0.5}

"""export.verify: FP32 vs INT8 accuracy, agreement, latency and size; the ``export verify`` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from edge.batch.results import FileResult
from edge.cli import app
from edge.errors import ExportError
from edge.inference.detector import Detection
from export.calibration import list_images
from export.measure import classification_agreement, detection_agreement
from export.verify import verify

VOC = "voc2007_labeled"
COCO_JSON = "voc2007_labeled/labels_coco_json/instances_default.json"


@pytest.fixture(scope="module")
def photos(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 labelled VOC photos (the labels files cover all 60: verify scores only these)."""
    folder = tmp_path_factory.mktemp("verify_photos")
    for photo in list_images(assets / VOC / "images")[:16]:
        shutil.copy(photo, folder / photo.name)
    return folder


@pytest.fixture(scope="module")
def damaged(stamped: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FastestDet with noise on every conv weight: the same card, a worse model."""
    model = onnx.load(str(stamped["fastestdet"]))
    rng = np.random.default_rng(0)
    convs = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    for init in model.graph.initializer:
        if init.name in convs:
            weight = numpy_helper.to_array(init)
            noisy = weight + rng.normal(scale=0.3 * float(weight.std()), size=weight.shape).astype(weight.dtype)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    dst = tmp_path_factory.mktemp("damaged") / "fastestdet_damaged.onnx"
    onnx.save(model, str(dst))  # metadata_props (the card) travel with the ModelProto
    return dst


def test_a_model_against_itself_agrees_fully_and_scores_the_same(stamped, photos, assets):
    report = verify(stamped["fastestdet"], stamped["fastestdet"], photos, labels=assets / COCO_JSON,
                    class_map="voc2coco", runs=3)
    assert report.task == "detect" and report.images == 16
    ag = report.agreement
    assert ag.reference > 10 and ag.matched == ag.reference and ag.fraction == 1.0
    assert ag.mean_iou == pytest.approx(1.0) and ag.class_agreement == 1.0
    a, b = report.fp32.accuracy, report.int8.accuracy
    assert a.images == b.images == 16  # only the photos given, not the 60 the labels cover
    assert a.map50 == b.map50 > 0.3 and a.map50_95 == b.map50_95 and a.recall == b.recall
    assert {k: v.ap50 for k, v in a.per_class.items()} == {k: v.ap50 for k, v in b.per_class.items()}
    assert report.map50_drop == 0.0
    assert report.fp32.size_bytes == report.int8.size_bytes and report.size_ratio == 1.0
    assert report.fp32.latency_ms > 0 and report.int8.latency_ms > 0
    data = json.loads(json.dumps(report.to_dict()))
    assert data["agreement"]["fraction"] == 1.0 and data["fp32"]["accuracy"]["per_class"]["person"]["gt_boxes"] > 0


def test_a_damaged_model_loses_accuracy_and_agreement(stamped, damaged, photos, assets):
    report = verify(stamped["fastestdet"], damaged, photos, labels=assets / COCO_JSON, class_map="voc2coco", runs=3)
    assert report.agreement.fraction < 0.8
    assert report.map50_drop > 5.0
    assert report.int8.accuracy.recall < report.fp32.accuracy.recall


def test_yolo_labels_and_a_json_class_map_give_the_coco_json_result(stamped, photos, assets, tmp_path):
    coco = verify(stamped["fastestdet"], stamped["fastestdet"], photos, labels=assets / COCO_JSON,
                  class_map="voc2coco", runs=1)
    # YOLO label files with obj.names naming the classes; the photos live elsewhere
    yolo = verify(stamped["fastestdet"], stamped["fastestdet"], photos, labels=assets / VOC / "labels_yolo",
                  class_map="voc2coco", runs=1)
    assert yolo.fp32.accuracy.map50 == pytest.approx(coco.fp32.accuracy.map50, abs=0.01)
    assert yolo.fp32.accuracy.gt_boxes == coco.fp32.accuracy.gt_boxes > 20
    # The bundled detectors speak Darknet's names (aeroplane, tvmonitor ...), like VOC: a map renames
    # both sides, so voc2coco changes the names and not the score.
    assert "airplane" in coco.fp32.accuracy.per_class and "aeroplane" not in coco.fp32.accuracy.per_class
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"aeroplane": "plane", "tvmonitor": "screen"}))
    renamed = verify(stamped["fastestdet"], stamped["fastestdet"], photos, labels=assets / COCO_JSON,
                     class_map=mapping, runs=1)
    classes = renamed.fp32.accuracy.per_class
    assert classes["plane"].ap50 == coco.fp32.accuracy.per_class["airplane"].ap50 and "aeroplane" not in classes


def test_verify_refuses_models_that_are_not_the_same_and_labels_for_classifiers(stamped, classifier_model, photos,
                                                                                assets):
    with pytest.raises(ExportError, match="not the same model"):
        verify(stamped["fastestdet"], stamped["nanodet"], photos, runs=1)
    with pytest.raises(ExportError, match="labels are for detectors"):
        verify(classifier_model, classifier_model, photos, labels=assets / COCO_JSON, runs=1)
    with pytest.raises(ValueError, match="neither a builtin"):
        verify(stamped["fastestdet"], stamped["fastestdet"], photos, class_map="coco2voc", runs=1)


def test_a_classifier_against_itself_has_full_top1_agreement(classifier_model, photos):
    report = verify(classifier_model, classifier_model, photos, runs=2)
    assert report.task == "classify" and report.fp32.accuracy is None
    assert report.agreement.top1 == report.agreement.top5 == 1.0 and report.agreement.images == 16


def _result(name: str, *dets: tuple[tuple[float, float, float, float], float, int]) -> FileResult:
    return FileResult(name, 100, 100, [Detection(box, score, cls, f"c{cls}") for box, score, cls in dets])


def test_detection_agreement_counts_class_iou_and_threshold():
    reference = [_result("a.jpg", ((0, 0, 10, 10), 0.9, 1), ((20, 20, 40, 40), 0.8, 2), ((50, 50, 60, 60), 0.2, 1)),
                 _result("b.jpg", ((0, 0, 10, 10), 0.9, 3))]
    other = [_result("a.jpg", ((0, 0, 10, 11), 0.7, 1), ((20, 20, 40, 40), 0.9, 5)),
             _result("b.jpg", ((30, 30, 40, 40), 0.9, 3))]
    ag = detection_agreement(reference, other, conf=0.5)
    assert ag.reference == 3  # the 0.2 detection is below the threshold
    assert ag.matched == 1 and ag.fraction == pytest.approx(1 / 3)
    assert ag.mean_iou == pytest.approx(100 / 110)
    assert ag.class_agreement == pytest.approx(1 / 2)  # two box matches, one with the wrong class
    assert detection_agreement(reference, reference, conf=0.5).fraction == 1.0
    assert detection_agreement([_result("c.jpg")], [_result("c.jpg")], conf=0.5).fraction == 1.0


def test_classification_agreement():
    ref = [[(1, 0.9), (2, 0.05)], [(3, 0.6), (4, 0.3)], [(5, 0.5)]]
    other = [[(1, 0.8)], [(4, 0.5), (3, 0.4)], [(6, 0.9), (7, 0.05)]]
    ag = classification_agreement(ref, other)
    assert ag.top1 == pytest.approx(1 / 3) and ag.top5 == pytest.approx(2 / 3) and ag.fraction == ag.top1


def test_cli_verify_prints_the_table_and_writes_its_report(stamped, damaged, photos, assets, tmp_path):
    int8 = tmp_path / "model.int8.onnx"
    shutil.copy(damaged, int8)
    result = CliRunner().invoke(app, ["export", "verify", str(stamped["fastestdet"]), str(int8), "--images",
                                      str(photos), "--gt-labels", str(assets / COCO_JSON), "--class-map", "voc2coco",
                                      "--runs", "2"])
    assert result.exit_code == 0, result.output
    assert "mAP@0.5" in result.stdout and "latency (ms)" in result.stdout and "agreement:" in result.stdout
    report = json.loads((tmp_path / "model.int8.onnx.verify.json").read_text())
    assert report["images"] == 16 and report["agreement"]["fraction"] < 0.8 and report["map50_drop"] > 5

    as_json = CliRunner().invoke(app, ["export", "verify", str(stamped["fastestdet"]), str(int8), "--images",
                                       str(photos), "--runs", "1", "--json"])
    assert as_json.exit_code == 0
    data = json.loads(as_json.stdout)
    assert data["fp32"]["accuracy"] is None and data["agreement"]["reference"] > 0

    bad = CliRunner().invoke(app, ["export", "verify", str(stamped["fastestdet"]), str(int8), "--images",
                                   str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ")

"""export/evaluate.py: mAP via pycocotools, recall at a threshold, ground-truth loaders, a real detector."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.batch.results import FileResult
from edge.inference.detector import Detection
from export.evaluate import (
    VOC_TO_COCO,
    GroundTruth,
    GtBox,
    GtImage,
    detect_folder,
    evaluate,
    load_coco_gt,
    load_yolo_gt,
)

VOC = "voc2007_labeled"


def _gt() -> GroundTruth:
    """Two photos, five boxes, three classes (one an animal, one spelled the COCO way)."""
    return GroundTruth(
        (
            GtImage("a.jpg", 640, 480, (GtBox((10, 20, 110, 220), "dog"),
                                        GtBox((300, 100, 500, 300), "person"))),
            GtImage("b.jpg", 800, 600, (GtBox((50, 50, 250, 150), "motorcycle"),
                                        GtBox((400, 300, 600, 500), "dog"),
                                        GtBox((600, 50, 700, 150), "person"))),
        ),
        ("person", "dog", "motorcycle"),
    )


def _perfect(gt: GroundTruth, score: float = 0.9) -> dict[str, list]:
    return {img.file: [(b.box, score, b.label) for b in img.boxes] for img in gt.images}


def test_perfect_predictions_score_one() -> None:
    report = evaluate(_perfect(_gt()), _gt(), conf=0.5)
    assert report.map50 == pytest.approx(1.0)
    assert report.map50_95 == pytest.approx(1.0)
    assert report.recall == 1.0 and report.matched == report.gt_boxes == 5
    assert report.images == 2 and report.detections == 5 and report.detections_at_conf == 5
    assert all(c.ap50 == pytest.approx(1.0) and c.recall == 1.0 for c in report.per_class.values())
    assert report.groups["animals"].classes == ("dog",)
    assert report.groups["animals"].recall == 1.0
    assert report.dropped_classes == {} and report.missing_images == () and report.failed_images == ()


def test_boxes_shifted_below_half_iou_score_zero() -> None:
    gt = _gt()
    # Shifting a box by 60 % of its width leaves IoU = 0.4 / 1.6 = 0.25.
    shifted = {img.file: [((x1 + 0.6 * (x2 - x1), y1, x2 + 0.6 * (x2 - x1), y2), 0.9, b.label)
                          for b in img.boxes for x1, y1, x2, y2 in [b.box]] for img in gt.images}
    report = evaluate(shifted, gt)
    assert report.map50 == 0.0 and report.map50_95 == 0.0
    assert report.recall == 0.0
    assert all(c.ap50 == 0.0 for c in report.per_class.values())


def test_a_missed_box_lowers_recall_by_its_share() -> None:
    gt = _gt()
    preds = _perfect(gt)
    preds["b.jpg"] = preds["b.jpg"][:2]  # the second person is missed
    report = evaluate(preds, gt, conf=0.5)
    assert report.recall == pytest.approx(4 / 5)
    assert report.per_class["person"].matched == 1 and report.per_class["person"].recall == pytest.approx(0.5)
    assert report.per_class["person"].ap50 == pytest.approx(0.5, abs=0.01)
    assert report.per_class["dog"].recall == 1.0


def test_recall_counts_only_detections_at_the_threshold_but_map_counts_all() -> None:
    gt = _gt()
    preds = _perfect(gt)
    box, _, label = preds["b.jpg"][2]
    preds["b.jpg"][2] = (box, 0.1, label)  # found, but below the threshold
    report = evaluate(preds, gt, conf=0.3)
    assert report.map50 == pytest.approx(1.0)
    assert report.recall == pytest.approx(4 / 5)
    assert report.detections == 5 and report.detections_at_conf == 4


def test_matching_is_one_to_one() -> None:
    gt = _gt()
    dog = gt.images[0].boxes[0]
    # Two detections of the same dog and none of the person: one GT box found, not two.
    report = evaluate({"a.jpg": [(dog.box, 0.9, "dog"), (dog.box, 0.8, "dog")]}, gt)
    assert report.matched == 1
    assert report.per_class["dog"].matched == 1 and report.per_class["person"].matched == 0


def test_class_map_renames_predictions_onto_the_gt_names() -> None:
    gt = _gt()
    preds = _perfect(gt)
    preds["b.jpg"][0] = (preds["b.jpg"][0][0], 0.9, "motorbike")
    unmapped = evaluate(preds, gt)
    assert unmapped.per_class["motorcycle"].ap50 == 0.0 and unmapped.per_class["motorcycle"].recall == 0.0
    assert unmapped.dropped_classes == {"motorbike": 1}
    mapped = evaluate(preds, gt, class_map={"motorbike": "motorcycle"})
    assert mapped.per_class["motorcycle"].ap50 == pytest.approx(1.0)
    assert mapped.recall == 1.0 and mapped.dropped_classes == {}


def test_class_map_renames_voc_ground_truth_to_coco() -> None:
    voc = GroundTruth((GtImage("c.jpg", 100, 100, (GtBox((0, 0, 50, 50), "motorbike"),
                                                    GtBox((50, 50, 90, 90), "tvmonitor"))),),
                      ("motorbike", "tvmonitor"))
    preds = {"c.jpg": [((0, 0, 50, 50), 0.9, "motorcycle"), ((50, 50, 90, 90), 0.8, "tv")]}
    report = evaluate(preds, voc, class_map=VOC_TO_COCO)
    assert set(report.per_class) == {"motorcycle", "tv"}
    assert report.map50 == pytest.approx(1.0) and report.recall == 1.0


def test_classes_without_ground_truth_are_dropped_and_reported() -> None:
    gt = _gt()
    preds = _perfect(gt)
    preds["a.jpg"] += [((0, 0, 640, 480), 0.99, "traffic light"), ((5, 5, 50, 50), 0.4, "traffic light"),
                       ((1, 1, 9, 9), 0.3, "book")]
    report = evaluate(preds, gt)
    assert report.dropped_classes == {"traffic light": 2, "book": 1}
    assert report.detections == 5 and "traffic light" not in report.per_class
    assert report.map50 == pytest.approx(1.0)


def test_file_results_match_by_base_name_and_failures_are_reported() -> None:
    gt = _gt()
    results = [
        FileResult("photos/a.jpg", 640, 480, [Detection(b.box, 0.9, 0, b.label) for b in gt.images[0].boxes]),
        FileResult("photos/b.jpg", failure="Failure image access: truncated JPEG"),
    ]
    report = evaluate(results, gt, conf=0.5)
    assert report.matched == 2 and report.recall == pytest.approx(2 / 5)
    assert report.failed_images == ("photos/b.jpg",) and report.missing_images == ()
    assert evaluate(results[:1], gt).missing_images == ("b.jpg",)
    with pytest.raises(ValueError, match="not among"):
        evaluate([FileResult("photos/z.jpg")], gt)
    with pytest.raises(ValueError, match="conf"):
        evaluate({}, gt, conf=1.5)


def test_map_equals_cocoeval_summarize() -> None:
    """Our precision slicing must give exactly COCOeval.summarize()'s stats[0] and stats[1]."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = _gt()
    rng = np.random.default_rng(7)
    preds: dict[str, list] = {}
    for img in gt.images:
        preds[img.file] = []
        for b in img.boxes:
            for _ in range(3):
                jitter = rng.normal(0, 12, 4)
                score = float(rng.uniform(0.05, 1))
                preds[img.file].append((tuple(np.asarray(b.box) + jitter), score, b.label))
        preds[img.file].append(((0, 0, 100, 100), 0.7, "dog"))  # a false positive
    report = evaluate(preds, gt)

    names = list(gt.labels)
    dataset = {
        "images": [{"id": i + 1, "width": img.width, "height": img.height}
                   for i, img in enumerate(gt.images)],
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)],
        "annotations": [
            {"image_id": i + 1, "category_id": names.index(b.label) + 1,
             "bbox": [b.box[0], b.box[1], b.box[2] - b.box[0], b.box[3] - b.box[1]],
             "area": (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]), "iscrowd": 0}
            for i, img in enumerate(gt.images) for b in img.boxes
        ],
    }
    for n, ann in enumerate(dataset["annotations"], 1):
        ann["id"] = n
    results = [{"image_id": i + 1, "category_id": names.index(label) + 1, "score": score,
                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]}
               for i, img in enumerate(gt.images) for box, score, label in preds[img.file]]
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # summarize() averages empty area ranges
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert 0.1 < report.map50_95 < report.map50 < 1.0
    assert report.map50 == pytest.approx(evaluator.stats[1], abs=1e-9)
    assert report.map50_95 == pytest.approx(evaluator.stats[0], abs=1e-9)


def test_report_to_dict_is_json() -> None:
    data = json.loads(json.dumps(evaluate(_perfect(_gt()), _gt(), conf=0.5).to_dict()))
    assert data["map50"] == pytest.approx(1.0) and data["groups"]["animals"]["recall"] == 1.0
    assert data["per_class"]["dog"] == {"gt_boxes": 2, "detections": 2, "matched": 2, "ap50": 1.0,
                                        "recall": 1.0}


def test_yolo_loader_reads_sizes_from_photos_and_rejects_bad_lines(tmp_path: Path) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    cv2.imwrite(str(images / "p.jpg"), np.zeros((200, 400, 3), np.uint8))
    cv2.imwrite(str(images / "empty.png"), np.zeros((10, 10, 3), np.uint8))
    (labels / "p.txt").write_text("1 0.5 0.5 0.25 0.5\n\n", encoding="utf-8")
    gt = load_yolo_gt(labels, images, ["cat", "dog"])
    assert [(i.file, i.width, i.height) for i in gt.images] == [("empty.png", 10, 10), ("p.jpg", 400, 200)]
    assert gt.images[1].boxes == (GtBox((150.0, 50.0, 250.0, 150.0), "dog"),)
    (labels / "p.txt").write_text("2 0.5 0.5 0.25 0.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"p\.txt:1: class id 2"):
        load_yolo_gt(labels, images, ["cat", "dog"])


@pytest.mark.assets
def test_yolo_and_coco_ground_truth_agree(assets: Path) -> None:
    voc = assets / VOC
    coco = load_coco_gt(voc / "labels_coco_json" / "instances_default.json")
    yolo = load_yolo_gt(voc / "labels_yolo", voc / "images", voc / "labels_yolo" / "obj.names")
    assert len(coco.images) == len(yolo.images) == 60
    assert coco.num_boxes == yolo.num_boxes == 174
    assert set(coco.labels) == set(yolo.labels)
    by_file = {img.file: img for img in yolo.images}
    for img in coco.images:
        other = by_file[img.file]
        assert (img.width, img.height) == (other.width, other.height), img.file
        mine = sorted((b.label, b.box) for b in img.boxes)
        theirs = sorted((b.label, b.box) for b in other.boxes)
        assert [m[0] for m in mine] == [t[0] for t in theirs], img.file
        np.testing.assert_allclose([m[1] for m in mine], [t[1] for t in theirs], atol=0.5)
    # Scoring one against the other is perfect.
    report = evaluate(_perfect(yolo), coco, class_map=VOC_TO_COCO)
    assert report.map50 == pytest.approx(1.0) and report.recall == 1.0


@pytest.mark.assets
@pytest.mark.slow
def test_yolox_nano_accuracy_on_voc(assets: Path, stamped: dict[str, Path]) -> None:
    """Measured: mAP@0.5 0.723, mAP@0.5:0.95 0.521, recall@0.3 0.690 (120/174); floors 0.1 below."""
    voc = assets / VOC
    gt = load_coco_gt(voc / "labels_coco_json" / "instances_default.json")
    results = detect_folder(stamped["yolox"], voc / "images")
    report = evaluate(results, gt, class_map=VOC_TO_COCO, conf=0.3)
    assert report.images == 60 and report.gt_boxes == 174
    assert report.missing_images == () and report.failed_images == ()
    assert report.map50 > 0.62
    assert report.map50_95 > 0.42
    assert report.recall > 0.59
    assert report.groups["animals"].gt_boxes == 30 and report.groups["animals"].recall > 0.5
    assert "traffic light" in report.dropped_classes  # COCO-only classes are dropped, not scored

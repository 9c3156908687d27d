"""Scoring detections against ground truth: COCO mAP through pycocotools, recall at a threshold.

Ground truth comes from a COCO json or a YOLO labels folder. Predictions are per-image lists of
``(xyxy box in pixels, score, label)`` or the ``FileResult`` objects of a batch run, matched to the
ground-truth images by file name. ``class_map`` renames labels on both sides to one vocabulary
(e.g. :data:`VOC_TO_COCO`); predicted classes with no ground-truth counterpart are dropped before
scoring and listed in the report.

mAP wants detections down to a very low confidence (0.001 is the usual choice); recall is counted
only over detections at or above ``conf``, so one low-threshold run gives both numbers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from edge.imaging import IMAGE_SUFFIXES, read_image
from edge.inference.labels import COCO_ANIMALS, read_labels

if TYPE_CHECKING:
    from edge.batch.results import FileResult

Box = tuple[float, float, float, float]
Prediction = tuple[Box, float, str]  # xyxy pixels, score, label
Predictions = Union[Mapping[str, Iterable[Any]], Iterable["FileResult"]]

# PASCAL VOC class names that COCO spells differently; the other 14 VOC names are COCO names too.
VOC_TO_COCO: dict[str, str] = {
    "aeroplane": "airplane",
    "motorbike": "motorcycle",
    "sofa": "couch",
    "tvmonitor": "tv",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
}
IOU_MATCH = 0.5
MAP_CONF = 0.001  # the usual detection threshold for mAP: the whole precision-recall curve counts


@dataclass(frozen=True, slots=True)
class GtBox:
    """One ground-truth box, xyxy in pixels; crowd boxes are ignore regions (COCO ``iscrowd``)."""

    box: Box
    label: str
    crowd: bool = False


@dataclass(frozen=True, slots=True)
class GtImage:
    """One labelled image; ``file`` is its name as the label file gives it (forward slashes)."""

    file: str
    width: int
    height: int
    boxes: tuple[GtBox, ...]


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """Labelled images and the declared class names (in the label file's order)."""

    images: tuple[GtImage, ...]
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        dupes = [name for name, n in Counter(img.file for img in self.images).items() if n > 1]
        if dupes:
            raise ValueError(f"ground truth lists these images more than once: {dupes[:5]}")

    @property
    def num_boxes(self) -> int:
        return sum(1 for img in self.images for b in img.boxes if not b.crowd)


@dataclass(frozen=True, slots=True)
class ClassScore:
    """One class: its AP at IoU 0.5 (None without ground truth) and its recall at the threshold."""

    gt_boxes: int
    detections: int  # every scored detection of the class, whatever its confidence
    matched: int  # ground-truth boxes found at IoU >= 0.5 by a detection at or above the threshold
    ap50: float | None

    @property
    def recall(self) -> float | None:
        return self.matched / self.gt_boxes if self.gt_boxes else None


@dataclass(frozen=True, slots=True)
class GroupRecall:
    """Recall over a group of classes (e.g. animals)."""

    classes: tuple[str, ...]
    gt_boxes: int
    matched: int

    @property
    def recall(self) -> float | None:
        return self.matched / self.gt_boxes if self.gt_boxes else None


@dataclass(frozen=True, slots=True)
class Report:
    """Accuracy of one set of predictions; ``map50``/``map50_95`` equal COCOeval's stats[1]/stats[0]."""

    map50: float
    map50_95: float
    recall: float
    matched: int
    conf: float  # threshold the recall counts detections at
    images: int
    gt_boxes: int
    detections: int
    detections_at_conf: int
    per_class: dict[str, ClassScore]
    groups: dict[str, GroupRecall]
    dropped_classes: dict[str, int]  # predicted label -> detections dropped (no ground-truth class)
    missing_images: tuple[str, ...]  # labelled images with no prediction entry (scored as empty)
    failed_images: tuple[str, ...]  # results that carry a failure (scored as empty)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = asdict(self)
        out["per_class"] = {k: {**asdict(v), "recall": v.recall} for k, v in self.per_class.items()}
        out["groups"] = {k: {**asdict(v), "classes": list(v.classes), "recall": v.recall}
                         for k, v in self.groups.items()}
        out["missing_images"] = list(self.missing_images)
        out["failed_images"] = list(self.failed_images)
        return out


# -- ground truth ---------------------------------------------------------------------------------
def load_coco_gt(path: str | os.PathLike[str]) -> GroundTruth:
    """Read a COCO instances json (bbox xywh) into xyxy ground truth.

    Raises:
        ValueError: the file is not valid JSON or not a COCO detection file.
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        images = {int(i["id"]): (str(i["file_name"]), int(i["width"]), int(i["height"]))
                  for i in data["images"]}
        boxes: dict[int, list[GtBox]] = {image_id: [] for image_id in images}
        for ann in data["annotations"]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            label = names[int(ann["category_id"])]
            crowd = bool(ann.get("iscrowd", 0))
            boxes[int(ann["image_id"])].append(GtBox((x, y, x + w, y + h), label, crowd))
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from err
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{file} is not a COCO detection file: {type(err).__name__}: {err}") from err
    return GroundTruth(
        tuple(GtImage(name, w, h, tuple(boxes[image_id])) for image_id, (name, w, h) in images.items()),
        tuple(names.values()),
    )


def load_yolo_gt(
    labels_dir: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    names: Sequence[str] | str | os.PathLike[str],
) -> GroundTruth:
    """Read YOLO labels (``cls cx cy w h``, normalised) for the photos under ``images_dir``.

    ``names`` is the class list or a file holding it (``obj.names``, one per line). A photo without a
    label file has no objects (the YOLO convention); sizes come from the photos themselves.

    Raises:
        ValueError: a folder is missing, or a label line is malformed or names an unknown class id.
        ImageReadError: a photo cannot be read.
    """
    labels = read_labels(names) if isinstance(names, (str, os.PathLike)) else list(names)
    root, label_root = Path(images_dir), Path(labels_dir)
    for folder in (root, label_root):
        if not folder.is_dir():
            raise ValueError(f"not a folder: {folder}")
    photos = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(root).parts))
    images = []
    for photo in photos:
        rel = photo.relative_to(root)
        # A 1x1 "needed" size lets libjpeg decode at 1/8: only the (EXIF-rotated) full size is wanted.
        decoded = read_image(photo, needed=(1, 1))
        width, height = decoded.full_width, decoded.full_height
        label_file = label_root / rel.with_suffix(".txt")
        boxes = _read_yolo_file(label_file, labels, width, height) if label_file.exists() else []
        images.append(GtImage(rel.as_posix(), width, height, tuple(boxes)))
    return GroundTruth(tuple(images), tuple(labels))


def _read_yolo_file(file: Path, labels: Sequence[str], width: int, height: int) -> list[GtBox]:
    boxes = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 5:
                raise ValueError(f"expected 'cls cx cy w h', got {len(fields)} fields")
            cls = int(fields[0])
            cx, cy, w, h = (float(v) for v in fields[1:])
            if not 0 <= cls < len(labels):
                raise ValueError(f"class id {cls} outside the {len(labels)} names")
        except ValueError as err:
            raise ValueError(f"{file}:{number}: {err}") from err
        box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        boxes.append(GtBox(box, labels[cls]))
    return boxes


# -- predictions ----------------------------------------------------------------------------------
def detect_folder(
    model: str | os.PathLike[str], folder: str | os.PathLike[str], *, conf: float = MAP_CONF, workers: int = 2
) -> list[FileResult]:
    """Run a stamped detector over every photo under ``folder`` exactly as ``wildedge detect`` does.

    ``conf`` defaults to :data:`MAP_CONF`; score recall at the card's threshold from the same results.
    """
    from edge.batch.runner import BatchRunner
    from edge.batch.sources import collect
    from edge.inference.detector import Detector

    items, _ = collect([Path(folder)])
    with Detector(model, conf=conf) as detector:
        return list(BatchRunner(detector, workers=workers).run(items))


def _as_prediction(det: Any) -> Prediction:
    if hasattr(det, "box"):
        box, score, label = det.box, det.score, det.label
    else:
        box, score, label = det
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1, y1, x2, y2), float(score), str(label)


def _normalise(predictions: Predictions) -> tuple[dict[str, list[Prediction]], list[str]]:
    """File name -> predictions, and the names of failed results."""
    out: dict[str, list[Prediction]] = {}
    failed: list[str] = []
    if isinstance(predictions, Mapping):
        pairs: Iterable[tuple[str, Iterable[Any]]] = predictions.items()
    else:
        pairs = []
        for result in predictions:
            if not hasattr(result, "file") or not hasattr(result, "detections"):
                raise TypeError(f"expected FileResult objects or a mapping, got {type(result).__name__}")
            if getattr(result, "frames_processed", None) is not None:
                raise ValueError(f"{result.file}: video results cannot be scored against photo labels")
            if getattr(result, "failure", None):
                failed.append(result.file)
            pairs.append((result.file, result.detections))
    for name, dets in pairs:
        if name in out:
            raise ValueError(f"predictions list {name!r} more than once")
        out[name] = [_as_prediction(d) for d in dets]
    return out, failed


def _matcher(gt: GroundTruth):
    """A function from a prediction's file name to the ground-truth index: exact name, else base name."""
    exact = {img.file: i for i, img in enumerate(gt.images)}
    by_base: dict[str, list[int]] = {}
    for i, img in enumerate(gt.images):
        by_base.setdefault(img.file.rsplit("/", 1)[-1], []).append(i)

    def match(name: str) -> int:
        if name in exact:
            return exact[name]
        hits = by_base.get(name.replace("\\", "/").rsplit("/", 1)[-1], [])
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise ValueError(f"{name!r} matches several labelled images by base name; use their full names")
        raise ValueError(f"{name!r} is not among the {len(gt.images)} labelled images")

    return match


# -- scoring --------------------------------------------------------------------------------------
def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with many (continuous coordinates, as COCO)."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _matched(gts: list[GtBox], preds: list[Prediction], conf: float) -> Counter[str]:
    """Per class, the ground-truth boxes found one-to-one at IoU >= 0.5, greedy by score."""
    found: Counter[str] = Counter()
    for label in {b.label for b in gts if not b.crowd}:
        truth = np.array([b.box for b in gts if b.label == label and not b.crowd], dtype=np.float64)
        free = np.ones(len(truth), dtype=bool)
        dets = sorted((p for p in preds if p[2] == label and p[1] >= conf), key=lambda p: -p[1])
        for box, _, _ in dets:
            ious = np.where(free, _iou(np.asarray(box, dtype=np.float64), truth), -1.0)
            best = int(np.argmax(ious))
            if ious[best] >= IOU_MATCH:
                free[best] = False
        found[label] = int((~free).sum())
    return found


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:
        raise ImportError("accuracy measurement needs pycocotools: pip install 'wildedge[export]'") from err
    return COCO, COCOeval


@contextlib.contextmanager
def quiet_pycocotools() -> Iterator[None]:
    """pycocotools' progress prints kept off stdout (``--json`` output stays clean), its warnings ignored:
    2.0.11 warns about nothing here, but older releases trip numpy deprecations and a
    filterwarnings=error caller (pytest, -W error) must not fail on their code."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"pycocotools(\.|$)")
        yield


def _coco_eval(gt: GroundTruth, names: list[str], per_image: list[list[Prediction]]):
    """A COCOeval over ``per_image``, evaluated per image (``evaluate()``), not yet accumulated."""
    COCO, COCOeval = _pycocotools()
    cat = {name: i + 1 for i, name in enumerate(names)}
    images = [{"id": i + 1, "file_name": img.file, "width": img.width, "height": img.height}
              for i, img in enumerate(gt.images)]
    categories = [{"id": cat[n], "name": n} for n in names]

    def ann(image_id: int, box: Box, label: str, **extra: Any) -> dict[str, Any]:
        w, h = max(box[2] - box[0], 0.0), max(box[3] - box[1], 0.0)
        return {"id": 0, "image_id": image_id, "category_id": cat[label], "bbox": [box[0], box[1], w, h],
                "area": w * h, **extra}

    truth = [ann(i + 1, b.box, b.label, iscrowd=int(b.crowd)) for i, img in enumerate(gt.images)
             for b in img.boxes]
    dets = [ann(i + 1, box, label, iscrowd=0, score=score) for i, preds in enumerate(per_image)
            for box, score, label in preds]
    for n, a in enumerate(truth + dets, 1):  # COCOeval wants positive ids, unique per set
        a["id"] = n
    # Build both sets directly: COCO.loadRes fails on an empty list and recomputes areas.
    with quiet_pycocotools():
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "categories": categories, "annotations": truth}
        coco_dt.dataset = {"images": images, "categories": categories, "annotations": dets}
        coco_gt.createIndex()
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
    return evaluator


def _coco_precision(evaluator) -> np.ndarray:
    """COCOeval's accumulated precision, [IoU thresholds, recall points, classes] (area all, 100 dets)."""
    with quiet_pycocotools():
        evaluator.accumulate()
    params = evaluator.params
    area = list(params.areaRngLbl).index("all")
    max_dets = list(params.maxDets).index(100)
    precision = evaluator.eval["precision"][:, :, :, area, max_dets]
    if not np.isclose(params.iouThrs[0], 0.5):
        raise RuntimeError(f"unexpected COCOeval IoU thresholds {params.iouThrs}")
    return precision


def mean_valid(values: np.ndarray) -> float | None:
    """Mean of COCOeval precisions, leaving out its -1 (no ground truth); None when none is left."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def _scored(predictions: Predictions, gt: GroundTruth, class_map: Mapping[str, str] | None):
    """Labels renamed on both sides, predictions per labelled image (unknown classes dropped, counted),
    and the labelled images no prediction names, and the failed results."""
    rename = dict(class_map or {})
    gt = GroundTruth(
        tuple(GtImage(img.file, img.width, img.height,
                      tuple(GtBox(b.box, rename.get(b.label, b.label), b.crowd) for b in img.boxes))
              for img in gt.images),
        tuple(rename.get(n, n) for n in gt.labels),
    )
    if gt.num_boxes == 0:
        raise ValueError("the ground truth has no boxes to score against")
    names = list(dict.fromkeys([*gt.labels, *(b.label for img in gt.images for b in img.boxes)]))
    known = set(names)

    by_name, failed = _normalise(predictions)
    match = _matcher(gt)
    per_image: list[list[Prediction]] = [[] for _ in gt.images]
    seen: set[int] = set()
    dropped: Counter[str] = Counter()
    for name, preds in by_name.items():
        index = match(name)
        if index in seen:
            raise ValueError(f"two prediction entries map to the labelled image {gt.images[index].file!r}")
        seen.add(index)
        for box, score, label in preds:
            mapped = rename.get(label, label)
            if mapped in known:
                per_image[index].append((box, score, mapped))
            else:
                dropped[label] += 1
    missing = tuple(img.file for i, img in enumerate(gt.images) if i not in seen)

    return gt, names, per_image, dropped, missing, failed


def coco_evaluator(predictions: Predictions, gt: GroundTruth, *, class_map: Mapping[str, str] | None = None):
    """pycocotools' COCOeval of ``predictions`` as :func:`evaluate` scores them (same renaming and
    matching), evaluated per image but not accumulated: :mod:`export.bootstrap` accumulates it over
    resampled photos."""
    gt, names, per_image, *_ = _scored(predictions, gt, class_map)
    return _coco_eval(gt, names, per_image)


def evaluate(
    predictions: Predictions,
    gt: GroundTruth,
    *,
    class_map: Mapping[str, str] | None = None,
    conf: float = 0.0,
    groups: Mapping[str, Iterable[str]] | None = None,
) -> Report:
    """Score ``predictions`` against ``gt``: COCO mAP over every detection, recall over those >= ``conf``.

    Args:
        predictions: file name -> ``(xyxy, score, label)`` tuples or ``Detection``-like objects, or
            ``FileResult`` objects; names match the labelled images exactly, else by base name.
        gt: ground truth from :func:`load_coco_gt` or :func:`load_yolo_gt`.
        class_map: renames labels on both sides (e.g. :data:`VOC_TO_COCO`); unlisted names are kept.
        conf: confidence threshold for the recall (use the model's recommended one).
        groups: named class groups to report recall for; default ``{"animals": COCO animals}``.

    Raises:
        ValueError: a prediction names an image the ground truth lacks, ``conf`` is outside [0, 1],
            or the ground truth has no boxes.
    """
    if not 0.0 <= conf <= 1.0:
        raise ValueError(f"conf must be within [0, 1], got {conf}")
    gt, names, per_image, dropped, missing, failed = _scored(predictions, gt, class_map)
    precision = _coco_precision(_coco_eval(gt, names, per_image))
    found: Counter[str] = Counter()
    for img, preds in zip(gt.images, per_image):
        found.update(_matched(list(img.boxes), preds, conf))
    gt_count = Counter(b.label for img in gt.images for b in img.boxes if not b.crowd)
    det_count = Counter(p[2] for preds in per_image for p in preds)
    per_class = {
        name: ClassScore(gt_count[name], det_count[name], found[name], mean_valid(precision[0, :, k]))
        for k, name in enumerate(names)
    }
    group_sets = {"animals": COCO_ANIMALS} if groups is None else groups
    group_scores = {}
    for group, members in group_sets.items():
        member_set = set(members)
        classes = tuple(n for n in names if n in member_set)
        group_scores[group] = GroupRecall(classes, sum(gt_count[n] for n in classes),
                                          sum(found[n] for n in classes))
    total = gt.num_boxes
    return Report(
        map50=mean_valid(precision[0]) or 0.0,
        map50_95=mean_valid(precision) or 0.0,
        recall=sum(found.values()) / total,
        matched=sum(found.values()),
        conf=conf,
        images=len(gt.images),
        gt_boxes=total,
        detections=sum(det_count.values()),
        detections_at_conf=sum(1 for preds in per_image for p in preds if p[1] >= conf),
        per_class=per_class,
        groups=group_scores,
        dropped_classes=dict(dropped.most_common()),
        missing_images=missing,
        failed_images=tuple(failed),
    )

"""MegaDetector batch-output format 1.6: writer, validator, and a reader for files of format 1.0-1.6.

Spec: https://lila.science/megadetector-output-format; "what MegaDetector writes" is checked against
the ``megadetector`` package (``detection/run_detector_batch.py``, ``detection/process_video.py``,
``postprocessing/validate_batch_results.py``).

- Detection categories: see :mod:`edge.outputs.categories` (the detector's own classes, or
  MegaDetector's animal/person/vehicle with ``--categories megadetector``).
- Classification categories: the classifier's class ids ("0".."n-1"). With MegaDetector categories
  on a detector of other classes, the detector's own class of each kept box is a classification too
  (ids after the classifier's: ``n + class index``; probability = the box's score), so nothing is
  lost; a crop the classifier saw carries the classifier's classes instead.
- ``info.detector_metadata`` describes the model, as MegaDetector's does: ``typical_detection_threshold``
  is the card's recommended threshold (MegaDetector's 0.2 when unknown), ``conservative_detection_threshold``
  half of it (MegaDetector's ratio for a model it does not know). The run's own ``--conf`` and
  other settings are in ``info.custom_metadata``, MegaDetector's place for run data.
- A video is one entry, with ``frame_rate``, ``frames_processed`` and ``frame_number`` on each
  detection; a video that could not be read has ``frame_rate: -1.0, frames_processed: []``,
  its ``failure`` and ``detections: null``, as MegaDetector writes it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from edge import __version__
from edge.batch.results import FileResult, ModelInfo, RunInfo
from edge.imaging import VIDEO_SUFFIXES
from edge.outputs._common import clipped_detections, completion_time, run_categories
from edge.outputs.categories import CategoryMap

logger = logging.getLogger(__name__)

FORMAT_VERSION = "1.6"
READABLE_VERSIONS = ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5", "1.6")
FRAME_RATE_SINCE = (1, 4)  # frame_rate / frame_number became required for videos in 1.4
FRAMES_PROCESSED_SINCE = (1, 5)  # frames_processed in 1.5 (as MegaDetector's validator checks)
# MegaDetector's own files carry float noise such as bbox x = -5e-07; don't reject that.
BBOX_TOLERANCE = 1e-4
# MegaDetector's video_utils.VIDEO_EXTENSIONS plus the other suffixes wildedge reads as videos.
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".flv", ".wmv", ".m4v", ".asf",
                              ".3gp"}) | VIDEO_SUFFIXES
FAILED_VIDEO_FRAME_RATE = -1.0  # what MegaDetector writes for a video it could not read
# MegaDetector's defaults for a model it does not know (run_detector.get_detector_metadata_from_version_string)
# and for classifications (classification_postprocessing.ClassificationSmoothingOptions).
MD_TYPICAL_DETECTION_THRESHOLD = 0.2
MD_TYPICAL_CLASSIFICATION_THRESHOLD = 0.5


def to_megadetector(results: Sequence[FileResult], *, run: RunInfo) -> dict[str, Any]:
    """The format-1.6 document for ``results``.

    Raises:
        ValueError: a result cannot be expressed (no size, unknown class, classification without classifier).
    """
    cats = run_categories(run)
    completed = completion_time(run)
    info: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "detector": run.detector.name,
        "detection_completion_time": completed,
        "detector_metadata": _detector_metadata(run.detector),
    }
    doc: dict[str, Any] = {"info": info,
                           "detection_categories": {str(i): name for i, name in cats.names.items()}}
    classes, detector_class_ids = _classification_categories(run, cats)
    if run.classifier is not None:
        info["classifier"] = run.classifier.name
        info["classification_completion_time"] = completed
        info["classifier_metadata"] = _classifier_metadata(run.classifier)
    elif classes:
        info["classifier"] = f"{run.detector.name} (the detector's own classes)"
        info["classification_completion_time"] = completed
        info["classifier_metadata"] = {
            "typical_classification_threshold": info["detector_metadata"]["typical_detection_threshold"]}
    info["custom_metadata"] = {"generator": f"wildedge {__version__}", "categories": cats.scheme,
                               "detection_threshold": run.detector.conf, **run.settings}
    if classes:
        doc["classification_categories"] = classes
    dropped: Counter[str] = Counter()
    doc["images"] = [_image(result, cats, detector_class_ids, dropped) for result in results]
    if dropped:
        logger.info("%d detections of classes outside the %s categories are left out (%s)",
                    sum(dropped.values()), cats.scheme, ", ".join(f"{k} {v}" for k, v in dropped.most_common(8)))
    problems = validate_megadetector(doc)
    if problems:
        raise ValueError("cannot write a valid MegaDetector file: " + "; ".join(problems[:5]))
    return doc


def write_megadetector(results: Sequence[FileResult], stream: TextIO, *, run: RunInfo) -> None:
    """Write ``results`` to ``stream`` as a MegaDetector 1.6 JSON document."""
    json.dump(to_megadetector(results, run=run), stream, indent=1, allow_nan=False)
    stream.write("\n")


def read_megadetector(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a MegaDetector results file of format 1.0-1.6; failed files get ``detections: null``.

    Raises:
        ValueError: the file is not JSON or breaks the format (the first problems are named).
    """
    with open(path, encoding="utf-8") as stream:
        try:
            doc = json.load(stream)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
    problems = validate_megadetector(doc, allow_older=True)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"{path} is not a valid MegaDetector file: " + "; ".join(problems[:5]) + more)
    for image in doc["images"]:
        if image.get("failure") is not None:
            image.setdefault("detections", None)
    return doc


def _classification_categories(run: RunInfo, cats: CategoryMap) -> tuple[dict[str, str], dict[int, str]]:
    """``classification_categories``, and the classification id of each kept detector class when the
    detector's classes were merged into MegaDetector's (else empty)."""
    classes: dict[str, str] = {}
    if run.classifier is not None:
        for i, label in enumerate(run.classifier.labels):
            if not label.strip():
                raise ValueError(f"{run.classifier.name}: class {i} has a blank label; the format needs a name")
            classes[str(i)] = label
    detector_ids: dict[int, str] = {}
    if cats.keep_classes:
        offset = len(classes)
        for i, label in enumerate(cats.labels):
            if cats.ids[i] is not None:
                detector_ids[i] = str(offset + i)
                classes[detector_ids[i]] = label
    return classes, detector_ids


def _detector_metadata(model: ModelInfo) -> dict[str, Any]:
    typical = model.typical_conf if model.typical_conf is not None else MD_TYPICAL_DETECTION_THRESHOLD
    return {"image_size": max(model.input_size), "typical_detection_threshold": round(typical, 3),
            "conservative_detection_threshold": round(typical / 2, 3)}


def _classifier_metadata(model: ModelInfo) -> dict[str, Any]:
    typical = model.typical_conf if model.typical_conf else MD_TYPICAL_CLASSIFICATION_THRESHOLD
    return {"image_size": max(model.input_size), "typical_classification_threshold": round(typical, 3)}


def is_video_result(result: FileResult) -> bool:
    """A video: it has frames, or (failed before any frame) its name says so."""
    return result.is_video or os.path.splitext(result.file)[1].lower() in VIDEO_EXTENSIONS


def _image(result: FileResult, cats: CategoryMap, detector_class_ids: dict[int, str],
           dropped: Counter[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"file": result.file}
    video = is_video_result(result)
    if video:
        if result.failure is not None:
            rate = result.frame_rate if result.frame_rate and result.frame_rate > 0 else FAILED_VIDEO_FRAME_RATE
        else:
            rate = result.frame_rate if result.frame_rate and result.frame_rate > 0 else 1.0
        entry["frame_rate"] = float(rate)
        entry["frames_processed"] = list(result.frames_processed or [])
    if result.failure is not None:
        entry["failure"] = result.failure
        entry["detections"] = None
        return entry
    kept = clipped_detections(result)
    if len(kept) < len(result.detections):
        logger.debug("%s: dropped %d boxes lying wholly outside the frame",
                     result.file, len(result.detections) - len(kept))
    dets = []
    for det, (x1, y1, x2, y2) in kept:
        category = cats.id_of(det.class_id)
        if category is None:
            dropped[det.label] += 1
            continue
        # Round the corners, not the sizes, so x + w never exceeds 1 through rounding.
        nx1, ny1 = round(x1 / result.width, 4), round(y1 / result.height, 4)
        nx2, ny2 = round(x2 / result.width, 4), round(y2 / result.height, 4)
        out: dict[str, Any] = {
            "category": str(category),
            "conf": round(float(det.score), 3),
            "bbox": [nx1, ny1, round(nx2 - nx1, 4), round(ny2 - ny1, 4)],
        }
        if det.classifications:
            ranked = sorted(det.classifications, key=lambda cp: cp[1], reverse=True)
            out["classifications"] = [[str(c), round(float(p), 3)] for c, p in ranked]
        elif det.class_id in detector_class_ids:
            out["classifications"] = [[detector_class_ids[det.class_id], round(float(det.score), 3)]]
        if video:
            if det.frame is None:
                raise ValueError(f"{result.file}: a video detection has no frame number")
            out["frame_number"] = det.frame
        dets.append(out)
    # Best first, as MegaDetector's write_results_to_file sorts them (stable: ties keep their order).
    entry["detections"] = sorted(dets, key=lambda x: x["conf"], reverse=True)
    return entry


# --- validation ---------------------------------------------------------------------------------


def validate_megadetector(doc: Any, *, allow_older: bool = False) -> list[str]:
    """Problems that make ``doc`` an invalid MegaDetector 1.6 document (1.0-1.6 with ``allow_older``)."""
    if not isinstance(doc, dict):
        return ["<root>: must be a JSON object"]
    problems = [f"{key}: required" for key in ("info", "detection_categories", "images") if key not in doc]
    version = _check_version(doc.get("info"), allow_older, problems)
    det_ids = _check_categories(doc, "detection_categories", problems)
    cls_ids = _check_categories(doc, "classification_categories", problems)
    descriptions = doc.get("classification_category_descriptions")
    if descriptions is not None and (not isinstance(descriptions, dict) or set(descriptions) != cls_ids):
        problems.append(
            "classification_category_descriptions: must have the ids of classification_categories")
    images = doc.get("images")
    if "images" in doc and not isinstance(images, list):
        problems.append("images: must be a list")
    elif isinstance(images, list):
        has_cls = "classification_categories" in doc
        for i, image in enumerate(images):
            _check_image(f"images[{i}]", image, det_ids, cls_ids if has_cls else None, version, problems)
    return problems


def _check_version(info: Any, allow_older: bool, problems: list[str]) -> tuple[int, int] | None:
    if info is None:
        return None
    if not isinstance(info, dict):
        problems.append("info: must be an object")
        return None
    version = info.get("format_version")
    allowed = READABLE_VERSIONS if allow_older else (FORMAT_VERSION,)
    if version is None:
        problems.append("info.format_version: required")
    elif not isinstance(version, str):
        problems.append(f"info.format_version: must be a string such as {FORMAT_VERSION!r}, got {version!r}")
    elif version not in allowed:
        problems.append(f"info.format_version: {version!r} is not one of {', '.join(allowed)}")
    else:
        major, minor = version.split(".")
        return int(major), int(minor)
    return None


def _check_categories(doc: dict[str, Any], key: str, problems: list[str]) -> set[str]:
    categories = doc.get(key)
    if categories is None:
        return set()
    if not isinstance(categories, dict):
        problems.append(f"{key}: must be an object mapping id to name")
        return set()
    for cid, name in categories.items():
        if not _is_int_string(cid):
            problems.append(f"{key}[{cid!r}]: id must be a non-negative integer written as a string")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{key}[{cid!r}]: name must be a non-blank string")
    return set(categories)


def _check_image(path: str, image: Any, det_ids: set[str], cls_ids: set[str] | None,
                 version: tuple[int, int] | None, problems: list[str]) -> None:
    if not isinstance(image, dict):
        problems.append(f"{path}: must be an object")
        return
    file = image.get("file")
    if not isinstance(file, str) or not file:
        problems.append(f"{path}.file: required, a non-empty string")
    failure = image.get("failure")
    dets = image.get("detections")
    if failure is not None:
        if not isinstance(failure, str):
            problems.append(f"{path}.failure: must be a string (the reason) or null")
        if dets is not None:
            problems.append(f"{path}.detections: must be null for a failed file, not {type(dets).__name__}")
        dets = None
    elif not isinstance(dets, list):
        problems.append(f"{path}.detections: required, a list (empty when nothing was found)")
        dets = None
    is_video = ("frame_rate" in image or "frames_processed" in image
                or (isinstance(file, str) and os.path.splitext(file)[1].lower() in VIDEO_EXTENSIONS))
    frames = _check_video_fields(path, image, version if is_video else None, failure is not None, problems)
    needs_frame_number = version is not None and version >= FRAME_RATE_SINCE
    for j, det in enumerate(dets or []):
        _check_detection(f"{path}.detections[{j}]", det, det_ids, cls_ids, problems)
        if is_video and isinstance(det, dict):
            _check_frame_number(f"{path}.detections[{j}].frame_number", det, frames, needs_frame_number,
                                problems)


def _check_video_fields(path: str, image: dict[str, Any], version: tuple[int, int] | None, failed: bool,
                        problems: list[str]) -> set[int] | None:
    """``version`` is None for a still image (the fields are then only checked when present).

    A failed video needs the fields too (MegaDetector writes ``frame_rate: -1.0, frames_processed: []``);
    only a failed video may have a frame rate that is not positive.
    """
    if "frame_rate" in image:
        rate = image["frame_rate"]
        if not _is_number(rate) or not (rate > 0 or (failed and rate != 0)):
            problems.append(f"{path}.frame_rate: must be a number greater than 0 (-1.0 for a video that failed),"
                            f" got {rate!r}")
    elif version is not None and version >= FRAME_RATE_SINCE:
        problems.append(f"{path}.frame_rate: required for a video (-1.0 when it could not be read)")
    if "frames_processed" not in image:
        if version is not None and version >= FRAMES_PROCESSED_SINCE:
            problems.append(f"{path}.frames_processed: required for a video ([] when it could not be read)")
        return None
    frames = image["frames_processed"]
    if not isinstance(frames, list) or not all(_is_int(f) and f >= 0 for f in frames):
        problems.append(f"{path}.frames_processed: must be a list of non-negative integers")
        return None
    return set(frames)


def _check_frame_number(path: str, det: dict[str, Any], frames: set[int] | None, required: bool,
                        problems: list[str]) -> None:
    if "frame_number" not in det:
        if required:
            problems.append(f"{path}: required for a detection in a video")
        return
    frame = det["frame_number"]
    if not _is_int(frame) or frame < 0:
        problems.append(f"{path}: must be an integer >= 0, got {frame!r}")
    elif frames is not None and frame not in frames:
        problems.append(f"{path}: frame {frame} is not in frames_processed")


def _check_detection(path: str, det: Any, det_ids: set[str], cls_ids: set[str] | None,
                     problems: list[str]) -> None:
    if not isinstance(det, dict):
        problems.append(f"{path}: must be an object")
        return
    category = det.get("category")
    if not isinstance(category, str) or not _is_int_string(category):
        problems.append(f"{path}.category: must be an integer written as a string, got {category!r}")
    elif category not in det_ids:
        problems.append(f"{path}.category: {category!r} is not in detection_categories")
    conf = det.get("conf")
    # MegaDetector's own validator insists on a JSON float here, so an integer 1 is refused too.
    if not isinstance(conf, float) or not 0.0 <= conf <= 1.0:
        problems.append(f"{path}.conf: must be a float within [0, 1], got {conf!r}")
    _check_bbox(f"{path}.bbox", det.get("bbox"), problems)
    if det.get("classifications") is not None:
        _check_classifications(f"{path}.classifications", det["classifications"], cls_ids, problems)


def _check_bbox(path: str, bbox: Any, problems: list[str]) -> None:
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        problems.append(f"{path}: must be a list of 4 numbers [x_min, y_min, width, height], got {bbox!r}")
        return
    x, y, w, h = bbox
    lo, hi = -BBOX_TOLERANCE, 1.0 + BBOX_TOLERANCE
    if not all(lo <= v <= hi for v in bbox) or x + w > hi or y + h > hi:
        problems.append(f"{path}: must be normalised to [0, 1] and lie inside the image, got {bbox!r}")


def _check_classifications(path: str, pairs: Any, cls_ids: set[str] | None, problems: list[str]) -> None:
    if cls_ids is None:
        problems.append(f"{path}: present but the document has no classification_categories")
        return
    if not isinstance(pairs, list):
        problems.append(f"{path}: must be a list of [id, probability] pairs")
        return
    probs = []
    for k, pair in enumerate(pairs):
        if not (isinstance(pair, list) and len(pair) == 2 and _is_number(pair[1]) and 0 <= pair[1] <= 1):
            problems.append(f"{path}[{k}]: must be an [id, probability] pair with probability in [0, 1]")
            continue
        if not isinstance(pair[0], str) or pair[0] not in cls_ids:
            problems.append(f"{path}[{k}]: id {pair[0]!r} is not in classification_categories")
        probs.append(pair[1])
    if any(a < b for a, b in zip(probs, probs[1:])):
        problems.append(f"{path}: must be sorted by descending probability, got {probs}")


def _is_int_string(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

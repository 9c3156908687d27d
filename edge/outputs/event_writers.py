"""Writers of event exports: MegaDetector 1.6 JSON, COCO JSON and CSV (Camtrap DP: :mod:`camtrapdp`).

Every writer is ``writer(export, stream, *, frame_size)``; :func:`write_events` picks one by name
and writes the file atomically (the Camtrap DP directory through a temp directory and a rename).

- One image per event: its best frame, named ``<device>/<image path>``. Events whose image was not
  kept have no file to name: MegaDetector and COCO leave them out (one warning gives the count);
  CSV and Camtrap DP keep them.
- Detection category ids are the union of the detectors' labels by name (:class:`Categories`),
  counted from 1 as in ``wildedge detect``; CSV's ``class_id`` is the same id.
- COCO boxes are pixels, so they need the frame size: a device knows it; the collector does not
  receive it, so there ``frame_size`` (``--frame-size WxH``) must say it, or the export fails.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from edge.outputs.categories import MEGADETECTOR, SCHEMES, CategoryMap
from edge.outputs.categories import megadetector as megadetector_categories
from edge.outputs.events import (
    Categories,
    Event,
    EventExport,
    ModelRef,
    classifier_categories,
    detector_categories,
)
from edge.outputs.megadetector import (
    FORMAT_VERSION,
    MD_TYPICAL_CLASSIFICATION_THRESHOLD,
    MD_TYPICAL_DETECTION_THRESHOLD,
    validate_megadetector,
)

logger = logging.getLogger(__name__)

FORMATS = ("megadetector", "camtrapdp", "coco", "csv")
CSV_COLUMNS = (
    "device", "event_id", "time", "clock", "trigger", "file", "width", "height", "label", "class_id",
    "confidence", "x_min", "y_min", "x_max", "y_max", "count", "classification", "classification_prob",
    "vote", "vote_votes", "vote_voters", "detector", "classifier",
)
FrameSize = tuple[int, int]


def iso_z(when: datetime) -> str:
    """``2026-05-01T10:00:00Z``: whole seconds, UTC."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_image(export: EventExport, fmt: str) -> list[Event]:
    kept = [e for e in export.events if e.image is not None]
    if len(kept) < len(export.events):
        logger.warning("%d events without a kept image are left out of the %s file (it names images)",
                       len(export.events) - len(kept), fmt)
    return kept


def _now() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def _model_info(models: list[ModelRef], kind: str) -> tuple[str, dict[str, Any]]:
    """The models' names and MegaDetector metadata.

    Events carry only what the device kept (scores at or above its threshold), so the thresholds
    describe that, never less than MegaDetector's own defaults: a device run at conf 0.05 does not
    make Timelapse call every box with 0.05 an animal, and the conservative threshold is never
    below what was kept (half of it would be meaningless).
    """
    names = sorted({m.name for m in models})
    conf = min(m.conf for m in models)
    default = MD_TYPICAL_DETECTION_THRESHOLD if kind == "detection" else MD_TYPICAL_CLASSIFICATION_THRESHOLD
    typical = max(conf, default) if kind == "detection" else (conf or default)
    meta: dict[str, Any] = {f"typical_{kind}_threshold": round(typical, 3)}
    if kind == "detection":
        meta["conservative_detection_threshold"] = round(max(conf, typical / 2), 3)
    sizes = {m.input_size for m in models}
    if len(sizes) == 1 and None not in sizes:
        meta["image_size"] = max(sizes.pop())  # type: ignore[arg-type]
    return ", ".join(names), meta


# -- MegaDetector --------------------------------------------------------------------------------

def to_megadetector_events(export: EventExport, *, categories: str = "native") -> dict[str, Any]:
    """The MegaDetector 1.6 document of ``export`` (validated before it is returned).

    ``categories``: ``native`` writes the detectors' own labels; ``megadetector`` writes
    MegaDetector's 1 animal / 2 person / 3 vehicle (see :mod:`edge.outputs.categories`: COCO animals,
    person, road vehicles; other classes dropped, counted in a log line), each box's own class kept
    as a classification after the classifier's, so nothing is lost.

    Raises:
        ValueError: the document would break the format (the first problems are named), an unknown
            scheme, or a detector none of whose labels is an animal, person or vehicle.
    """
    if categories not in SCHEMES:
        raise ValueError(f"unknown category scheme {categories!r}; choose one of {', '.join(SCHEMES)}")
    md = categories == "megadetector"
    events = _with_image(export, "MegaDetector")
    det_cats, cls_cats = detector_categories(export.events), classifier_categories(export.events)
    maps: dict[ModelRef, CategoryMap | None] = {}
    if md:
        cls_cats = cls_cats or Categories((), offset=0)
        for model in sorted({e.models.detector for e in export.events}, key=lambda m: (m.name, m.labels)):
            try:
                maps[model] = megadetector_categories(model.labels)
            except ValueError as err:  # a model whose labels are unknown or name no animal/person/vehicle
                logger.warning("megadetector categories: the detections of %s are left out: %s", model.name,
                               err if model.labels else "its labels are unknown")
                maps[model] = None
            for label in model.labels:
                cls_cats.add(label)
    completed = _now()
    info: dict[str, Any] = {"format_version": FORMAT_VERSION, "detection_completion_time": completed}
    detectors = [e.models.detector for e in export.events]
    if detectors:
        info["detector"], info["detector_metadata"] = _model_info(detectors, "detection")
    else:
        info["detector"] = "unknown"
    doc: dict[str, Any] = {"info": info}
    images, dropped = [], 0
    for event in events:
        dets = []
        for det in event.detections:
            x1, y1, x2, y2 = det.box
            if md:
                cmap = maps[event.models.detector]
                written = cmap.id_of(det.class_id) \
                    if cmap is not None and 0 <= det.class_id < len(cmap.labels) else None
                if written is None:
                    dropped += 1
                    continue
                category = str(written)
            else:
                category = str(det_cats.add(det.label))
            out: dict[str, Any] = {"category": category, "conf": round(float(det.score), 3),
                                   "bbox": [round(x1, 4), round(y1, 4), round(x2 - x1, 4), round(y2 - y1, 4)]}
            pairs = []
            if det.classification is not None and cls_cats is not None:
                c = det.classification
                pairs.append([str(cls_cats.add(c.label)), round(float(c.prob), 3)])
            if md and cls_cats is not None:
                pairs.append([str(cls_cats.add(det.label)), round(float(det.score), 3)])
            if pairs:  # MegaDetector's validator wants them best first
                out["classifications"] = sorted(pairs, key=lambda pair: -pair[1])
            dets.append(out)
        images.append({"file": event.file, "detections": dets})
    if dropped:
        logger.info("megadetector categories: %d detections of classes that are not an animal, person or vehicle "
                    "left out", dropped)
    classifiers = [e.models.classifier for e in export.events if e.models.classifier is not None]
    doc["detection_categories"] = dict(sorted((str(k), v) for k, v in MEGADETECTOR.items())) if md \
        else det_cats.as_dict()
    if cls_cats is not None:
        info["classification_completion_time"] = completed
        if classifiers:
            info["classifier"], info["classifier_metadata"] = _model_info(classifiers, "classification")
        doc["classification_categories"] = cls_cats.as_dict()
    doc["images"] = images
    problems = validate_megadetector(doc)
    if problems:
        raise ValueError("cannot write a valid MegaDetector file: " + "; ".join(problems[:5]))
    return doc


def write_megadetector_events(export: EventExport, stream: TextIO, *, frame_size: FrameSize | None = None,
                              categories: str = "native") -> None:
    """Write ``export`` to ``stream`` as a MegaDetector 1.6 JSON document (``categories``: see
    :func:`to_megadetector_events`)."""
    json.dump(to_megadetector_events(export, categories=categories), stream, indent=1, ensure_ascii=False, allow_nan=False)
    stream.write("\n")


# -- COCO ----------------------------------------------------------------------------------------

def to_coco_events(export: EventExport, *, frame_size: FrameSize | None = None) -> dict[str, Any]:
    """The COCO document of ``export``: one image per event with an image, pixel xywh boxes.

    Raises:
        ValueError: events have no known frame size and ``frame_size`` is not given.
    """
    events = _with_image(export, "COCO")
    unsized = sum(1 for e in events if not (e.width and e.height))
    if unsized and frame_size is None:
        raise ValueError(f"coco needs pixel sizes, and {unsized} events have no known frame size (the collector "
                         "does not receive it): pass --frame-size WIDTHxHEIGHT, or use megadetector/csv/camtrapdp")
    cats = detector_categories(export.events)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for event in events:
        width, height = (event.width, event.height) if event.width and event.height else frame_size  # type: ignore[misc]
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": event.file, "width": width, "height": height,
                       "date_captured": iso_z(event.time), "event_id": event.uid})
        for det in event.detections:
            x1, y1, x2, y2 = det.box
            w, h = round((x2 - x1) * width, 2), round((y2 - y1) * height, 2)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": cats.add(det.label),
                                "bbox": [round(x1 * width, 2), round(y1 * height, 2), w, h],
                                "area": round(w * h, 2), "score": round(float(det.score), 3), "iscrowd": 0})
    return {"info": {"description": export.source, "date_created": _now()}, "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": name} for name, i in sorted(cats.ids.items(), key=lambda kv: kv[1])]}


def write_coco_events(export: EventExport, stream: TextIO, *, frame_size: FrameSize | None = None) -> None:
    """Write ``export`` to ``stream`` as a COCO detection-results JSON document."""
    json.dump(to_coco_events(export, frame_size=frame_size), stream, indent=1, ensure_ascii=False, allow_nan=False)
    stream.write("\n")


# -- CSV -----------------------------------------------------------------------------------------

def csv_event_rows(export: EventExport) -> list[dict[str, Any]]:
    """One row per detection, one row per event without detections; keys are :data:`CSV_COLUMNS`."""
    cats = detector_categories(export.events)
    rows: list[dict[str, Any]] = []
    for event in export.events:
        vote = event.vote
        base = {"device": event.device, "event_id": event.uid, "time": iso_z(event.time), "clock": event.clock,
                "trigger": event.trigger, "file": event.file, "width": event.width, "height": event.height,
                "vote": vote.label if vote else None, "vote_votes": vote.votes if vote else None,
                "vote_voters": vote.voters if vote else None, "detector": event.models.detector.name,
                "classifier": event.models.classifier.name if event.models.classifier else None}
        if not event.detections:
            rows.append(base)
        for det in event.detections:
            c = det.classification
            rows.append({**base, "label": det.label, "class_id": cats.add(det.label),
                         "confidence": round(float(det.score), 3),
                         "x_min": det.box[0], "y_min": det.box[1], "x_max": det.box[2], "y_max": det.box[3],
                         "count": event.counts.get(det.class_id),
                         "classification": c.label if c else None,
                         "classification_prob": round(float(c.prob), 3) if c else None})
    return rows


def write_csv_events(export: EventExport, stream: TextIO, *, frame_size: FrameSize | None = None) -> None:
    """Write ``export`` to ``stream`` (opened with ``newline=""``) as CSV with a header row."""
    writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, restval="")
    writer.writeheader()
    for row in csv_event_rows(export):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})


# -- dispatch ------------------------------------------------------------------------------------

Writer = Callable[..., None]
WRITERS: dict[str, Writer] = {"megadetector": write_megadetector_events, "coco": write_coco_events,
                              "csv": write_csv_events}


def categories_problem(categories: str, fmt: str) -> str | None:
    """Why ``--categories categories`` cannot go with ``--format fmt`` (one line), or None."""
    if categories not in SCHEMES:
        return f"--categories {categories!r} is unknown; choose {' or '.join(SCHEMES)}"
    if categories != "native" and fmt != "megadetector":
        return f"--categories {categories} applies to --format megadetector only, not {fmt}"
    return None


def write_events(fmt: str, export: EventExport, path: str | os.PathLike[str], *,
                 frame_size: FrameSize | None = None, categories: str = "native") -> Path:
    """Write ``export`` to ``path`` in format ``fmt`` (a directory for camtrapdp), replacing it atomically.

    ``categories`` (``native`` or ``megadetector``) applies to the MegaDetector format only.

    Raises:
        ValueError: ``fmt`` is unknown, ``categories`` is set for another format, or the export cannot
            be expressed in it (one line says why).
        OSError: the output could not be written (what was there is left untouched).
    """
    if (problem := categories_problem(categories, fmt)) is not None:
        raise ValueError(problem)
    from edge.outputs import _atomic_write
    from edge.outputs.camtrapdp import write_camtrapdp

    target = Path(path)
    if fmt == "camtrapdp":
        write_camtrapdp(export, target)
    elif fmt in WRITERS:
        writer = WRITERS[fmt]
        extra = {"categories": categories} if fmt == "megadetector" else {}
        _atomic_write(target, lambda stream: writer(export, stream, frame_size=frame_size, **extra))
    else:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    logger.info("wrote %d events to %s (%s)", len(export.events), target, fmt)
    return target

"""CSV writer: one row per detection, boxes in absolute pixels (clipped to the frame).

Ids and names are those of the other formats: ``class_id`` is the written category id
(:mod:`edge.outputs.categories`: counted from 1, COCO's official ids for a COCO-80 detector,
1 animal / 2 person / 3 vehicle with ``--categories megadetector``), ``label`` its name, and
``detector_label`` the detector's own class (the same as ``label`` unless classes were merged).

Integer columns never hold an empty cell, so ``pandas.read_csv`` reads them as integers:

- a file with no detections gets one row with ``class_id`` 0 (MegaDetector's "empty") and the
  detection columns empty;
- a failed file gets one row with ``failure`` set, ``width``/``height`` 0 and ``class_id`` 0;
- ``frame`` is the video frame, -1 for a photo (and for a row without a detection).

``classification``/``classification_prob`` are the classifier's best class; the next ones (``--top-k``)
follow as ``classification_2``/``classification_prob_2``... (as many as the run kept).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Any, TextIO

from edge.batch.results import FileResult, RunInfo
from edge.inference.detector import Detection
from edge.outputs._common import clipped_detections, run_categories

COLUMNS = (
    "file", "width", "height", "frame", "label", "class_id", "detector_label", "confidence",
    "x_min", "y_min", "x_max", "y_max", "classification", "classification_prob", "failure",
)
INTEGER_COLUMNS = ("width", "height", "frame", "class_id")
NO_FRAME = -1  # ``frame`` of a photo
EMPTY_CLASS = 0  # ``class_id`` of a row without a detection (MegaDetector's "empty")


def columns(top_k: int) -> tuple[str, ...]:
    """The header for ``top_k`` classifications per detection."""
    extra = tuple(c for k in range(2, top_k + 1) for c in (f"classification_{k}", f"classification_prob_{k}"))
    return COLUMNS[:-1] + extra + COLUMNS[-1:]


def csv_rows(results: Sequence[FileResult], *, run: RunInfo) -> list[dict[str, Any]]:
    """The CSV rows for ``results`` as dicts keyed by :func:`columns` (absent keys are written empty).

    Raises:
        ValueError: a processed file has no size, or a class or classification cannot be named.
    """
    cats = run_categories(run)
    rows: list[dict[str, Any]] = []
    for result in results:
        if result.failure is not None:
            rows.append({"file": result.file, "width": 0, "height": 0, "frame": NO_FRAME,
                         "class_id": EMPTY_CLASS, "failure": result.failure})
            continue
        base = {"file": result.file, "width": result.width, "height": result.height}
        written = []
        for det, box in clipped_detections(result):
            category = cats.id_of(det.class_id)
            if category is not None:
                written.append((det, box, category))
        if not written:
            rows.append({**base, "frame": NO_FRAME, "class_id": EMPTY_CLASS})
        for det, (x1, y1, x2, y2), category in written:
            row = {
                **base,
                "frame": det.frame if result.is_video and det.frame is not None else NO_FRAME,
                "label": cats.names[category],
                "class_id": category,
                "detector_label": det.label,
                "confidence": round(float(det.score), 5),
                "x_min": round(x1, 2), "y_min": round(y1, 2), "x_max": round(x2, 2), "y_max": round(y2, 2),
            }
            for k, (name, prob) in enumerate(_classifications(det, run), start=1):
                suffix = "" if k == 1 else f"_{k}"
                row[f"classification{suffix}"], row[f"classification_prob{suffix}"] = name, round(prob, 5)
            rows.append(row)
    return rows


def write_csv(results: Sequence[FileResult], stream: TextIO, *, run: RunInfo) -> None:
    """Write ``results`` to ``stream`` (opened with ``newline=""``) as CSV with a header row."""
    rows = csv_rows(results, run=run)
    top_k = max((sum(key.startswith("classification_prob") for key in row) for row in rows), default=1)
    writer = csv.DictWriter(stream, fieldnames=columns(max(top_k, 1)), restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _classifications(det: Detection, run: RunInfo) -> list[tuple[str, float]]:
    """The detection's classifications, best first, by name."""
    if not det.classifications:
        return []
    if run.classifier is None:
        raise ValueError("a detection carries classifications but the run names no classifier")
    labels = run.classifier.labels
    out = []
    for class_id, prob in sorted(det.classifications, key=lambda cp: cp[1], reverse=True):
        if not 0 <= class_id < len(labels):
            raise ValueError(f"classification id {class_id} is outside the classifier's {len(labels)} labels")
        out.append((labels[class_id], float(prob)))
    return out

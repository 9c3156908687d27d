"""CSV writer: one row per detection, boxes in absolute pixels (clipped to the frame).

A file with no detections gets one row with the detection columns empty; a failed file gets one
row with ``failure`` set (and no size). ``frame`` is empty for still images. ``classification``
and ``classification_prob`` are the classifier's top class, when a classifier ran.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Any, TextIO

from edge.batch.results import FileResult, RunInfo
from edge.inference.detector import Detection
from edge.outputs._common import clipped_detections

COLUMNS = (
    "file", "width", "height", "frame", "label", "class_id", "confidence",
    "x_min", "y_min", "x_max", "y_max", "classification", "classification_prob", "failure",
)


def csv_rows(results: Sequence[FileResult], *, run: RunInfo) -> list[dict[str, Any]]:
    """The CSV rows for ``results`` as dicts keyed by ``COLUMNS`` (absent keys are written empty).

    Raises:
        ValueError: a processed file has no size, or a classification cannot be named.
    """
    rows: list[dict[str, Any]] = []
    for result in results:
        if result.failure is not None:
            rows.append({"file": result.file, "failure": result.failure})
            continue
        base = {"file": result.file, "width": result.width, "height": result.height}
        kept = clipped_detections(result)
        if not kept:
            rows.append(base)
        for det, (x1, y1, x2, y2) in kept:
            row = {
                **base,
                "frame": det.frame if result.is_video else None,
                "label": det.label,
                "class_id": det.class_id,
                "confidence": round(float(det.score), 5),
                "x_min": round(x1, 2), "y_min": round(y1, 2), "x_max": round(x2, 2), "y_max": round(y2, 2),
            }
            top = _top_classification(det, run)
            if top is not None:
                row["classification"], row["classification_prob"] = top[0], round(top[1], 5)
            rows.append(row)
    return rows


def write_csv(results: Sequence[FileResult], stream: TextIO, *, run: RunInfo) -> None:
    """Write ``results`` to ``stream`` (opened with ``newline=""``) as CSV with a header row."""
    writer = csv.DictWriter(stream, fieldnames=COLUMNS, restval="")
    writer.writeheader()
    for row in csv_rows(results, run=run):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _top_classification(det: Detection, run: RunInfo) -> tuple[str, float] | None:
    if not det.classifications:
        return None
    if run.classifier is None:
        raise ValueError("a detection carries classifications but the run names no classifier")
    class_id, prob = max(det.classifications, key=lambda cp: cp[1])
    labels = run.classifier.labels
    if not 0 <= class_id < len(labels):
        raise ValueError(f"classification id {class_id} is outside the classifier's {len(labels)} labels")
    return labels[class_id], float(prob)

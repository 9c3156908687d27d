"""COCO detection-results writer: ``images``, ``annotations`` (absolute xywh boxes) and ``categories``.

Category ids are ``class_id + 1``, as in the MegaDetector file (COCO keeps 0 for background).
A video becomes one image entry per processed frame, each with the video's path as ``file_name``
plus ``frame_index`` (the TAO / YouTube-VIS convention), so per-frame boxes stay usable.
Failed files have no size and no boxes, so they are left out (one warning gives the count).
Classifications are not part of COCO; use the megadetector or csv format for them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, TextIO

from edge.batch.results import FileResult, RunInfo
from edge.outputs._common import clipped_detections, completion_time

logger = logging.getLogger(__name__)


def to_coco(results: Sequence[FileResult], *, run: RunInfo) -> dict[str, Any]:
    """The COCO document for ``results``.

    Raises:
        ValueError: a processed file has no size, or a detection's class is not among the detector's labels.
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    n_classes = len(run.detector.labels)
    failed = 0
    for result in results:
        if result.failure is not None:
            failed += 1
            continue
        kept = clipped_detections(result)
        frames = result.frames_processed if result.is_video else [None]
        image_ids: dict[int | None, int] = {}
        for frame in frames or []:
            image: dict[str, Any] = {"id": len(images) + 1, "file_name": result.file,
                                     "width": result.width, "height": result.height}
            if frame is not None:
                image["frame_index"] = frame
            images.append(image)
            image_ids[frame] = image["id"]
        for det, (x1, y1, x2, y2) in kept:
            if not 0 <= det.class_id < n_classes:
                raise ValueError(f"{result.file}: class id {det.class_id} is outside the detector's labels")
            frame = det.frame if result.is_video else None
            if frame not in image_ids:
                raise ValueError(f"{result.file}: detection at frame {frame} is not a processed frame")
            w, h = round(x2 - x1, 2), round(y2 - y1, 2)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_ids[frame],
                "category_id": det.class_id + 1,
                "bbox": [round(x1, 2), round(y1, 2), w, h],
                "area": round(w * h, 2),
                "score": round(float(det.score), 5),
                "iscrowd": 0,
            })
    if failed:
        logger.warning("%d failed files are left out of the COCO file (it has no place for failures)",
                       failed)
    return {
        "info": {"description": f"wildedge detect with {run.detector.name}",
                 "date_created": completion_time(run)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": label} for i, label in enumerate(run.detector.labels)],
    }


def write_coco(results: Sequence[FileResult], stream: TextIO, *, run: RunInfo) -> None:
    """Write ``results`` to ``stream`` as a COCO detection-results JSON document."""
    json.dump(to_coco(results, run=run), stream, indent=1, allow_nan=False)
    stream.write("\n")

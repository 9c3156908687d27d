"""Helpers shared by the output writers: box clipping, file paths, completion time."""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime
from pathlib import Path, PurePath

from edge.batch.results import FileResult, RunInfo
from edge.inference.detector import Detection
from edge.outputs.categories import CategoryMap, native

Box = tuple[float, float, float, float]


def clip_box(box: Box, width: int, height: int) -> Box | None:
    """``box`` (xyxy pixels) clipped to the frame, or None when nothing of it is left inside."""
    x1, y1, x2, y2 = box
    x1, x2 = min(max(x1, 0.0), float(width)), min(max(x2, 0.0), float(width))
    y1, y2 = min(max(y1, 0.0), float(height)), min(max(y2, 0.0), float(height))
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def clipped_detections(result: FileResult) -> list[tuple[Detection, Box]]:
    """The file's detections with their clipped boxes, dropping those wholly outside the frame.

    Raises:
        ValueError: a successfully processed file has no width or height (a bug upstream).
    """
    if result.width <= 0 or result.height <= 0:
        raise ValueError(
            f"{result.file}: width and height are needed to write its boxes,"
            f" got {result.width}x{result.height}"
        )
    out = []
    for det in result.detections:
        box = clip_box(det.box, result.width, result.height)
        if box is not None:
            out.append((det, box))
    return out


def relative_to_base(result: FileResult, base_dir: str | os.PathLike[str]) -> FileResult:
    """``result`` with an absolute ``file`` rewritten relative to ``base_dir`` (forward slashes).

    Raises:
        ValueError: the file lies outside ``base_dir``.
    """
    path = PurePath(result.file)
    if not path.is_absolute():
        return result
    base = Path(os.path.abspath(base_dir))
    try:
        rel = Path(os.path.abspath(path)).relative_to(base)
    except ValueError as err:
        raise ValueError(f"{result.file} is not inside the base folder {base}") from err
    return dataclasses.replace(result, file=rel.as_posix())


def completion_time(run: RunInfo) -> str:
    """The run's completion time, or now when the caller left it blank."""
    return run.completed or datetime.now().strftime("%Y-%m-%d %H:%M:%S")



def run_categories(run: RunInfo) -> CategoryMap:
    """How the run's detector classes are written: ``run.categories``, else the detector's own."""
    return run.categories if run.categories is not None else native(run.detector.labels)

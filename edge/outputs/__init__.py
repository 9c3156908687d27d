"""Output writers of ``wildedge detect``: MegaDetector 1.6 JSON, COCO results JSON, and CSV.

Every writer is ``writer(results, stream, *, run)``; :func:`write_results` picks one by name and
writes its file atomically, so a crash or a full disk never leaves a half-written results file.
COCO is a pair: the results list, and (without ground truth) its image list beside it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TextIO

from edge.batch.results import FileResult, RunInfo
from edge.outputs._common import relative_to_base
from edge.outputs.coco import CocoGroundTruth, coco_images_path, write_coco, write_coco_images
from edge.outputs.csv import write_csv
from edge.outputs.megadetector import is_video_result, write_megadetector

logger = logging.getLogger(__name__)

__all__ = ["ADDAXAI_FILES", "WRITERS", "Writer", "write_addaxai", "write_results"]

# The names AddaxAI (formerly EcoAssist) looks for in the folder it is given: MegaDetector files with
# paths relative to that folder, photos and videos apart (as MegaDetector's batch and video scripts write them).
ADDAXAI_FILES = {"photos": "image_recognition_file.json", "videos": "video_recognition_file.json"}


class Writer(Protocol):
    """Writes a run's results to an open text stream."""

    def __call__(self, results: Sequence[FileResult], stream: TextIO, *, run: RunInfo) -> None: ...


WRITERS: dict[str, Writer] = {"megadetector": write_megadetector, "coco": write_coco, "csv": write_csv}


def write_results(
    fmt: str,
    results: Sequence[FileResult],
    path: str | os.PathLike[str],
    *,
    run: RunInfo,
    base_dir: str | os.PathLike[str] | None = None,
    coco_gt: CocoGroundTruth | None = None,
) -> Path:
    """Write ``results`` to ``path`` in format ``fmt``, replacing any file there atomically.

    Args:
        fmt: a key of ``WRITERS``.
        results: one entry per file, in the order they should appear.
        path: the output file; its folder must exist.
        run: the models of the run.
        base_dir: when given, absolute ``file`` paths are written relative to it.
        coco_gt: for ``coco``, the ground truth whose image and category ids the results take;
            without it the image list is written beside ``path`` (:func:`coco_images_path`).

    Returns:
        The path written.

    Raises:
        ValueError: ``fmt`` is unknown, a file lies outside ``base_dir``, or a result cannot be written.
        OSError: the file could not be written (the old file, if any, is left untouched).
    """
    try:
        writer = WRITERS[fmt]
    except KeyError:
        raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(WRITERS)}") from None
    if base_dir is not None:
        results = [relative_to_base(r, base_dir) for r in results]
    target = Path(path)
    if fmt == "coco":
        if coco_gt is None:
            images = coco_images_path(target)
            _atomic_write(images, lambda stream: write_coco_images(results, stream, run=run))
            logger.info("wrote the images and categories of the COCO results to %s", images)
        _atomic_write(target, lambda stream: write_coco(results, stream, run=run, gt=coco_gt))
    else:
        _atomic_write(target, lambda stream: writer(results, stream, run=run))
    logger.info("wrote %d results to %s (%s)", len(results), target, fmt)
    return target


def write_addaxai(results: Sequence[FileResult], folder: str | os.PathLike[str], *, run: RunInfo) -> list[Path]:
    """Write ``results`` (named relative to ``folder``) as AddaxAI's MegaDetector files in ``folder``.

    Photos go to ``image_recognition_file.json`` and videos to ``video_recognition_file.json``; a file
    is written only when the run has photos (videos).

    Raises:
        ValueError, OSError: as :func:`write_results`.
    """
    videos = [r for r in results if is_video_result(r)]
    photos = [r for r in results if not is_video_result(r)]
    return [write_results("megadetector", part, Path(folder) / ADDAXAI_FILES[kind], run=run, base_dir=folder)
            for kind, part in (("photos", photos), ("videos", videos)) if part]


def _atomic_write(target: Path, fill: Callable[[TextIO], None]) -> None:
    """Write through ``fill`` into a temp file beside ``target``, fsync it, then rename it over ``target``."""
    # A sibling temp file keeps os.replace on one filesystem, where it is atomic. os.open with 0o666
    # lets the umask pick the mode, as for a plain open(); mkstemp would force 0o600.
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "w", encoding="utf-8", newline="") as stream:
            fill(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; a no-op where folders cannot be opened (Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


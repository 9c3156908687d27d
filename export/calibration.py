"""Calibration images: found, counted, split, and read through the device's own preprocessing.

Every image goes through ``edge.imaging.read_image`` (reduced JPEG decode included, exactly as
``edge.batch.runner`` reads a photo) and ``edge.inference.preprocess.preprocess`` with the model
card's settings, so the activation ranges are measured on the tensors the device will feed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.errors import ExportError, ImageReadError
from edge.imaging import IMAGE_SUFFIXES, read_image
from edge.inference.card import ModelCard
from edge.inference.preprocess import preprocess

logger = logging.getLogger(__name__)

# Below 16 images the MinMax ranges are set by a handful of frames and every other scene clips;
# 16 is also the smallest set that still gives a usable held-out half when a folder is split.
MIN_IMAGES = 16
# From about 50 images on, the per-tensor ranges and the percentile/entropy histograms' tails
# settle (more images move the measured mAP by less than the 1-point budget); fewer still work,
# with a warning, because a user's own camera often has no more labelled frames than that.
RECOMMENDED_IMAGES = 50


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Photos under ``folder`` (recursive, hidden entries skipped), sorted by path.

    Raises:
        ExportError: ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ExportError(f"not a folder: {root}")
    found = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in files
                     if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(found)


def split_images(paths: Sequence[Path], *, root: Path | None = None) -> tuple[list[Path], list[Path]]:
    """Split photos in two halves, deterministically: ``(calibration, held out)``.

    The order is a hash of each path (relative to ``root`` when given), not the folder order: a
    camera's files are in time order, and the first half of a folder is often another day, another
    light, another season than the second. The calibration half gets the odd image out.
    """
    def key(path: Path) -> str:
        name = path.relative_to(root).as_posix() if root is not None else path.as_posix()
        return hashlib.sha256(name.encode()).hexdigest()

    ordered = sorted(paths, key=key)
    cut = (len(ordered) + 1) // 2
    return sorted(ordered[:cut]), sorted(ordered[cut:])


def check_count(count: int, where: str = "the calibration set") -> None:
    """Refuse too few calibration images; warn below the recommended number.

    Raises:
        ExportError: no images, or fewer than :data:`MIN_IMAGES`.
    """
    if count == 0:
        raise ExportError(f"no images in {where}")
    if count < MIN_IMAGES:
        raise ExportError(
            f"{where} has {count} images; calibration needs at least {MIN_IMAGES} "
            f"({RECOMMENDED_IMAGES} or more recommended) from the camera it will run on"
        )
    if count < RECOMMENDED_IMAGES:
        logger.warning("%s has %d images; %d or more are recommended for stable INT8 ranges",
                       where, count, RECOMMENDED_IMAGES)


def load_tensor(path: Path, card: ModelCard) -> np.ndarray:
    """One photo as the model's input tensor, read and preprocessed as on the device."""
    spec = card.preprocess
    # As BatchRunner: a letterbox needs the long side, a stretch or crop both sides at full size.
    cover = spec.resize in ("stretch", "centre_crop")
    decoded = read_image(path, needed=spec.input_size, cover=cover)
    tensor, _ = preprocess(decoded.image, spec)
    return tensor


class ImageReader:
    """An onnxruntime ``CalibrationDataReader`` over photo files (it implements ``get_next``, which
    is what that abstract class checks), rewindable so that the same images can be run again.

    Unreadable photos are skipped with a warning and listed in ``failed``.
    """

    def __init__(self, paths: Sequence[Path], card: ModelCard, input_name: str) -> None:
        self.paths = list(paths)
        self.card = card
        self.input_name = input_name
        self.failed: list[str] = []
        self._start, self._end = 0, len(self.paths)
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        while self._pos < self._end:
            path = self.paths[self._pos]
            self._pos += 1
            try:
                return {self.input_name: load_tensor(path, self.card)}
            except ImageReadError as err:
                if str(path) not in self.failed:
                    logger.warning("calibration: skipping %s", err)
                    self.failed.append(str(path))
        return None

    def __iter__(self) -> ImageReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def __len__(self) -> int:
        return len(self.paths)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Restrict to ``paths[start_index:end_index]`` (onnxruntime's strided calibration)."""
        self._start, self._end = max(0, start_index), min(len(self.paths), end_index)
        self._pos = self._start

    def rewind(self) -> ImageReader:
        """Start again from the first image (of the whole list); returns self."""
        self._start, self._end, self._pos = 0, len(self.paths), 0
        return self

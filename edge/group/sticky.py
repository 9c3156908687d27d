"""Sticky-card timelapse: which of a frame's detections are new arrivals rather than insects already stuck.

Insects on a sticky card accumulate, so a per-frame count is a running total. The filter matches
each frame's detections against the objects it remembers from earlier frames and marks the rest
new, so that counts are arrivals. Boxes are compared as fractions of the frame size, so a change of
resolution between frames does not break matching. A remembered object that is not seen stays
matchable for ``memory`` more frames (an insect briefly covered by a passing one is not new twice),
then it is forgotten and counted in ``last_gone`` (fell off, or covered for good).

When frames are given, a global translation of the card between frames (it was bumped, or the
camera mount sagged) is estimated by phase correlation of downscaled grey frames and applied to the
remembered boxes before matching.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from edge.inference.detector import Detection

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4): an (N, M) array."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0.0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0.0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0.0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs with IoU >= ``threshold``, the highest IoU taken first.

    Not scipy's Hungarian (linear_sum_assignment): scipy is not a device dependency, and greedy
    highest-IoU-first is what trackers such as ByteTrack use at this size; the two only differ when
    boxes overlap each other heavily, which stuck insects of one card rarely do.
    """
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    pairs = []
    for r, c in zip(rows[order].tolist(), cols[order].tolist()):
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return pairs


def _grey_small(image: np.ndarray, width: int) -> np.ndarray:
    """``image`` (grey, BGR or BGRA) as a float32 grey frame ``width`` pixels wide."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    elif image.ndim != 2:
        raise ValueError(f"image must be grey (H, W) or colour (H, W, 3|4), got shape {image.shape}")
    h, w = image.shape
    height = max(8, round(h * width / w))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)


class NewObjectFilter:
    """Marks each frame's detections new or already seen, for a sticky-card timelapse.

    ``iou``: the least IoU at which a detection matches a remembered object; ``class_aware``: only
    objects of the same detector class match; ``memory``: frames an unseen object stays matchable;
    ``align_width``: width of the grey frames used to estimate the card's shift; ``max_shift``: the
    largest believable shift as a fraction of the frame side (a bigger estimate is ignored);
    ``min_response``: the least phase-correlation peak that is trusted.
    """

    def __init__(
        self,
        *,
        iou: float = 0.3,
        class_aware: bool = True,
        memory: int = 1,
        align_width: int = 512,
        max_shift: float = 0.15,
        min_response: float = 0.05,
    ) -> None:
        if not 0.0 < iou <= 1.0:
            raise ValueError(f"iou must be within (0, 1], got {iou}")
        if memory < 0:
            raise ValueError(f"memory must be >= 0, got {memory}")
        if align_width < 16:
            raise ValueError(f"align_width must be >= 16, got {align_width}")
        if not 0.0 <= max_shift <= 1.0:
            raise ValueError(f"max_shift must be within [0, 1], got {max_shift}")
        if not 0.0 <= min_response <= 1.0:
            raise ValueError(f"min_response must be within [0, 1], got {min_response}")
        self.iou = iou
        self.class_aware = class_aware
        self.memory = memory
        self.align_width = align_width
        self.max_shift = max_shift
        self.min_response = min_response
        self.last_gone = 0
        self.last_missing = 0
        self.last_shift: tuple[float, float] | None = None
        self._boxes = np.zeros((0, 4), np.float64)
        self._classes = np.zeros(0, np.int64)
        self._unseen = np.zeros(0, np.int64)  # frames since each remembered object was last matched
        self._grey: np.ndarray | None = None

    @property
    def tracked(self) -> int:
        """How many objects are remembered (seen in the last frame or within ``memory``)."""
        return len(self._boxes)

    def remembered(self) -> list[tuple[Box, int]]:
        """The remembered objects as (normalised box, class id), the form ``reset`` takes."""
        return [(tuple(float(v) for v in box), int(c)) for box, c in zip(self._boxes, self._classes)]

    def reset(
        self, previous: Sequence[tuple[Sequence[float], int]], *, image: np.ndarray | None = None
    ) -> None:
        """Forget everything, then remember ``previous`` (normalised xyxy box, class id) as just seen.

        After a restart the daemon restores the last frame's detections from its store; ``image``,
        the last frame when it was kept, lets the next update estimate a shift.
        """
        if any(len(box) != 4 for box, _ in previous):
            raise ValueError("reset: every box must be (x1, y1, x2, y2)")
        boxes = np.asarray([box for box, _ in previous], np.float64).reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise ValueError("reset: boxes must be finite")
        self._boxes = boxes
        self._classes = np.asarray([int(c) for _, c in previous], np.int64)
        self._unseen = np.zeros(len(boxes), np.int64)
        self._grey = None if image is None else _grey_small(image, self.align_width)
        self.last_gone = self.last_missing = 0
        self.last_shift = None

    def _estimate_shift(self, image: np.ndarray | None) -> tuple[float, float] | None:
        """The card's translation since the previous frame as fractions of the frame size, or None."""
        previous, self._grey = self._grey, None if image is None else _grey_small(image, self.align_width)
        if previous is None or self._grey is None or previous.shape != self._grey.shape:
            return None
        h, w = previous.shape
        # The Hanning window stops the frame's edges (a wrap-around discontinuity to the FFT) from
        # pulling the peak towards zero shift.
        window = cv2.createHanningWindow((w, h), cv2.CV_32F)
        (dx, dy), response = cv2.phaseCorrelate(previous, self._grey, window)
        shift = (dx / w, dy / h)
        if response < self.min_response or max(abs(shift[0]), abs(shift[1])) > self.max_shift:
            logger.debug("card shift estimate ignored: (%.4f, %.4f), response %.3f", *shift, response)
            return None
        return shift

    def update(
        self, detections: Sequence[Detection], *, width: int, height: int, image: np.ndarray | None = None
    ) -> list[bool]:
        """Match one frame's detections to the remembered objects; True marks a new one.

        Args:
            detections: the frame's detections, boxes in pixels of a ``width`` x ``height`` frame.
            image: the frame (grey or BGR); when given, and given for the previous frame too, the
                card's global shift is estimated and applied before matching.
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        scale = np.array([width, height, width, height], np.float64)
        boxes = np.asarray([d.box for d in detections], np.float64).reshape(-1, 4) / scale
        classes = np.asarray([d.class_id for d in detections], np.int64)

        self.last_shift = self._estimate_shift(image)
        if self.last_shift is not None and len(self._boxes):
            dx, dy = self.last_shift
            self._boxes = self._boxes + np.array([dx, dy, dx, dy])

        iou = iou_matrix(self._boxes, boxes)
        if self.class_aware:
            iou[self._classes[:, None] != classes[None, :]] = 0.0
        pairs = greedy_match(iou, self.iou)
        new = np.ones(len(boxes), bool)
        seen = np.zeros(len(self._boxes), bool)
        for r, c in pairs:
            new[c] = False
            seen[r] = True

        # Matched objects take their current box (slow drift is followed); unmatched ones age.
        unseen = self._unseen + 1
        unseen[seen] = 0
        keep = ~seen & (unseen <= self.memory)
        self.last_missing = int(keep.sum())
        self.last_gone = int((~seen & ~keep).sum())
        self._boxes = np.concatenate([self._boxes[keep], boxes])
        self._classes = np.concatenate([self._classes[keep], classes])
        self._unseen = np.concatenate([unseen[keep], np.zeros(len(boxes), np.int64)])
        if self.last_gone or new.any():
            logger.debug("sticky: %d new, %d gone, %d missing, %d tracked",
                         int(new.sum()), self.last_gone, self.last_missing, self.tracked)
        return new.tolist()

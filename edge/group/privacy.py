"""What happens to a frame with a person in it: drop the image, blur the people, or keep it.

Camera traps photograph hikers, rangers and poachers; their images must not leave the device
unless the operator chose so. Detections are always kept (a person count is data); only the
image is dropped or blurred. Crops of people are never published, whatever the mode.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from edge.inference.detector import Detection

logger = logging.getLogger(__name__)

PrivacyMode = Literal["drop", "blur", "keep"]
MODES: tuple[str, ...] = ("drop", "blur", "keep")

GROW = 0.10  # each side of a person box moves out by this fraction of the box: limbs and hair outside the box
BLOCKS = 10  # the box's longer side is pixelated to this many blocks: a face becomes a few blocks at most


@dataclass(slots=True)
class PrivacyOutcome:
    """The image to keep (None when dropped), whether a person was seen, how many boxes were blurred."""

    image: np.ndarray | None
    person: bool
    blurred: int = 0


def pixelate(region: np.ndarray) -> np.ndarray:
    """``region`` pixelated to ``BLOCKS`` blocks along its longer side, then blurred: a new array.

    The block size is relative to the region, so a person filling a 12 MP frame is as unrecognisable
    as one 50 px tall. The box filter after pixelation hides the block edges; it costs the same at
    any kernel size, unlike a Gaussian.
    """
    h, w = region.shape[:2]
    block = max(2, math.ceil(max(h, w) / BLOCKS))
    small = cv2.resize(region, (max(1, math.ceil(w / block)), max(1, math.ceil(h / block))),
                       interpolation=cv2.INTER_AREA)
    blocky = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    return cv2.blur(blocky, (block, block)).reshape(region.shape)  # cv2 drops a single channel axis


class PrivacyPolicy:
    """Applies the operator's choice to frames that show a person.

    ``mode``: drop (keep no image), blur (blur each person box), keep (unchanged); ``labels``:
    detector labels that mean a person, compared case-insensitively; ``min_score``: the least
    detector score at which a person detection counts for the image.
    """

    def __init__(
        self,
        *,
        mode: PrivacyMode = "drop",
        labels: Collection[str] = ("person", "human"),
        min_score: float = 0.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"privacy mode must be one of {', '.join(MODES)}, got {mode!r}")
        if isinstance(labels, str):
            raise TypeError(f"labels must be a collection of labels, not the string {labels!r}")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], got {min_score}")
        self.mode = mode
        self.labels = frozenset(label.strip().casefold() for label in labels)
        self.min_score = min_score

    def is_person_label(self, label: str) -> bool:
        return label.strip().casefold() in self.labels

    def is_person(self, detection: Detection) -> bool:
        """True when ``detection`` is a person at or above ``min_score``."""
        return self.is_person_label(detection.label) and detection.score >= self.min_score

    def crop_allowed(self, detection: Detection) -> bool:
        """False for any person detection, whatever its score: no person crop is ever published."""
        return not self.is_person_label(detection.label)

    def apply(self, image: np.ndarray, detections: Sequence[Detection]) -> PrivacyOutcome:
        """The image to keep for a frame, per the mode; ``image`` itself is never modified.

        Args:
            image: the frame (H, W) or (H, W, C), in the detections' pixel coordinates.
            detections: the frame's detections.
        """
        if image.ndim not in (2, 3):
            raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
        people = [d for d in detections if self.is_person(d)]
        if not people or self.mode == "keep":
            return PrivacyOutcome(image, bool(people))
        if self.mode == "drop":
            return PrivacyOutcome(None, True)
        out, blurred = _blur(image, people)
        return PrivacyOutcome(out, True, blurred)

    def for_crop(self, image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
        """``image`` with every person box pixelated (any score, any mode), to cut a crop from.

        A crop leaves the device, so a person beside the animal it shows is hidden even in ``keep``
        mode; ``image`` itself is returned (not copied) when there is no person.
        """
        people = [d for d in detections if self.is_person_label(d.label)]
        return _blur(image, people)[0] if people else image


def _blur(image: np.ndarray, people: Sequence[Detection]) -> tuple[np.ndarray, int]:
    """A copy of ``image`` with each box of ``people``, grown by ``GROW``, pixelated; how many were."""
    out = image.copy()
    height, width = image.shape[:2]
    blurred = 0
    for det in people:
        x1, y1, x2, y2 = det.box
        gx, gy = (x2 - x1) * GROW, (y2 - y1) * GROW
        left, top = max(0, math.floor(x1 - gx)), max(0, math.floor(y1 - gy))
        right, bottom = min(width, math.ceil(x2 + gx)), min(height, math.ceil(y2 + gy))
        if right <= left or bottom <= top:
            continue
        # Overlapping boxes read the already-blurred pixels: blurring twice only blurs more.
        out[top:bottom, left:right] = pixelate(out[top:bottom, left:right])
        blurred += 1
    return out, blurred

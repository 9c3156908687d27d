"""Motion: frame difference against a running-average background on the camera's preview stream.

The detector follows Frigate's: downscale, blur, compare with a running average, threshold, dilate,
find contours, keep those big enough. Frames are cast to float32 before any arithmetic (a uint8
difference wraps: 10 - 20 = 246, picamera2's example detector has that bug). A change over most of
the frame (IR switching day/night, a cloud, auto-exposure) is light, not an animal: the background
is reset to the new frame and nothing fires.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edge.triggers.base import Fire, as_utc

if TYPE_CHECKING:
    from edge.capture.base import Camera
    from edge.triggers.windows import ActiveWindows

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class MotionResult:
    """What one preview frame showed.

    ``area`` is the fraction of the frame covered by the moving regions (for a recalibration: the
    fraction that changed); ``boxes`` are their bounding boxes, ``(x1, y1, x2, y2)`` in the pixels of
    the frame given to :meth:`MotionDetector.update`.
    """

    motion: bool
    area: float
    boxes: list[Box] = field(default_factory=list)
    recalibrated: bool = False


class MotionDetector:
    """Running-average frame differencing on greyscale frames.

    Args:
        threshold: grey-level difference (0-255) from the background that counts as changed.
        min_area: smallest moving region, as a fraction of the frame.
        max_area: a change over more than this fraction resets the background (light, not motion).
        blur: Gaussian kernel size in working pixels (odd; 1 = no blur).
        alpha: weight of each new frame in the running-average background.
        dilate: dilation iterations that join the parts of one moving object.
        width: frames wider than this are downscaled to it first.

    Raises:
        ValueError: an option is out of range.
    """

    def __init__(
        self,
        *,
        threshold: int = 25,
        min_area: float = 0.002,
        max_area: float = 0.6,
        blur: int = 5,
        alpha: float = 0.1,
        dilate: int = 2,
        width: int = 320,
    ) -> None:
        if not 1 <= threshold <= 255:
            raise ValueError(f"threshold must be within 1..255 (got {threshold})")
        if not 0 < min_area < max_area <= 1:
            raise ValueError(f"need 0 < min_area < max_area <= 1 (got {min_area}, {max_area})")
        if blur < 1 or blur % 2 == 0:
            raise ValueError(f"blur must be an odd number of pixels (got {blur})")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be within (0, 1] (got {alpha})")
        if dilate < 0 or width < 16:
            raise ValueError(f"need dilate >= 0 and width >= 16 (got {dilate}, {width})")
        self.threshold = threshold
        self.min_area = min_area
        self.max_area = max_area
        self.blur = blur
        self.alpha = alpha
        self.dilate = dilate
        self.width = width
        self._background: np.ndarray | None = None
        self._input_shape: tuple[int, ...] | None = None

    def reset(self) -> None:
        """Forget the background; the next frame only initialises it."""
        self._background = None

    def update(self, frame: np.ndarray) -> MotionResult:
        """Compare ``frame`` (grey or BGR, any size) with the background, then fold it in."""
        grey, scale = self._prepare(frame)
        if self._background is None or self._input_shape != frame.shape[:2]:
            self._background = grey
            self._input_shape = frame.shape[:2]
            return MotionResult(False, 0.0)
        diff = cv2.absdiff(grey, self._background)
        mask = np.where(diff > self.threshold, np.uint8(255), np.uint8(0))
        changed = cv2.countNonZero(mask) / mask.size
        if changed > self.max_area:
            self._background = grey
            return MotionResult(False, changed, recalibrated=True)
        cv2.accumulateWeighted(grey, self._background, self.alpha)
        if self.dilate:
            mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=self.dilate)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        smallest = self.min_area * mask.size
        boxes: list[Box] = []
        area = 0.0
        height, width = frame.shape[:2]
        for contour in contours:
            size = cv2.contourArea(contour)
            if size < smallest:
                continue
            area += size
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append((int(x * scale), int(y * scale),
                          min(width, round((x + w) * scale)), min(height, round((y + h) * scale))))
        return MotionResult(bool(boxes), area / mask.size, sorted(boxes))

    def _prepare(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """The blurred float32 working frame and the factor back to the input's pixels."""
        if not isinstance(frame, np.ndarray) or frame.size == 0:
            raise ValueError("need a non-empty image array")
        # Cast first: every later subtraction and average must not wrap around uint8.
        image = frame.astype(np.float32)
        if image.ndim == 3 and image.shape[2] in (3, 4):
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
        elif image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        elif image.ndim != 2:
            raise ValueError(f"need a grey (H, W) or BGR (H, W, 3) image (got shape {frame.shape})")
        height, width = image.shape
        scale = 1.0
        if width > self.width:
            scale = width / self.width
            size = (self.width, max(1, round(height / scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if self.blur > 1:
            image = cv2.GaussianBlur(image, (self.blur, self.blur), 0)
        return np.ascontiguousarray(image, dtype=np.float32), scale


class MotionTrigger:
    """Poll the camera's preview ``fps`` times a second and fire on motion, then stay quiet for ``cooldown``.

    Args:
        detector: the frame-difference detector.
        fps: preview frames examined per second.
        cooldown: no firing this long after the last one (the detector keeps learning meanwhile).
        windows: when the trigger may fire; None = always.
        burst: frames per firing.

    Raises:
        ValueError: an option is out of range.
    """

    def __init__(
        self,
        detector: MotionDetector,
        *,
        fps: float = 2.0,
        cooldown: timedelta = timedelta(seconds=10),
        windows: ActiveWindows | None = None,
        burst: int = 1,
    ) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be more than 0 (got {fps})")
        if cooldown < timedelta(0) or burst < 1:
            raise ValueError(f"need cooldown >= 0 and burst >= 1 (got {cooldown}, {burst})")
        self.detector = detector
        self.period = timedelta(seconds=1.0 / fps)
        self.cooldown = cooldown
        self.windows = windows if windows is not None and not windows.always else None
        self.burst = burst
        # A background older than this shows everything that changed meanwhile: start afresh.
        self._stale = max(timedelta(seconds=60), 10 * self.period)
        self._last_poll: datetime | None = None
        self._last_fire: datetime | None = None
        self._no_preview = False
        self.polls = 0
        self.fired = 0
        self.suppressed = 0  # motion seen during the cooldown

    def due(self, now: datetime) -> datetime | None:
        """The next poll time, or the next window start while outside the windows."""
        now = as_utc(now)
        if self._last_poll is not None and now < self._last_poll - self.period:
            logger.warning("clock stepped back from %s to %s: motion polling restarts", self._last_poll, now)
            self._last_poll = self._last_fire = None
        after = now if self._last_poll is None else self._last_poll + self.period
        if self.windows is not None and not self.windows.is_active(after):
            return self.windows.next_active(after)
        return after

    def check(self, now: datetime, camera: Camera) -> Fire | None:
        """Run the detector on one preview frame; a :class:`Fire` on motion outside the cooldown."""
        now = as_utc(now)
        if self.windows is not None and not self.windows.is_active(now):
            return None
        if self._last_poll is None or now - self._last_poll > self._stale:
            self.detector.reset()
        self._last_poll = now
        self.polls += 1
        frame = camera.preview()
        if frame is None:
            if not self._no_preview:
                logger.warning("camera %s gives no preview frame: no motion can be seen until it does",
                               getattr(camera, "name", "?"))
                self._no_preview = True
            return None
        if self._no_preview:
            logger.info("camera %s preview is back: motion detection resumes", getattr(camera, "name", "?"))
            self._no_preview = False
            self.detector.reset()
        result = self.detector.update(frame)
        if result.recalibrated:
            logger.info("motion: %.0f%% of the frame changed at once (light, not motion): background reset",
                        100 * result.area)
        if not result.motion:
            return None
        if self._last_fire is not None and now - self._last_fire < self.cooldown:
            self.suppressed += 1
            return None
        self._last_fire = now
        self.fired += 1
        return Fire("motion", now, burst=self.burst,
                    detail={"area": round(result.area, 6), "boxes": [list(box) for box in result.boxes]})


"""The Raspberry Pi camera through picamera2 (libcamera): a full-resolution still stream plus a
small YUV stream for motion detection.

picamera2 comes from apt on Raspberry Pi OS, not from PyPI, and probes the camera when imported, so
it is imported only inside :meth:`Picamera2Camera.open`.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import numpy as np

from edge.capture.base import Frame
from edge.clock import Clock
from edge.errors import CaptureError, ConfigError

logger = logging.getLogger(__name__)

MISSING = ("picamera2 is not installed: on Raspberry Pi OS `sudo apt install python3-picamera2` "
           "and create the venv with --system-site-packages")
# Measured by the camera's control loops; locking these freezes exposure and white balance.
_LOCKED = ("ExposureTime", "AnalogueGain", "ColourGains")


class Picamera2Camera:
    """A Raspberry Pi camera module (any libcamera sensor).

    Args:
        width, height: size of the stills (``capture``).
        lores_width, lores_height: size of the grey frames ``preview`` gives for motion detection.
        settle: time given to auto-exposure and white balance after starting.
        lock_exposure: after settling, fix exposure, gain and colour gains at what the control loops
            found, so that timelapse frames are comparable.
        clock: stamps the frames and waits ``settle``.
    """

    name = "picamera2"

    def __init__(
        self,
        *,
        width: int,
        height: int,
        lores_width: int = 320,
        lores_height: int = 240,
        settle: timedelta = timedelta(seconds=2),
        lock_exposure: bool = False,
        clock: Clock,
    ) -> None:
        if min(width, height, lores_width, lores_height) <= 0:
            raise ValueError("camera sizes must be positive")
        if lores_width > width or lores_height > height:
            raise ValueError("the lores stream must not be larger than the main stream")
        if settle < timedelta(0):
            raise ValueError("settle must not be negative")
        self.size = (width, height)
        self.lores_size = (lores_width, lores_height)
        self.settle = settle
        self.lock_exposure = lock_exposure
        self.locked: dict[str, Any] | None = None  # the controls fixed by lock_exposure
        self._clock = clock
        self._camera: Any = None

    def open(self) -> None:
        """Configure and start the camera, let it settle, lock exposure when asked.

        Raises:
            ConfigError: picamera2 is not installed.
            CaptureError: no camera, or it could not be configured or started.
        """
        self.close()
        try:
            from picamera2 import Picamera2
        except ImportError as err:
            raise ConfigError(MISSING) from err
        camera = None
        # picamera2 and libcamera raise assorted types (IndexError with no camera attached,
        # RuntimeError from the pipeline); all of them mean the device failed.
        try:
            camera = Picamera2()
            config = camera.create_still_configuration(
                main={"size": self.size, "format": "RGB888"},
                lores={"size": self.lores_size, "format": "YUV420"},
            )
            camera.configure(config)
            lores = camera.camera_configuration().get("lores") or {}
            camera.start()
        except Exception as err:
            if camera is not None:
                _shutdown(camera)
            raise CaptureError(f"cannot start the Raspberry Pi camera: {err}") from err
        # libcamera may round a size to what the ISP can do; the Y plane is read at the real one.
        self.lores_size = tuple(lores.get("size", self.lores_size))  # type: ignore[assignment]
        self._camera = camera
        logger.info("picamera2: started %dx%d (lores %dx%d)", *self.size, *self.lores_size)
        self._clock.sleep(self.settle.total_seconds())
        if self.lock_exposure:
            self._lock()

    def _lock(self) -> None:
        try:
            metadata = self._camera.capture_metadata()
            controls: dict[str, Any] = {"AeEnable": False, "AwbEnable": False}
            controls.update({key: metadata[key] for key in _LOCKED if key in metadata})
            self._camera.set_controls(controls)
        except Exception as err:
            self.close()
            raise CaptureError(f"cannot lock the exposure: {err}") from err
        self.locked = controls
        logger.info("picamera2: exposure locked: %s", controls)

    def _array(self, stream: str) -> np.ndarray:
        if self._camera is None:
            raise RuntimeError("picamera2: used before open()")
        try:
            return self._camera.capture_array(stream)
        except Exception as err:
            raise CaptureError(f"picamera2: capture from the {stream} stream failed: {err}") from err

    def capture(self) -> Frame:
        """A full-resolution still.

        Raises:
            CaptureError: the camera failed.
        """
        # picamera2's "RGB888" is a libcamera/DRM fourcc name: the bytes are B, G, R, which is
        # exactly OpenCV's BGR order, so no conversion.
        image = self._array("main")
        return Frame(image=image, captured_at=self._clock.now(), monotonic=self._clock.monotonic())

    def preview(self) -> np.ndarray:
        """The lores frame's luminance (Y) plane: a grey frame for motion detection."""
        # YUV420 comes as one (height * 3/2, stride) array: the Y rows first, then U and V.
        width, height = self.lores_size
        return np.ascontiguousarray(self._array("lores")[:height, :width])

    def close(self) -> None:
        if self._camera is not None:
            camera, self._camera = self._camera, None
            _shutdown(camera)

    def __enter__(self) -> Picamera2Camera:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shutdown(camera: Any) -> None:
    """Stop and close, logging (not raising) a failure: this runs on the way out of errors."""
    for step in (camera.stop, camera.close):
        try:
            step()
        except Exception as err:
            logger.warning("picamera2: %s failed: %s", step.__name__, err)

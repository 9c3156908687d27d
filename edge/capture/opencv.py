"""OpenCV ``VideoCapture`` as a camera: a USB camera index, an RTSP/HTTP stream, or a video file.

A live source keeps producing frames whether or not anyone reads them, and OpenCV queues them
(the V4L2 driver's buffers, FFmpeg's network buffer): read one every few seconds and you get a frame
from seconds ago. So a live source gets a grabber thread that owns the ``VideoCapture`` and keeps
``grab()``-bing (cheap: no colour conversion); ``capture`` asks it to ``retrieve()`` the next frame it
grabs, which is therefore the freshest. A video file is read in order, frame by frame, and ends.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from edge.capture.base import Frame
from edge.clock import Clock
from edge.errors import CaptureError

logger = logging.getLogger(__name__)


def describe_source(source: int | str) -> str:
    """The source as it may appear in logs and health: a stream URL without its password."""
    if isinstance(source, int):
        return f"camera {source}"
    parts = urlsplit(source)
    if parts.password is None:
        return source
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _is_live(source: int | str) -> bool:
    if isinstance(source, int):
        return True
    return "://" in source or source.startswith("/dev/")


def grey_preview(image: np.ndarray, width: int) -> np.ndarray:
    """``image`` as greyscale, shrunk to ``width`` pixels wide (never enlarged)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    height, full_width = grey.shape[:2]
    if full_width <= width:
        return grey
    size = (width, max(1, round(height * width / full_width)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


class _Grabber:
    """Owns a live ``VideoCapture`` on its own thread: grabs every frame, retrieves on request."""

    def __init__(self, cap: cv2.VideoCapture, name: str) -> None:
        self._cap = cap
        self._name = name
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._wanted = False
        self._image: np.ndarray | None = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"grab {name}", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                # grab() blocks until the next frame arrives; it runs outside the lock so that a
                # stalled stream never blocks ``latest`` past its timeout.
                if not self._cap.grab():
                    self._fail("the source stopped delivering frames")
                    return
                with self._cond:
                    if not self._wanted:
                        continue
                    ok, image = self._cap.retrieve()
                    if not ok or image is None:
                        self._fail("a grabbed frame could not be decoded")
                        return
                    self._image, self._wanted = image, False
                    self._cond.notify_all()
        except cv2.error as err:
            self._fail(f"OpenCV error: {err}")
        finally:
            # The thread releases the device itself: close() may have given up waiting on a stalled
            # grab(), and releasing under a running grab() would crash.
            self._cap.release()

    def _fail(self, message: str) -> None:
        with self._cond:
            self.error = message
            self._cond.notify_all()

    def latest(self, timeout: float) -> np.ndarray:
        """The next frame grabbed after this call."""
        with self._cond:
            if self.error is None:
                self._wanted, self._image = True, None
                self._cond.wait_for(lambda: self._image is not None or self.error is not None, timeout)
            if self.error is not None:
                raise CaptureError(f"{self._name}: {self.error}")
            if self._image is None:
                self._wanted = False
                raise CaptureError(f"{self._name}: no frame for {timeout:g} s")
            image, self._image = self._image, None
            return image

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            logger.warning("%s: the grabber is stuck in a read; it will release the device when that ends",
                           self._name)


class OpenCVCamera:
    """A ``cv2.VideoCapture`` source (see the module docstring).

    Args:
        source: a camera index, a stream URL (rtsp://, http://) or a video file path.
        width, height: requested size of a live camera; the driver may pick another (logged).
        preview_width: width of the grey frames ``preview`` gives for motion detection.
        live: whether ``source`` is a live stream; None decides from the source (an index, a URL or
            a /dev path is live, anything else is a file).
        timeout: seconds a live source may go without a frame before ``capture`` fails.
        clock: stamps the frames.
    """

    def __init__(
        self,
        source: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        preview_width: int = 320,
        live: bool | None = None,
        timeout: float = 10.0,
        clock: Clock,
    ) -> None:
        if isinstance(source, bool) or not isinstance(source, (int, str)) or source == "" or (
                isinstance(source, int) and source < 0):
            raise ValueError(f"source must be a camera index, a URL or a file path, not {source!r}")
        for label, value in (("width", width), ("height", height)):
            if value is not None and value <= 0:
                raise ValueError(f"{label} must be positive")
        if preview_width < 16:
            raise ValueError("preview_width must be at least 16")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.source = source
        self.live = _is_live(source) if live is None else live
        if not self.live and (width is not None or height is not None):
            raise ValueError("width and height apply to live cameras; a video file plays at its own size")
        self.name = f"opencv:{describe_source(source)}"
        self._width, self._height = width, height
        self._preview_width = preview_width
        self._timeout = timeout
        self._clock = clock
        self._cap: cv2.VideoCapture | None = None
        self._grabber: _Grabber | None = None
        self._held: np.ndarray | None = None  # file: the frame a preview read, for the next capture
        self._ended = False
        self.frames_read = 0

    def open(self) -> None:
        """Open the source; a live one starts its grabber thread.

        Raises:
            CaptureError: the source cannot be opened.
        """
        self.close()
        try:
            cap = cv2.VideoCapture(self.source)
        except cv2.error as err:
            raise CaptureError(f"cannot open video source {describe_source(self.source)}: {err}") from err
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"cannot open video source {describe_source(self.source)}")
        if self.live:
            self._configure(cap)
        self._cap, self._ended, self._held, self.frames_read = cap, False, None, 0
        if self.live:
            self._grabber = _Grabber(cap, self.name)
            self._grabber.thread.start()
        logger.info("%s: opened (%dx%d)", self.name, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                    int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def _configure(self, cap: cv2.VideoCapture) -> None:
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # honoured by V4L2; the grabber covers the rest
        if self._width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self._width)
        if self._height is not None:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self._height)
        got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        wanted = (self._width or got[0], self._height or got[1])
        if got != wanted:
            logger.warning("%s: asked for %dx%d, the device gives %dx%d", self.name, *wanted, *got)

    def _next_image(self) -> np.ndarray | None:
        if self._cap is None:
            raise RuntimeError(f"{self.name}: used before open()")
        if self._grabber is not None:
            return self._grabber.latest(self._timeout)
        if self._held is not None:
            image, self._held = self._held, None
            return image
        if self._ended:
            return None
        try:
            ok, image = self._cap.read()
        except cv2.error as err:
            raise CaptureError(f"{self.name}: OpenCV error: {err}") from err
        if not ok or image is None:
            self._ended = True
            logger.info("%s: end of video after %d frames", self.name, self.frames_read)
            return None
        return image

    def capture(self) -> Frame | None:
        """The freshest frame of a live source; the next frame of a file (None at its end).

        Raises:
            CaptureError: a live source failed or delivered nothing for ``timeout`` seconds.
        """
        image = self._next_image()
        if image is None:
            return None
        self.frames_read += 1
        return Frame(image=image, captured_at=self._clock.now(), monotonic=self._clock.monotonic())

    def preview(self) -> np.ndarray | None:
        """A small grey frame for motion detection (a file: the frame the next capture returns)."""
        image = self._next_image()
        if image is None:
            return None
        if self._grabber is None:
            self._held = image
        return grey_preview(image, self._preview_width)

    @property
    def exhausted(self) -> bool:
        """A video file has been read to its end."""
        return self._ended and self._held is None

    def close(self) -> None:
        if self._grabber is not None:
            self._grabber.stop(timeout=min(5.0, self._timeout))
            self._grabber = None
        elif self._cap is not None:
            self._cap.release()
        self._cap = None
        self._held = None

    def __enter__(self) -> OpenCVCamera:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

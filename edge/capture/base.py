"""The ``Camera`` seam: what every capture backend gives the daemon."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np


@dataclass(slots=True)
class Frame:
    """One captured still.

    ``image`` is BGR uint8 at full resolution. ``source`` is the file a folder camera read (absolute
    path) and None for live cameras. ``captured_at`` is UTC wall time (for a folder camera: the
    photo's EXIF capture time, else the file's modification time), ``monotonic`` boot-relative
    seconds at capture.
    """

    image: np.ndarray
    captured_at: datetime
    monotonic: float
    source: str | None = None


class Camera(Protocol):
    """A source of frames; a context manager (``open`` on enter, ``close`` on exit).

    ``capture`` returns None when no frame is available right now (a watched folder with nothing
    new, a replayed folder at its end) and raises :class:`edge.errors.CaptureError` when the device
    failed. ``preview`` gives a small greyscale frame for motion detection, or None when the backend
    has no cheap low-resolution stream.
    """

    name: str

    def open(self) -> None: ...

    def capture(self) -> Frame | None: ...

    def preview(self) -> np.ndarray | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Camera: ...

    def __exit__(self, *exc: object) -> None: ...

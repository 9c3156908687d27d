"""A scripted camera for tests of the daemon: given frames, failures where asked, counted calls."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence

import numpy as np

from edge.capture.base import Frame
from edge.clock import Clock
from edge.errors import CaptureError

logger = logging.getLogger(__name__)

Source = Sequence[np.ndarray] | Callable[[int], np.ndarray]


def _pick(source: Source, index: int, loop: bool) -> np.ndarray | None:
    if callable(source):
        return source(index)
    if not len(source):
        return None
    if loop:
        index %= len(source)
    return source[index] if index < len(source) else None


class FakeCamera:
    """Frames in order (or ``frames(i)`` for the i-th frame delivered), stamped with ``clock``.

    Args:
        frames: the images, or a function of the frame number.
        clock: stamps the frames.
        fail_on: capture() call numbers (0-based, counting failed calls) that raise CaptureError;
            a failed call delivers no frame, so the next call gets the frame it would have.
        fail_open: how many first open() calls raise CaptureError.
        previews: grey frames for preview() in order (or a function of the preview number); None:
            preview() returns None, as a camera without a low-resolution stream does.
        loop: start again at the first frame (and preview) after the last.
        name: the camera's name.
    """

    def __init__(
        self,
        frames: Source,
        *,
        clock: Clock,
        fail_on: Collection[int] = frozenset(),
        fail_open: int = 0,
        previews: Source | None = None,
        loop: bool = False,
        name: str = "fake",
    ) -> None:
        if fail_open < 0:
            raise ValueError("fail_open must not be negative")
        self.name = name
        self._frames = frames
        self._previews = previews
        self._clock = clock
        self._fail_on = frozenset(fail_on)
        self._fail_open = fail_open
        self._loop = loop
        self.is_open = False
        self.open_attempts = 0
        self.opens = 0
        self.closes = 0
        self.captures = 0  # capture() calls, failed ones included
        self.delivered = 0  # frames returned
        self.previews_given = 0

    def open(self) -> None:
        self.open_attempts += 1
        if self.open_attempts <= self._fail_open:
            raise CaptureError(f"{self.name}: simulated open failure {self.open_attempts} of {self._fail_open}")
        self.is_open = True
        self.opens += 1

    def _check_open(self) -> None:
        if not self.is_open:
            raise RuntimeError(f"{self.name}: used while closed")

    def capture(self) -> Frame | None:
        self._check_open()
        call = self.captures
        self.captures += 1
        if call in self._fail_on:
            raise CaptureError(f"{self.name}: simulated failure at capture {call}")
        image = _pick(self._frames, self.delivered, self._loop)
        if image is None:
            return None
        self.delivered += 1
        # A copy: the daemon may draw on or blur a frame, and the script must stay as given.
        return Frame(image=np.array(image, copy=True), captured_at=self._clock.now(),
                     monotonic=self._clock.monotonic())

    def preview(self) -> np.ndarray | None:
        self._check_open()
        if self._previews is None:
            return None
        image = _pick(self._previews, self.previews_given, self._loop)
        if image is not None:
            self.previews_given += 1
        return image

    @property
    def exhausted(self) -> bool:
        """Every scripted frame has been delivered (never, for a function or a loop)."""
        if callable(self._frames) or self._loop:
            return False
        return self.delivered >= len(self._frames)

    def close(self) -> None:
        if self.is_open:
            self.closes += 1
        self.is_open = False

    def __enter__(self) -> FakeCamera:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

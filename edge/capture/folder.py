"""A folder of photos as a camera: replay what is there, or watch for new files.

Replay walks every image under the folder once, in the order a person reads a camera trap's card
(IMG_2 before IMG_10). Watch rescans every ``poll`` and hands out a file only after its size and
modification time stayed the same for ``settle``, because a camera or an SD-card copy may still be
writing it. Both skip files the store already processed, so a restart after a crash goes on where
it stopped.

A missing folder is a device failure (``CaptureError``: the daemon reopens the camera with backoff),
and so is a file gone because its folder went (a card re-seated, a share remounted); only a file that
is there and cannot be read or decoded is one failed frame. Symlinks resolving outside the folder are
never read: a drop folder must not let anyone make the daemon read ``/etc/passwd``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta, tzinfo
from pathlib import Path
from typing import Literal

import numpy as np

from edge.batch.sources import CONVERT_HINT, UNREADABLE_PHOTOS, skipped_photos
from edge.capture.base import Frame
from edge.capture.exif import capture_time
from edge.clock import Clock
from edge.errors import CaptureError, ImageReadError
from edge.imaging import DEFAULT_MAX_PIXELS, decode_image

logger = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

_DIGITS = re.compile(r"(\d+)")
# A read failing with one of these means the device or mount went away, not the file.
_DEVICE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENODEV", "ENXIO", "ESTALE", "ENOTCONN", "ENOMEDIUM",
                                                             "EHOSTDOWN") if hasattr(errno, name))


def natural_key(relative: str) -> tuple:
    """Sort key for a relative path: per path component, digit runs compare as numbers, text
    case-insensitively; the path itself breaks ties (IMG_01 vs IMG_1) so the order is total."""
    parts = tuple(
        tuple(int(chunk) if i % 2 else chunk.casefold() for i, chunk in enumerate(_DIGITS.split(part)))
        for part in relative.split("/")
    )
    return parts, relative


def _never(_: str) -> bool:
    return False


def _with_source(err: ImageReadError, source: str) -> ImageReadError:
    # The daemon records the failed frame under this path and moves on.
    err.source = source
    return err


class FolderCamera:
    """Photos from a folder (see the module docstring); ``preview`` is always None."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: Literal["replay", "watch"] = "replay",
        recursive: bool = True,
        settle: timedelta = timedelta(seconds=2),
        poll: timedelta = timedelta(seconds=2),
        is_processed: Callable[[str], bool] = _never,
        clock: Clock,
        tz: tzinfo | None = None,
        extensions: Iterable[str] = DEFAULT_EXTENSIONS,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        if mode not in ("replay", "watch"):
            raise ValueError(f"mode must be 'replay' or 'watch', not {mode!r}")
        if settle < timedelta(0):
            raise ValueError("settle must not be negative")
        if poll <= timedelta(0):
            raise ValueError("poll must be positive")
        suffixes = frozenset(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        if not suffixes:
            raise ValueError("extensions must name at least one file type")
        self.root = Path(os.path.abspath(path))
        self.name = f"folder:{self.root}"
        self.mode = mode
        self.recursive = recursive
        self._settle = settle.total_seconds()
        self._poll = poll.total_seconds()
        self._is_processed = is_processed
        self._clock = clock
        self._tz = tz
        self._suffixes = suffixes
        self._max_pixels = max_pixels
        self._real_root = os.path.realpath(self.root)
        self._outside: set[str] = set()  # links out of the folder already warned about
        self._unreadable: set[str] = set()  # HEIC/raw photos already warned about
        self._queue: deque[str] = deque()
        # watch: candidates still settling, path -> ((size, mtime_ns), monotonic time first seen so)
        self._settling: dict[str, tuple[tuple[int, int], float]] = {}
        self._done: set[str] = set()  # watch: returned or processed before: never looked at again
        self._next_scan = 0.0
        self._open = False

    # -- Camera protocol ------------------------------------------------------------------------
    def open(self) -> None:
        """Check the folder and, in replay mode, list the files still to process.

        Raises:
            CaptureError: the folder does not exist or cannot be listed.
        """
        self._check_root()
        self._real_root = os.path.realpath(self.root)  # the folder may itself be a link (to a mount)
        self._queue.clear()
        self._settling.clear()
        self._done.clear()
        if self.mode == "replay":
            files = [path for _, path in sorted(self._walk())]
            todo = [path for path in files if not self._is_processed(path)]
            self._queue.extend(todo)
            logger.info("%s: %d images to process, %d done before", self.name, len(todo), len(files) - len(todo))
        else:
            self._next_scan = self._clock.monotonic()  # the first capture scans at once
            logger.info("%s: watching for new images", self.name)
        self._open = True

    def capture(self) -> Frame | None:
        """The next image, or None (replay: all done; watch: nothing new has settled yet).

        Raises:
            ImageReadError: this one file could not be read or decoded (``err.source`` names it);
                the next call goes on with the next file.
            CaptureError: the watched folder disappeared (card removed, share unmounted).
        """
        if not self._open:
            raise RuntimeError(f"{self.name}: capture() before open()")
        if self.mode == "watch" and self._clock.monotonic() >= self._next_scan:
            self._scan()
        while self._queue:
            path = self._queue.popleft()
            if not self._inside(path):
                continue  # replaced by a link after it was listed
            return self._read(path)
        return None

    def preview(self) -> np.ndarray | None:
        return None  # a folder has no live stream to watch for motion

    def close(self) -> None:
        self._open = False
        self._queue.clear()
        self._settling.clear()

    def __enter__(self) -> FolderCamera:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- progress -------------------------------------------------------------------------------
    def pending(self) -> int:
        """Files known and not yet returned (watch: including those still settling)."""
        return len(self._queue) + len(self._settling)

    @property
    def exhausted(self) -> bool:
        """Replay has returned every file; a watched folder never is."""
        return self.mode == "replay" and self._open and not self._queue

    # -- internals ------------------------------------------------------------------------------
    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise CaptureError(f"{self.name}: folder does not exist (or is not a directory)")
        try:
            with os.scandir(self.root):
                pass
        except OSError as err:
            raise CaptureError(f"{self.name}: cannot list the folder: {err.strerror or err}") from err

    def _walk(self) -> Iterator[tuple[tuple, str]]:
        """(natural sort key, absolute path) of every visible image file under the root."""
        stack = [(self.root, "")]
        new_unreadable: Counter[str] = Counter()
        while stack:
            folder, prefix = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError as err:
                if folder == self.root:
                    raise CaptureError(f"{self.name}: cannot list the folder: {err.strerror or err}") from err
                logger.debug("%s: skipping unreadable %s: %s", self.name, folder, err)
                continue
            for entry in entries:
                if entry.name.startswith("."):  # hidden, macOS ._ resource forks, .Trashes
                    continue
                relative = f"{prefix}{entry.name}"
                try:
                    # Symlinked folders are not followed: a link loop would never end.
                    if entry.is_dir(follow_symlinks=False):
                        if self.recursive:
                            stack.append((Path(entry.path), f"{relative}/"))
                    elif entry.is_symlink() and not self._inside(entry.path):
                        continue
                    elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in self._suffixes:
                        yield natural_key(relative), entry.path
                    elif entry.path not in self._unreadable and entry.is_file() \
                            and os.path.splitext(entry.name)[1].lower() in UNREADABLE_PHOTOS:
                        new_unreadable[os.path.splitext(entry.name)[1].lower()] += 1
                        self._unreadable.add(entry.path)
                except OSError:
                    continue  # vanished between listing and stat
        if new_unreadable:
            # A photo format wildedge cannot decode is not silently passed over: one line per scan
            # that finds new ones (as detect and check say it).
            logger.warning("%s: skipped %s; %s", self.name, skipped_photos(new_unreadable), CONVERT_HINT)

    def _scan(self) -> None:
        """Watch mode: stat every new file, move those unchanged for ``settle`` to the queue."""
        now = self._clock.monotonic()
        self._next_scan = now + self._poll
        if not self.root.is_dir():
            raise CaptureError(f"{self.name}: folder disappeared")
        seen: set[str] = set()
        ready: list[tuple[tuple, str]] = []
        for key, path in self._walk():
            if path in self._done:
                continue
            if path not in self._settling and self._is_processed(path):
                self._done.add(path)
                continue
            try:
                stat = os.stat(path)
            except OSError:
                continue
            seen.add(path)
            signature = (stat.st_size, stat.st_mtime_ns)
            previous = self._settling.get(path)
            if previous is None or previous[0] != signature:
                self._settling[path] = (signature, now)
                previous = self._settling[path]
            # An empty file is a name the writer has created and not filled yet.
            if stat.st_size > 0 and now - previous[1] >= self._settle:
                ready.append((key, path))
        for path in set(self._settling) - seen:
            del self._settling[path]  # deleted or renamed before it settled
        for _, path in sorted(ready):
            del self._settling[path]
            self._done.add(path)
            self._queue.append(path)
        if ready:
            logger.debug("%s: %d new images ready", self.name, len(ready))

    def _inside(self, path: str) -> bool:
        """Whether ``path`` resolves inside the folder; a link out of it is skipped, warned about once."""
        real = os.path.realpath(path)
        if real == self._real_root or real.startswith(self._real_root.rstrip(os.sep) + os.sep):
            return True
        if path not in self._outside:
            self._outside.add(path)
            logger.warning("%s: skipping %s: it links outside the folder (to %s)", self.name, path, real)
        return False

    def _check_reachable(self, path: str, err: OSError) -> None:
        """Raise CaptureError when ``err`` (reading ``path``) means the folder is gone, not the file."""
        if err.errno in _DEVICE_ERRNOS or not self.root.is_dir() or not os.path.isdir(os.path.dirname(path)):
            raise CaptureError(f"{self.name}: folder disappeared while reading {path}: {err.strerror or err}") from err

    def _read(self, path: str) -> Frame:
        try:
            data = Path(path).read_bytes()
            stat = os.stat(path)
        except OSError as err:
            # A file deleted while its folder stays is a failed frame, like an unreadable one.
            self._check_reachable(path, err)
            logger.warning("%s: cannot read %s: %s", self.name, path, err.strerror or err)
            raise _with_source(ImageReadError(f"cannot read {path}: {err.strerror or err}"), path) from err
        try:
            image = decode_image(data, name=path, max_pixels=self._max_pixels).image
        except ImageReadError as err:
            logger.warning("%s: skipping %s", self.name, err)
            raise _with_source(err, path)
        captured_at, _ = capture_time(data, mtime=stat.st_mtime, now=self._clock.now(), tz=self._tz, name=path)
        return Frame(image=image, captured_at=captured_at, monotonic=self._clock.monotonic(), source=path)

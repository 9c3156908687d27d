"""The image store: JPEG files under one folder, written atomically, named by UTC date and uid.

A reader (the retention sweep, a copy to a USB stick, a power cut) never sees half a file: each file
is written under a temporary name in the same folder, synced, then renamed over its final name,
and the folder is synced so that the rename itself survives. Files are created 0600 and folders
0700: the images may show people, and only the daemon's user has any business reading them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from edge.errors import StoreError

logger = logging.getLogger(__name__)

#: Temporary files are ``.<name>.<random>.tmp``: hidden, and recognisable to the orphan sweep.
TEMP_SUFFIX = ".tmp"
#: Modes of what the daemon creates in its state directory, whatever the umask.
FILE_MODE, DIR_MODE = 0o600, 0o700


def image_relpath(captured_at: datetime, uid: str) -> str:
    """Where a frame's image goes, relative to the image store: ``YYYY/MM/DD/<uid>.jpg`` (UTC date).

    Raises:
        ValueError: ``captured_at`` is naive, or ``uid`` is not a plain file name.
    """
    if captured_at.tzinfo is None or captured_at.utcoffset() is None:
        raise ValueError(f"a timezone-aware capture time is needed, got naive {captured_at!r}")
    if not uid or "/" in uid or "\\" in uid or uid.startswith("."):
        raise ValueError(f"uid {uid!r} cannot be a file name")
    day = captured_at.astimezone(timezone.utc)
    return f"{day:%Y/%m/%d}/{uid}.jpg"


def resolve(images_dir: Path, relative: str) -> Path:
    """The file a relative image path names, refusing paths that leave the image store.

    Raises:
        ValueError: ``relative`` is absolute or climbs out with ``..``.
    """
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts or "\\" in relative:
        raise ValueError(f"image path {relative!r} must be relative and inside the image store")
    return Path(images_dir, *parts)


def make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parents with mode 0700 (existing folders are left as they are).

    Raises:
        OSError: a folder cannot be created.
    """
    folder = Path(folder)
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not path.is_dir():
                raise
            continue
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask; 0700 is meant whatever it is


def write_atomic(path: Path, data: bytes, *, mode: int = FILE_MODE) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of ``data``.

    The file gets ``mode`` (0600 by default); missing folders are created 0700.

    Raises:
        StoreError: the folder cannot be created or written (full disk, read-only card).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        make_private_dirs(path.parent)
        # O_EXCL: never write through a file someone else created.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), mode)  # the umask may have taken bits away from a wider mode
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)
    except OSError as err:
        raise StoreError(f"cannot write {path}: {err.strerror or err}") from err


def fsync_dir(folder: Path) -> None:
    """Sync a folder's entries (a rename or unlink is durable only once its folder is synced)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        return  # platforms that cannot open folders (Windows) have no folder fsync either
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_jpeg(image: np.ndarray, *, quality: int) -> bytes:
    """JPEG bytes of a BGR (or grey) uint8 image.

    Raises:
        ValueError: ``quality`` is outside 1..100, or the image is not a uint8 grey/BGR array.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg quality must be within 1..100, got {quality}")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3) \
            or (image.ndim == 3 and image.shape[2] not in (1, 3)) or image.size == 0:
        raise ValueError(f"need a uint8 grey or BGR image, got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}")
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as JPEG")
    return buf.tobytes()


def save_jpeg(images_dir: Path, relative: str, image: np.ndarray, *, quality: int) -> int:
    """Encode ``image`` and write it atomically at ``images_dir/relative``; returns the bytes written.

    Raises:
        ValueError: a bad path, quality or image.
        StoreError: the write failed.
    """
    data = encode_jpeg(image, quality=quality)
    write_atomic(resolve(images_dir, relative), data)
    return len(data)

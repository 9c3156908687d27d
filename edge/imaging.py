"""Reading photos fast and safely: reduced-size JPEG decoding and truncation checks.

A 12-megapixel JPEG takes far longer to decode than a nano detector takes to run. libjpeg can
decode straight to 1/2, 1/4 or 1/8 size (DCT scaling, exposed as ``cv2.IMREAD_REDUCED_COLOR_*``),
which is several times faster and already a good low-pass before the model's own resize.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.errors import ImageReadError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".wmv", ".mpg", ".mpeg", ".3gp"})

_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


@dataclass(frozen=True, slots=True)
class JpegInfo:
    """What the JPEG header says: stored size (before EXIF rotation) and where the scan starts."""

    width: int
    height: int
    scan_offset: int


def jpeg_info(data: bytes) -> JpegInfo | None:
    """Parse a JPEG's markers up to the first scan; None when ``data`` is not a well-formed JPEG.

    OpenCV has no header-only read, so this walks the marker segments by hand (a few dozen bytes).
    """
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos, size = 2, None
    end = len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            return None
        if marker in _SOF and pos + 9 <= end:
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            size = (width, height)
        if marker == 0xDA:  # start of scan: the entropy-coded image follows
            if size is None or 0 in size:
                return None
            return JpegInfo(size[0], size[1], pos)
        pos += 2 + length
    return None


def reduction_for(width: int, height: int, needed: tuple[int, int], *, cover: bool = False) -> int:
    """Largest libjpeg reduction (1, 2, 4, 8) after which the model's resize to ``needed`` (w, h)
    still only shrinks: a letterbox fits the long side (``cover=False``); a stretch or crop must
    cover both sides (``cover=True``)."""
    need_w, need_h = needed
    ratio = max(need_w / width, need_h / height) if cover else min(need_w / width, need_h / height)
    factor = 1
    for candidate in (2, 4, 8):
        if ratio * candidate <= 1.0:
            factor = candidate
    return factor


@dataclass(slots=True)
class Decoded:
    """A decoded photo and the full-resolution size its pixels stand for."""

    image: np.ndarray  # BGR uint8, possibly reduced
    full_width: int
    full_height: int

    @property
    def factor(self) -> tuple[float, float]:
        """Multipliers from ``image`` pixels to full-resolution pixels."""
        return self.full_width / self.image.shape[1], self.full_height / self.image.shape[0]


def read_image(
    path: str | os.PathLike[str], *, needed: tuple[int, int] | None = None, cover: bool = False
) -> Decoded:
    """Read a photo as BGR uint8 with EXIF orientation applied, reduced when ``needed`` allows.

    Raises:
        ImageReadError: missing, unreadable, empty, truncated or undecodable file.
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as err:
        raise ImageReadError(f"cannot read {file}: {err.strerror or err}") from err
    return decode_image(data, needed=needed, cover=cover, name=str(file))


def decode_image(
    data: bytes, *, needed: tuple[int, int] | None = None, cover: bool = False, name: str = "<bytes>"
) -> Decoded:
    """Decode image bytes; see :func:`read_image`."""
    if not data:
        raise ImageReadError(f"{name}: empty file")
    info = jpeg_info(data) if data[:2] == b"\xff\xd8" else None
    if data[:2] == b"\xff\xd8":
        if info is None:
            raise ImageReadError(f"{name}: corrupt JPEG header")
        if data.rfind(b"\xff\xd9", info.scan_offset) < 0:
            # libjpeg would fill the missing part with grey and only print a warning.
            raise ImageReadError(f"{name}: truncated JPEG (no end-of-image marker)")
    factor = 1
    if info is not None and needed is not None:
        factor = reduction_for(info.width, info.height, needed, cover=cover)
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, _REDUCED[factor])
    if image is None:
        raise ImageReadError(f"{name}: not a readable image")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.dtype != np.uint8:  # 16-bit PNG/TIFF
        image = cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
    height, width = image.shape[:2]
    if factor == 1 or info is None:
        return Decoded(image, width, height)
    # EXIF rotation may have swapped the axes relative to the stored header size.
    full_w, full_h = info.width, info.height
    if (width > height) != (full_w > full_h) and width != height:
        full_w, full_h = full_h, full_w
    return Decoded(image, full_w, full_h)

"""Reading photos fast and safely: reduced-size JPEG decoding, truncation checks, a pixel limit.

A 12-megapixel JPEG takes far longer to decode than a nano detector takes to run. libjpeg can
decode straight to 1/2, 1/4 or 1/8 size (DCT scaling, exposed as ``cv2.IMREAD_REDUCED_COLOR_*``),
which is several times faster and already a good low-pass before the model's own resize.

A few bytes can claim a huge image (a 30000x30000 PNG of zeros is 2.6 MB and decodes to 2.7 GB),
so the size is read from the header and checked against a pixel limit before anything is decoded.
Only JPEG, PNG, TIFF, BMP and WebP are decoded: OpenCV picks its decoder by content, not by name,
and a format whose header is not read here could not be size-checked.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.errors import ImageReadError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
#: Default decode limit (``[device] max_image_pixels``): 100 MP, about 300 MB decoded; every camera
#: trap and a 61 MP full-frame camera fit, a bomb does not.
DEFAULT_MAX_PIXELS = 100_000_000
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


def _png_size(data: bytes) -> tuple[int, int] | None:
    # The signature, then IHDR, which must be the first chunk: length, type, width, height.
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    header = struct.unpack_from("<I", data, 14)[0]
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack_from("<HH", data, 18)
    width, height = struct.unpack_from("<ii", data, 18)
    return abs(width), abs(height)  # a negative height is a top-down bitmap


def _webp_size(data: bytes) -> tuple[int, int] | None:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:  # extended: 24-bit canvas size minus one
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    if kind == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:  # lossless: 14-bit sizes minus one
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    # The first IFD (the page OpenCV reads): tags 256 ImageWidth and 257 ImageLength, SHORT or LONG.
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8 or struct.unpack_from(order + "H", data, 2)[0] != 42:
        return None  # BigTIFF (43) and anything else: not sized here
    ifd = struct.unpack_from(order + "I", data, 4)[0]
    if ifd + 2 > len(data):
        return None
    count = struct.unpack_from(order + "H", data, ifd)[0]
    found: dict[int, int] = {}
    for i in range(min(count, 512)):
        at = ifd + 2 + 12 * i
        if at + 12 > len(data):
            break
        tag, kind = struct.unpack_from(order + "HH", data, at)
        if tag in (256, 257) and kind in (3, 4):
            found[tag] = struct.unpack_from(order + ("H" if kind == 3 else "I"), data, at + 8)[0]
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from the header of a JPEG, PNG, TIFF, BMP or WebP, without decoding;
    None when ``data`` is none of these or its header is damaged."""
    size: tuple[int, int] | None = None
    kind = "?"
    try:
        if data[:2] == b"\xff\xd8":
            kind, info = "JPEG", jpeg_info(data)
            size = (info.width, info.height) if info is not None else None
        elif data[:8] == b"\x89PNG\r\n\x1a\n":
            kind, size = "PNG", _png_size(data)
        elif data[:4] in (b"II*\x00", b"MM\x00*"):
            kind, size = "TIFF", _tiff_size(data)
        elif data[:2] == b"BM":
            kind, size = "BMP", _bmp_size(data)
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            kind, size = "WebP", _webp_size(data)
    except struct.error:
        return None
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return kind, size[0], size[1]


def check_pixels(data: bytes, max_pixels: int | None, name: str) -> tuple[str, int, int]:
    """The header's (format, width, height), refusing what the limit or the decoder must not see.

    Raises:
        ImageReadError: not a JPEG, PNG, TIFF, BMP or WebP with a readable header, or more than
            ``max_pixels`` pixels (None: no limit).
    """
    found = image_size(data)
    if found is None:
        raise ImageReadError(f"{name}: not a readable image (not a JPEG, PNG, TIFF, BMP or WebP with an intact "
                             "header)")
    kind, width, height = found
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(
            f"{name}: {kind} of {width}x{height} ({width * height / 1e6:.0f} megapixels) is over the limit of "
            f"{max_pixels / 1e6:g} megapixels (max_image_pixels); not decoded")
    return found


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
    path: str | os.PathLike[str], *, needed: tuple[int, int] | None = None, cover: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Decoded:
    """Read a photo as BGR uint8 with EXIF orientation applied, reduced when ``needed`` allows.

    Raises:
        ImageReadError: missing, unreadable, empty, truncated or undecodable file, or one whose header
            claims more than ``max_pixels`` pixels (checked before decoding).
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as err:
        raise ImageReadError(f"cannot read {file}: {err.strerror or err}") from err
    return decode_image(data, needed=needed, cover=cover, name=str(file), max_pixels=max_pixels)


def decode_image(
    data: bytes, *, needed: tuple[int, int] | None = None, cover: bool = False, name: str = "<bytes>",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Decoded:
    """Decode image bytes; see :func:`read_image`."""
    if not data:
        raise ImageReadError(f"{name}: empty file")
    if data[:2] != b"\xff\xd8":  # a JPEG's header is checked below, with its truncation
        check_pixels(data, max_pixels, name)
    info = jpeg_info(data) if data[:2] == b"\xff\xd8" else None
    if data[:2] == b"\xff\xd8":
        if info is None:
            raise ImageReadError(f"{name}: corrupt JPEG header")
        if max_pixels is not None and info.width * info.height > max_pixels:
            check_pixels(data, max_pixels, name)  # raises, with the size in the message
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

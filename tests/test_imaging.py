"""Reduced-size decoding, JPEG header parsing and bad-file detection on real photos."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from edge.errors import ImageReadError
from edge.imaging import decode_image, jpeg_info, read_image, reduction_for


def _photo(assets):
    return sorted((assets / "camera_traps_lila" / "images").glob("*.jpg"))[0]


def _with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an EXIF APP1 segment carrying only the orientation tag right after SOI."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_jpeg_info_matches_decoded_size(assets):
    for path in sorted((assets / "camera_traps_lila" / "images").glob("*")):
        data = path.read_bytes()
        info = jpeg_info(data)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        assert info is not None
        assert (info.width, info.height) == (image.shape[1], image.shape[0])


def test_jpeg_info_rejects_non_jpeg():
    assert jpeg_info(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20) is None
    assert jpeg_info(b"\xff\xd8\xff") is None


@pytest.mark.parametrize(
    ("size", "needed", "cover", "factor"),
    [
        ((4000, 3000), (416, 416), False, 8),
        ((4000, 3000), (640, 640), False, 4),
        ((2048, 1536), (416, 416), False, 4),
        ((2048, 1536), (352, 352), True, 4),
        ((2048, 1536), (416, 416), True, 2),
        ((640, 480), (640, 640), False, 1),
        ((800, 600), (416, 416), False, 1),
    ],
)
def test_reduction_never_makes_the_model_upsample(size, needed, cover, factor):
    assert reduction_for(*size, needed, cover=cover) == factor
    width, height = size
    reduced = (width / factor, height / factor)
    ratios = (needed[0] / reduced[0], needed[1] / reduced[1])
    assert (max(ratios) if cover else min(ratios)) <= 1.0


def test_reduced_decode_reports_full_size(assets):
    path = _photo(assets)
    full = cv2.imread(str(path))
    decoded = read_image(path, needed=(416, 416))
    assert decoded.image.shape[1] < full.shape[1]
    assert (decoded.full_width, decoded.full_height) == (full.shape[1], full.shape[0])
    fx, fy = decoded.factor
    assert fx == pytest.approx(full.shape[1] / decoded.image.shape[1])
    # The reduced image is a faithful small version of the full one.
    small = cv2.resize(full, (decoded.image.shape[1], decoded.image.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(np.int16) - decoded.image.astype(np.int16)).mean() < 4.0


def test_exif_rotation_swaps_full_size(assets):
    data = _with_orientation(_photo(assets).read_bytes(), 6)  # 6 = rotate 90 degrees clockwise
    info = jpeg_info(data)
    decoded = decode_image(data, needed=(416, 416))
    assert decoded.image.shape[0] > decoded.image.shape[1]  # portrait after rotation
    assert (decoded.full_width, decoded.full_height) == (info.height, info.width)
    full = decode_image(data)
    assert (full.full_width, full.full_height) == (info.height, info.width)


def test_bad_files(tmp_path, assets):
    good = _photo(assets).read_bytes()
    cases = {
        "empty.jpg": b"",
        "truncated.jpg": good[: len(good) // 2],
        "garbage.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 10,
        "text.jpg": b"this is not an image\n",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageReadError):
            read_image(path)
    with pytest.raises(ImageReadError, match="cannot read"):
        read_image(tmp_path / "missing.jpg")


def test_png_and_grey_images_become_bgr(tmp_path):
    grey = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(48, 64)
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), grey)
    decoded = read_image(path, needed=(16, 16))
    assert decoded.image.shape == (48, 64, 3)
    assert decoded.factor == (1.0, 1.0)

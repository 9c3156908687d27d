"""Small JPEG crops of a detection, for the optional ``<prefix>/<device>/crop/<event id>`` message.

A crop must fit a byte cap on links billed by the byte: the box (with a margin) is cut out,
scaled so its longer side is at most ``max_side``, and encoded at falling JPEG qualities, then at
smaller sizes, until it fits. OpenCV does the cutting, scaling and encoding.
"""

from __future__ import annotations

import cv2
import numpy as np

QUALITIES = (85, 70, 55, 40, 25)
MIN_SIDE = 32


def encode_crop(image: np.ndarray, box: tuple[float, float, float, float], *, max_bytes: int,
                max_side: int = 320, margin: float = 0.1) -> bytes | None:
    """The JPEG of ``box`` (pixel xyxy) in ``image`` within ``max_bytes``; None when it cannot fit.

    Raises:
        ValueError: ``max_bytes`` or ``max_side`` is not positive.
    """
    if max_bytes <= 0 or max_side <= 0:
        raise ValueError(f"max_bytes and max_side must be positive (got {max_bytes}, {max_side})")
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
    right, bottom = min(width, int(round(x2 + mx))), min(height, int(round(y2 + my)))
    if right - left < 2 or bottom - top < 2:
        return None
    crop = image[top:bottom, left:right]
    side = max_side
    while side >= MIN_SIDE:
        scale = min(1.0, side / max(crop.shape[:2]))
        scaled = crop if scale >= 1.0 else cv2.resize(
            crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
            interpolation=cv2.INTER_AREA)
        for quality in QUALITIES:
            ok, data = cv2.imencode(".jpg", scaled, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and len(data) <= max_bytes:
                return data.tobytes()
        side = int(side * 0.7)
    return None

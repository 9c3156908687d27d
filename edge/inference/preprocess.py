"""Turn a BGR uint8 image into a model input tensor exactly as the model card says.

The export stage imports this module to calibrate and verify, so what is measured at export
time is byte-for-byte what runs on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.inference.card import Preprocess
from edge.inference.exact_resize import resize_area

# The same photo must give the same tensor on the workstation that calibrates and on the device
# (issue 14). OpenCV's INTER_LINEAR runs different SIMD code on x86 and on ARM (NEON, Carotene) and
# rounds differently (off by one in 10-17 % of values); INTER_LINEAR_EXACT is its fixed-point,
# bit-exact twin, within 1 of it. INTER_AREA is not exact either (its non-integer shrinks came out
# off by one on arm64 under qemu: docs/quantization.md), so "area" is resize_area, an integer
# re-implementation within 1 of it (equal in 99.99 % of values on x86). INTER_NEAREST only
# computes indices. INTER_CUBIC has no exact variant.
_INTERPOLATION = {
    "linear": cv2.INTER_LINEAR_EXACT,
    "nearest": cv2.INTER_NEAREST,
    "cubic": cv2.INTER_CUBIC,
}


def _resize(image: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """Resize to ``size`` (width, height) with the card's interpolation, bit-exact where it can be."""
    if interpolation == "area":
        return resize_area(image, *size)
    return cv2.resize(image, size, interpolation=_INTERPOLATION[interpolation])


@dataclass(frozen=True, slots=True)
class Transform:
    """Maps model-input pixel coordinates back to the source image: ``x_src = (x_in - ox) / sx``."""

    sx: float
    sy: float
    ox: float
    oy: float
    src_width: int
    src_height: int

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``[N, 4]`` xyxy boxes from model input to source-image pixels (not clipped)."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] - self.ox) / self.sx
        out[:, 1::2] = (boxes[:, 1::2] - self.oy) / self.sy
        return out


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, not {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 uint8 BGR, got shape {image.shape} dtype {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError("image is empty")


def resize_for_model(image: np.ndarray, spec: Preprocess) -> tuple[np.ndarray, Transform]:
    """Resize/pad/crop ``image`` to the model input size; returns the canvas and its transform."""
    _check_image(image)
    height, width = image.shape[:2]
    tw, th = spec.input_size
    interp = spec.interpolation
    if spec.resize == "stretch":
        canvas = _resize(image, (tw, th), interp)
        return canvas, Transform(tw / width, th / height, 0.0, 0.0, width, height)
    if spec.resize == "centre_crop":
        ratio = max(tw / width, th / height) / spec.crop_ratio
        nw, nh = max(tw, round(width * ratio)), max(th, round(height * ratio))
        resized = _resize(image, (nw, nh), interp)
        left, top = (nw - tw) // 2, (nh - th) // 2
        canvas = resized[top : top + th, left : left + tw]
        return canvas, Transform(nw / width, nh / height, float(-left), float(-top), width, height)
    ratio = min(tw / width, th / height)
    fit = round if spec.size_rounding == "round" else int
    nw, nh = max(1, fit(width * ratio)), max(1, fit(height * ratio))
    resized = image if (nw, nh) == (width, height) else _resize(image, (nw, nh), interp)
    if spec.resize == "letterbox_topleft":
        left, top = 0, 0
    else:
        left, top = (tw - nw) // 2, (th - nh) // 2
    pad = (spec.pad_value,) * 3
    canvas = cv2.copyMakeBorder(
        resized, top, th - nh - top, left, tw - nw - left, cv2.BORDER_CONSTANT, value=pad
    )
    # Map back with the true ratio, as every family's reference code does, not nw / width.
    return canvas, Transform(ratio, ratio, float(left), float(top), width, height)


def _layout(name: str) -> int:
    # OpenCV 4.x keeps the layout constants in cv2.dnn, OpenCV 5 moved them to cv2.
    holder = cv2.dnn if hasattr(cv2.dnn, "DNN_LAYOUT_NCHW") else cv2
    return getattr(holder, f"DNN_LAYOUT_{name}")


def to_tensor(canvas: np.ndarray, spec: Preprocess) -> np.ndarray:
    """Colour order, scale, mean/std and layout: a ``[1, C, H, W]`` (or NHWC) float32 tensor."""
    scale = np.float32(spec.scale)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    # blobFromImageWithParams computes (pixel - mean_px) * factor per channel, in C++, together
    # with the BGR->RGB swap and the HWC->CHW transpose: one pass instead of four numpy copies.
    factor = scale / std
    mean_px = mean / scale
    params = cv2.dnn.Image2BlobParams()
    params.scalefactor = tuple(float(v) for v in factor) + (0.0,)
    params.mean = tuple(float(v) for v in mean_px) + (0.0,)
    params.swapRB = spec.colour == "RGB"
    params.ddepth = cv2.CV_32F
    params.datalayout = _layout(spec.layout)
    params.size = (canvas.shape[1], canvas.shape[0])
    return cv2.dnn.blobFromImageWithParams(canvas, params)


def preprocess(image: np.ndarray, spec: Preprocess) -> tuple[np.ndarray, Transform]:
    """Full preprocessing of one BGR uint8 image: ``(tensor, transform)``."""
    canvas, transform = resize_for_model(image, spec)
    return to_tensor(canvas, spec), transform

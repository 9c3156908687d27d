"""YOLOX: output ``[1, N, 5+nc]`` relative to a per-level grid (strides 8/16/32), sigmoid obj and cls."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from edge.errors import ModelError
from edge.inference.decoders.base import (
    DecodeContext,
    RawDetections,
    best_class,
    cxcywh_to_xyxy,
    expect_classes,
    expect_shape,
    single_output,
)


@lru_cache(maxsize=8)
def _grid(width: int, height: int, strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Cell origins ``[N, 2]`` and strides ``[N, 1]``, row-major per level."""
    cells, steps = [], []
    for stride in strides:
        ys, xs = np.mgrid[0 : height // stride, 0 : width // stride]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        steps.append(np.full((xs.size, 1), stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(steps).astype(np.float32)


def decode(outputs: dict[str, np.ndarray], ctx: DecodeContext) -> RawDetections:
    out = single_output(outputs, "yolox")
    expect_shape(out, 3, "yolox", "[1, N, 5+nc]")
    expect_classes(out.shape[2] - 5, ctx, "yolox")
    strides = tuple(int(s) for s in ctx.params.get("strides", (8, 16, 32)))
    cells, steps = _grid(*ctx.input_size, strides)
    pred = out[0]
    if len(pred) != len(cells):
        raise ModelError(
            f"yolox decoder: {len(pred)} predictions but strides {list(strides)} on a "
            f"{ctx.input_size[0]}x{ctx.input_size[1]} input give {len(cells)}; check the card's input size"
        )
    keep = pred[:, 4] >= ctx.conf
    pred, cells, steps = pred[keep], cells[keep], steps[keep]
    if not len(pred):
        return RawDetections.empty()
    ids, cls_scores = best_class(pred[:, 5:])
    scores = (pred[:, 4] * cls_scores).astype(np.float32)
    centres = (pred[:, :2] + cells) * steps
    sizes = np.exp(pred[:, 2:4]) * steps
    boxes = cxcywh_to_xyxy(np.concatenate([centres, sizes], axis=1))
    keep = scores >= ctx.conf
    return RawDetections(boxes[keep], scores[keep], ids[keep])

"""Ultralytics anchor-free head (YOLOv8/v9/v11): output ``[1, 4+nc, N]``, cxcywh pixels, sigmoid scores."""

from __future__ import annotations

import numpy as np

from edge.inference.decoders.base import (
    DecodeContext,
    RawDetections,
    best_class,
    cxcywh_to_xyxy,
    expect_classes,
    expect_shape,
    single_output,
)


def decode(outputs: dict[str, np.ndarray], ctx: DecodeContext) -> RawDetections:
    out = single_output(outputs, "ultralytics")
    expect_shape(out, 3, "ultralytics", "[1, 4+nc, N]")
    expect_classes(out.shape[1] - 4, ctx, "ultralytics")
    pred = out[0]
    cls = pred[4:]
    keep = cls.max(axis=0) >= ctx.conf
    if not keep.any():
        return RawDetections.empty()
    rows = pred[:, keep].T
    ids, scores = best_class(rows[:, 4:])
    return RawDetections(cxcywh_to_xyxy(rows[:, :4]), scores, ids)

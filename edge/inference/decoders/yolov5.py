"""YOLOv5 anchor-based head incl. MegaDetector v5: output ``[1, N, 5+nc]``, conf = obj * cls."""

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
    out = single_output(outputs, "yolov5")
    expect_shape(out, 3, "yolov5", "[1, N, 5+nc]")
    expect_classes(out.shape[2] - 5, ctx, "yolov5")
    pred = out[0]
    # obj * cls >= conf implies obj >= conf: a cheap first filter on the objectness column.
    pred = pred[pred[:, 4] >= ctx.conf]
    if not len(pred):
        return RawDetections.empty()
    ids, cls_scores = best_class(pred[:, 5:])
    scores = (pred[:, 4] * cls_scores).astype(np.float32)
    keep = scores >= ctx.conf
    return RawDetections(cxcywh_to_xyxy(pred[keep, :4]), scores[keep], ids[keep])

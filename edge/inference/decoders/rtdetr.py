"""RT-DETR: output ``[1, K, 4+nc]``, cxcywh normalised to the input, sigmoid scores, no NMS needed."""

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
    out = single_output(outputs, "rtdetr")
    expect_shape(out, 3, "rtdetr", "[1, K, 4+nc]")
    expect_classes(out.shape[2] - 4, ctx, "rtdetr")
    pred = out[0]
    ids, scores = best_class(pred[:, 4:])
    keep = scores >= ctx.conf
    boxes = cxcywh_to_xyxy(pred[keep, :4])
    width, height = ctx.input_size
    boxes *= np.array([width, height, width, height], dtype=np.float32)
    return RawDetections(boxes, scores[keep], ids[keep], nms_done=True)

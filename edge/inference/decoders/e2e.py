"""End-to-end models (YOLOv10, exports with NMS inside): output ``[1, K, 6]`` = x1, y1, x2, y2, score, class."""

from __future__ import annotations

import numpy as np

from edge.errors import ModelError
from edge.inference.decoders.base import DecodeContext, RawDetections, expect_shape, single_output


def decode(outputs: dict[str, np.ndarray], ctx: DecodeContext) -> RawDetections:
    out = single_output(outputs, "e2e")
    expect_shape(out, 3, "e2e", "[1, K, 6]")
    if out.shape[2] != 6:
        raise ModelError(f"e2e decoder expects [1, K, 6] rows, got shape {list(out.shape)}")
    pred = out[0]
    # Exports pad to K rows with zeros: a zero score is padding even when conf is 0.
    pred = pred[(pred[:, 4] >= ctx.conf) & (pred[:, 4] > 0)]
    ids = pred[:, 5].astype(np.int32)
    if len(ids) and (ids.min() < 0 or ids.max() >= ctx.num_classes):
        raise ModelError(f"e2e decoder: class id {int(ids.max())} is outside the card's {ctx.num_classes} labels")
    return RawDetections(pred[:, :4].astype(np.float32), pred[:, 4].astype(np.float32), ids, nms_done=True)

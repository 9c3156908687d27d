"""FastestDet: one stride-16 grid ``[1, 5+nc, H, W]``; obj and cls already activated in the graph.

Per cell: obj, tanh x/y offsets, sigmoid w/h (normalised), then class probabilities;
score = obj**0.6 * cls**0.4 as in the family's own post-processing.
"""

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
    out = single_output(outputs, "fastestdet")
    expect_shape(out, 4, "fastestdet", "[1, 5+nc, H, W]")
    expect_classes(out.shape[1] - 5, ctx, "fastestdet")
    grid_h, grid_w = out.shape[2:]
    pred = out[0].reshape(out.shape[1], -1).T  # [H*W, 5+nc]
    ys, xs = np.divmod(np.arange(grid_h * grid_w), grid_w)
    obj_exp = float(ctx.params.get("obj_exponent", 0.6))
    # score <= obj**0.6, so obj**0.6 >= conf is a cheap exact pre-filter.
    keep = pred[:, 0] ** obj_exp >= ctx.conf
    pred, xs, ys = pred[keep], xs[keep], ys[keep]
    if not len(pred):
        return RawDetections.empty()
    ids, cls_scores = best_class(pred[:, 5:])
    scores = (pred[:, 0] ** obj_exp * cls_scores ** (1 - obj_exp)).astype(np.float32)
    cx = (xs + np.tanh(pred[:, 1])) / grid_w
    cy = (ys + np.tanh(pred[:, 2])) / grid_h
    bw = 1 / (1 + np.exp(-pred[:, 3]))
    bh = 1 / (1 + np.exp(-pred[:, 4]))
    width, height = ctx.input_size
    boxes = cxcywh_to_xyxy(np.stack([cx * width, cy * height, bw * width, bh * height], axis=1))
    keep = scores >= ctx.conf
    return RawDetections(boxes[keep], scores[keep], ids[keep])

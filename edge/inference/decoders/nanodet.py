"""NanoDet GFL head: six outputs ``cls_pred_stride_S [1, N, nc]`` and ``dis_pred_stride_S [1, N, 4*(reg_max+1)]``.

Outputs are paired by name (their order in the graph is cls8, cls16, cls32, dis8, ...), or by
shape when a re-export renamed them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from edge.errors import ModelError
from edge.inference.decoders.base import DecodeContext, RawDetections, best_class, expect_classes


@lru_cache(maxsize=8)
def _centres(width: int, height: int, stride: int) -> np.ndarray:
    ys, xs = np.mgrid[0 : -(-height // stride), 0 : -(-width // stride)]
    centre = 0.5 * (stride - 1)
    return np.stack([xs.ravel() * stride + centre, ys.ravel() * stride + centre], axis=1).astype(np.float32)


def _pair(outputs: dict[str, np.ndarray], ctx: DecodeContext, strides: list[int], bins: int) -> list[tuple]:
    cls_fmt = ctx.params.get("cls_name", "cls_pred_stride_{stride}")
    dis_fmt = ctx.params.get("dis_name", "dis_pred_stride_{stride}")
    named = [(s, cls_fmt.format(stride=s), dis_fmt.format(stride=s)) for s in strides]
    if all(c in outputs and d in outputs for _, c, d in named):
        return [(s, outputs[c][0], outputs[d][0]) for s, c, d in named]
    # Pair by shape: class outputs have nc channels, distance outputs 4 * bins; sort by anchor count.
    arrays = [a[0] for a in outputs.values() if a.ndim == 3]
    cls = sorted((a for a in arrays if a.shape[1] == ctx.num_classes), key=len, reverse=True)
    dis = sorted((a for a in arrays if a.shape[1] == 4 * bins), key=len, reverse=True)
    if len(cls) != len(strides) or len(dis) != len(strides):
        raise ModelError(
            f"nanodet decoder expects outputs {[n for _, n, _ in named]} and {[n for _, _, n in named]} "
            f"(or {len(strides)} [1,N,{ctx.num_classes}] + {len(strides)} [1,N,{4 * bins}] outputs), got "
            f"{ {k: list(v.shape) for k, v in outputs.items()} }"
        )
    return list(zip(strides, cls, dis))


def decode(outputs: dict[str, np.ndarray], ctx: DecodeContext) -> RawDetections:
    strides = [int(s) for s in ctx.params.get("strides", (8, 16, 32))]
    bins = int(ctx.params.get("reg_max", 7)) + 1
    width, height = ctx.input_size
    project = np.arange(bins, dtype=np.float32)
    boxes, scores, ids = [], [], []
    for stride, cls, dis in _pair(outputs, ctx, strides, bins):
        expect_classes(cls.shape[1], ctx, "nanodet")
        centres = _centres(width, height, stride)
        if len(centres) != len(cls):
            raise ModelError(
                f"nanodet decoder: stride {stride} has {len(cls)} anchors, a {width}x{height} input gives "
                f"{len(centres)}; check the card's input size"
            )
        if dis.shape != (len(cls), 4 * bins):
            raise ModelError(
                f"nanodet decoder: stride {stride} distance output has shape {list(dis.shape)}, "
                f"reg_max {bins - 1} needs [{len(cls)}, {4 * bins}]; check the card's decoder params"
            )
        keep = cls.max(axis=1) >= ctx.conf
        if not keep.any():
            continue
        level_ids, level_scores = best_class(cls[keep])
        logits = dis[keep].reshape(-1, 4, bins)
        logits = np.exp(logits - logits.max(axis=2, keepdims=True))
        dist = (logits / logits.sum(axis=2, keepdims=True)) @ project * stride
        c = centres[keep]
        level_boxes = np.stack(
            [c[:, 0] - dist[:, 0], c[:, 1] - dist[:, 1], c[:, 0] + dist[:, 2], c[:, 1] + dist[:, 3]], axis=1
        )
        np.clip(level_boxes, 0, [width, height, width, height], out=level_boxes)
        boxes.append(level_boxes.astype(np.float32))
        scores.append(level_scores)
        ids.append(level_ids)
    if not boxes:
        return RawDetections.empty()
    return RawDetections(np.concatenate(boxes), np.concatenate(scores), np.concatenate(ids))

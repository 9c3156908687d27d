"""Non-maximum suppression through OpenCV (``cv2.dnn.NMSBoxesBatched`` for class-aware)."""

from __future__ import annotations

import cv2
import numpy as np

from edge.inference.decoders.base import RawDetections


def nms(
    raw: RawDetections,
    *,
    iou: float,
    conf: float,
    class_agnostic: bool = False,
    max_detections: int = 300,
) -> RawDetections:
    """Keep the best boxes of ``raw`` (xyxy); highest score first, at most ``max_detections``."""
    if not len(raw):
        return raw
    keep_conf = raw.scores >= conf
    boxes, scores, ids = raw.boxes[keep_conf], raw.scores[keep_conf], raw.class_ids[keep_conf]
    if raw.nms_done or not len(scores):
        order = np.argsort(-scores, kind="stable")[:max_detections]
        return RawDetections(boxes[order], scores[order], ids[order], nms_done=True)
    xywh = boxes.copy()
    xywh[:, 2:] -= xywh[:, :2]
    # NMSBoxesBatched separates classes by (max coordinate + 1), which only works for coordinates >= 0;
    # boxes partly outside the frame are negative, so shift them all (IoU does not change).
    xywh[:, :2] -= min(0.0, float(xywh[:, :2].min()))
    # OpenCV keeps scores strictly above its threshold; ours is inclusive (>= conf, applied above).
    below = max(0.0, float(np.nextafter(np.float32(conf), np.float32(-1))))
    if class_agnostic:
        kept = cv2.dnn.NMSBoxes(xywh, scores, below, iou)  # top_k would cut candidates before NMS
    else:
        kept = cv2.dnn.NMSBoxesBatched(xywh, scores, ids, below, iou)  # top_k would cut candidates before NMS
    kept = np.asarray(kept, dtype=np.int64).reshape(-1)
    order = kept[np.argsort(-scores[kept], kind="stable")][:max_detections]
    return RawDetections(boxes[order], scores[order], ids[order], nms_done=True)

"""Tiling for small objects on large frames (sticky cards, tiny animals).

The frame is cut into overlapping tiles, each run through the detector at its native resolution,
boxes are shifted back to full-frame coordinates, an optional full-frame pass catches large
objects, and everything is merged by NMS.
"""

from __future__ import annotations

import numpy as np

from edge.inference.decoders import RawDetections
from edge.inference.detector import Detection, Detector
from edge.inference.nms import nms


def tile_grid(width: int, height: int, *, tile: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Tiles ``(x0, y0, x1, y1)`` covering the frame; the last row/column is shifted to end at the edge."""
    if tile < 16:
        raise ValueError(f"tile must be at least 16 pixels, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be within [0, 1), got {overlap}")
    step = max(1, int(tile * (1.0 - overlap)))

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        points = list(range(0, size - tile, step))
        points.append(size - tile)
        return points

    return [
        (x, y, min(width, x + tile), min(height, y + tile))
        for y in starts(height)
        for x in starts(width)
    ]


class TiledDetector:
    """Runs a :class:`Detector` over tiles of each frame and merges the results."""

    def __init__(self, detector: Detector, *, tile: int, overlap: float = 0.2, full_frame: bool = True) -> None:
        tile_grid(tile, tile, tile=tile, overlap=overlap)  # validates the arguments
        self.detector = detector
        self.tile = tile
        self.overlap = overlap
        self.full_frame = full_frame

    def _run(self, image: np.ndarray, x0: int, y0: int) -> RawDetections:
        det = self.detector
        tensor, transform = det.prepare(image)
        raw = det.decode(det.infer(tensor))
        if len(raw):
            raw.boxes = transform.to_source(raw.boxes)
            raw.boxes[:, 0::2] += x0
            raw.boxes[:, 1::2] += y0
        return raw

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect in one BGR uint8 frame; boxes in that frame's pixels, best first."""
        height, width = image.shape[:2]
        parts = [self._run(image[y0:y1, x0:x1], x0, y0)
                 for x0, y0, x1, y1 in tile_grid(width, height, tile=self.tile, overlap=self.overlap)]
        if self.full_frame and (width > self.tile or height > self.tile):
            parts.append(self._run(image, 0, 0))
        parts = [p for p in parts if len(p)]
        if not parts:
            return []
        merged = RawDetections(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.class_ids for p in parts]),
        )
        det = self.detector
        kept = nms(merged, iou=det.iou, conf=det.conf, class_agnostic=det.class_agnostic,
                   max_detections=det.max_detections)
        return det.to_detections(kept)

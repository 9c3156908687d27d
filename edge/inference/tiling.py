"""Tiling for small objects on large frames (sticky cards, tiny animals).

The frame is cut into overlapping square tiles; each tile is resized to the model's input like any
frame (a tile smaller than the input is enlarged, so small objects get more pixels), its boxes are
shifted back to frame coordinates, and an optional full-frame pass sees large objects whole.

Merging (:func:`merge_tiled`), in this order:

1. **Fragments go.** A tile box that reaches an inner tile edge (one that is not the frame's edge,
   within :data:`EDGE_MARGIN` of the tile size) shows an object the tile cut. It is dropped when at
   least :data:`FRAGMENT_IOS` of its area lies inside a larger box of a compatible class (same class,
   or both COCO animals, since a fragment of an elephant is often called a cow): the full-frame box,
   or a larger fragment, already covers that object. Plain IoU cannot do this: a quarter of a bear
   has an IoU of 0.25 with the whole bear. Unlike SAHI's GREEDYNMM, boxes are never grown to a union
   (fragments poke past the animal) and only cut boxes can go, so a small animal seen whole in a tile
   survives inside a larger animal's box.
2. **Whole tile boxes beat the full frame.** A full-frame box that overlaps (IoU >= the NMS
   threshold, same class unless the model's NMS is class-agnostic) a tile box that does not reach an
   inner edge is dropped: the tile saw the same object whole at a higher resolution, so its label
   and box are kept rather than the low-resolution guess.
3. **NMS** (the model's IoU threshold and class-agnostic setting) on what is left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge.inference.decoders import RawDetections
from edge.inference.detector import Detection, Detector
from edge.inference.labels import COCO_ANIMALS
from edge.inference.nms import nms

MIN_TILE = 32  # the coarsest stride of common detectors: a smaller tile is a single grid cell
FRAGMENT_IOS = 0.6  # share of a cut box's area inside a larger box that makes it a fragment
EDGE_MARGIN = 0.05  # of the tile size: boxes of cut objects stop a few pixels short of the edge
_CHUNK = 1 << 20  # pairwise matrix entries computed at once (a few MB, whatever the frame)

Box = tuple[int, int, int, int]


def check_tiling(*, tile: int, overlap: float) -> None:
    """Raise ValueError (naming the setting) when ``tile`` or ``overlap`` cannot make a tile grid."""
    if tile < MIN_TILE:
        raise ValueError(f"tile must be at least {MIN_TILE} pixels, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be within [0, 1), got {overlap}")


def tile_grid(width: int, height: int, *, tile: int, overlap: float) -> list[Box]:
    """Tiles ``(x0, y0, x1, y1)`` covering the frame, evenly spaced from edge to edge, as few as give
    every pair of neighbours at least ``overlap`` of a tile in common."""
    check_tiling(tile=tile, overlap=overlap)
    step = max(1, int(tile * (1.0 - overlap)))

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        count = -(-(size - tile) // step) + 1
        return [round(i * (size - tile) / (count - 1)) for i in range(count)]

    return [
        (x, y, min(width, x + tile), min(height, y + tile))
        for y in starts(height)
        for x in starts(width)
    ]


def class_groups(labels: list[str]) -> np.ndarray:
    """Group id per class id: classes in one group may absorb each other's fragments."""
    groups = np.arange(len(labels), dtype=np.int64)
    animals = [i for i, name in enumerate(labels) if name in COCO_ANIMALS]
    if animals:
        groups[animals] = animals[0]
    return groups


@dataclass(slots=True)
class TiledBoxes:
    """Boxes from every pass in frame pixels (xyxy), each with the tile it came from."""

    raw: RawDetections
    tiles: np.ndarray  # int [N, 4]: the tile (x0, y0, x1, y1) of each box; the whole frame for the full pass


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas [len(a), len(b)] of xyxy boxes."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def _any_match(rows: np.ndarray, test: Callable[[np.ndarray], np.ndarray], columns: int) -> np.ndarray:
    """For each index in ``rows``, whether ``test(some_rows)`` (a [len(some_rows), columns] bool matrix)
    has a True; computed in chunks so a frame with thousands of boxes never builds one huge matrix."""
    out = np.zeros(len(rows), dtype=bool)
    n = max(1, _CHUNK // max(1, columns))
    for start in range(0, len(rows), n):
        out[start:start + n] = test(rows[start:start + n]).any(axis=1)
    return out


def cut_by_tile(boxes: np.ndarray, tiles: np.ndarray, *, width: int, height: int, margin: float) -> np.ndarray:
    """Whether each box reaches an inner edge of its tile (within ``margin`` pixels)."""
    x0, y0, x1, y1 = (tiles[:, i] for i in range(4))
    return (
        ((x0 > 0) & (boxes[:, 0] <= x0 + margin))
        | ((y0 > 0) & (boxes[:, 1] <= y0 + margin))
        | ((x1 < width) & (boxes[:, 2] >= x1 - margin))
        | ((y1 < height) & (boxes[:, 3] >= y1 - margin))
    )


def merge_tiled(
    parts: TiledBoxes,
    *,
    width: int,
    height: int,
    tile: int,
    groups: np.ndarray,
    iou: float,
    conf: float,
    class_agnostic: bool,
    max_detections: int,
    fragment_ios: float = FRAGMENT_IOS,
    edge_margin: float = EDGE_MARGIN,
) -> RawDetections:
    """Merge boxes from tiles and the full frame (rules in the module docstring); best first.

    Cost: a sort plus one vectorised pass of cut boxes against all boxes (O(cut x N), in chunks)
    and one of full-frame boxes against whole tile boxes, then OpenCV's NMS; N is what survived each
    tile's own NMS, usually tens. Written with numpy because OpenCV's NMS calls
    (``cv2.dnn.NMSBoxes``/``NMSBoxesBatched``) only know IoU, which cannot see a box inside another.
    """
    raw = parts.raw
    if not len(raw):
        return raw
    boxes, scores, ids, tiles = raw.boxes, raw.scores, raw.class_ids, parts.tiles
    area = _areas(boxes)
    group = groups[ids]
    cut = cut_by_tile(boxes, tiles, width=width, height=height, margin=max(2.0, edge_margin * tile))
    full = (tiles[:, 0] == 0) & (tiles[:, 1] == 0) & (tiles[:, 2] == width) & (tiles[:, 3] == height)
    drop = np.zeros(len(raw), dtype=bool)

    # 1. fragments inside a larger box of a compatible class
    def contained(rows: np.ndarray) -> np.ndarray:
        inside = _intersections(boxes[rows], boxes) >= fragment_ios * area[rows, None]
        return inside & (area[None, :] > area[rows, None]) & (group[None, :] == group[rows, None])

    cut_rows = np.flatnonzero(cut & ~full)
    drop[cut_rows[_any_match(cut_rows, contained, len(raw))]] = True

    # 2. full-frame boxes that a tile saw whole
    whole = np.flatnonzero(~cut & ~full & ~drop)
    if len(whole) and full.any():
        def seen_whole(rows: np.ndarray) -> np.ndarray:
            inter = _intersections(boxes[rows], boxes[whole])
            union = area[rows, None] + area[None, whole] - inter
            same = inter >= iou * np.maximum(union, 1e-9)
            return same if class_agnostic else same & (ids[rows, None] == ids[None, whole])

        full_rows = np.flatnonzero(full)
        drop[full_rows[_any_match(full_rows, seen_whole, len(whole))]] = True

    keep = ~drop
    kept = RawDetections(boxes[keep], scores[keep], ids[keep])
    return nms(kept, iou=iou, conf=conf, class_agnostic=class_agnostic, max_detections=max_detections)


class TiledDetector:
    """Runs a :class:`Detector` over tiles of each frame and merges the results."""

    def __init__(self, detector: Detector, *, tile: int, overlap: float = 0.2, full_frame: bool = True) -> None:
        check_tiling(tile=tile, overlap=overlap)
        self.detector = detector
        self.tile = tile
        self.overlap = overlap
        self.full_frame = full_frame
        self._groups = class_groups(detector.labels)

    def _run(self, image: np.ndarray, x0: int, y0: int) -> RawDetections:
        det = self.detector
        tensor, transform = det.prepare(image)
        raw = det.decode(det.infer(tensor))
        if len(raw):
            raw.boxes = transform.to_source(raw.boxes)
            raw.boxes[:, 0::2] += x0
            raw.boxes[:, 1::2] += y0
        return raw

    def candidates(self, image: np.ndarray) -> TiledBoxes:
        """Every pass's boxes (each pass already NMS-ed on its own), before merging."""
        height, width = image.shape[:2]
        regions = tile_grid(width, height, tile=self.tile, overlap=self.overlap)
        if self.full_frame and (width > self.tile or height > self.tile):
            regions.append((0, 0, width, height))
        parts = [(self._run(image[y0:y1, x0:x1], x0, y0), (x0, y0, x1, y1)) for x0, y0, x1, y1 in regions]
        parts = [(raw, region) for raw, region in parts if len(raw)]
        if not parts:
            return TiledBoxes(RawDetections.empty(), np.zeros((0, 4), np.int64))
        return TiledBoxes(
            RawDetections(
                np.concatenate([raw.boxes for raw, _ in parts]),
                np.concatenate([raw.scores for raw, _ in parts]),
                np.concatenate([raw.class_ids for raw, _ in parts]),
            ),
            np.concatenate([np.tile(np.asarray(region, np.int64), (len(raw), 1)) for raw, region in parts]),
        )

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect in one BGR uint8 frame; boxes in that frame's pixels, best first."""
        height, width = image.shape[:2]
        det = self.detector
        kept = merge_tiled(self.candidates(image), width=width, height=height, tile=self.tile,
                           groups=self._groups, iou=det.iou, conf=det.conf, class_agnostic=det.class_agnostic,
                           max_detections=det.max_detections)
        return det.to_detections(kept)

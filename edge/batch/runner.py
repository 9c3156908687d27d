"""The batch pipeline: decode photos in worker threads while the model runs on the previous one.

cv2.imdecode, cv2.resize and onnxruntime all release the GIL, so on a small CPU a decode thread
and the inference thread overlap for real; the queue ahead of inference is bounded, so memory
stays flat however large the folder.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from edge.batch.results import FileResult
from edge.batch.sources import Item
from edge.errors import ImageReadError
from edge.imaging import Decoded, read_image
from edge.inference.classifier import Classifier
from edge.inference.detector import Detection, Detector
from edge.inference.preprocess import Transform
from edge.inference.tiling import TiledDetector

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Loaded:
    decoded: Decoded | None = None
    tensor: np.ndarray | None = None
    transform: Transform | None = None
    failure: str | None = None


class BatchRunner:
    """Runs a detector (and optionally a classifier on chosen classes) over files."""

    def __init__(
        self,
        detector: Detector,
        *,
        classifier: Classifier | None = None,
        classify_ids: set[int] | None = None,
        tile: int | None = None,
        overlap: float = 0.2,
        full_frame: bool = True,
        reduced: bool = True,
        workers: int = 1,
        prefetch: int = 3,
        video_every: int = 10,
        video_detections: str = "best",
    ) -> None:
        if workers < 1 or prefetch < 1:
            raise ValueError("workers and prefetch must be >= 1")
        if video_every < 1:
            raise ValueError(f"video_every must be >= 1, got {video_every}")
        if video_detections not in ("best", "all"):
            raise ValueError("video_detections must be 'best' or 'all'")
        self.detector = detector
        self.classifier = classifier
        self.classify_ids = classify_ids
        self.tiler = TiledDetector(detector, tile=tile, overlap=overlap, full_frame=full_frame) if tile else None
        # Tiles exist to see small things at full resolution: never decode reduced for them.
        self.reduced = reduced and self.tiler is None
        self.workers = workers
        self.prefetch = max(prefetch, workers)
        self.video_every = video_every
        self.video_detections = video_detections
        # A letterbox only needs the long side; a stretch needs both sides at full size.
        self._cover = detector.card.preprocess.resize in ("stretch", "centre_crop")

    # -- stills ------------------------------------------------------------------------------
    def _load(self, item: Item) -> _Loaded:
        """Worker thread: read, decode (reduced when allowed) and preprocess one photo."""
        try:
            decoded = read_image(item.path, needed=self.detector.input_size if self.reduced else None,
                                 cover=self._cover)
        except ImageReadError as err:
            return _Loaded(failure=f"Failure image access: {err}")
        if self.tiler is not None:
            return _Loaded(decoded)
        tensor, transform = self.detector.prepare(decoded.image)
        return _Loaded(decoded, tensor, transform)

    def _detect(self, image: np.ndarray, loaded: _Loaded | None = None) -> list[Detection]:
        if self.tiler is not None:
            return self.tiler.detect(image)
        if loaded is not None and loaded.tensor is not None:
            det = self.detector
            return det.to_detections(det.decode(det.infer(loaded.tensor)), loaded.transform)
        return self.detector.detect(image)

    def _classify(self, item: Item, decoded: Decoded, detections: list[Detection]) -> None:
        """Classify crops at full resolution: a reduced decode is fine for finding an animal,
        not for telling its species."""
        if self.classifier is None or not detections:
            return
        wanted = [d for d in detections if self.classify_ids is None or d.class_id in self.classify_ids]
        if not wanted:
            return
        image = decoded.image
        if decoded.factor != (1.0, 1.0):
            image = read_image(item.path).image
        self.classifier.classify_detections(image, wanted)

    def _finish(self, item: Item, loaded: _Loaded) -> FileResult:
        if loaded.failure is not None or loaded.decoded is None:
            return FileResult(item.name, failure=loaded.failure or "Failure image access")
        decoded = loaded.decoded
        fx, fy = decoded.factor
        detections = [d.scaled(fx, fy) for d in self._detect(decoded.image, loaded)]
        self._classify(item, decoded, detections)
        return FileResult(item.name, decoded.full_width, decoded.full_height, detections)

    # -- videos ------------------------------------------------------------------------------
    def _video(self, item: Item) -> FileResult:
        capture = cv2.VideoCapture(str(item.path))
        try:
            if not capture.isOpened():
                return _failed_video(item, "Failure video access: cannot open the video")
            fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            processed: list[int] = []
            detections: list[Detection] = []
            width = height = 0
            index = 0
            while capture.grab():
                if index % self.video_every == 0:
                    ok, frame = capture.retrieve()
                    if ok and frame is not None:
                        height, width = frame.shape[:2]
                        found = self._detect(frame)
                        if self.classifier is not None:
                            self.classifier.classify_detections(frame, found, class_ids=self.classify_ids)
                        for det in found:
                            det.frame = index
                        detections.extend(found)
                        processed.append(index)
                index += 1
        finally:
            capture.release()
        if not processed:
            return _failed_video(item, "Failure video access: no frame could be decoded")
        if self.video_detections == "best":
            detections = _best_frame_per_class(detections)
        return FileResult(item.name, width, height, detections, frame_rate=fps if fps > 0 else 1.0,
                          frames_processed=processed)

    # -- driver ------------------------------------------------------------------------------
    def _safe(self, item: Item, work) -> FileResult:
        try:
            return work()
        except Exception as err:  # one bad file must not end a run of thousands: record it
            logger.warning("%s: %s: %s", item.name, type(err).__name__, err)
            failure = f"Failure inference: {type(err).__name__}: {err}"
            return _failed_video(item, failure) if item.is_video else FileResult(item.name, failure=failure)

    def run(self, items: Iterable[Item]) -> Iterator[FileResult]:
        """Yield one result per item, in order."""
        pending: deque[tuple[Item, Future[_Loaded] | None]] = deque()
        source = iter(items)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="decode") as pool:

            def submit() -> None:
                item = next(source, None)
                if item is not None:
                    pending.append((item, None if item.is_video else pool.submit(self._load, item)))

            for _ in range(self.prefetch):
                submit()
            while pending:
                item, future = pending.popleft()
                submit()
                if future is None:
                    yield self._safe(item, lambda: self._video(item))
                else:
                    yield self._safe(item, lambda: self._finish(item, future.result()))


def _failed_video(item: Item, failure: str) -> FileResult:
    """A video that could not be processed, as MegaDetector writes one: frame rate -1, no frames."""
    return FileResult(item.name, failure=failure, frame_rate=-1.0, frames_processed=[])


def _best_frame_per_class(detections: list[Detection]) -> list[Detection]:
    """MegaDetector's video convention: per class, the detections of the frame where it scored best."""
    best: dict[int, int] = {}
    top: dict[int, float] = {}
    for det in detections:
        if det.score > top.get(det.class_id, -1.0):
            top[det.class_id] = det.score
            best[det.class_id] = det.frame or 0
    return [d for d in detections if best.get(d.class_id) == d.frame]

"""One trigger's frames through the device pipeline: detect, classify crops, new-object filter,
privacy, image store; then the burst's event. The daemon (edge/daemon.py) only wires this up.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from edge.capture.base import Frame
from edge.capture.exif import encodable
from edge.clock import Clock
from edge.crops import encode_crop
from edge.errors import StoreError
from edge.group import FrameDetections, NewObjectFilter, PrivacyPolicy, summarise_burst
from edge.group.burst import normalise_box
from edge.inference.classifier import Classifier
from edge.inference.detector import Detection, Detector
from edge.store import DetectionRecord, EventRecord, FrameRecord, can_save, image_relpath, new_uid, save_jpeg

logger = logging.getLogger(__name__)

SaveImages = Literal["all", "detections", "none"]


@dataclass(slots=True)
class Processed:
    """A frame's record and its detections (pixel boxes, classifications, new-object flags)."""

    record: FrameRecord
    detections: list[Detection] = field(default_factory=list)
    new: list[bool] = field(default_factory=list)
    crop: bytes | None = None  # JPEG of the frame's best detection (``crop_max_bytes`` set), privacy applied


class FramePipeline:
    """Turns frames into :class:`FrameRecord` s and a trigger's frames into one event."""

    def __init__(
        self,
        *,
        detector: Detector,
        clock: Clock,
        images_dir: Path,
        classifier: Classifier | None = None,
        classify_labels: Sequence[str] | None = None,
        classifier_min_confidence: float = 0.0,
        classifier_margin: float = 0.0,
        sticky: NewObjectFilter | None = None,
        privacy: PrivacyPolicy | None = None,
        save_images: SaveImages = "detections",
        jpeg_quality: int = 90,
        min_free: int = 0,
        crop_max_bytes: int | None = None,
        disk_usage: Callable[[Path], object] = shutil.disk_usage,
    ) -> None:
        if save_images not in ("all", "detections", "none"):
            raise ValueError(f"save_images must be all, detections or none, got {save_images!r}")
        self.detector = detector
        self.classifier = classifier
        self.clock = clock
        self.images_dir = images_dir
        self.sticky = sticky
        self.privacy = privacy or PrivacyPolicy()
        self.save_images = save_images
        self.jpeg_quality = jpeg_quality
        self.min_free = min_free
        self.crop_max_bytes = crop_max_bytes
        self.disk_usage = disk_usage
        self.min_confidence = classifier_min_confidence
        self.margin = classifier_margin
        self.classify_ids: set[int] | None = None
        if classify_labels is not None:
            unknown = sorted(set(classify_labels) - set(detector.labels))
            if unknown:
                raise ValueError(f"classifier.classes names labels the detector does not have: {unknown}")
            self.classify_ids = {i for i, name in enumerate(detector.labels) if name in set(classify_labels)}
        self.disk_low = False
        #: Set by the daemon while the disk reserve is given back: images would eat the room kept
        #: for results and retention, so none are saved until the reserve is held again.
        self.images_paused = False
        self.last_inference_ms: float | None = None

    def reconfigure(self, cfg: Any) -> None:
        """Take new thresholds and storage settings from a changed config (models stay loaded)."""
        self.detector.set_thresholds(conf=cfg.detector.conf, iou=cfg.detector.iou)
        if cfg.classifier is not None:
            self.min_confidence = cfg.classifier.min_confidence
            self.margin = cfg.classifier.margin
        if self.sticky is not None:
            self.sticky.iou = cfg.events.match_iou
        self.save_images = cfg.storage.save_images
        self.jpeg_quality = cfg.storage.jpeg_quality
        self.min_free = cfg.storage.min_free

    # -- one frame --------------------------------------------------------------------------------
    def process(self, frame: Frame, *, trigger: str, burst_id: str, index: int) -> Processed:
        """Detect, classify, filter and store one frame's image; the frame's record (not committed)."""
        image = frame.image
        height, width = image.shape[:2]
        captured_at = frame.captured_at
        if not encodable(captured_at):
            # Any camera (a folder already falls back itself): a time the wire cannot carry would
            # make the event unsendable; the wall clock's is the best guess left.
            logger.warning("frame %s: time %r outside 1970..9999 UTC, the wall clock's is recorded",
                           frame.source or "", captured_at)
            captured_at = self.clock.now()
        started = time.perf_counter()
        detections = self.detector.detect(image)
        if self.classifier is not None and detections:
            self.classifier.classify_detections(image, detections, class_ids=self.classify_ids)
        inference_ms = (time.perf_counter() - started) * 1000
        self.last_inference_ms = inference_ms
        if self.sticky is not None:
            new = self.sticky.update(detections, width=width, height=height, image=image)
        else:
            new = [True] * len(detections)
        outcome = self.privacy.apply(image, detections)
        uid = new_uid()
        image_path = None
        wanted = self.save_images == "all" or (self.save_images == "detections" and any(new))
        if wanted and outcome.image is not None:
            image_path = self._save(outcome.image, captured_at, uid)
        records = [self._detection(d, n, width, height) for d, n in zip(detections, new)]
        record = FrameRecord(
            uid=uid, captured_at=captured_at, monotonic=frame.monotonic, boot_id=self.clock.boot_id(),
            clock_synced=self.clock.synchronised(), trigger=trigger, burst_id=burst_id, burst_index=index,
            width=width, height=height, inference_ms=round(inference_ms, 2), source=frame.source,
            image_path=image_path, detections=records, person=outcome.person,
        )
        return Processed(record, detections, new, self._crop(outcome.image, detections, new))

    def _crop(self, image, detections: Sequence[Detection], new: Sequence[bool]) -> bytes | None:
        """The crop of the frame's best new detection (the event's best when this frame is its best).

        None when that detection is a person (at any score, in any privacy mode: no crop stands in
        for it), and people near an animal are pixelated in the crop whatever the mode.
        """
        if not self.crop_max_bytes or image is None or not any(new):
            return None
        best = max((d for d, n in zip(detections, new) if n), key=lambda d: d.score)
        if not self.privacy.crop_allowed(best):
            return None
        return encode_crop(self.privacy.for_crop(image, detections), best.box, max_bytes=self.crop_max_bytes)

    def failed(self, source: str | None, reason: str, *, trigger: str, burst_id: str, index: int) -> Processed:
        """The record of a frame that could not be read: its source counts as done."""
        record = FrameRecord(
            uid=new_uid(), captured_at=self.clock.now(), monotonic=self.clock.monotonic(),
            boot_id=self.clock.boot_id(), clock_synced=self.clock.synchronised(), trigger=trigger,
            burst_id=burst_id, burst_index=index, width=0, height=0, inference_ms=0.0, source=source,
            failure=reason,
        )
        return Processed(record)

    def _detection(self, det: Detection, new: bool, width: int, height: int) -> DetectionRecord:
        classification = None
        if det.classifications and self.classifier is not None:
            class_id, prob = det.classifications[0]
            runner_up = det.classifications[1][1] if len(det.classifications) > 1 else 0.0
            # An unsure classification (low, or too close to the second guess) is left out, not guessed.
            if prob >= self.min_confidence and prob - runner_up >= self.margin:
                classification = (class_id, self.classifier.labels[class_id], round(float(prob), 4))
        box = tuple(round(v, 5) for v in normalise_box(det.box, width, height))
        return DetectionRecord(det.class_id, det.label, round(det.score, 4), box, classification, new)  # type: ignore[arg-type]

    def _save(self, image, captured_at: datetime, uid: str) -> str | None:
        if self.images_paused or not can_save(self.images_dir, self.min_free, disk_usage=self.disk_usage):
            if not self.disk_low:
                logger.warning("disk below the free-space floor%s: images are no longer saved, results still are",
                               " (the disk reserve is given back)" if self.images_paused else "")
            self.disk_low = True
            return None
        if self.disk_low:
            logger.info("disk above the free-space floor again: saving images")
            self.disk_low = False
        relative = image_relpath(captured_at, uid)
        try:
            save_jpeg(self.images_dir, relative, image, quality=self.jpeg_quality)
        except StoreError as err:
            # A full or failing card must not stop detection: the result is recorded without its image.
            logger.warning("image not saved: %s", err)
            return None
        return relative

    # -- one trigger ------------------------------------------------------------------------------
    def event(self, frames: Sequence[Processed], *, trigger: str, burst_id: str) -> EventRecord | None:
        """The trigger's event (None when nothing new was detected in any of its frames)."""
        usable = [p for p in frames if p.record.failure is None]
        groups = []
        for p in usable:
            # Sticky cards: only the new objects make an event; what was already there is no news.
            keep = [i for i, flag in enumerate(p.new) if flag]
            groups.append(FrameDetections(p.record.uid, [p.detections[i] for i in keep], p.record.width,
                                          p.record.height, new=[True] * len(keep) if self.sticky else None))
        labels = self.classifier.labels if self.classifier is not None else None
        summary = summarise_burst(groups, classifier_labels=labels) if groups else None
        if summary is None:
            return None
        best = next(p for p in usable if p.record.uid == summary.best.frame_uid)
        image = best.record.image_path or next((p.record.image_path for p in usable if p.record.image_path), None)
        first = usable[0].record
        return EventRecord(
            uid=new_uid(), burst_id=burst_id, captured_at=first.captured_at, monotonic=first.monotonic,
            boot_id=first.boot_id, clock_synced=first.clock_synced, trigger=trigger, image_path=image,
            best_frame_uid=best.record.uid, summary=summary.to_dict(),
        )

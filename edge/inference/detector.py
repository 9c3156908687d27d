"""The detector stage: preprocess, run, decode, NMS, map boxes back to the photo."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from edge.errors import ModelError
from edge.inference.decoders import DecodeContext, RawDetections, get_decoder
from edge.inference.nms import nms
from edge.inference.preprocess import Transform, preprocess
from edge.inference.session import OnnxModel

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Detection:
    """One detected object; ``box`` is xyxy in the pixels of the image passed in."""

    box: tuple[float, float, float, float]
    score: float
    class_id: int
    label: str
    classifications: list[tuple[int, float]] = field(default_factory=list)  # (class id, prob), best first
    frame: int | None = None  # video frame number, None for a still image

    def scaled(self, fx: float, fy: float) -> Detection:
        """The same detection with its box scaled by ``fx``/``fy`` (e.g. reduced decode to full size)."""
        x1, y1, x2, y2 = self.box
        return Detection((x1 * fx, y1 * fy, x2 * fx, y2 * fy), self.score, self.class_id, self.label,
                         list(self.classifications), self.frame)


class Detector:
    """A detection model loaded from an ONNX file with a card; a context manager.

    Thresholds default to the card's recommendation; pass ``conf``/``iou`` to override.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        conf: float | None = None,
        iou: float | None = None,
        class_agnostic: bool | None = None,
        max_detections: int | None = None,
        threads: int | None = None,
        spin: bool = True,
        warmup: bool = True,
        fused: bool = True,
    ) -> None:
        for name, value in (("conf", conf), ("iou", iou)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if max_detections is not None and max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {max_detections}")
        self.model = OnnxModel(path, threads=threads, spin=spin, fused=fused)
        card = self.model.card
        if card.task != "detect":
            raise ModelError(f"{path} is a {card.task} model, not a detector")
        self.card = card
        self.labels = card.labels
        self.conf = card.thresholds.conf if conf is None else conf
        self.iou = card.thresholds.iou if iou is None else iou
        self.class_agnostic = card.thresholds.class_agnostic if class_agnostic is None else class_agnostic
        self.max_detections = max_detections or card.thresholds.max_detections
        self._decode = get_decoder(card.decoder.name)
        self._ctx = DecodeContext(card.preprocess.input_size, len(card.labels), self.conf, card.decoder.params)
        if warmup:
            try:
                self.warm_up()
            except BaseException:
                self.model.close()
                raise

    def set_thresholds(self, *, conf: float | None = None, iou: float | None = None) -> None:
        """Change the score and NMS thresholds of a loaded detector (None: back to the card's)."""
        for name, value in (("conf", conf), ("iou", iou)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        self.conf = self.card.thresholds.conf if conf is None else conf
        self.iou = self.card.thresholds.iou if iou is None else iou
        self._ctx = DecodeContext(self._ctx.input_size, self._ctx.num_classes, self.conf, self._ctx.params)

    def warm_up(self) -> None:
        """One inference on a blank input: a slow first run never trips a watchdog, and the decoder
        checks the graph's outputs against the card now rather than on the first photo."""
        self._decode(self.model.run(self.model.zeros()), self._ctx)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.card.preprocess.input_size

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Transform]:
        return preprocess(image, self.card.preprocess)

    def infer(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        return self.model.run(tensor)

    def decode(self, outputs: dict[str, np.ndarray]) -> RawDetections:
        """Decoded and NMS-ed boxes in model-input pixels."""
        raw = self._decode(outputs, self._ctx)
        return nms(raw, iou=self.iou, conf=self.conf, class_agnostic=self.class_agnostic,
                   max_detections=self.max_detections)

    def to_detections(self, raw: RawDetections, transform: Transform | None = None) -> list[Detection]:
        """Detections from decoded boxes, mapped to source pixels through ``transform`` when given."""
        boxes = transform.to_source(raw.boxes) if transform is not None and len(raw) else raw.boxes
        return [
            Detection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(s), int(c), self.labels[int(c)])
            for b, s, c in zip(boxes, raw.scores, raw.class_ids)
        ]

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect objects in one BGR uint8 image; boxes in that image's pixels, best first."""
        tensor, transform = self.prepare(image)
        return self.to_detections(self.decode(self.infer(tensor)), transform)

    def close(self) -> None:
        self.model.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

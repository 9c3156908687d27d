"""The classifier stage: crops of chosen detector classes, resized per the classifier's card, softmax, top-k."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import numpy as np

from edge.errors import ModelError
from edge.inference.detector import Detection
from edge.inference.preprocess import preprocess
from edge.inference.session import OnnxModel

logger = logging.getLogger(__name__)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class Classifier:
    """An image classifier loaded from an ONNX file with a card; a context manager."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        top_k: int = 5,
        threads: int | None = None,
        spin: bool = True,
        warmup: bool = True,
        fused: bool = True,
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.model = OnnxModel(path, threads=threads, spin=spin, fused=fused)
        card = self.model.card
        if card.task != "classify":
            raise ModelError(f"{path} is a {card.task} model, not a classifier")
        if card.decoder.name != "softmax":
            raise ModelError(f"{path}: classifier decoder {card.decoder.name!r} is not supported (softmax is)")
        self.card = card
        self.labels = card.labels
        self.top_k = min(top_k, len(card.labels))
        self._already_softmax = bool(card.decoder.params.get("already_softmax", False))
        if warmup:
            self._scores(self.model.zeros())

    def _scores(self, tensor: np.ndarray) -> np.ndarray:
        outputs = self.model.run(tensor)
        scores = next(iter(outputs.values()))
        scores = scores.reshape(scores.shape[0], -1)
        if scores.shape[1] != len(self.labels):
            raise ModelError(
                f"{self.model.path}: the model outputs {scores.shape[1]} classes but the card has "
                f"{len(self.labels)} labels"
            )
        return scores if self._already_softmax else softmax(scores.astype(np.float32))

    def _top(self, probs: np.ndarray) -> list[tuple[int, float]]:
        order = np.argsort(-probs, kind="stable")[: self.top_k]
        return [(int(i), float(probs[i])) for i in order]

    def classify_batch(self, images: list[np.ndarray]) -> list[list[tuple[int, float]]]:
        """Top-k ``(class id, probability)`` for each BGR uint8 image, best first."""
        if not images:
            return []
        tensors = [preprocess(image, self.card.preprocess)[0] for image in images]
        if self.model.dynamic_batch and len(tensors) > 1:
            probs = self._scores(np.concatenate(tensors))
        else:
            probs = np.concatenate([self._scores(t) for t in tensors])
        return [self._top(p) for p in probs]

    def classify(self, image: np.ndarray) -> list[tuple[int, float]]:
        """Top-k ``(class id, probability)`` for one BGR uint8 image, best first."""
        return self.classify_batch([image])[0]

    def classify_detections(
        self,
        image: np.ndarray,
        detections: Iterable[Detection],
        *,
        class_ids: set[int] | None = None,
        margin: float = 0.0,
        min_size: int = 4,
    ) -> int:
        """Classify the crop of each detection whose class is in ``class_ids`` (all when None).

        ``image`` must be in the detections' pixel coordinates. The crop grows by ``margin`` (a
        fraction of the box side) on each side, clipped to the frame. Returns the number classified.
        """
        height, width = image.shape[:2]
        chosen, crops = [], []
        for det in detections:
            if class_ids is not None and det.class_id not in class_ids:
                continue
            x1, y1, x2, y2 = det.box
            mx, my = (x2 - x1) * margin, (y2 - y1) * margin
            left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
            right, bottom = min(width, int(round(x2 + mx))), min(height, int(round(y2 + my)))
            if right - left < min_size or bottom - top < min_size:
                continue
            chosen.append(det)
            crops.append(image[top:bottom, left:right])
        for det, result in zip(chosen, self.classify_batch(crops)):
            det.classifications = result
        return len(chosen)

    def close(self) -> None:
        self.model.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

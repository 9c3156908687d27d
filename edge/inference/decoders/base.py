"""What every decoder returns, and the helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge.errors import ModelError


@dataclass(slots=True)
class RawDetections:
    """Candidate boxes in model-input pixels (xyxy), before NMS unless ``nms_done``."""

    boxes: np.ndarray  # float32 [N, 4]
    scores: np.ndarray  # float32 [N]
    class_ids: np.ndarray  # int32 [N]
    nms_done: bool = False

    @classmethod
    def empty(cls, *, nms_done: bool = False) -> RawDetections:
        return cls(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), nms_done=nms_done
        )

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True, slots=True)
class DecodeContext:
    """What a decoder needs to know besides the raw outputs."""

    input_size: tuple[int, int]  # (width, height)
    num_classes: int
    conf: float
    params: dict[str, Any] = field(default_factory=dict)


class Decode(Protocol):
    def __call__(self, outputs: dict[str, np.ndarray], ctx: DecodeContext) -> RawDetections: ...


def single_output(outputs: dict[str, np.ndarray], decoder: str) -> np.ndarray:
    """The one output of a single-output model (first one if several, e.g. extra proto masks)."""
    if not outputs:
        raise ModelError(f"{decoder} decoder: the model has no outputs")
    return next(iter(outputs.values()))


def expect_shape(array: np.ndarray, ndim: int, decoder: str, layout: str) -> None:
    if array.ndim != ndim or array.shape[0] != 1:
        raise ModelError(
            f"{decoder} decoder expects an output of layout {layout} with batch 1, got shape {list(array.shape)}; "
            "is the card's decoder right for this model?"
        )


def expect_classes(found: int, ctx: DecodeContext, decoder: str) -> None:
    if found != ctx.num_classes:
        raise ModelError(
            f"{decoder} decoder: the model outputs {found} classes but the card has {ctx.num_classes} labels"
        )


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    out = np.empty_like(boxes, dtype=np.float32)
    half_w, half_h = boxes[:, 2] / 2, boxes[:, 3] / 2
    out[:, 0] = boxes[:, 0] - half_w
    out[:, 1] = boxes[:, 1] - half_h
    out[:, 2] = boxes[:, 0] + half_w
    out[:, 3] = boxes[:, 1] + half_h
    return out


def best_class(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row best class id and its score."""
    ids = scores.argmax(axis=1).astype(np.int32)
    return ids, scores[np.arange(len(ids)), ids].astype(np.float32)

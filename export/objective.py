"""What an INT8 model is judged by: its drop against FP32 on held-out photos.

With labels the metric is mAP@0.5 (points, i.e. percent); without them, agreement with the FP32
model (percent of FP32 detections the INT8 model reproduces, or top-1 agreement for a classifier).
The FP32 model is run once; every candidate INT8 model is then run and compared.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge.inference.card import ModelCard, read_card
from export.evaluate import GroundTruth, evaluate
from export.measure import (
    classification_agreement,
    classify_files,
    detect_files,
    detection_agreement,
    subset_gt,
)

logger = logging.getLogger(__name__)

# With labels: the budget, one mAP@0.5 point.
DEFAULT_MAP_BUDGET = 1.0
# Without labels: at least 90 % of the FP32 detections (or top-1 answers) reproduced. Detections
# near the card's threshold flip in and out with any change (a score of 0.36 becoming 0.34 loses a
# detection at conf 0.35), so even INT8 models within one mAP point of FP32 reproduce only 85 to
# 96 % of them on 30 VOC photos, while a broken one (plain INT8 YOLOX-Nano) reproduces 40 to 44 %
# (docs/quantization.md). 90 % separates the two and errs towards keeping more layers in float.
DEFAULT_AGREEMENT_BUDGET = 10.0


@dataclass(frozen=True, slots=True)
class Score:
    """One INT8 candidate's measurement: metric values in points (percent) and the drop."""

    metric: str  # "map50", "agreement" (detections) or "top1" (classifier)
    fp32: float
    int8: float

    @property
    def drop(self) -> float:
        return self.fp32 - self.int8

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop": self.drop}


def default_budget(metric: str) -> float:
    return DEFAULT_MAP_BUDGET if metric == "map50" else DEFAULT_AGREEMENT_BUDGET


class Objective:
    """Scores INT8 files against one FP32 model on one set of photos."""

    def __init__(
        self,
        fp32: str | os.PathLike[str],
        files: Sequence[Path],
        root: Path,
        *,
        gt: GroundTruth | None = None,
        class_map: Mapping[str, str] | None = None,
        threads: int | None = None,
    ) -> None:
        if not files:
            raise ValueError("the objective needs at least one photo")
        self.card: ModelCard = read_card(fp32)
        self.files, self.root = list(files), root
        self.class_map = dict(class_map) if class_map else None
        self.threads = threads
        if gt is not None and self.card.task != "detect":
            raise ValueError("labels (mAP) are for detectors; a classifier is judged by top-1 agreement")
        self.gt = subset_gt(gt, [f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
                                 for f in files]) if gt is not None else None
        self.metric = "map50" if self.gt is not None else ("agreement" if self.card.task == "detect" else "top1")
        started = time.perf_counter()
        self.reference = self._predict(fp32)
        self.fp32_value = self._value(self.reference, reference=True)
        logger.info("FP32 %s on %d photos: %.2f (%.1f s)", self.metric, len(self.files), self.fp32_value,
                    time.perf_counter() - started)

    def _predict(self, model):
        if self.card.task == "detect":
            return detect_files(model, self.files, self.root, threads=self.threads)
        return classify_files(model, self.files, threads=self.threads)

    def _value(self, predictions, *, reference: bool = False) -> float:
        if self.metric == "map50":
            report = evaluate(predictions, self.gt, class_map=self.class_map, conf=self.card.thresholds.conf)
            return 100.0 * report.map50
        if reference:
            return 100.0
        if self.metric == "agreement":
            return 100.0 * detection_agreement(self.reference, predictions, self.card.thresholds.conf).fraction
        return 100.0 * classification_agreement(self.reference, predictions).fraction

    def __call__(self, int8: str | os.PathLike[str]) -> Score:
        return Score(self.metric, self.fp32_value, self._value(self._predict(int8)))

"""What an INT8 model is judged by: a bound on its drop against FP32 on held-out photos.

With labels the metric is mAP@0.5 (points, i.e. percent); without them, agreement with the FP32
model (percent of FP32 detections the INT8 model reproduces, or top-1 agreement for a classifier).
The FP32 model is run once; every candidate INT8 model is then run and compared.

One measurement is not enough (issue 14). On an ARM device onnxruntime's INT8 kernels round some
results differently from this machine's, and on 30 photos that one-level difference finds or loses
boxes of rare classes: YOLOX-Nano's INT8 mAP@0.5 came out 4 points apart on x86 and arm64 with
identical inputs, NanoDet's 6.6. So each candidate is run in two arithmetics that both compute the
file's QDQ graph: onnxruntime's fused integer kernels (``kernels``), and the graph run as written,
each operator in float between its DequantizeLinear and QuantizeLinear (``qdq``: what exact kernels
compute, with float rounding). Neither is the device, and an INT8 network is chaotic: the same
file on inputs perturbed by 0.1 % (far below one pixel level; FP32 mostly moves by less than 0.3
mAP points under it, 1.4 at most) swung by 4 to 7 points, about as far as arm64 landed from this machine. So the kernels
also run on ``JITTER_DRAWS`` such perturbed inputs (``jitter1`` ...): stand-ins for CPUs that round
differently. With ``emulate_root`` the target's own kernels run too (``device``). With labels,
every model is then scored on paired bootstrap resamples of the photos (:mod:`export.bootstrap`),
giving an interval of the drop over all those runs, and the candidate is judged by ``bound``, the
interval's largest distance from 0.

A gain counts like a loss: this is an equivalence test (two one-sided tests, as for
bioequivalence), not a one-sided one. INT8 noise that happens to find two extra boxes of a rare class
on the held-out photos loses others elsewhere: FastestDet's INT8 files "gained" up to 2.6 points on
the held-out half while losing 4 to 8 on the other half, at every share of layers kept in float up
to 44 of 70 convolutions; a one-sided bound let such a lucky candidate through. Requiring the INT8
results to stay within the budget of FP32 either way is what carries over to other photos and to a
device that rounds differently.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.inference.card import ModelCard, read_card
from export.bootstrap import SAMPLES, resampled_map50
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


#: The ways an INT8 candidate is run here: onnxruntime's fused integer kernels, and its QDQ graph as
#: written (float operators between DequantizeLinear and QuantizeLinear). With an emulated device
#: (``emulate_root``) a third, "device": the candidate run by the target's own kernels under qemu.
ARITHMETICS = ("kernels", "qdq")
DEVICE = "device"
#: Re-runs of the fused kernels on inputs perturbed far below a pixel level (export.measure.Jittered),
#: each a stand-in for a CPU that rounds differently; named jitter1, jitter2, ...
JITTER_DRAWS = 4
JITTER = 0.001
#: Default confidence of the bound: the drop is within it on 90 % of bootstrap resamples.
CONFIDENCE = 0.9


@dataclass(frozen=True, slots=True)
class Score:
    """One INT8 candidate's measurement: metric values in points (percent), the drop and its bound.

    ``int8`` is the fused kernels' value (what this machine runs); ``drops`` holds the drop of each
    run (kernels, qdq, jitter1 ..., device), each against FP32 on the same inputs; ``interval`` is
    the bootstrap interval of the drop (None without it): its low end the ``1 - confidence`` quantile
    of the runs' smallest drop, its high end the ``confidence`` quantile of their largest. ``bound``
    is what the budget is compared with: the interval's largest distance from 0, else the largest
    |drop| of any run.
    """

    metric: str  # "map50", "agreement" (detections) or "top1" (classifier)
    fp32: float
    int8: float
    drops: dict[str, float] = field(default_factory=dict)
    interval: tuple[float, float] | None = None
    confidence: float | None = None

    @property
    def drop(self) -> float:
        return self.fp32 - self.int8

    @property
    def bound(self) -> float:
        """How far from FP32, either way, the INT8 results go: a gain counts like a loss (see module doc)."""
        if self.interval is not None:
            return max(self.interval[1], -self.interval[0])
        return max([abs(self.drop), *(abs(v) for v in self.drops.values())])

    @property
    def margin(self) -> float:
        """How far the bound lies beyond the drop measured with this machine's kernels."""
        return self.bound - abs(self.drop)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "fp32": self.fp32, "int8": self.int8, "drop": self.drop,
                "drops": {k: round(v, 3) for k, v in self.drops.items()},
                "interval": [round(v, 3) for v in self.interval] if self.interval is not None else None,
                "bound": round(self.bound, 3), "margin": round(self.margin, 3), "confidence": self.confidence}


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
        arithmetics: Sequence[str] = ARITHMETICS,
        confidence: float | None = CONFIDENCE,
        samples: int = SAMPLES,
        emulate_root: Path | None = None,
        emulate_cpu: str = "cortex-a72",
        jitter_draws: int = JITTER_DRAWS,
        jitter: float = JITTER,
    ) -> None:
        """``arithmetics``: how each INT8 candidate is run (see ARITHMETICS; "kernels" always);
        ``confidence``: quantile of the bootstrap bound (None: no bootstrap, the worse arithmetic's
        drop); ``samples``: bootstrap resamples; ``emulate_root``: an arm64 root built by
        ``scripts/arm64_check.sh``, where each candidate also runs on the emulated device
        (``QEMU_CPU=emulate_cpu``, detectors only, needs root): the "device" arithmetic;
        ``jitter_draws`` re-runs of the kernels on inputs perturbed by ``jitter`` (detectors only)."""
        if not files:
            raise ValueError("the objective needs at least one photo")
        unknown = set(arithmetics) - set(ARITHMETICS)
        if unknown or "kernels" not in arithmetics:
            raise ValueError(f"arithmetics must include 'kernels' and be among {', '.join(ARITHMETICS)}, "
                             f"got {list(arithmetics)}")
        if confidence is not None and not 0.5 <= confidence < 1.0:
            raise ValueError(f"confidence must be within [0.5, 1), got {confidence}")
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if jitter_draws < 0 or jitter <= 0:
            raise ValueError(f"jitter_draws must be >= 0 and jitter > 0, got {jitter_draws} and {jitter}")
        self.jitter_draws, self.jitter = jitter_draws, jitter
        self.arithmetics = tuple(dict.fromkeys(arithmetics))
        self.confidence, self.samples = confidence, samples
        self.card: ModelCard = read_card(fp32)
        self.emulate_root, self.emulate_cpu = (Path(emulate_root) if emulate_root else None), emulate_cpu
        if self.emulate_root is not None:
            from export.emulate import check_root

            if self.card.task != "detect":
                raise ValueError("--emulate-root measures detectors (classifiers: compare their outputs on the host)")
            check_root(self.emulate_root)
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
        # FP32 on the same perturbed inputs as each jitter run: a jitter run is compared with these,
        # so what FP32 itself does with the perturbation is not counted against the INT8 file.
        self.jittered = ({f"jitter{k}": self._predict(fp32, jitter=(self.jitter, k)) for k in range(1, jitter_draws + 1)}
                         if self.card.task == "detect" else {})
        # What each run is compared with, its value, and (with the bootstrap) its resampled mAP: the
        # same for every candidate (the draws are seeded and depend on the labels only).
        self.references = {"fp32": self.reference, **self.jittered}
        self.reference_values = {name: self._value(ref, reference=True) for name, ref in self.references.items()}
        self.resampled_references = (
            resampled_map50(self.references, self.gt, class_map=self.class_map, samples=self.samples)
            if self.metric == "map50" and self.confidence is not None else None)
        logger.info("FP32 %s on %d photos: %.2f (%.1f s)", self.metric, len(self.files), self.fp32_value,
                    time.perf_counter() - started)

    def _predict(self, model, *, fused: bool = True, jitter: tuple[float, int] | None = None):
        if self.card.task == "detect":
            return detect_files(model, self.files, self.root, threads=self.threads, fused=fused, jitter=jitter)
        return classify_files(model, self.files, threads=self.threads, fused=fused)

    def _value(self, predictions, *, reference: bool = False, against=None) -> float:
        """The metric of ``predictions``; agreement is with ``against`` (default: the FP32 run)."""
        if self.metric == "map50":
            report = evaluate(predictions, self.gt, class_map=self.class_map, conf=self.card.thresholds.conf)
            return 100.0 * report.map50
        if reference:
            return 100.0
        against = self.reference if against is None else against
        if self.metric == "agreement":
            return 100.0 * detection_agreement(against, predictions, self.card.thresholds.conf).fraction
        return 100.0 * classification_agreement(against, predictions).fraction

    def _on_device(self, model: str | os.PathLike[str]):
        from export.emulate import detect_in_root, file_results

        started = time.perf_counter()
        out = detect_in_root(self.emulate_root, [Path(model)], self.files, self.root, threads=self.threads,
                             cpu=self.emulate_cpu)
        logger.info("emulated %s (QEMU_CPU=%s): %s in %.1f s", out["machine"], self.emulate_cpu, Path(model).name,
                    time.perf_counter() - started)
        return file_results(out["models"][Path(model).name]["results"])

    def __call__(self, int8: str | os.PathLike[str]) -> Score:
        runs = {name: self._predict(int8, fused=name == "kernels") for name in self.arithmetics}
        for name in self.jittered:
            runs[name] = self._predict(int8, jitter=(self.jitter, int(name.removeprefix("jitter"))))
        if self.emulate_root is not None:
            runs[DEVICE] = self._on_device(int8)
        against = {name: name if name in self.references else "fp32" for name in runs}
        drops = {name: self.reference_values[against[name]]
                 - self._value(predictions, against=self.references[against[name]])
                 for name, predictions in runs.items()}
        interval = None
        if self.resampled_references is not None:
            scored = resampled_map50(runs, self.gt, class_map=self.class_map, samples=self.samples)
            resampled = np.array([self.resampled_references[against[name]] - scored[name] for name in runs])
            interval = (float(np.quantile(resampled.min(axis=0), 1 - self.confidence)),
                        float(np.quantile(resampled.max(axis=0), self.confidence)))
        return Score(self.metric, self.fp32_value, self.fp32_value - drops["kernels"], drops, interval,
                     self.confidence if interval is not None else None)

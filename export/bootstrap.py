"""Paired bootstrap of mAP@0.5 over photos: how far a drop measured on a few dozen photos can move.

On 30 photos one box of a rare class moves mAP@0.5 by several points, and an INT8 model whose
arithmetic differs in the last bit (another CPU's kernels, issue 14) finds or loses such boxes. So a
drop measured once says little; the same photos resampled with replacement, every model scored on
the *same* resample (paired), say how far it could be on another such set.

Resampling reuses pycocotools' per-image matching (``COCOeval.evaluate``, run once per model) and
only re-accumulates it over the drawn photos, restricted to IoU 0.5, area "all" and 100 detections:
about 100 times faster than scoring each resample from scratch, with pycocotools' own accumulation
(its precision-recall interpolation), so a resample's mAP is exactly what :func:`export.evaluate.evaluate`
would give on a set holding those photos (a test checks this).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from export.evaluate import GroundTruth, Predictions, coco_evaluator, mean_valid, quiet_pycocotools

SAMPLES = 200
SEED = 0


class _Resampled:
    """One model's per-image COCO matches, ready to be accumulated over any draw of the photos."""

    def __init__(self, evaluator: Any) -> None:
        params = evaluator.params
        images = len(params.imgIds)
        area = list(params.areaRngLbl).index("all")
        n_areas = len(params.areaRng)
        keep_iou = int(np.flatnonzero(np.isclose(params.iouThrs, 0.5))[0])
        # evalImgs is laid out [category][area][image]; keep area "all", IoU 0.5 only.
        self.per_cat: list[list[dict | None]] = []
        for k in range(len(params.catIds)):
            row = []
            for i in range(images):
                e = evaluator.evalImgs[(k * n_areas + area) * images + i]
                row.append(None if e is None else {
                    **e, "dtMatches": e["dtMatches"][keep_iou:keep_iou + 1],
                    "dtIgnore": e["dtIgnore"][keep_iou:keep_iou + 1]})
            self.per_cat.append(row)
        self.evaluator = copy.copy(evaluator)
        p = copy.deepcopy(params)
        p.iouThrs = np.array([0.5])
        p.areaRng, p.areaRngLbl, p.maxDets = [params.areaRng[area]], ["all"], [100]
        self.params = p
        self.img_ids = list(params.imgIds)

    def map50(self, picked: np.ndarray) -> float:
        """mAP@0.5 (0..1) over the photos ``picked`` (indices, repeats allowed)."""
        ev = self.evaluator
        p = copy.copy(self.params)
        p.imgIds = [self.img_ids[i] for i in picked]
        ev.params = ev._paramsEval = p
        ev.evalImgs = [row[i] for row in self.per_cat for i in picked]
        with quiet_pycocotools():
            ev.accumulate()
        return mean_valid(ev.eval["precision"][0, :, :, 0, 0]) or 0.0


def resampled_map50(
    predictions: Mapping[str, Predictions],
    gt: GroundTruth,
    *,
    class_map: Mapping[str, str] | None = None,
    samples: int = SAMPLES,
    seed: int = SEED,
) -> dict[str, np.ndarray]:
    """mAP@0.5 x 100 of each named prediction set on ``samples`` paired resamples of ``gt``'s photos.

    Every set is scored on the same draws, so ``out[a] - out[b]`` is a paired bootstrap of the
    difference between two models. The draws depend only on ``gt``, ``samples`` and ``seed``, so
    separate calls with the same three are paired too. Draws without any labelled box are skipped (for all sets alike).

    Raises:
        ValueError: ``samples`` < 1, no prediction sets, or what :func:`export.evaluate.evaluate` refuses.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not predictions:
        raise ValueError("resampled_map50 needs at least one set of predictions")
    models = {name: _Resampled(coco_evaluator(preds, gt, class_map=class_map)) for name, preds in predictions.items()}
    boxes = np.array([sum(not b.crowd for b in img.boxes) for img in gt.images])
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {name: [] for name in models}
    n = len(gt.images)
    for _ in range(samples):
        picked = rng.integers(0, n, n)
        if not boxes[picked].any():
            continue
        for name, model in models.items():
            out[name].append(100.0 * model.map50(picked))
    return {name: np.array(values) for name, values in out.items()}


def drop_interval(drops: np.ndarray, *, level: float = 0.9) -> tuple[float, float]:
    """The central ``level`` interval of bootstrapped drops."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be within (0, 1), got {level}")
    low, high = np.quantile(drops, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)

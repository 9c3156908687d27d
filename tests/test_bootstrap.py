"""The paired bootstrap of mAP@0.5 (export/bootstrap.py): each resample scores exactly what the
evaluator gives on a set holding those photos, and models are paired on the same draws."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from export.bootstrap import _Resampled, drop_interval, resampled_map50  # noqa: E402
from export.evaluate import GroundTruth, GtBox, GtImage, coco_evaluator, evaluate  # noqa: E402

LABELS = ("cat", "dog", "bird")


def _truth(n: int = 24, seed: int = 3) -> GroundTruth:
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        boxes = []
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(0, 300, 2)
            w, h = rng.uniform(20, 120, 2)
            boxes.append(GtBox((x, y, x + w, y + h), LABELS[int(rng.integers(0, 3))], crowd=bool(rng.random() < 0.05)))
        images.append(GtImage(f"sub/{i:03d}.jpg", 500, 400, tuple(boxes)))
    return GroundTruth(tuple(images), LABELS)


def _predictions(gt: GroundTruth, *, noise: float, seed: int) -> dict[str, list]:
    """Jittered copies of the truth, some boxes missed or mislabelled, plus false alarms."""
    rng = np.random.default_rng(seed)
    out = {}
    for img in gt.images:
        preds = []
        for box in img.boxes:
            if rng.random() < noise:
                continue
            jitter = rng.normal(0, 30 * noise, 4)
            label = box.label if rng.random() > noise / 2 else LABELS[int(rng.integers(0, 3))]
            preds.append((tuple(np.add(box.box, jitter)), float(rng.uniform(0.2, 1.0)), label))
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, 350, 2)
            preds.append(((x, y, x + 60, y + 60), float(rng.uniform(0.0, 0.6)), LABELS[int(rng.integers(0, 3))]))
        out[img.file] = preds
    return out


def test_a_resample_scores_what_the_evaluator_gives_on_a_set_holding_those_photos():
    gt = _truth()
    preds = _predictions(gt, noise=0.4, seed=1)
    model = _Resampled(coco_evaluator(preds, gt))
    assert model.map50(np.arange(len(gt.images))) == pytest.approx(evaluate(preds, gt).map50, abs=1e-12)
    rng = np.random.default_rng(7)
    for _ in range(5):
        picked = rng.integers(0, len(gt.images), len(gt.images))  # with repeats
        copies = GroundTruth(tuple(replace(gt.images[i], file=f"{k}/{gt.images[i].file}")
                                   for k, i in enumerate(picked)), gt.labels)
        if copies.num_boxes == 0:
            continue
        renamed = {f"{k}/{gt.images[i].file}": preds[gt.images[i].file] for k, i in enumerate(picked)}
        assert model.map50(picked) == pytest.approx(evaluate(renamed, copies).map50, abs=1e-12)


def test_models_are_paired_on_the_same_draws():
    gt = _truth()
    good, worse = _predictions(gt, noise=0.2, seed=1), _predictions(gt, noise=0.6, seed=2)
    scores = resampled_map50({"a": good, "b": good, "c": worse}, gt, samples=60, seed=5)
    assert len(scores["a"]) == len(scores["c"]) == 60
    np.testing.assert_array_equal(scores["a"], scores["b"])  # same predictions, same draws: zero drop
    assert scores["a"].std() > 1.0  # yet each mAP moves by points from draw to draw
    drops = scores["a"] - scores["c"]
    low, high = drop_interval(drops)
    assert 0 < low < 100 * (evaluate(good, gt).map50 - evaluate(worse, gt).map50) < high
    again = resampled_map50({"a": good}, gt, samples=60, seed=5)
    np.testing.assert_array_equal(again["a"], scores["a"])  # seeded: the same bound every run


def test_bad_arguments_are_refused():
    gt = _truth()
    with pytest.raises(ValueError, match="samples must be >= 1"):
        resampled_map50({"a": {}}, gt, samples=0)
    with pytest.raises(ValueError, match="at least one set"):
        resampled_map50({}, gt)
    with pytest.raises(ValueError, match="level must be within"):
        drop_interval(np.zeros(3), level=1.0)


def test_the_jitter_is_tiny_and_the_same_for_the_same_tensor_whatever_the_order():
    from export.measure import Jittered

    seen = []
    jitter = Jittered(lambda t: seen.append(t) or t, 0.001, seed=1)
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 255, (1, 3, 8, 8)).astype(np.float32), rng.uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)
    first_a, first_b = jitter(a), jitter(b)
    again_b, again_a = jitter(b), jitter(a)  # the other order: the same noise per tensor
    np.testing.assert_array_equal(first_a, again_a)
    np.testing.assert_array_equal(first_b, again_b)
    assert first_a.dtype == np.float32 and not np.array_equal(first_a, a)
    assert np.abs(first_a / a - 1).max() < 0.006  # 0.1 % noise: far below one level of 255
    other = Jittered(lambda t: t, 0.001, seed=2)(a)
    assert not np.array_equal(other, first_a)  # another draw
    pixels = rng.integers(0, 256, (1, 3, 32, 32)).astype(np.uint8)
    moved = Jittered(lambda t: t, 0.001, seed=1)(pixels)
    steps = moved.astype(int) - pixels.astype(int)
    assert moved.dtype == np.uint8 and set(np.unique(steps)) <= {-1, 0, 1} and 0.8 < (steps == 0).mean() < 0.98
    with pytest.raises(ValueError, match="jitter must be > 0"):
        Jittered(lambda t: t, 0.0, seed=1)

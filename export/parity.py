"""FP32 parity: compare torch and onnxruntime outputs part by part, each part at a tolerance for its scale.

An output is split into parts with one unit each (box coordinates in pixels or normalised units,
probabilities, logits), because one tolerance cannot fit a tensor holding 600-pixel boxes and 0.001
scores. A part passes when ``max |onnx - torch| <= atol + rtol * max |torch|``.

Tolerances. Both sides compute the same FP32 graph; only kernels and summation order differ, so
the disagreement is rounding noise. Measured on nano YOLOs at 640 px and ImageNet classifiers (random
weights with realistic activations, real photos): up to 0.007 px on boxes, 5e-5 on scores, 2e-5 of
the logit range. The tolerances are set by what would change a result on the device and sit 15 to
50 times above that noise, while any real export bug (a wrong mean/std, colour order, layout or layer)
moves outputs by whole percents:

- logits: ``1e-3 + 1e-3 * max|logit|``: moves no softmax probability by more than ~0.1 percentage point.
- boxes in pixels: ``0.05 px + 1e-4 * input side`` (0.11 px at 640): a tenth of a pixel.
- boxes normalised to the input (RT-DETR): the same, divided by the input side.
- scores (sigmoid probabilities, 0..1): ``1e-3`` absolute, a tenth of a percentage point: no box
  crosses a confidence threshold because of the export.

End-to-end outputs (``[1, K, 6]``, top-K over all anchors) are compared order-free: the sorted score
lists (the top-K of two inputs that differ by at most e differ by at most e, element by element), and
each torch row safely inside the top-K is matched to the onnxruntime row of its class with the nearest
box. Rows within the score tolerance of the K-th score may legitimately swap in or out and are skipped.
RT-DETR picks its queries by a top-K too, and onnxruntime orders tied values differently from torch,
so its rows are matched the same way (nearest box); up to 1 % of the rows may find no match (a query
at the selection cutoff swapped for another), every other row must match within tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edge.inference.card import ModelCard

SCORE_ATOL = 1e-3
LOGIT_ATOL, LOGIT_RTOL = 1e-3, 1e-3
BOX_PX_ATOL, BOX_PX_PER_SIDE = 0.05, 1e-4


@dataclass
class PartDiff:
    """The largest disagreement in one part of an output, over every image."""

    part: str
    unit: str
    max_abs: float
    max_rel: float  # max_abs / max |torch| over the part
    tolerance: float
    worst_image: str

    @property
    def passed(self) -> bool:
        return bool(self.max_abs <= self.tolerance)


@dataclass
class Parity:
    """The parity check over all images: one entry per output part."""

    images: list[str]
    parts: list[PartDiff]
    batch_max_abs: float | None = None  # dynamic-batch graph: batched vs one-by-one onnxruntime
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)
    batch_tolerance: float | None = None

    @property
    def passed(self) -> bool:
        batch_ok = self.batch_max_abs is None or self.batch_max_abs <= (self.batch_tolerance or 0.0)
        return all(p.passed for p in self.parts) and batch_ok

    def summary(self) -> str:
        text = "; ".join(f"{p.part} max abs {p.max_abs:.3g} {p.unit} (rel {p.max_rel:.2g}, "
                         f"tol {p.tolerance:.3g})" for p in self.parts)
        where = "synthetic frames" if self.synthetic else f"{len(self.images)} photos"
        return f"{text} over {where}"

    def worst_message(self) -> str:
        failed = [p for p in self.parts if not p.passed]
        if failed:
            p = max(failed, key=lambda d: d.max_abs / d.tolerance)
            return (f"{p.part} differ by up to {p.max_abs:.4g} {p.unit} (tolerance {p.tolerance:.3g}) on "
                    f"{p.worst_image}; the ONNX graph does not compute what the torch model does")
        return (f"batched inference differs from one-by-one by {self.batch_max_abs:.3g} (tolerance "
                f"{self.batch_tolerance:.3g}): the graph's dynamic batch is broken")

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "images": self.images, "synthetic": self.synthetic,
                "batch_max_abs": self.batch_max_abs, "batch_tolerance": self.batch_tolerance,
                "notes": self.notes,
                "parts": [{**asdict(p), "passed": p.passed} for p in self.parts]}


@dataclass
class _Acc:
    """Running maximum of one part's disagreement."""

    part: str
    unit: str
    tolerance_of: Any  # scale -> tolerance
    max_abs: float = 0.0
    scale: float = 0.0
    worst: str = ""

    def add(self, name: str, expected: np.ndarray, got: np.ndarray) -> None:
        if expected.size:
            self.scale = max(self.scale, float(np.abs(expected).max()))
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        self.note(name, float(diff.max()) if diff.size else 0.0)

    def note(self, name: str, diff: float) -> None:
        if diff >= self.max_abs:
            self.max_abs, self.worst = diff, name

    def result(self) -> PartDiff:
        rel = self.max_abs / self.scale if self.scale > 0 else 0.0
        tolerance = float(self.tolerance_of(self.scale))
        return PartDiff(self.part, self.unit, self.max_abs, rel, tolerance, self.worst)


def _pixel_tol(card: ModelCard) -> float:
    return BOX_PX_ATOL + BOX_PX_PER_SIDE * max(card.preprocess.input_size)


def _norm_tol(card: ModelCard) -> float:
    return _pixel_tol(card) / max(card.preprocess.input_size)


def _e2e(
    pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], card: ModelCard
) -> tuple[list[_Acc], list[str]]:
    boxes = _Acc("boxes", "px", lambda _: _pixel_tol(card))
    scores = _Acc("scores", "", lambda _: SCORE_ATOL)
    compared = 0
    for name, expected, got in pairs:
        ref, out = expected.reshape(-1, expected.shape[-1]), got.reshape(-1, got.shape[-1])
        scores.add(name, -np.sort(-ref[:, 4]), -np.sort(-out[:, 4]))
        cutoff = ref[:, 4].min() + SCORE_ATOL if len(ref) else 0.0
        inside = ref[ref[:, 4] > cutoff]
        compared += len(inside)
        worst = 0.0
        for row in inside:
            same = out[out[:, 5] == row[5]]
            if not len(same):
                worst = float("inf")
                break
            worst = max(worst, float(np.abs(same[:, :4] - row[:4]).max(axis=1).min()))
        boxes.scale = max(boxes.scale, float(np.abs(ref[:, :4]).max()) if len(ref) else 0.0)
        boxes.note(name, worst)
    return [boxes, scores], [f"{compared} rows inside the top-K compared by box (over all images)"]


def _rtdetr(
    pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], card: ModelCard
) -> tuple[list[_Acc], list[str]]:
    box_tol = _norm_tol(card)
    boxes = _Acc("boxes", "of side", lambda _: box_tol)
    scores = _Acc("scores", "", lambda _: SCORE_ATOL)
    notes = []
    for name, expected, got in pairs:
        ref, out = expected.reshape(-1, expected.shape[-1]), got.reshape(-1, got.shape[-1])
        distance = np.abs(ref[:, None, :4] - out[None, :, :4]).max(axis=-1)
        nearest = distance.argmin(axis=1)
        box_diff = distance[np.arange(len(ref)), nearest]
        score_diff = np.abs(ref[:, 4:] - out[nearest, 4:]).max(axis=1)
        matched = (box_diff <= box_tol) & (score_diff <= SCORE_ATOL)
        allowed = max(1, len(ref) // 100)
        if (~matched).sum() <= allowed:
            if (~matched).any():
                notes.append(f"{name}: {(~matched).sum()} of {len(ref)} queries unmatched (selection cutoff)")
            box_diff, score_diff = box_diff[matched], score_diff[matched]
        boxes.scale = max(boxes.scale, float(np.abs(ref[:, :4]).max()))
        scores.scale = max(scores.scale, float(np.abs(ref[:, 4:]).max()))
        boxes.note(name, float(box_diff.max()) if box_diff.size else 0.0)
        scores.note(name, float(score_diff.max()) if score_diff.size else 0.0)
    return [boxes, scores], notes


def compare(
    pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
    card: ModelCard,
    *,
    batched: np.ndarray | None = None,
    synthetic: bool = False,
) -> Parity:
    """Compare ``(image name, torch output, onnxruntime output)`` triples for the card's decoder."""
    for name, expected, got in pairs:
        if expected.shape != got.shape:
            part = PartDiff("shape", "", float("inf"), float("inf"), 0.0, name)
            return Parity([n for n, _, _ in pairs], [part], synthetic=synthetic,
                          notes=[f"torch {list(expected.shape)} vs onnx {list(got.shape)}"])
    decoder = card.decoder.name
    notes: list[str] = []
    if card.task == "classify":
        accs = [_Acc("logits", "", lambda s: LOGIT_ATOL + LOGIT_RTOL * s)]
        split = [lambda a: a]
    elif decoder == "ultralytics":
        accs = [_Acc("boxes", "px", lambda _: _pixel_tol(card)), _Acc("scores", "", lambda _: SCORE_ATOL)]
        split = [lambda a: a[:, :4], lambda a: a[:, 4:]]
    elif decoder == "rtdetr":
        (accs, notes), split = _rtdetr(pairs, card), []
    elif decoder == "e2e":
        (accs, notes), split = _e2e(pairs, card), []
    else:
        accs = [_Acc("output", "", lambda s: LOGIT_ATOL + LOGIT_RTOL * s)]
        split = [lambda a: a]
    for acc, part in zip(accs, split):
        for name, expected, got in pairs:
            acc.add(name, part(expected), part(got))
    results = [a.result() for a in accs]
    batch_diff = batch_tol = None
    if batched is not None:
        # Same tolerance as the parts: a batched run may pick other kernels (another summation order).
        one_by_one = np.concatenate([got for _, _, got in pairs])
        same = batched.shape == one_by_one.shape
        batch_diff = float(np.abs(batched - one_by_one).max()) if same else float("inf")
        batch_tol = min(r.tolerance for r in results)
    return Parity([name for name, _, _ in pairs], results, batch_diff, synthetic, notes, batch_tol)

"""FP32 parity: compare torch and onnxruntime outputs part by part, each part at a tolerance for its unit.

An output is split into parts with one unit each (box coordinates in pixels or normalised units,
probabilities, logits), because one tolerance cannot fit a tensor holding 600-pixel boxes and 0.001
scores. Each part has two bounds, each ``atol + rtol * max|torch|``: one on the largest difference
(a local error: a wrong op in one branch, a broken gather) and a tighter one on the mean difference
over the whole part (a systematic error: an approximated activation, a shifted constant).

Tolerances. Both sides compute the same FP32 graph; only kernels and summation order differ, so the
disagreement is rounding noise, amplified by depth. Measured at 640 px on real photos (untrained
nets given realistic activations, see the tests): boxes differ by at most 0.005-0.012 px on
YOLOv5u/v8/v11 and 0.25 px on the deeper YOLOv9-t, by 0.0008 px or less on average; scores by at
most 9e-4 (v9-t; 7e-5 elsewhere), 6e-6 on average; classifier logits by 4e-6 of their range. The
bounds sit a few times above the worst of these and far below what an export bug does (a missing
sigmoid, a wrong stride or upsampling moves outputs by whole pixels and whole percents):

- boxes in pixels: max ``0.05 px + 1e-3 * side`` (0.69 px at 640), mean ``0.01 px + 2e-5 * side``
  (0.023 px at 640); normalised boxes (RT-DETR) the same divided by the side.
- scores (probabilities, 0..1): max ``5e-3``, mean ``1e-4``: no score moves by half a percentage point.
- logits: max ``1e-3 + 1e-3 * max|logit|``, mean ``1e-4 + 1e-4 * max|logit|``.

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

Pair = tuple[str, np.ndarray, np.ndarray]  # image name, torch output, onnxruntime output


@dataclass(frozen=True)
class Tolerance:
    """Bounds on the largest and the mean absolute difference: ``atol + rtol * max|torch|`` each."""

    max_atol: float
    mean_atol: float
    max_rtol: float = 0.0
    mean_rtol: float = 0.0


SCORES = Tolerance(max_atol=5e-3, mean_atol=1e-4)
LOGITS = Tolerance(max_atol=1e-3, mean_atol=1e-4, max_rtol=1e-3, mean_rtol=1e-4)


def box_tolerance(side: int, *, normalised: bool = False) -> Tolerance:
    """Box tolerance for an input of ``side`` pixels, in pixels or in units of the side."""
    unit = 1.0 / side if normalised else 1.0
    return Tolerance(max_atol=(0.05 + 1e-3 * side) * unit, mean_atol=(0.01 + 2e-5 * side) * unit)


@dataclass
class PartDiff:
    """The disagreement in one part of an output over every image, against its bounds."""

    part: str
    unit: str
    max_abs: float
    mean_abs: float  # the largest per-image mean
    max_rel: float  # max_abs / max |torch| over the part
    tolerance: float  # bound on max_abs
    mean_tolerance: float  # bound on mean_abs
    worst_image: str

    @property
    def passed(self) -> bool:
        return bool(self.max_abs <= self.tolerance and self.mean_abs <= self.mean_tolerance)


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
        text = "; ".join(f"{p.part} max abs {p.max_abs:.3g}{' ' + p.unit if p.unit else ''} "
                         f"(mean {p.mean_abs:.2g}, rel {p.max_rel:.2g}, tol {p.tolerance:.3g})"
                         for p in self.parts)
        where = "synthetic frames" if self.synthetic else f"{len(self.images)} photos"
        return f"{text} over {where}"

    def worst_message(self) -> str:
        for p in self.parts:
            if p.max_abs > p.tolerance:
                return (f"{p.part} differ by up to {p.max_abs:.4g} {p.unit} (tolerance {p.tolerance:.3g}) "
                        f"on {p.worst_image}; the ONNX graph does not compute what the torch model does")
            if p.mean_abs > p.mean_tolerance:
                return (f"{p.part} differ by {p.mean_abs:.4g} {p.unit} on average (tolerance "
                        f"{p.mean_tolerance:.3g}) on {p.worst_image}: a systematic difference between "
                        "the ONNX graph and the torch model")
        return (f"batched inference differs from one-by-one by {self.batch_max_abs:.3g} (tolerance "
                f"{self.batch_tolerance:.3g}): the graph's dynamic batch is broken")

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "images": self.images, "synthetic": self.synthetic,
                "batch_max_abs": self.batch_max_abs, "batch_tolerance": self.batch_tolerance,
                "notes": self.notes, "parts": [{**asdict(p), "passed": p.passed} for p in self.parts]}


@dataclass
class _Acc:
    """Running maxima of one part's disagreement over the images."""

    part: str
    unit: str
    tolerance: Tolerance
    max_abs: float = 0.0
    mean_abs: float = 0.0
    scale: float = 0.0
    worst: str = ""

    def add(self, name: str, expected: np.ndarray, got: np.ndarray) -> None:
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        self.note(name, diff, expected)

    def note(self, name: str, diff: np.ndarray, expected: np.ndarray) -> None:
        if expected.size:
            self.scale = max(self.scale, float(np.abs(expected).max()))
        if not diff.size:
            return
        largest = float(diff.max())
        self.mean_abs = max(self.mean_abs, float(diff.mean()))
        if largest >= self.max_abs:
            self.max_abs, self.worst = largest, name

    def result(self) -> PartDiff:
        tol = self.tolerance
        rel = self.max_abs / self.scale if self.scale > 0 else 0.0
        return PartDiff(self.part, self.unit, self.max_abs, self.mean_abs, rel,
                        tol.max_atol + tol.max_rtol * self.scale, tol.mean_atol + tol.mean_rtol * self.scale,
                        self.worst)


def _rows(expected: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return expected.reshape(-1, expected.shape[-1]), got.reshape(-1, got.shape[-1])


def _e2e(pairs: Sequence[Pair], side: int) -> tuple[list[_Acc], list[str]]:
    boxes = _Acc("boxes", "px", box_tolerance(side))
    scores = _Acc("scores", "", SCORES)
    compared = 0
    for name, expected, got in pairs:
        ref, out = _rows(expected, got)
        scores.add(name, -np.sort(-ref[:, 4]), -np.sort(-out[:, 4]))
        cutoff = ref[:, 4].min() + SCORES.max_atol if len(ref) else 0.0
        inside = ref[ref[:, 4] > cutoff]
        compared += len(inside)
        nearest = []
        for row in inside:
            same = out[out[:, 5] == row[5]]
            nearest.append(float(np.abs(same[:, :4] - row[:4]).max(axis=1).min()) if len(same) else np.inf)
        boxes.note(name, np.asarray(nearest), ref[:, :4])
    return [boxes, scores], [f"{compared} rows inside the top-K compared by box (over all images)"]


def _rtdetr(pairs: Sequence[Pair], side: int) -> tuple[list[_Acc], list[str]]:
    box_tol = box_tolerance(side, normalised=True)
    boxes = _Acc("boxes", "of side", box_tol)
    scores = _Acc("scores", "", SCORES)
    notes = []
    for name, expected, got in pairs:
        ref, out = _rows(expected, got)
        distance = np.abs(ref[:, None, :4] - out[None, :, :4]).max(axis=-1)
        nearest = distance.argmin(axis=1)
        box_diff = distance[np.arange(len(ref)), nearest]
        score_diff = np.abs(ref[:, 4:] - out[nearest, 4:])
        matched = (box_diff <= box_tol.max_atol) & (score_diff.max(axis=1) <= SCORES.max_atol)
        if 0 < (~matched).sum() <= max(1, len(ref) // 100):
            notes.append(f"{name}: {(~matched).sum()} of {len(ref)} queries unmatched (selection cutoff)")
            box_diff, score_diff = box_diff[matched], score_diff[matched]
        boxes.note(name, box_diff, ref[:, :4])
        scores.note(name, score_diff, ref[:, 4:])
    return [boxes, scores], notes


def compare(pairs: Sequence[Pair], card: ModelCard, *, batched: np.ndarray | None = None,
            synthetic: bool = False) -> Parity:
    """Compare ``(image name, torch output, onnxruntime output)`` triples for the card's decoder."""
    names = [name for name, _, _ in pairs]
    for name, expected, got in pairs:
        if expected.shape != got.shape:
            part = PartDiff("shape", "", float("inf"), float("inf"), float("inf"), 0.0, 0.0, name)
            return Parity(names, [part], synthetic=synthetic,
                          notes=[f"torch {list(expected.shape)} vs onnx {list(got.shape)}"])
    decoder, side = card.decoder.name, max(card.preprocess.input_size)
    notes: list[str] = []
    split: list[Any] = []
    if card.task == "classify" or decoder not in ("ultralytics", "rtdetr", "e2e"):
        accs = [_Acc("logits" if card.task == "classify" else "output", "", LOGITS)]
        split = [lambda a: a]
    elif decoder == "ultralytics":
        accs = [_Acc("boxes", "px", box_tolerance(side)), _Acc("scores", "", SCORES)]
        split = [lambda a: a[:, :4], lambda a: a[:, 4:]]
    elif decoder == "rtdetr":
        accs, notes = _rtdetr(pairs, side)
    else:
        accs, notes = _e2e(pairs, side)
    for acc, part in zip(accs, split):
        for name, expected, got in pairs:
            acc.add(name, part(expected), part(got))
    results = [a.result() for a in accs]
    batch_diff = batch_tol = None
    if batched is not None:
        # Bounded like the largest difference: a batched run may pick other kernels.
        one_by_one = np.concatenate([got for _, _, got in pairs])
        same = batched.shape == one_by_one.shape
        batch_diff = float(np.abs(batched - one_by_one).max()) if same else float("inf")
        batch_tol = min(r.tolerance for r in results)
    return Parity(names, results, batch_diff, synthetic, notes, batch_tol)

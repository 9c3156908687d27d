"""Measuring a model on a set of photos: predictions, ground truth, FP32/INT8 agreement, latency.

Predictions go through the device's own pipeline (``edge.batch.runner.BatchRunner``: reduced decode,
preprocessing, decoding, NMS), so what is measured here is what a camera will see.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.batch.results import FileResult
from edge.errors import ExportError, ModelError
from edge.inference.card import ModelCard
from export.evaluate import MAP_CONF, VOC_TO_COCO, GroundTruth, load_coco_gt, load_yolo_gt

logger = logging.getLogger(__name__)

IOU_MATCH = 0.5
BUILTIN_CLASS_MAPS = {"voc2coco": VOC_TO_COCO}
# Class-name files a YOLO labels folder may carry (Darknet/CVAT write obj.names, others classes.txt).
YOLO_NAME_FILES = ("obj.names", "classes.txt", "classes.names", "names.txt")


# -- inputs -----------------------------------------------------------------------------------
def resolve_class_map(value: str | os.PathLike[str] | Mapping[str, str] | None) -> dict[str, str] | None:
    """A class-name map: None, a dict, a builtin name (``voc2coco``) or a JSON file ``{"from": "to"}``.

    Raises:
        ValueError: unknown builtin, unreadable file, or not a JSON object of strings.
    """
    if value is None or isinstance(value, Mapping):
        return dict(value) if value is not None else None
    text = str(value)
    if text in BUILTIN_CLASS_MAPS:
        return dict(BUILTIN_CLASS_MAPS[text])
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"class map {text!r} is neither a builtin ({', '.join(BUILTIN_CLASS_MAPS)}) "
                         "nor a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read class map {path}: {err}") from err
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"class map {path} must be a JSON object mapping names to names")
    return data


def load_labels(labels: str | os.PathLike[str], images_root: str | os.PathLike[str]) -> GroundTruth:
    """Ground truth from a COCO json file, or a YOLO labels folder holding its class names file.

    Raises:
        ValueError: unreadable labels, or a YOLO folder without a class names file.
    """
    path = Path(labels)
    if path.is_file():
        return load_coco_gt(path)
    if path.is_dir():
        names = next((path / n for n in YOLO_NAME_FILES if (path / n).is_file()), None)
        if names is None:
            raise ValueError(f"YOLO labels folder {path} has no class names file "
                             f"({' or '.join(YOLO_NAME_FILES)}, one name per line)")
        return load_yolo_gt(path, images_root, names)
    raise ValueError(f"labels not found: {path} (a COCO json file or a YOLO labels folder)")


def relative_names(files: Sequence[Path], root: Path) -> list[str]:
    """Each file's path relative to ``root``, forward slashes (how results and labels name photos)."""
    return [f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name for f in files]


def subset_gt(gt: GroundTruth, names: Sequence[str]) -> GroundTruth:
    """The ground truth restricted to the photos ``names`` (matched by path, else by base name).

    Raises:
        ValueError: none of the photos is labelled.
    """
    wanted = set(names)
    bases = {n.rsplit("/", 1)[-1] for n in names}
    kept = tuple(img for img in gt.images if img.file in wanted or img.file.rsplit("/", 1)[-1] in bases)
    if not kept:
        raise ValueError("none of the photos is in the labels; do the file names match?")
    if len(kept) < len(names):
        logger.warning("%d of %d photos have no labels; scoring the %d that do", len(names) - len(kept),
                       len(names), len(kept))
    return GroundTruth(kept, gt.labels)


# -- predictions --------------------------------------------------------------------------------
class Jittered:
    """A model's ``run`` on inputs perturbed far below one pixel level: each float value times
    ``1 + N(0, amount)`` (integer inputs: 5 % of the values one step up, 5 % one step down).

    FP32 detectors barely notice (mAP@0.5 within 0.3 on 30 VOC photos), but an INT8 network turns
    such a perturbation into different roundings all the way through, as another CPU's kernels do
    (:mod:`export.objective`). The noise is seeded by ``seed`` and the tensor's own bytes, so a run
    is the same whatever order the batch runner's threads deliver the photos in.
    """

    def __init__(self, run, amount: float, seed: int) -> None:
        if amount <= 0:
            raise ValueError(f"the jitter must be > 0, got {amount}")
        self.run, self.amount, self.seed = run, amount, seed

    def __call__(self, tensor: np.ndarray):
        rng = np.random.default_rng([self.seed, zlib.crc32(tensor.tobytes())])
        if np.issubdtype(tensor.dtype, np.floating):
            tensor = tensor * (1 + rng.normal(0.0, self.amount, tensor.shape)).astype(tensor.dtype)
        else:
            info = np.iinfo(tensor.dtype)
            step = rng.choice(np.array([-1, 0, 1]), size=tensor.shape, p=[0.05, 0.9, 0.05])
            tensor = np.clip(tensor.astype(np.int64) + step, info.min, info.max).astype(tensor.dtype)
        return self.run(tensor)


def detect_files(model: str | os.PathLike[str], files: Sequence[Path], root: Path, *,
                 conf: float = MAP_CONF, threads: int | None = None, fused: bool = True,
                 jitter: tuple[float, int] | None = None) -> list[FileResult]:
    """Run a detector over ``files`` as ``wildedge detect`` does; results named relative to ``root``.

    ``fused=False`` runs the graph without onnxruntime's optimisations (an INT8 file's QDQ graph as
    written); ``jitter=(amount, seed)`` perturbs every input tensor (:class:`Jittered`). Both are
    for :mod:`export.objective`."""
    from edge.batch.runner import BatchRunner
    from edge.batch.sources import Item
    from edge.inference.detector import Detector

    items = [Item(f, n, False) for f, n in zip(files, relative_names(files, root))]
    with Detector(model, conf=conf, threads=threads, fused=fused) as detector:
        if jitter is not None:
            detector.model.run = Jittered(detector.model.run, *jitter)
        return list(BatchRunner(detector, workers=2).run(items))


def classify_files(model: str | os.PathLike[str], files: Sequence[Path], *, top_k: int = 5,
                   threads: int | None = None, fused: bool = True) -> list[list[tuple[int, float]]]:
    """Top-k ``(class id, probability)`` of a classifier on each whole photo (unreadable: empty)."""
    from edge.errors import ImageReadError
    from edge.imaging import read_image
    from edge.inference.classifier import Classifier

    out = []
    with Classifier(model, top_k=top_k, threads=threads, fused=fused) as classifier:
        cover = classifier.card.preprocess.resize in ("stretch", "centre_crop")
        for file in files:
            try:
                image = read_image(file, needed=classifier.card.preprocess.input_size, cover=cover).image
            except ImageReadError as err:
                logger.warning("skipping %s", err)
                out.append([])
                continue
            out.append(classifier.classify(image))
    return out


# -- agreement ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Agreement:
    """How closely one model's outputs follow a reference's on the same photos.

    Detectors: of the reference's detections at the card's threshold, ``matched`` are found by the
    other model with the same class at IoU >= 0.5 (one-to-one, best score first); ``mean_iou`` is
    the mean IoU of those pairs; ``class_agreement`` is the share of box matches (any class) whose
    classes agree. Classifiers: ``top1`` (same best class) and ``top5`` (reference's best class in
    the other's top five).
    """

    task: str
    images: int
    reference: int = 0
    matched: int = 0
    mean_iou: float | None = None
    class_agreement: float | None = None
    top1: float | None = None
    top5: float | None = None

    @property
    def fraction(self) -> float:
        """Matched share of the reference's detections (detectors) or top-1 agreement (classifiers)."""
        if self.task == "classify":
            return self.top1 if self.top1 is not None else 1.0
        return self.matched / self.reference if self.reference else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fraction": self.fraction}


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _greedy(ious: np.ndarray, allowed: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one pairs (reference row, other column), rows in order, each taking its best free column."""
    free = np.ones(ious.shape[1], dtype=bool)
    pairs = []
    for row in range(ious.shape[0]):
        cand = np.where(free & allowed[row] & (ious[row] >= IOU_MATCH), ious[row], -1.0)
        if cand.size and cand.max() >= IOU_MATCH:
            col = int(cand.argmax())
            free[col] = False
            pairs.append((row, col))
    return pairs


def detection_agreement(reference: Sequence[FileResult], other: Sequence[FileResult], conf: float) -> Agreement:
    """Agreement of ``other``'s detections with ``reference``'s, both counted at or above ``conf``."""
    by_name = {r.file: r for r in other}
    total = matched = box_matched = same_class = 0
    ious: list[float] = []
    for ref in reference:
        test = by_name.get(ref.file)
        ref_dets = sorted((d for d in ref.detections if d.score >= conf), key=lambda d: -d.score)
        test_dets = [d for d in (test.detections if test else []) if d.score >= conf]
        total += len(ref_dets)
        if not ref_dets or not test_dets:
            continue
        a = np.array([d.box for d in ref_dets], dtype=np.float64)
        b = np.array([d.box for d in test_dets], dtype=np.float64)
        iou = _iou_matrix(a, b)
        classes = np.array([d.class_id for d in ref_dets])[:, None] == np.array([d.class_id for d in test_dets])[None]
        pairs = _greedy(iou, classes)
        matched += len(pairs)
        ious.extend(float(iou[r, c]) for r, c in pairs)
        any_pairs = _greedy(iou, np.ones_like(classes))
        box_matched += len(any_pairs)
        same_class += sum(bool(classes[r, c]) for r, c in any_pairs)
    return Agreement("detect", len(reference), total, matched,
                     float(np.mean(ious)) if ious else None,
                     same_class / box_matched if box_matched else None)


def classification_agreement(reference: Sequence[list[tuple[int, float]]],
                             other: Sequence[list[tuple[int, float]]]) -> Agreement:
    """Top-1 and top-5 agreement of two classifiers' results on the same photos."""
    pairs = [(r, o) for r, o in zip(reference, other) if r and o]
    if not pairs:
        return Agreement("classify", 0, top1=None, top5=None)
    top1 = sum(r[0][0] == o[0][0] for r, o in pairs) / len(pairs)
    top5 = sum(r[0][0] in {c for c, _ in o[:5]} for r, o in pairs) / len(pairs)
    return Agreement("classify", len(pairs), top1=top1, top5=top5)


# -- latency ------------------------------------------------------------------------------------
def paired_latency(models: Sequence[str | os.PathLike[str]], tensor: np.ndarray, *, threads: int | None = None,
                   runs: int = 50, warmup: int = 5) -> list[float]:
    """Median milliseconds of ``session.run`` on ``tensor`` alone (no decode, no NMS), per model.

    The models' runs alternate, so a change in the machine's load during the measurement hits them
    alike and their ratio stays fair.
    """
    import onnxruntime as ort

    from edge.inference.session import session_options

    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    sessions = []
    for model in models:
        try:
            sessions.append(ort.InferenceSession(str(model), sess_options=session_options(threads=threads),
                                                 providers=["CPUExecutionProvider"]))
        except Exception as err:  # onnxruntime raises untyped errors for bad graphs
            raise ModelError(f"onnxruntime cannot load {model}: {err}") from err
    feeds = [{s.get_inputs()[0].name: tensor} for s in sessions]
    for session, feed in zip(sessions, feeds):
        for _ in range(warmup):
            session.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for k, (session, feed) in enumerate(zip(sessions, feeds)):
            started = time.perf_counter()
            session.run(None, feed)
            times[k].append(time.perf_counter() - started)
    return [statistics.median(t) * 1000 for t in times]


def sample_tensor(files: Sequence[Path], card: ModelCard) -> np.ndarray:
    """The first readable photo of ``files`` as the model's input tensor (for latency runs)."""
    from edge.errors import ImageReadError
    from export.calibration import load_tensor

    for file in files:
        try:
            return load_tensor(file, card)
        except ImageReadError:
            continue
    raise ExportError("none of the photos can be read")

"""Verify an INT8 model against its FP32 original: accuracy, agreement, latency and size.

Both models run over the same photos through the device's pipeline. With labels (a COCO json or
a YOLO labels folder) each gets mAP@0.5, mAP@0.5:0.95, recall and per-class AP; always, the INT8
model's agreement with FP32 is measured (matched detections, mean IoU, class agreement; top-1 for
classifiers), and so is the latency of ``session.run`` alone on one preprocessed photo, with the
same thread settings for both.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.batch.results import FileResult
from edge.errors import ExportError
from edge.inference.card import read_card
from edge.inference.session import default_threads
from export.bootstrap import drop_interval, resampled_map50
from export.evaluate import MAP_CONF, GroundTruth, Report, evaluate
from export.measure import (
    Agreement,
    classification_agreement,
    classify_files,
    detect_files,
    detection_agreement,
    load_labels,
    paired_latency,
    relative_names,
    resolve_class_map,
    sample_tensor,
    subset_gt,
)

logger = logging.getLogger(__name__)


def map50_drop_interval(
    reference: Sequence[FileResult],
    other: Sequence[FileResult],
    gt: GroundTruth,
    *,
    class_map: Mapping[str, str] | None = None,
    samples: int = 200,
    level: float = 0.9,
    seed: int = 0,
) -> tuple[float, float]:
    """A paired bootstrap interval of the mAP@0.5 drop (points): photos resampled with replacement.

    On a few dozen photos one box of a rare class moves mAP by several points; this says how far
    the measured drop could be from the one a larger set of such photos would give.
    """
    scores = resampled_map50({"reference": reference, "other": other}, gt, class_map=class_map, samples=samples,
                             seed=seed)
    return drop_interval(scores["reference"] - scores["other"], level=level)


@dataclass(frozen=True, slots=True)
class ModelResult:
    """One model's side of the comparison."""

    path: str
    size_bytes: int
    latency_ms: float
    accuracy: Report | None  # with labels (detectors)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size_bytes": self.size_bytes, "latency_ms": round(self.latency_ms, 3),
                "accuracy": self.accuracy.to_dict() if self.accuracy else None}


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """FP32 vs INT8 on one set of photos."""

    task: str
    images: int
    fp32: ModelResult
    int8: ModelResult
    agreement: Agreement
    threads: int
    runs: int
    conf: float  # the card's threshold, at which recall and agreement are counted
    class_map: dict[str, str] | None
    seconds: float
    map50_drop_interval: tuple[float, float] | None = None  # 90 % paired bootstrap, with bootstrap > 0
    emulated: dict[str, Any] | None = None  # the same photos on an emulated arm64 CPU (--emulate-root)

    @property
    def map50_drop(self) -> float | None:
        """FP32 minus INT8 mAP@0.5, in points (None without labels)."""
        if self.fp32.accuracy is None or self.int8.accuracy is None:
            return None
        return 100.0 * (self.fp32.accuracy.map50 - self.int8.accuracy.map50)

    @property
    def latency_ratio(self) -> float:
        """INT8 latency / FP32 latency: below 1 means INT8 is faster."""
        return self.int8.latency_ms / self.fp32.latency_ms if self.fp32.latency_ms > 0 else float("nan")

    @property
    def size_ratio(self) -> float:
        return self.int8.size_bytes / self.fp32.size_bytes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "task": self.task, "images": self.images, "conf": self.conf, "class_map": self.class_map,
            "fp32": self.fp32.to_dict(), "int8": self.int8.to_dict(),
            "agreement": self.agreement.to_dict(),
            "map50_drop": self.map50_drop,
            "map50_drop_interval": list(self.map50_drop_interval) if self.map50_drop_interval else None,
            "latency_ratio": self.latency_ratio, "size_ratio": self.size_ratio,
            "threads": self.threads, "runs": self.runs, "seconds": round(self.seconds, 2),
            "emulated": self.emulated,
        }


def verify(
    fp32: str | os.PathLike[str],
    int8: str | os.PathLike[str],
    images: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    class_map: Mapping[str, str] | str | None = None,
    threads: int | None = None,
    runs: int = 50,
    bootstrap: int = 0,
    emulate_root: str | os.PathLike[str] | None = None,
    emulate_cpu: str = "cortex-a72",
) -> VerifyReport:
    """Compare ``int8`` with ``fp32`` on the photos under ``images``.

    Args:
        fp32: the float model (with its card).
        int8: the quantized model (same card, apart from ``quantization``).
        images: folder of photos (searched recursively).
        labels: COCO json file or YOLO labels folder (with ``obj.names`` or ``classes.txt``).
        class_map: renames labels between the models' and the labels' vocabularies: a dict, the
            builtin ``voc2coco``, or a JSON file.
        threads: onnxruntime threads for both models (default: cores, at most 4).
        runs: ``session.run`` calls per model for the latency median.
        bootstrap: resamples for a 90 % interval of the mAP@0.5 drop (0: none; needs labels).
        emulate_root: an arm64 root built by scripts/arm64_check.sh: both models also run there under
            qemu (``QEMU_CPU=emulate_cpu``), scored with the same labels (detectors only; needs root).

    Raises:
        ExportError: the photos, labels or models do not fit together.
        ModelError: a model cannot be loaded.
        ValueError: a bad argument (runs, class map).
    """
    from export.calibration import list_images

    started = time.perf_counter()
    fp32_path, int8_path, root = Path(fp32), Path(int8), Path(images)
    card, int8_card = read_card(fp32_path), read_card(int8_path)
    if (card.task, card.labels, card.preprocess) != (int8_card.task, int8_card.labels, int8_card.preprocess):
        raise ExportError(f"{int8_path.name} and {fp32_path.name} differ in task, labels or preprocessing; "
                          "they are not the same model")
    files = list_images(root)
    if not files:
        raise ExportError(f"no photos in {root}")
    mapping = resolve_class_map(class_map)
    gt = None
    if labels is not None:
        if card.task != "detect":
            raise ExportError("labels are for detectors; a classifier is verified by its agreement with FP32")
        try:
            gt = subset_gt(load_labels(labels, root), relative_names(files, root))
        except ValueError as err:
            raise ExportError(str(err)) from err
    threads = threads or default_threads()
    conf = card.thresholds.conf
    results = {}
    for name, path in (("fp32", fp32_path), ("int8", int8_path)):
        t = time.perf_counter()
        if card.task == "detect":
            predictions = detect_files(path, files, root, conf=MAP_CONF, threads=threads)
        else:
            predictions = classify_files(path, files, threads=threads)
        accuracy = evaluate(predictions, gt, class_map=mapping, conf=conf) if gt is not None else None
        results[name] = (predictions, accuracy)
        logger.info("%s: %d photos in %.1f s", path.name, len(files), time.perf_counter() - t)
    if card.task == "detect":
        agreement = detection_agreement(results["fp32"][0], results["int8"][0], conf)
    else:
        agreement = classification_agreement(results["fp32"][0], results["int8"][0])
    interval = None
    if bootstrap and gt is not None:
        interval = map50_drop_interval(results["fp32"][0], results["int8"][0], gt, class_map=mapping,
                                       samples=bootstrap)
    emulated = None
    if emulate_root is not None:
        emulated = _emulated(Path(emulate_root), emulate_cpu, card.task, fp32_path, int8_path, files, root, gt,
                             mapping, conf, results, threads)
    latencies = paired_latency([fp32_path, int8_path], sample_tensor(files, card), threads=threads, runs=runs)
    sides = {name: ModelResult(str(path), path.stat().st_size, latency, results[name][1])
             for (name, path), latency in zip((("fp32", fp32_path), ("int8", int8_path)), latencies)}
    report = VerifyReport(card.task, len(files), sides["fp32"], sides["int8"], agreement, threads, runs, conf,
                          mapping, time.perf_counter() - started, interval, emulated)
    logger.info("verify: agreement %.3f, latency x%.2f, size x%.2f in %.1f s", agreement.fraction,
                report.latency_ratio, report.size_ratio, report.seconds)
    return report


def _emulated(root: Path, cpu: str, task: str, fp32: Path, int8: Path, files: list[Path], photos: Path, gt: Any,
              mapping: Any, conf: float, host: dict[str, Any], threads: int) -> dict[str, Any]:
    """Both models on the emulated arm64 CPU: accuracy with the same labels, the agreement of its INT8
    with its FP32, and how closely its boxes follow the host's (export/emulate.py)."""
    from export.emulate import box_agreement, detect_in_root, detection_rows, file_results

    if task != "detect":
        raise ExportError("--emulate-root verifies detectors (classifiers: compare their outputs on the host)")
    t = time.perf_counter()
    raw = detect_in_root(root, [fp32, int8], files, photos, threads=threads, cpu=cpu)
    out: dict[str, Any] = {"machine": f"{raw['machine']} (qemu {raw['qemu_cpu']})", "onnxruntime": raw["onnxruntime"],
                           "opencv": raw["opencv"], "numpy": raw["numpy"], "seconds": round(time.perf_counter() - t, 1)}

    arm, accuracy = {}, {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        arm[name] = file_results(raw["models"][path.name]["results"])
        accuracy[name] = evaluate(arm[name], gt, class_map=mapping, conf=conf) if gt is not None else None
        out[name] = {"accuracy": accuracy[name].to_dict() if accuracy[name] else None,
                     "seconds_per_photo": raw["models"][path.name]["seconds_per_photo"],
                     "boxes_vs_host": box_agreement(detection_rows(host[name][0]),
                                                    raw["models"][path.name]["results"])}
    out["agreement"] = detection_agreement(arm["fp32"], arm["int8"], conf).to_dict()
    if gt is not None:
        out["map50_drop"] = 100.0 * (accuracy["fp32"].map50 - accuracy["int8"].map50)
    logger.info("verify: emulated %s in %.1f s", out["machine"], out["seconds"])
    return out


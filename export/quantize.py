"""Static INT8 quantization (onnxruntime QDQ) with the decode tail kept in float.

Activations are uint8, asymmetric, one scale per tensor: most activations here are one-sided
(after ReLU/SiLU/LeakyReLU, or raw 0..255 pixels) and a symmetric signed range would waste half
of its 256 levels. Weights are uint8 too, symmetric (zero point 128), one scale per output channel
by default: one scale per tensor cannot serve a depthwise layer whose channels differ by orders of
magnitude.

Why uint8 weights and not the usual int8: on an x86 CPU without VNNI (AVX2 only, e.g. many
workstations and the machine this was measured on), onnxruntime's u8 x s8 kernels multiply with
``vpmaddubsw``, which saturates 16-bit sums; the integer model then departs from its own QDQ
graph (FastestDet: output SQNR 13.4 dB as QDQ, 1.5 dB in the integer kernels; mAP@0.5 24 instead
of 66). u8 x u8 kernels do not saturate (ARM64 MLAS computes both pairs exactly), so with
``--target host`` such a workstation picks u8 x u8. ``reduce_range`` (7-bit s8 weights) also
avoids the saturation but measured lower mAP on all three bundled detectors. The price is speed:
u8 x u8 runs 10-50 % slower than u8 x s8 (docs/quantization.md). An ARM target (``--target pi4``
...) gets u8 x s8 whatever the workstation; such a file is measured on an x86 without VNNI with
onnxruntime's ``session.x64quantprecision`` (set by :func:`edge.inference.session.session_options`
there), which makes its products exact. Even with exact products, onnxruntime's x86 and ARM kernels
round some results differently, and on a few dozen photos that moves mAP by points (issue 14), so
the accuracy is judged by a bound: the drop under several arithmetics (fused kernels, the QDQ graph
in float, runs on inputs perturbed far below a pixel level, optionally the emulated device) and
over bootstrap resamples of the photos (:mod:`export.objective`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from edge.errors import ExportError
from edge.inference.cpu import X86 as _X86
from edge.inference.cpu import host_cpu
from export.deps import require
from export.prepare import carry_card

logger = logging.getLogger(__name__)

METHODS = ("minmax", "percentile", "entropy")
# Percentile calibration keeps 99.99 % of each tensor's values: the outlier-clipping that helps
# YOLOX-Nano (0.42 recall vs 0.32 for MinMax in the assets' notes) without clipping real peaks.
PERCENTILE = 99.99


# Activation x weight integer types. u8s8 is onnxruntime's fast path on ARM64 and on x86 with VNNI
# (AVX512-VNNI, AVX-VNNI): measured here (AMD EPYC with VNNI), YOLOv8n at 640 px runs x0.58 of FP32 on
# one thread in u8s8, x0.96 in u8u8, x1.67 in s8s8. On x86 with AVX2 but no VNNI, u8s8 goes through
# VPMADDUBSW, whose 16-bit sums saturate (FastestDet's output SQNR fell to 1.5 dB on such a machine,
# docs/quantization.md): there u8u8 is exact, and "auto" picks it.
TYPES = ("auto", "u8s8", "u8u8", "s8s8")
_TYPE_NAMES = {"u8": "uint8", "s8": "int8"}


# What the INT8 file is built for (--target). "host" is the machine running the export; the others
# are arm64 devices (a 64-bit OS), where onnxruntime's u8s8 kernels compute exactly and fastest.
TARGETS: dict[str, str] = {
    "host": "this machine",
    "pi4": "Raspberry Pi 4 (Cortex-A72, arm64)",
    "pi5": "Raspberry Pi 5 (Cortex-A76, arm64)",
    "zero2w": "Raspberry Pi Zero 2 W (Cortex-A53, 64-bit OS)",
    "arm64": "an arm64 device",
}
def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")


def resolve_types(name: str, *, target: str = "host", cpuinfo: str | None = None,
                  arch: str | None = None) -> tuple[str, str]:
    """The concrete integer types for ``name`` ("auto" or one of TYPES) on ``target``, and why."""
    if name not in TYPES:
        raise ValueError(f"integer types must be one of {', '.join(TYPES)}, got {name!r}")
    _check_target(target)
    if name != "auto":
        return name, "chosen"
    if target != "host":
        return "u8s8", f"for {target}: arm64 runs u8s8 exactly and fastest"
    arch, vnni = host_cpu(cpuinfo=cpuinfo, arch=arch)
    if arch not in _X86:
        return "u8s8", f"{arch}: u8s8 kernels are exact and fastest"
    if vnni:
        return "u8s8", "x86 with VNNI: u8s8 kernels are exact and fastest"
    return "u8u8", ("x86 without VNNI: u8s8 kernels can saturate here, u8u8 is exact (for an ARM device, "
                    "--target pi4|pi5|zero2w|arm64 picks u8s8, faster there)")


def measured_on(types: str | None, target: str, *, cpuinfo: str | None = None, arch: str | None = None,
                emulate_cpu: str | None = None) -> str:
    """What an accuracy measured on this machine says about ``target`` for a file of ``types``;
    ``emulate_cpu``: the search also ran on the emulated device (``--emulate-root``)."""
    _check_target(target)
    if emulate_cpu is not None:
        return (f"the emulated device (arm64 under qemu, QEMU_CPU={emulate_cpu}): the {target}'s own INT8 kernels, "
                "bounded together with this host's arithmetics and a bootstrap over the photos (docs/quantization.md)")
    arch, vnni = host_cpu(cpuinfo=cpuinfo, arch=arch)
    if target == "host":
        return f"this {arch} machine, the target itself"
    if arch in ("aarch64", "arm64"):
        return f"this arm64 machine, with the same onnxruntime kernels as the {target}"
    if arch not in _X86:
        return f"this {arch} machine, not the {target}: verify on the device"
    exact = ("with VNNI" if vnni or types == "u8u8" else
             "without VNNI, its u8s8 products made exact by onnxruntime's session.x64quantprecision")
    return (f"this x86 host {exact}: integer products exact, as on the {target}, but its INT8 kernels round some "
            "results differently from arm64's, so the drop is bounded over several arithmetics (fused integer kernels, "
            "the QDQ graph in float, inputs perturbed below a pixel level) and a bootstrap over the photos "
            "(docs/quantization.md): close to the device, not measured on it")


def _types(name: str) -> tuple[Any, Any]:
    """(activation type, weight type) of onnxruntime.quantization for a TYPES name."""
    quantization = require("onnxruntime.quantization")
    u8, s8 = quantization.QuantType.QUInt8, quantization.QuantType.QInt8
    table = {"u8s8": (u8, s8), "u8u8": (u8, u8), "s8s8": (s8, s8)}
    if name not in table:
        raise ValueError(f"integer types must be one of {', '.join(TYPES[1:])}, got {name!r}")
    return table[name]


def _method(name: str):
    quantization = require("onnxruntime.quantization")
    table = {"minmax": quantization.CalibrationMethod.MinMax,
             "percentile": quantization.CalibrationMethod.Percentile,
             "entropy": quantization.CalibrationMethod.Entropy}
    if name not in table:
        raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {name!r}")
    return table[name]


class _QuietQuantizer(logging.Filter):
    """Collects the warnings onnxruntime's quantizer sends to the root logger, one per tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" in record.pathname and "quantization" in record.pathname:
            self.messages.append(record.getMessage())
            return False
        return True

    def report(self) -> None:
        if self.messages:
            logger.info("onnxruntime quantizer: %d warnings, e.g. %s", len(self.messages), self.messages[0])


def quantize_file(
    prepared: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    reader=None,
    *,
    method: str = "minmax",
    per_channel: bool = True,
    exclude: Iterable[str] = (),
    cache: str | os.PathLike[str] | None = None,
    types: str = "u8s8",
) -> Path:
    """Quantize a prepared float file (see :func:`export.prepare.prepare`) to QDQ INT8 at ``dst``.

    Args:
        prepared: float ONNX file, pre-processed for quantization.
        dst: where to write the INT8 file; it keeps ``prepared``'s model card.
        reader: calibration data (an :class:`export.calibration.ImageReader`); may be None when
            ``cache`` already holds the ranges.
        types: activation x weight integer types (see TYPES).
        method: calibration method: minmax, percentile or entropy.
        per_channel: one weight scale per output channel (else per tensor).
        exclude: names of nodes to keep in float.
        cache: calibration ranges file: written on the first call, reused by later ones (the
            mixed-precision search quantizes many times from one calibration).

    Raises:
        ExportError: onnxruntime cannot quantize the file.
    """
    quantization = require("onnxruntime.quantization")
    calibrate = _method(method)
    activation_type, weight_type = _types(types)
    src_path, dst_path = Path(prepared), Path(dst)
    if reader is None and (cache is None or not Path(cache).is_file()):
        raise ValueError("quantize_file needs a calibration reader or an existing calibration cache")
    if reader is not None and hasattr(reader, "rewind"):
        reader.rewind()
    extra = {"WeightSymmetric": True, "ActivationSymmetric": types == "s8s8"}
    if method == "percentile":
        extra["CalibPercentile"] = PERCENTILE
    started = time.perf_counter()
    printed = io.StringIO()
    quiet = _QuietQuantizer()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        # The histogram calibrators print progress to stdout, which --json output must keep clean.
        with contextlib.redirect_stdout(printed):
            quantization.quantize_static(
                str(src_path), str(dst_path), reader,
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=activation_type,
                weight_type=weight_type,
                nodes_to_exclude=list(exclude),
                calibrate_method=calibrate,
                extra_options=extra,
                calibration_cache_path=str(cache) if cache is not None else None,
            )
    except Exception as err:  # onnxruntime raises bare RuntimeError/ValueError from deep inside
        raise ExportError(f"onnxruntime cannot quantize {src_path.name}: {type(err).__name__}: {err}") from err
    finally:
        root.removeFilter(quiet)
    quiet.report()
    if printed.getvalue().strip():
        logger.debug("onnxruntime: %s", printed.getvalue().strip())
    carry_card(src_path, dst_path)
    logger.info("quantize (%s, %s, %d nodes in float): %s (%.0f kB) in %.2f s", method,
                "per channel" if per_channel else "per tensor", len(list(exclude)), dst_path.name,
                dst_path.stat().st_size / 1024, time.perf_counter() - started)
    return dst_path


# -- the whole stage ------------------------------------------------------------------------------
def _size(path: Path) -> int:
    return path.stat().st_size


def quantize_model(
    src: Path,
    dst: Path,
    *,
    calib_dir: Path,
    labels: Path | None = None,
    val_dir: Path | None = None,
    budget: float | None = None,
    method: str = "minmax",
    per_channel: bool = True,
    class_map: dict | None = None,
    search: bool = True,
    max_search_s: float = 900.0,
    sensitivity_images: int = 2,
    threads: int | None = None,
    target_latency_ms: float | None = None,
    latency_runs: int = 20,
    types: str = "auto",
    target: str = "host",
    confidence: float | None = 0.9,
    samples: int = 200,
    emulate_root: Path | None = None,
    emulate_cpu: str = "cortex-a72",
    jitter_runs: int = 4,
) -> dict:
    """Quantize a stamped float model to INT8 within an accuracy budget; returns the report dict.

    Calibrates on the photos of ``calib_dir``, measures the INT8 model against FP32 on ``val_dir``
    (default: a deterministic half of ``calib_dir``, the other half calibrating), by mAP@0.5 when
    ``labels`` are given, else by agreement with FP32. When the drop exceeds ``budget`` (default
    1.0 mAP point, or 10 agreement points), the most harmful quantizations are kept in float until
    it fits (:mod:`export.sensitivity`), for at most ``max_search_s`` seconds.

    Args:
        src: float ONNX file with a model card.
        dst: where to write the INT8 file (its card gets a ``quantization`` summary).
        calib_dir: calibration photos, ideally from the camera the model will run on.
        labels: COCO json or YOLO labels folder for the held-out photos.
        val_dir: held-out photos (default: half of ``calib_dir``).
        budget: largest acceptable drop, in points (mAP@0.5 x 100, or agreement percent).
        method: calibration method: minmax, percentile or entropy.
        per_channel: one weight scale per output channel (default) or one per tensor.
        class_map: label renaming between the model's and the labels' class names.
        search: search for nodes to keep in float when the drop exceeds the budget.
        max_search_s: time cap of the search (ranking included).
        sensitivity_images: calibration photos the sensitivity ranking runs on.
        threads: onnxruntime threads for the measurements.
        target_latency_ms: model-only latency the deployment needs; the report then says which
            model (or input size) meets it on this machine.
        latency_runs: timed runs per model for the latency comparison (0 skips it).
        types: activation x weight integer types: auto (default: u8s8, or u8u8 on x86 without VNNI
            when ``target`` is "host"), u8s8, u8u8 or s8s8.
        target: the device the file is for (see TARGETS): picks "auto" types, and the report says
            what the accuracy measured on this machine means for it.
        confidence: the drop is judged by its bound: its interval at this confidence over bootstrap
            resamples of the held-out photos and several arithmetics, either way (:mod:`export.objective`);
            None: the arithmetics' drops on the photos as they are.
        samples: bootstrap resamples of the held-out photos.
        emulate_root: an arm64 root built by ``scripts/arm64_check.sh``: every candidate also runs
            there under qemu (``QEMU_CPU=emulate_cpu``), a third arithmetic, the device's own (needs root).
        jitter_runs: runs of each candidate on inputs perturbed far below a pixel level, inside the
            bound (detectors; :mod:`export.objective`).

    Raises:
        ExportError: bad inputs (too few photos, no card), or a stage failed.
        MissingExtraError: the export extra is not installed.
        ValueError: an unknown method or a bad argument.
    """
    from edge.inference.card import ModelCard, read_card, write_card
    from export.calibration import ImageReader, check_count, list_images, split_images
    from export.graph import load_graph
    from export.measure import load_labels, resolve_class_map
    from export.objective import Objective, default_budget
    from export.prepare import prepare
    from export.sensitivity import rank_units
    from export.sensitivity import search as run_search

    _method(method)
    types, types_reason = resolve_types(types, target=target)
    measured = measured_on(types, target, emulate_cpu=emulate_cpu if emulate_root is not None else None)
    logger.info("target %s: integer types %s (%s); accuracy measured on %s", target, types, types_reason, measured)
    if budget is not None and budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if target_latency_ms is not None and target_latency_ms <= 0:
        raise ValueError(f"the latency target must be > 0 ms, got {target_latency_ms}")
    if latency_runs < 0:
        raise ValueError(f"latency_runs must be >= 0, got {latency_runs}")
    if sensitivity_images < 1:
        raise ValueError(f"sensitivity_images must be >= 1, got {sensitivity_images}")
    src, dst, calib_dir = Path(src), Path(dst), Path(calib_dir)
    if not src.is_file():
        raise ExportError(f"model file not found: {src}")
    if src.resolve() == dst.resolve():
        raise ExportError("the INT8 output must not overwrite the float model")
    started = time.perf_counter()
    card = read_card(src)
    photos = list_images(calib_dir)
    if val_dir is None:
        calib, held_out = split_images(photos, root=calib_dir)
        val_root = calib_dir
        check_count(len(calib), f"the calibration half of {calib_dir} ({len(photos)} photos split 50/50)")
    else:
        calib, val_root = photos, Path(val_dir)
        held_out = list_images(val_root)
        check_count(len(calib), f"the calibration set {calib_dir}")
    if not held_out:
        raise ExportError(f"no held-out photos to measure the INT8 model on ({val_root})")
    mapping = resolve_class_map(class_map)
    try:
        gt = load_labels(labels, val_root) if labels is not None else None
    except ValueError as err:
        raise ExportError(str(err)) from err

    with TemporaryDirectory(prefix="wildedge-quantize-") as tmp_dir:
        tmp = Path(tmp_dir)
        prepared = prepare(src, tmp / "prepared.onnx")
        graph = load_graph(prepared)
        tail = graph.float_tail()
        reader = ImageReader(calib, card, graph.model.graph.input[0].name)
        cache = tmp / "calibration.json"

        def quantize_with(extra: set[str], tag: str) -> Path:
            return quantize_file(prepared, tmp / f"int8_{tag}.onnx", reader, method=method,
                                 per_channel=per_channel, exclude=[*tail, *sorted(extra - set(tail))], cache=cache,
                                 types=types)

        calibrated = time.perf_counter()
        plain = quantize_with(set(), "plain")
        calibration_s = time.perf_counter() - calibrated
        try:
            objective = Objective(src, held_out, val_root, gt=gt, class_map=mapping, threads=threads,
                                  confidence=confidence, samples=samples, emulate_root=emulate_root,
                                  emulate_cpu=emulate_cpu, jitter_draws=jitter_runs)
        except ValueError as err:
            raise ExportError(str(err)) from err
        limit = default_budget(objective.metric) if budget is None else budget
        plain_score = objective(plain)
        logger.info("plain INT8 (decode tail in float): %s %.2f vs FP32 %.2f, drop %.2f, bound %.2f (budget %.2f)",
                    plain_score.metric, plain_score.int8, plain_score.fp32, plain_score.drop, plain_score.bound, limit)
        final, final_score, searched, ranking, kept = plain, plain_score, None, [], []
        search_started = time.perf_counter()
        if plain_score.bound > limit and search:
            tensors = []
            reader.rewind()
            while len(tensors) < sensitivity_images and (item := reader.get_next()) is not None:
                tensors.append(item[reader.input_name])
            ranking = rank_units(prepared, plain, tensors, graph, skip=set(tail), threads=threads,
                                 max_seconds=max_search_s / 2)
            remaining = max(0.0, max_search_s - (time.perf_counter() - search_started))
            searched = run_search(ranking, quantize=quantize_with, objective=objective, budget=limit,
                                  max_seconds=remaining)
            if searched.path is not None and searched.score is not None and searched.score.bound < plain_score.bound:
                final, final_score, kept = searched.path, searched.score, searched.nodes
        search_s = time.perf_counter() - search_started
        float_nodes = list(dict.fromkeys([*tail, *kept]))
        kept = [n for n in float_nodes if n not in set(tail)]  # the search's nodes, in rank order
        within = final_score.bound <= limit
        if not within:
            logger.warning("INT8 drop %.2f (bound %.2f) exceeds the budget %.2f%s", final_score.drop,
                           final_score.bound, limit, "" if search else " (search disabled)")
        convs = conv_share(graph, float_nodes)
        advice = recommendation(within=within, convs=convs)
        if advice["use"] == "fp32":
            logger.warning("%s", advice["why"])
        scored = final_score.to_dict()
        summary = {
            "format": "QDQ",
            "target": target,
            "target_device": TARGETS[target],
            "types": types,
            "types_reason": types_reason,
            "measured_on": measured,
            "weights": f"{_TYPE_NAMES[types[2:]]} symmetric {'per channel' if per_channel else 'per tensor'}",
            "activations": f"{_TYPE_NAMES[types[:2]]} {'symmetric' if types == 's8s8' else 'asymmetric'} per tensor",
            "method": method,
            "per_channel": per_channel,
            "calibration_images": len(calib) - len(reader.failed),
            "float_nodes": {"count": len(float_nodes), "tail": tail, "searched": kept},
            "budget": {"metric": final_score.metric, "max_drop": limit},
            "fp32": round(final_score.fp32, 3),
            "int8": round(final_score.int8, 3),
            "drop": round(final_score.drop, 3),
            "drops": scored["drops"],
            "drop_interval": scored["interval"],
            "drop_bound": scored["bound"],
            "margin": scored["margin"],
            "confidence": scored["confidence"],
            "bootstrap_samples": samples if final_score.confidence is not None else 0,
            "within_budget": within,
            "convolutions": convs,
            "recommendation": advice,
            "held_out_images": len(held_out),
            "size_bytes": {"fp32": _size(src), "int8": _size(final)},
            "onnxruntime": _ort_version(),
            "seconds": round(time.perf_counter() - started, 1),
        }
        # The card states the file's own size, which the card changes: write until they agree.
        for _ in range(4):
            write_card(final, dst, ModelCard.model_validate({**card.model_dump(), "quantization": summary}))
            if _size(dst) == summary["size_bytes"]["int8"]:
                break
            summary["size_bytes"]["int8"] = _size(dst)
    latency = None
    if latency_runs:
        from export.guidance import measure

        latency = measure(src, dst, held_out, target_ms=target_latency_ms, threads=threads,
                          runs=latency_runs).to_dict()
    report = {
        "input": str(src), "output": str(dst), "task": card.task,
        "quantization": summary,
        "plain": plain_score.to_dict(),
        "final": final_score.to_dict(),
        "float_nodes": [{"name": n, "op_type": info.op_type, "index": info.index, "tail": n in set(tail)}
                        for n in float_nodes for info in [graph.info(n)]],
        "graph_nodes": len(graph.nodes),
        "ranking": [u.to_dict() for u in ranking[:50]],
        "search": searched.to_dict() if searched else None,
        "latency": latency,
        "timings_s": {"calibration": round(calibration_s, 2), "search": round(search_s, 2),
                      "total": round(time.perf_counter() - started, 2)},
        "calibration_files": [str(p) for p in calib],
        "held_out_files": [str(p) for p in held_out],
        "skipped_images": list(reader.failed),
    }
    logger.info("quantized %s -> %s (%.0f -> %.0f kB) in %.1f s; %s drop %.2f, bound %.2f (budget %.2f)", src.name,
                dst.name, _size(src) / 1024, _size(dst) / 1024, time.perf_counter() - started, final_score.metric,
                final_score.drop, final_score.bound, limit)
    return report


#: Below this share of its convolutions in INT8, a model that meets the budget only by keeping the
#: rest in float is better shipped as FP32 (issue 14: the INT8 file is then mostly float anyway).
MIN_INT8_CONV_SHARE = 0.5


def conv_share(graph: Any, float_nodes: list[str]) -> dict[str, Any]:
    """How many of the graph's convolutions (Conv, ConvTranspose) run in INT8 in the final file."""
    convs = [node.name for node in graph.nodes if node.op_type in ("Conv", "ConvTranspose")]
    floats = set(float_nodes)
    in_float = sum(1 for name in convs if name in floats)
    total = len(convs)
    return {"total": total, "float": in_float, "int8": total - in_float,
            "int8_share": round((total - in_float) / total, 3) if total else None}


def recommendation(*, within: bool, convs: dict[str, Any]) -> dict[str, str]:
    """INT8 or FP32, and why: FP32 when the budget is missed, or met only with fewer than half the
    convolutions in INT8."""
    share = convs.get("int8_share")
    if not within:
        return {"use": "fp32", "why": "the INT8 file misses the accuracy budget: ship the FP32 file (or raise the "
                                      "budget, calibrate on more photos, or try --types)"}
    if share is not None and share < MIN_INT8_CONV_SHARE:
        return {"use": "fp32", "why": f"the budget is met only with {convs['float']} of {convs['total']} "
                                      f"convolutions kept in float ({share:.0%} in INT8, under "
                                      f"{MIN_INT8_CONV_SHARE:.0%}): the INT8 file is mostly float; ship the FP32 file"}
    return {"use": "int8", "why": f"within the budget with {convs['int8']} of {convs['total']} convolutions in INT8"}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__

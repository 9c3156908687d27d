"""``wildedge export quantize`` and ``wildedge export verify``.

Nothing heavy is imported at module import: onnx and onnxruntime.quantization load inside the
commands, and a missing ``export`` extra is reported in one line (exit code 2).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edge.errors import WildedgeError
from export.cmd_export import gt_labels_option

logger = logging.getLogger(__name__)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _write_report(path: Path, report: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise _fail(f"cannot write the report {path}: {err.strerror}") from err


def _kb(size: int) -> str:
    return f"{size / 1024:,.0f} kB"


def print_latency_advice(latency: dict[str, Any] | None) -> None:
    """The latency comparison and its advice (export.guidance), two spaces in."""
    for line in (latency or {}).get("advice", []):
        typer.echo(f"  {line}")


def quantize(
    model: Annotated[Path, typer.Argument(help="Float ONNX model with a model card.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the INT8 model.")],
    calib: Annotated[Path, typer.Option(
        "--calib", help="Calibration photos (at least 16, 50+ recommended), ideally from the target camera.")],
    gt_labels: Annotated[Optional[Path], typer.Option(
        "--gt-labels", help="Ground truth of the held-out photos: COCO json, or YOLO labels folder with "
                            "obj.names/classes.txt. Without it the INT8 model is judged by its agreement "
                            "with FP32.")] = None,
    labels: Annotated[Optional[Path], typer.Option(
        "--labels", hidden=True, help="Deprecated name of --gt-labels.")] = None,
    val: Annotated[Optional[Path], typer.Option(
        help="Held-out photos to measure the drop on; default: a fixed half of --calib (the other half "
             "calibrates).")] = None,
    budget: Annotated[Optional[float], typer.Option(
        help="Largest acceptable drop in points: mAP@0.5 x100 with --gt-labels (default 1.0), else agreement "
             "percent (default 10.0).")] = None,
    method: Annotated[str, typer.Option(help="Calibration: minmax, percentile or entropy.")] = "minmax",
    types: Annotated[str, typer.Option(
        help="Activation x weight integers: auto (u8s8; u8u8 for --target host on an x86 CPU without VNNI), u8s8 "
             "(fast on ARM64 and x86 with VNNI), u8u8 (exact on x86 without VNNI, where u8s8 can saturate), "
             "s8s8.")] = "auto",
    target: Annotated[str, typer.Option(
        help="The device the INT8 file is for: host (this machine), pi4, pi5, zero2w (64-bit OS) or arm64. An ARM "
             "target gets u8s8 integers (exact and fastest there) even on an x86 without VNNI; the report says "
             "what the accuracy measured here means for the device.")] = "host",
    per_tensor: Annotated[bool, typer.Option(
        "--per-tensor", help="One weight scale per tensor instead of per output channel.")] = False,
    class_map: Annotated[Optional[str], typer.Option(
        help="Rename label classes to the model's: 'voc2coco' or a JSON file {\"from\": \"to\"}.")] = None,
    search: Annotated[bool, typer.Option(
        "--search/--no-search", help="Keep the most harmful layers in float until the drop's bound fits the budget.")] = True,
    confidence: Annotated[float, typer.Option(
        help="With --gt-labels, the INT8 model must stay within the budget of FP32, either way, at this "
             "confidence: the drop's interval over bootstrap resamples of the held-out photos and several runs "
             "(fused INT8 kernels, the QDQ graph in float, inputs perturbed below a pixel level), so that other "
             "photos and a device that rounds "
             "differently stay within it too. 0: the runs' drops on the photos as they are.")] = 0.9,
    jitter_runs: Annotated[int, typer.Option(
        help="Runs of each candidate on inputs perturbed by 0.1 % (far below a pixel level), each against FP32 on the "
             "same inputs, inside the bound: stand-ins for a CPU that rounds differently (detectors; 0: none).")] = 4,
    emulate_root: Annotated[Optional[Path], typer.Option(
        "--emulate-root", help="An arm64 root built by scripts/arm64_check.sh: every candidate also runs there under "
                               "qemu, the device's own arithmetic, inside the bound (detectors; needs root; about "
                               "a second a photo, so raise --max-search).")] = None,
    emulate_cpu: Annotated[str, typer.Option(
        help="QEMU_CPU for --emulate-root: cortex-a72 (Pi 4), cortex-a76 (Pi 5), cortex-a53 (Zero 2 W).")
    ] = "cortex-a72",
    max_search: Annotated[float, typer.Option(help="Time cap of the search, seconds.")] = 900.0,
    threads: Annotated[Optional[int], typer.Option(help="onnxruntime threads for the measurements.")] = None,
    target_latency: Annotated[Optional[float], typer.Option(
        help="Model-only latency (ms) the deployment needs: says which model meets it on this machine, or "
             "the input size to export at ('wildedge export detector --imgsz N').")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Quantize MODEL to INT8 (QDQ), keeping its accuracy within a budget; writes OUTPUT.report.json.

    Exit code: 0 within budget, 1 when the budget could not be reached (the best INT8 model found
    is still written), 2 on a usage or model error.
    """
    try:
        from export.quantize import METHODS, TARGETS, TYPES, quantize_model
    except WildedgeError as err:  # MissingExtraError: the export extra is not installed
        raise _fail(str(err)) from err
    labels = gt_labels_option(gt_labels, labels, "--labels")
    if method not in METHODS:
        raise _fail(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if types not in TYPES:
        raise _fail(f"--types must be one of {', '.join(TYPES)}, got {types!r}")
    if target not in TARGETS:
        raise _fail(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    if jitter_runs < 0:
        raise _fail(f"--jitter-runs must be >= 0, got {jitter_runs}")
    if confidence != 0 and not 0.5 <= confidence < 1:
        raise _fail(f"--confidence must be 0 (no bootstrap) or within [0.5, 1), got {confidence}")
    try:
        report = quantize_model(
            model, output, calib_dir=calib, labels=labels, val_dir=val, budget=budget, method=method,
            per_channel=not per_tensor, class_map=class_map, search=search, max_search_s=max_search,
            threads=threads, target_latency_ms=target_latency, types=types, target=target,
            confidence=confidence or None, emulate_root=emulate_root, emulate_cpu=emulate_cpu,
            jitter_runs=jitter_runs,
        )
    except (WildedgeError, ValueError) as err:
        raise _fail(str(err)) from err
    report_path = output.with_name(output.name + ".report.json")
    report["report"] = str(report_path)
    _write_report(report_path, report)
    summary = report["quantization"]
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        floats = summary["float_nodes"]
        plain, final = report["plain"], report["final"]
        times = report["timings_s"]
        typer.echo(f"{model} -> {output} ({_kb(summary['size_bytes']['fp32'])} -> "
                   f"{_kb(summary['size_bytes']['int8'])})")
        typer.echo(f"  calibration: {summary['calibration_images']} photos, {summary['method']}, weights "
                   f"{summary['weights']}, activations {summary['activations']} ({times['calibration']:.1f} s)")
        typer.echo(f"  target {summary['target']}, {summary['target_device']}: {summary['types']} "
                   f"({summary['types_reason']})")
        typer.echo(f"  accuracy measured on {summary['measured_on']}")
        metric = {"map50": "mAP@0.5 x100", "agreement": "agreement %", "top1": "top-1 agreement %"}[final["metric"]]
        typer.echo(f"  {metric} on {summary['held_out_images']} held-out photos: FP32 {final['fp32']:.2f}, "
                   f"plain INT8 {plain['int8']:.2f} (drop {plain['drop']:.2f}, bound {plain['bound']:.2f}), final "
                   f"INT8 {final['int8']:.2f} (drop {final['drop']:.2f}, bound {final['bound']:.2f}, budget "
                   f"{summary['budget']['max_drop']:.2f})")
        arithmetic = ", ".join(f"{k} {v:+.2f}" for k, v in final["drops"].items())
        how = (f"drop {final['interval'][0]:+.2f} .. {final['interval'][1]:+.2f} at {final['confidence']:.0%} over "
               f"{summary['bootstrap_samples']} bootstrap resamples" if final["interval"] else "the arithmetics' drops")
        typer.echo(f"  final INT8 drop by run: {arithmetic}; bound from {how} (margin {final['margin']:.2f})")
        typer.echo(f"  kept in float: {len(floats['tail'])} decode-tail nodes"
                   + (f", {len(floats['searched'])} searched: {', '.join(floats['searched'][:12])}"
                      f"{' ...' if len(floats['searched']) > 12 else ''}" if floats["searched"] else "")
                   + (f" (search {times['search']:.1f} s)" if report["search"] else ""))
        print_latency_advice(report.get("latency"))
        advice = summary.get("recommendation")
        if advice:
            typer.echo(f"  recommendation: {advice['use'].upper()}: {advice['why']}")
        typer.echo(f"  done in {times['total']:.1f} s; report: {report_path}")
    if not summary["within_budget"]:
        typer.echo(f"warning: the drop's bound {report['final']['bound']:.2f} (drop {report['final']['drop']:.2f}) "
                   f"exceeds the budget {summary['budget']['max_drop']:.2f}", err=True)
        raise typer.Exit(1)


def verify(
    fp32: Annotated[Path, typer.Argument(help="The float model.")],
    int8: Annotated[Path, typer.Argument(help="The INT8 model.")],
    images: Annotated[Path, typer.Option(help="Folder of photos to compare the two on.")],
    gt_labels: Annotated[Optional[Path], typer.Option(
        "--gt-labels", help="Ground truth of the photos, COCO json or YOLO labels folder (with "
                            "obj.names/classes.txt): adds mAP and recall.")] = None,
    labels: Annotated[Optional[Path], typer.Option(
        "--labels", hidden=True, help="Deprecated name of --gt-labels.")] = None,
    class_map: Annotated[Optional[str], typer.Option(
        help="Rename label classes to the model's: 'voc2coco' or a JSON file {\"from\": \"to\"}.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="onnxruntime threads for both models.")] = None,
    target: Annotated[str, typer.Option(
        help="The device the INT8 file is for: host (this machine), pi4, pi5, zero2w (64-bit OS) or arm64; the "
             "report says what the accuracy measured here means for it.")] = "host",
    runs: Annotated[int, typer.Option(help="session.run calls per model for the latency median.")] = 50,
    bootstrap: Annotated[int, typer.Option(
        help="With --gt-labels: resamples for a 90 % interval of the mAP@0.5 drop (0: none; ~0.5 s each).")] = 0,
    target_latency: Annotated[Optional[float], typer.Option(
        help="Model-only latency (ms) the deployment needs: says which model meets it on this machine, or "
             "the input size to export at ('wildedge export detector --imgsz N').")] = None,
    emulate_root: Annotated[Optional[Path], typer.Option(
        "--emulate-root", help="An arm64 root built by scripts/arm64_check.sh: also run both models there under "
                               "qemu (a Pi's CPU) and report the accuracy on it next to this machine's (as root).")]
    = None,
    emulate_cpu: Annotated[str, typer.Option(
        help="QEMU_CPU for --emulate-root: cortex-a72 (Pi 4), cortex-a76 (Pi 5), cortex-a53 (Zero 2 W).")]
    = "cortex-a72",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Compare INT8 with FP32: mAP, recall, agreement, latency and size; writes INT8.verify.json."""
    labels = gt_labels_option(gt_labels, labels, "--labels")
    try:
        from export.quantize import TARGETS, measured_on
        from export.verify import verify as run_verify
    except WildedgeError as err:
        raise _fail(str(err)) from err
    if target not in TARGETS:
        raise _fail(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    try:
        report = run_verify(fp32, int8, images, labels=labels, class_map=class_map, threads=threads, runs=runs,
                            bootstrap=bootstrap, emulate_root=emulate_root, emulate_cpu=emulate_cpu)
        from edge.inference.card import read_card
        from export.guidance import advise

        advice = advise(report.fp32.latency_ms, report.int8.latency_ms, target_ms=target_latency,
                        input_size=read_card(fp32).preprocess.input_size, threads=report.threads)
    except (WildedgeError, ValueError) as err:
        raise _fail(str(err)) from err
    data = report.to_dict()
    data["latency_advice"] = advice.to_dict()
    types = (read_card(int8).quantization or {}).get("types")  # None: not quantized by wildedge
    data.update(target=target, target_device=TARGETS[target], measured_on=measured_on(types, target))
    report_path = int8.with_name(int8.name + ".verify.json")
    data["report"] = str(report_path)
    _write_report(report_path, data)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"{report.images} photos, {report.threads} threads; measured on {data['measured_on']}")
    rows = [("", "FP32", "INT8")]
    if report.fp32.accuracy is not None and report.int8.accuracy is not None:
        a, b = report.fp32.accuracy, report.int8.accuracy
        rows += [("mAP@0.5", f"{a.map50:.3f}", f"{b.map50:.3f}"),
                 ("mAP@0.5:0.95", f"{a.map50_95:.3f}", f"{b.map50_95:.3f}"),
                 (f"recall@conf {report.conf:g}", f"{a.recall:.3f}", f"{b.recall:.3f}")]
    rows += [("latency (ms)", f"{report.fp32.latency_ms:.2f}", f"{report.int8.latency_ms:.2f}"),
             ("size", _kb(report.fp32.size_bytes), _kb(report.int8.size_bytes))]
    width = max(len(r[0]) for r in rows)
    for row in rows:
        typer.echo(f"  {row[0]:<{width}}  {row[1]:>12}  {row[2]:>12}")
    if report.map50_drop is not None:
        interval = report.map50_drop_interval
        typer.echo(f"  mAP@0.5 drop: {report.map50_drop:.2f} points"
                   + (f" (90 % bootstrap interval {interval[0]:.2f} .. {interval[1]:.2f})" if interval else ""))
    if report.emulated is not None:
        emu = report.emulated
        typer.echo(f"  on {emu['machine']} (onnxruntime {emu['onnxruntime']}, {emu['seconds']:.0f} s):")
        for name in ("fp32", "int8"):
            side, boxes = emu[name], emu[name]["boxes_vs_host"]
            acc = side["accuracy"]
            typer.echo(f"    {name.upper()}: " + (f"mAP@0.5 {acc['map50']:.3f}, " if acc else "")
                       + f"{boxes['matched']}/{boxes['host_detections']} of this machine's boxes (score > "
                       f"{boxes['conf']:g}) at IoU > {boxes['iou']:g}, {boxes['exact']} exact; "
                       f"{side['seconds_per_photo']:.2f} s a photo emulated")
        if emu.get("map50_drop") is not None:
            typer.echo(f"    mAP@0.5 drop on the emulated device: {emu['map50_drop']:.2f} points")
    ag = report.agreement
    if ag.task == "detect":
        typer.echo(f"  agreement: {ag.matched}/{ag.reference} FP32 detections matched ({ag.fraction:.3f}), "
                   f"mean IoU {ag.mean_iou if ag.mean_iou is not None else float('nan'):.3f}, class agreement "
                   f"{ag.class_agreement if ag.class_agreement is not None else float('nan'):.3f}")
    else:
        typer.echo(f"  agreement: top-1 {ag.top1 if ag.top1 is not None else float('nan'):.3f}, "
                   f"top-5 {ag.top5 if ag.top5 is not None else float('nan'):.3f}")
    typer.echo(f"  INT8/FP32 latency x{report.latency_ratio:.2f}, size x{report.size_ratio:.2f}; "
               f"done in {report.seconds:.1f} s; report: {report_path}")
    for line in advice.lines[1:]:  # the first repeats the latency row above
        typer.echo(f"  {line}")

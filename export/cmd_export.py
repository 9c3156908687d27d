"""``wildedge export detector|classifier``: a checkpoint, ONNX file, MLflow URI or published name to
a stamped, parity-checked FP32 ONNX file, and optionally INT8 (``--int8``) through export.quantize.

Nothing heavy is imported here at import time: torch and friends load inside :func:`export_model`, so
``wildedge --help`` stays fast and a missing extra is one line (``pip install 'wildedge[export]'``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edge.errors import MissingExtraError, WildedgeError
from export.sources import Kind, load_labels

logger = logging.getLogger(__name__)

REPORT_SUFFIX = ".report.json"

SourceArg = Annotated[str, typer.Argument(
    help="A .pt/.pth/.yaml/.onnx file, an MLflow URI (models:/NAME/VERSION, runs:/ID/PATH) or a published "
         "checkpoint name.")]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="The ONNX file to write.")]
ImgszOpt = Annotated[Optional[int], typer.Option(help="Square input size in pixels; default: the model's.")]
Int8Opt = Annotated[bool, typer.Option(
    "--int8", help="Also quantize to INT8 (needs --calib); the FP32 file is kept as OUT.fp32.onnx.")]
CalibOpt = Annotated[Optional[Path], typer.Option(
    help="Folder of representative photos for INT8 calibration.")]
GtLabelsOpt = Annotated[Optional[Path], typer.Option(
    "--gt-labels", help="Ground truth of the calibration photos (COCO json or YOLO labels folder): INT8 is "
                        "then judged by mAP@0.5. (--labels names the classes.)")]
OldGtLabelsOpt = Annotated[Optional[Path], typer.Option(
    "--calib-labels", hidden=True, help="Deprecated name of --gt-labels.")]
BudgetOpt = Annotated[Optional[float], typer.Option(
    help="Largest accuracy drop INT8 may cost, in points (mAP@0.5 x 100 with --gt-labels, else % "
         "agreement with FP32); past it, the most harmful layers stay in float.")]
MethodOpt = Annotated[str, typer.Option(help="INT8 calibration method: minmax, entropy or percentile.")]
TypesOpt = Annotated[str, typer.Option(
    help="With --int8: activation x weight integers: auto (u8s8; u8u8 for --target host on an x86 CPU without "
         "VNNI), u8s8 (fast on ARM64 and x86 with VNNI), u8u8 (exact on x86 without VNNI), s8s8.")]
TargetOpt = Annotated[str, typer.Option(
    help="With --int8: the device the INT8 file is for: host (this machine), pi4, pi5, zero2w (64-bit OS) or "
         "arm64. An ARM target gets u8s8 integers (exact and fastest there) even on an x86 without VNNI; the "
         "report says what the accuracy measured here means for the device.")]
TargetLatencyOpt = Annotated[Optional[float], typer.Option(
    help="With --int8: the model-only latency (ms) the deployment needs; the summary says which model, or "
         "which --imgsz to export at, meets it on this machine.")]
CheckImagesOpt = Annotated[Optional[list[Path]], typer.Option(
    "--check-images", help="Photo folder for the FP32 parity check (repeatable); default: --calib, else "
                           "synthetic frames.")]
CacheOpt = Annotated[Optional[Path], typer.Option(
    help="Cache for published checkpoints; default $WILDEDGE_CACHE, else $XDG_CACHE_HOME/wildedge.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of a summary.")]
PresetOpt = Annotated[Optional[str], typer.Option(
    help="ONNX sources without a card: the model family (see 'wildedge model stamp --help').")]


def gt_labels_option(new: Path | None, old: Path | None, old_name: str) -> Path | None:
    """The ground-truth file from ``--gt-labels`` or its deprecated name ``old_name`` (a warning line)."""
    if old is None:
        return new
    if new is not None and new != old:
        raise _fail(f"{old_name} is the old name of --gt-labels: give --gt-labels only")
    typer.echo(f"warning: {old_name} is deprecated for ground truth: use --gt-labels", err=True)
    return old


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _triple(text: str | None, name: str) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise _fail(f"{name} expects three comma-separated numbers, got {text!r}")
    return values  # type: ignore[return-value]


def report_path(output: Path) -> Path:
    return output.with_name(output.name + REPORT_SUFFIX)


def fp32_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.fp32{output.suffix or '.onnx'}")


def _quantize(fp32: Path, output: Path, *, calib: Path, calib_labels: Path | None, budget: float | None,
              method: str, target_latency_ms: float | None = None, types: str = "auto",
              target: str = "host") -> dict[str, Any]:
    try:
        from export.quantize import quantize_model
    except ImportError as err:
        raise WildedgeError(f"INT8 quantization is not available in this build: {err}") from err
    return quantize_model(fp32, output, calib_dir=calib, labels=calib_labels, budget=budget, method=method,
                          target_latency_ms=target_latency_ms, types=types, target=target)


def export_model(
    kind: Kind,
    source: str,
    output: Path,
    *,
    arch: str | None = None,
    labels: Path | None = None,
    imgsz: int | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    preset: str | None = None,
    check_images: list[Path] | None = None,
    int8: bool = False,
    calib: Path | None = None,
    calib_labels: Path | None = None,
    budget: float | None = None,
    method: str = "minmax",
    target_latency_ms: float | None = None,
    types: str = "auto",
    target: str = "host",
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Load ``source``, export FP32 (and INT8), write the JSON report beside ``output``; returns it.

    Raises:
        MissingExtraError: an optional extra is missing (the message names the pip command).
        WildedgeError: loading, exporting, parity, quantization or verification failed.
        ValueError: inconsistent options.
    """
    if int8 and calib is None:
        raise ValueError("--int8 needs --calib DIR (representative photos)")
    if not int8 and any(v is not None for v in (calib, calib_labels, budget, target_latency_ms)):
        raise ValueError("--calib, --gt-labels, --budget and --target-latency are INT8 options: add --int8")
    if not int8 and target != "host":
        raise ValueError("--target is an INT8 option: add --int8")
    from export.quantize import TARGETS

    if target not in TARGETS:
        raise ValueError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    if imgsz is not None and imgsz < 8:
        raise ValueError(f"--imgsz must be at least 8, got {imgsz}")
    from export.sources import open_source
    from export.to_onnx import parity_images, to_onnx

    names = load_labels(labels) if labels is not None else None
    photos = parity_images(check_images or ([calib] if calib else []))
    report: dict[str, Any] = {"command": f"export {'detector' if kind == 'detect' else 'classifier'}",
                              "source": source, "output": str(output)}
    started = time.perf_counter()
    options = {"arch": arch, "labels": names, "imgsz": imgsz, "mean": mean, "std": std, "preset": preset}
    with open_source(source, kind=kind, cache_dir=cache_dir, **options) as loaded:
        report["load_seconds"] = round(time.perf_counter() - started, 3)
        report["model"] = loaded.summary()
        fp32 = to_onnx(loaded, fp32_path(output) if int8 else output, images=photos)
    report["fp32"] = fp32.to_dict()
    if int8 and calib is not None:
        started = time.perf_counter()
        report["int8"] = _quantize(fp32.path, output, calib=calib, calib_labels=calib_labels, budget=budget,
                                   method=method, target_latency_ms=target_latency_ms, types=types,
                                   target=target)
        report["int8_seconds"] = round(time.perf_counter() - started, 3)
    from edge.inference.card import card_summary, read_card

    report["card"] = card_summary(read_card(output))
    report_path(output).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return report


def _print_summary(report: dict[str, Any]) -> None:
    model, fp32 = report["model"], report["fp32"]
    width, height = model["input_size"]
    typer.echo(f"loaded {model['framework']} {model['arch']} ({model['task']}, decoder {model['decoder']}, "
               f"{model['labels']} labels, {width}x{height}) in {report['load_seconds']:.1f} s")
    for note in model["notes"]:
        typer.echo(f"  note: {note}")
    steps = ", ".join(f"{s['name']} {s['seconds']:.1f} s" for s in fp32["steps"])
    typer.echo(f"fp32: {fp32['path']} ({fp32['bytes'] / 1e6:.2f} MB): {steps}")
    parity = fp32["parity"]
    if parity is not None:
        parts = "; ".join(f"{p['part']} max abs diff {p['max_abs']:.3g}{' ' + p['unit'] if p['unit'] else ''}"
                          f" (mean {p['mean_abs']:.2g}, relative {p['max_rel']:.2g}, tolerance "
                          f"{p['tolerance']:.3g})" for p in parity["parts"])
        where = "synthetic frames (pass --check-images DIR for photos)" if parity["synthetic"] else \
            f"{len(parity['images'])} photos"
        typer.echo(f"parity vs torch on {where}: {parts}: ok")
    if "int8" in report:
        size = Path(report["output"]).stat().st_size
        summary = report["int8"].get("quantization") or {}
        budget = summary.get("budget") or {}
        drop = ""
        if "drop" in summary:
            over = "" if summary.get("within_budget", True) else ", OVER BUDGET"
            drop = (f": drop {summary['drop']:g} {budget.get('metric', '')} points "
                    f"(budget {budget.get('max_drop', '-')}){over}")
        typer.echo(f"int8: {report['output']} ({size / 1e6:.2f} MB) in {report['int8_seconds']:.1f} s{drop}")
        if "measured_on" in summary:
            typer.echo(f"  target {summary['target']}: {summary['types']} ({summary['types_reason']}); accuracy "
                       f"measured on {summary['measured_on']}")
        from export.cmd_quantize import print_latency_advice

        print_latency_advice(report["int8"].get("latency"))
    typer.echo(f"report: {report_path(Path(report['output']))}")


def _over_budget(report: dict[str, Any]) -> bool:
    return (report.get("int8") or {}).get("quantization", {}).get("within_budget") is False


def _run(kind: Kind, source: str, output: Path, as_json: bool, **options: Any) -> None:
    try:
        report = export_model(kind, source, output, **options)
    except MissingExtraError as err:
        raise _fail(str(err)) from err
    except (WildedgeError, ValueError) as err:
        raise _fail(str(err)) from err
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        _print_summary(report)
    if _over_budget(report):
        typer.echo("error: the INT8 model is outside the accuracy budget (see the report); the FP32 model "
                   f"is {report['fp32']['path']}", err=True)
        raise typer.Exit(1)


def detector(
    source: SourceArg,
    output: OutputOpt,
    imgsz: ImgszOpt = None,
    preset: PresetOpt = None,
    labels: Annotated[Optional[Path], typer.Option(
        help="Class names (text or JSON): needed with --preset; renames a checkpoint's classes.")] = None,
    int8: Int8Opt = False,
    calib: CalibOpt = None,
    gt_labels: GtLabelsOpt = None,
    calib_labels: OldGtLabelsOpt = None,
    budget: BudgetOpt = None,
    method: MethodOpt = "minmax",
    target_latency: TargetLatencyOpt = None,
    types: TypesOpt = "auto",
    target: TargetOpt = "host",
    check_images: CheckImagesOpt = None,
    cache_dir: CacheOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a detector to a stamped ONNX file, checked against torch on photos (and to INT8 with --int8).

    Exit code: 0 on success, 1 when the INT8 model misses its accuracy budget, 2 on a usage, model,
    export or parity error.
    """
    _run("detect", source, output, as_json, imgsz=imgsz, preset=preset, labels=labels, int8=int8,
         calib=calib, calib_labels=gt_labels_option(gt_labels, calib_labels, "--calib-labels"), budget=budget,
         method=method, check_images=check_images,
         target_latency_ms=target_latency, types=types, target=target, cache_dir=cache_dir)


def classifier(
    source: SourceArg,
    output: OutputOpt,
    arch: Annotated[Optional[str], typer.Option(
        help="Architecture of a state dict: a torchvision name (resnet18, mobilenet_v3_small, ...) or "
             "timm/NAME.")] = None,
    labels: Annotated[Optional[Path], typer.Option(
        help="Class names, one per line (or JSON), in output order.")] = None,
    imgsz: ImgszOpt = None,
    mean: Annotated[Optional[str], typer.Option(
        help="Three comma-separated means (0..1 scale); default: the architecture's (ImageNet).")] = None,
    std: Annotated[Optional[str], typer.Option(
        help="Three comma-separated stds (0..1 scale); default: the architecture's (ImageNet).")] = None,
    preset: PresetOpt = None,
    int8: Int8Opt = False,
    calib: CalibOpt = None,
    gt_labels: GtLabelsOpt = None,
    calib_labels: OldGtLabelsOpt = None,
    budget: BudgetOpt = None,
    method: MethodOpt = "minmax",
    target_latency: TargetLatencyOpt = None,
    types: TypesOpt = "auto",
    target: TargetOpt = "host",
    check_images: CheckImagesOpt = None,
    cache_dir: CacheOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a classifier to a stamped ONNX file, checked against torch on photos (and to INT8 with --int8).

    Exit code: 0 on success, 1 when the INT8 model misses its accuracy budget, 2 on a usage, model,
    export or parity error.
    """
    _run("classify", source, output, as_json, arch=arch, labels=labels, imgsz=imgsz,
         mean=_triple(mean, "--mean"), std=_triple(std, "--std"), preset=preset, int8=int8, calib=calib,
         calib_labels=gt_labels_option(gt_labels, calib_labels, "--calib-labels"), budget=budget, method=method,
         check_images=check_images,
         target_latency_ms=target_latency, types=types, target=target, cache_dir=cache_dir)

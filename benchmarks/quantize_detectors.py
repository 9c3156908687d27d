"""INT8 quantization of the three real detectors: plain static INT8 vs accuracy-driven mixed precision.

Usage: .venv/bin/python benchmarks/quantize_detectors.py [--assets ../shared/assets] [--method minmax]
       [--json quantize.json] [--models yolox,nanodet,fastestdet]

The 60 labelled VOC2007 photos are split once, deterministically (export.calibration.split_images):
30 calibrate, 30 are held out. Each detector is stamped with its preset, quantized with
``export.quantize.quantize_model`` (labels: the COCO json, VOC names mapped to COCO's, budget 1.0
mAP@0.5 point), then verified with ``export.verify.verify`` on the held-out half (the half the
search measured on) and, as a check the search never saw, on the calibration half.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import onnxruntime

from edge.inference.labels import read_labels
from edge.inference.stamp import stamp_file
from export.calibration import list_images, split_images
from export.quantize import quantize_model
from export.verify import verify

# name -> (model file, preset, labels file), relative to the assets folder
DETECTORS = {
    "YOLOX-Nano": ("yolox_nano/yolox_nano.onnx", "yolox", "yolox_nano/coco_classes.txt"),
    "NanoDet-m-320": ("nanodet_m/nanodet_m_320.onnx", "nanodet", "nanodet_m/coco_classes.txt"),
    "FastestDet": ("fastestdet/FastestDet.onnx", "fastestdet", "fastestdet/coco.names"),
}
SHORT = {"yolox": "YOLOX-Nano", "nanodet": "NanoDet-m-320", "fastestdet": "FastestDet"}
COCO_JSON = "voc2007_labeled/labels_coco_json/instances_default.json"


def _copy(files: list[Path], dst: Path) -> Path:
    dst.mkdir(parents=True)
    for file in files:
        shutil.copy(file, dst / file.name)
    return dst


def run_one(name: str, assets: Path, tmp: Path, calib: Path, held: Path, method: str, threads: int | None,
            bootstrap: int, types: str = "auto") -> dict:
    """Stamp, quantize, verify one detector; a row of the results."""
    model, preset, labels = DETECTORS[name]
    fp32 = tmp / f"{preset}.onnx"
    stamp_file(assets / model, fp32, preset=preset, labels=read_labels(assets / labels))
    int8 = tmp / f"{preset}.int8.onnx"
    report = quantize_model(fp32, int8, calib_dir=calib, labels=assets / COCO_JSON, val_dir=held,
                            method=method, class_map="voc2coco", threads=threads, types=types)
    on_held = verify(fp32, int8, held, labels=assets / COCO_JSON, class_map="voc2coco", threads=threads, runs=100,
                     bootstrap=bootstrap)
    on_calib = verify(fp32, int8, calib, labels=assets / COCO_JSON, class_map="voc2coco", threads=threads, runs=20)
    searched = [n for n in report["float_nodes"] if not n["tail"]]
    return {
        "model": name,
        "fp32_map50": report["final"]["fp32"],
        "plain_int8_map50": report["plain"]["int8"],
        "int8_map50": report["final"]["int8"],
        "drop": report["final"]["drop"],
        "drop_interval": on_held.map50_drop_interval,
        "within_budget": report["quantization"]["within_budget"],
        "tail_nodes": [n for n in report["float_nodes"] if n["tail"]],
        "searched_nodes": searched,
        "graph_nodes": report["graph_nodes"],
        "fp32_bytes": report["quantization"]["size_bytes"]["fp32"],
        "int8_bytes": report["quantization"]["size_bytes"]["int8"],
        "fp32_ms": on_held.fp32.latency_ms,
        "int8_ms": on_held.int8.latency_ms,
        "latency_ratio": on_held.latency_ratio,
        "search_s": report["timings_s"]["search"],
        "total_s": report["timings_s"]["total"],
        "agreement": on_held.agreement.to_dict(),
        "held_out": {"fp32_map50_95": on_held.fp32.accuracy.map50_95, "int8_map50_95": on_held.int8.accuracy.map50_95,
                     "fp32_recall": on_held.fp32.accuracy.recall, "int8_recall": on_held.int8.accuracy.recall},
        "calibration_half": {"fp32_map50": 100 * on_calib.fp32.accuracy.map50,
                             "int8_map50": 100 * on_calib.int8.accuracy.map50,
                             "agreement": on_calib.agreement.fraction},
        "search_steps": report["search"]["steps"] if report["search"] else [],
        "report": report,
    }


def _nodes(row: dict) -> str:
    if not row["searched_nodes"]:
        return "-"
    total = row["graph_nodes"]
    return ", ".join(f"{n['op_type']}@{n['index']}" for n in row["searched_nodes"]) + f" (of {total})"


def table(rows: list[dict]) -> str:
    """The Markdown tables of docs/quantization.md."""
    head = ("model", "FP32 mAP@0.5", "plain INT8", "mixed INT8", "drop [90 % interval]", "kept in float (searched)",
            "size FP32 -> INT8", "INT8/FP32 latency", "search")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["model"], f"{r['fp32_map50']:.1f}", f"{r['plain_int8_map50']:.1f}", f"{r['int8_map50']:.1f}",
            f"{r['drop']:+.2f}" + (f" [{r['drop_interval'][0]:+.1f}, {r['drop_interval'][1]:+.1f}]"
                                   if r["drop_interval"] else ""),
            f"{len(r['tail_nodes'])} tail + {len(r['searched_nodes'])}",
            f"{r['fp32_bytes'] / 1e6:.2f} -> {r['int8_bytes'] / 1e6:.2f} MB",
            f"{r['latency_ratio']:.2f} ({r['fp32_ms']:.1f} -> {r['int8_ms']:.1f} ms)", f"{r['search_s']:.0f} s",
        ]) + " |")
    lines += ["", "| model | searched float nodes (op@position) | agreement (held out) | calib half FP32 -> INT8 |",
              "|---|---|---|---|"]
    for r in rows:
        ag = r["agreement"]
        lines.append(f"| {r['model']} | {_nodes(r)} | {ag['matched']}/{ag['reference']}, IoU {ag['mean_iou']:.3f} | "
                     f"{r['calibration_half']['fp32_map50']:.1f} -> {r['calibration_half']['int8_map50']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    beside = Path(__file__).resolve().parents[2] / "shared" / "assets"
    parser.add_argument("--assets", type=Path, default=os.environ.get("WILDEDGE_ASSETS") or beside,
                        help="the shared assets folder (default: $WILDEDGE_ASSETS, else ../shared/assets)")
    parser.add_argument("--method", default="minmax", choices=("minmax", "percentile", "entropy"))
    parser.add_argument("--types", default="auto", choices=("auto", "u8s8", "u8u8", "s8s8"),
                        help="activation x weight integer types")
    parser.add_argument("--models", default="yolox,nanodet,fastestdet", help="comma-separated: yolox, nanodet, fastestdet")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: cores, at most 4)")
    parser.add_argument("--bootstrap", type=int, default=100,
                        help="resamples for the 90 %% interval of the held-out drop (0: none)")
    parser.add_argument("--json", type=Path, help="also write every row and report to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for quiet in ("edge.inference.session", "export.prepare", "export.quantize"):
        logging.getLogger(quiet).setLevel(logging.WARNING)
    names = [SHORT[m.strip()] for m in args.models.split(",") if m.strip()]
    photos = list_images(args.assets / "voc2007_labeled" / "images")
    calib_files, held_files = split_images(photos, root=args.assets / "voc2007_labeled" / "images")
    rows = []
    started = time.perf_counter()
    with TemporaryDirectory(prefix="wildedge-quantize-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        calib, held = _copy(calib_files, tmp / "calib"), _copy(held_files, tmp / "held_out")
        for name in names:
            rows.append(run_one(name, args.assets, tmp, calib, held, args.method, args.threads, args.bootstrap,
                                args.types))
    print(f"onnxruntime {onnxruntime.__version__}, method {args.method}, types {args.types}, "
          f"{len(calib_files)} calibration / {len(held_files)} held-out photos, {time.perf_counter() - started:.0f} s\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return 0 if all(r["within_budget"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""INT8 vs FP32 on this machine: model-only latency and file size for the export acceptance models.

Usage: .venv/bin/python benchmarks/int8_latency.py [--assets ../shared/assets] [--imgsz 640]
       [--models yolov8n,yolo11n,yolov10n,resnet18,mobilenet_v3_small,efficientnet_b0]
       [--runs 30] [--types auto] [--json int8_latency.json]

Each model is built offline with untrained weights (Ultralytics from its yaml at --imgsz; torchvision
classifiers at 224 px), exported with ``wildedge export`` 's own code path (export.sources +
export.to_onnx: onnxslim, card, parity) and quantized with ``export.quantize.quantize_model``
(static QDQ, per-channel, minmax, calibrated on the VOC2007 photos of the assets, no search: weights
do not change latency). Latency is the median of ``session.run`` alone on one real photo, FP32 and
INT8 runs alternating (export.measure.paired_latency), with 1 thread and with the default threads.
Target (issue 3): INT8 at most 0.7x FP32 for the 640-px YOLO models.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import onnxruntime

from edge.inference.card import read_card
from export.calibration import list_images
from export.guidance import machine
from export.measure import paired_latency, sample_tensor
from export.quantize import quantize_model
from export.sources import open_source
from export.to_onnx import to_onnx

DETECTORS = ("yolov8n", "yolo11n", "yolov10n")
CLASSIFIERS = ("resnet18", "mobilenet_v3_small", "efficientnet_b0")
TARGET = 0.7


def export_fp32(name: str, folder: Path, imgsz: int, photos: list[Path]) -> Path:
    """The FP32 ONNX file of ``name`` through the export stage (untrained weights)."""
    out = folder / f"{name}.onnx"
    if name in DETECTORS:
        source, options = f"{name}.yaml", {"kind": "detect", "imgsz": imgsz}
    else:
        import torch
        import torchvision

        weights = folder / f"{name}.pth"
        torch.save(torchvision.models.get_model(name, weights=None, num_classes=10).state_dict(), weights)
        source, options = str(weights), {"kind": "classify", "arch": name, "labels": [f"c{i}" for i in range(10)]}
    with open_source(source, **options) as loaded:
        to_onnx(loaded, out, images=photos[:4])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "assets")
    parser.add_argument("--imgsz", type=int, default=640, help="YOLO input size (classifiers use 224)")
    parser.add_argument("--models", default=",".join(DETECTORS + CLASSIFIERS))
    parser.add_argument("--runs", type=int, default=30, help="timed runs per model and thread setting")
    parser.add_argument("--types", default="auto", help="integer types for quantize_model: auto, u8s8, u8u8, s8s8")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    calib = args.assets / "voc2007_labeled" / "images"
    if not calib.is_dir():
        print(f"error: calibration photos not found: {calib} (pass --assets)", file=sys.stderr)
        return 2
    photos = list_images(calib)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(DETECTORS + CLASSIFIERS))
    if unknown:
        print(f"error: unknown models {unknown}; choose from {DETECTORS + CLASSIFIERS}", file=sys.stderr)
        return 2
    from export.quantize import resolve_types

    types, why = resolve_types(args.types)
    print(f"{machine()}, onnxruntime {onnxruntime.__version__}; {args.runs} alternating runs per model; "
          f"INT8 types {types} ({why})")
    header = (f"{'model':<20}{'input':>7}{'FP32 ms':>10}{'INT8 ms':>10}{'x 1 thr':>9}{'x dflt':>8}"
              f"{'FP32 MB':>9}{'INT8 MB':>9}{'x size':>8}")
    print(header)
    rows = []
    with TemporaryDirectory(prefix="wildedge-int8-bench-") as tmp:
        folder = Path(tmp)
        for name in names:
            started = time.perf_counter()
            fp32 = export_fp32(name, folder, args.imgsz, photos)
            int8 = folder / f"{name}.int8.onnx"
            quantize_model(fp32, int8, calib_dir=calib, search=False, latency_runs=0, types=args.types)
            tensor = sample_tensor(photos, read_card(fp32))
            one = paired_latency([fp32, int8], tensor, threads=1, runs=args.runs)
            default = paired_latency([fp32, int8], tensor, threads=None, runs=args.runs)
            size = (fp32.stat().st_size, int8.stat().st_size)
            row = {"model": name, "input": int(tensor.shape[-1]), "fp32_ms_1thread": one[0],
                   "int8_ms_1thread": one[1], "ratio_1thread": one[1] / one[0], "fp32_ms_default": default[0],
                   "int8_ms_default": default[1], "ratio_default": default[1] / default[0],
                   "fp32_bytes": size[0], "int8_bytes": size[1], "size_ratio": size[1] / size[0],
                   "seconds": round(time.perf_counter() - started, 1)}
            rows.append(row)
            print(f"{name:<20}{row['input']:>7}{one[0]:>10.1f}{one[1]:>10.1f}{row['ratio_1thread']:>9.2f}"
                  f"{row['ratio_default']:>8.2f}{size[0] / 1e6:>9.2f}{size[1] / 1e6:>9.2f}"
                  f"{row['size_ratio']:>8.2f}", flush=True)
    yolo = [r for r in rows if r["model"] in DETECTORS and r["input"] >= 640]
    if yolo:
        worst = max(max(r["ratio_1thread"], r["ratio_default"]) for r in yolo)
        print(f"640-px YOLO: worst INT8/FP32 latency x{worst:.2f} (target <= {TARGET}): "
              f"{'met' if worst <= TARGET else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "onnxruntime": onnxruntime.__version__,
                                         "rows": rows}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

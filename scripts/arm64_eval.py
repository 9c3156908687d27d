#!/usr/bin/env python3
"""Helper of scripts/arm64_check.sh: detections on one CPU, and host-vs-arm64 scoring.

``detect`` runs on both sides (the host's checkout, and the wheel installed in the arm64 root under
qemu): each model over the same photos through ``export.measure.detect_files`` -- the device's
pipeline at the mAP threshold, exactly what ``wildedge export verify`` runs -- and writes every
detection at full float precision with the machine, versions and timing. It needs only the base
install (no torch, no pycocotools), so it runs on the device.

``compare`` runs on the host: mAP through the project's evaluator (``export.evaluate.evaluate``,
pycocotools) for both sides, and how closely the arm64 boxes follow the host's.

    python scripts/arm64_eval.py detect --photos DIR [--limit N] [--threads N] --out FILE MODEL...
    python scripts/arm64_eval.py compare --host FILE --arm64 FILE --labels JSON_OR_DIR --photos DIR \
        [--class-map voc2coco|none|FILE] [--meta FILE] --out REPORT.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

from export.emulate import box_agreement  # the one box matcher, shared with `export verify --emulate-root`


def pick_photos(photos: Path, limit: int | None) -> list[Path]:
    from export.calibration import list_images

    files = list_images(photos)
    return files[:limit] if limit else files


def cmd_detect(args: argparse.Namespace) -> int:
    from export.emulate import detect_to_json

    root = Path(args.photos)
    files = pick_photos(root, args.limit)
    if not files:
        print(f"arm64_eval: no photos in {root}", file=sys.stderr)
        return 2
    out = detect_to_json(args.models, files, root, threads=args.threads)
    for name, model in out["models"].items():
        print(f"{platform.machine()}: {name}: {len(files)} photos in {model['seconds']:.1f} s "
              f"({model['seconds_per_photo']:.2f} s/photo)", file=sys.stderr)
    Path(args.out).write_text(json.dumps(out))
    return 0


def pixel_check(golden: Path, pixels: Path) -> dict[str, Any]:
    """The arm64 preprocessing hashes against the golden file: which cases and stages differ."""
    want, got = (json.loads(Path(p).read_text()) for p in (golden, pixels))
    differ = {}
    for case, hashes in want["cases"].items():
        other = got["cases"].get(case, {})
        bad = [k for k, v in hashes.items() if other.get(k) != v]
        if bad:
            differ[case] = ", ".join(bad)
    return {"cases": len(want["cases"]), "equal": len(want["cases"]) - len(differ), "differ": differ,
            "opencv_golden": want.get("opencv"), "opencv_arm64": got.get("opencv")}


def cmd_compare(args: argparse.Namespace) -> int:
    from export.emulate import file_results
    from export.evaluate import evaluate
    from export.measure import load_labels, resolve_class_map, subset_gt

    host, arm = (json.loads(Path(p).read_text()) for p in (args.host, args.arm64))
    if host["photos"] != arm["photos"]:
        print("arm64_eval: the host and arm64 runs saw different photos", file=sys.stderr)
        return 2
    class_map = None if args.class_map in (None, "none") else resolve_class_map(args.class_map)
    gt = subset_gt(load_labels(args.labels, args.photos), host["photos"])
    report: dict[str, Any] = {
        "photos": len(host["photos"]), "labels": str(args.labels), "class_map": args.class_map,
        "host": {k: v for k, v in host.items() if k not in ("models", "photos")},
        "arm64": {k: v for k, v in arm.items() if k not in ("models", "photos")}, "models": {},
    }
    if args.meta:
        report.update(json.loads(Path(args.meta).read_text()))
    print(f"{len(host['photos'])} photos; arm64: onnxruntime {arm['onnxruntime']}, QEMU_CPU={arm['qemu_cpu']}")
    print(f"{'model':<28} {'mAP@0.5 host':>12} {'arm64':>8} {'diff':>7}  {'boxes IoU>0.9':>14}  "
          f"{'exact':>7}  {'s/photo arm64':>13}")
    for name, side in host["models"].items():
        other = arm["models"].get(name)
        if other is None:
            print(f"arm64_eval: {name} missing from the arm64 run", file=sys.stderr)
            return 2
        scores = {k: evaluate(file_results(s["results"]), gt, class_map=class_map)
                  for k, s in (("host", side), ("arm64", other))}
        agreement = box_agreement(side["results"], other["results"])
        a, b = 100 * scores["host"].map50, 100 * scores["arm64"].map50
        report["models"][name] = {
            "map50_host": round(a, 3), "map50_arm64": round(b, 3), "map50_diff": round(b - a, 3),
            "map50_95_host": round(100 * scores["host"].map50_95, 3),
            "map50_95_arm64": round(100 * scores["arm64"].map50_95, 3),
            "box_agreement": agreement,
            "seconds_per_photo_host": side["seconds_per_photo"], "seconds_per_photo_arm64": other["seconds_per_photo"],
        }
        frac = agreement["fraction"]
        exact = agreement["exact_fraction"]
        print(f"{name:<28} {a:>12.2f} {b:>8.2f} {b - a:>+7.2f}  "
              f"{'n/a' if frac is None else f'{100 * frac:.1f} %':>14}  "
              f"{'n/a' if exact is None else f'{100 * exact:.1f} %':>7}  {other['seconds_per_photo']:>13.2f}")
    drops = {}
    for name, row in report["models"].items():  # X.int8.onnx beside X.onnx: the INT8 drop on each CPU
        fp32 = report["models"].get(name.replace(".int8.onnx", ".onnx")) if name.endswith(".int8.onnx") else None
        if fp32 is not None:
            drops[name] = {"host": round(fp32["map50_host"] - row["map50_host"], 3),
                           "arm64": round(fp32["map50_arm64"] - row["map50_arm64"], 3)}
            print(f"INT8 drop {name}: host {drops[name]['host']:+.2f}, arm64 {drops[name]['arm64']:+.2f} points")
    if drops:
        report["int8_map50_drop"] = drops
    if args.pixels:
        report["pixels"] = pixel_check(args.golden, args.pixels)
        px = report["pixels"]
        print(f"preprocessing hashes (tests/golden/preprocess_sha256.json) on arm64: {px['equal']}/{px['cases']} "
              f"cases equal" + (f"; differ: {', '.join(f'{k} ({v})' for k, v in px['differ'].items())}"
                                if px["differ"] else ""))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    det = sub.add_parser("detect", help="detections of each model on the photos, as JSON")
    det.add_argument("--photos", required=True, type=Path)
    det.add_argument("--limit", type=int, default=None)
    det.add_argument("--threads", type=int, default=None)
    det.add_argument("--out", required=True, type=Path)
    det.add_argument("models", nargs="+", type=Path)
    cmp_ = sub.add_parser("compare", help="score host and arm64 detections (host only: needs pycocotools)")
    cmp_.add_argument("--host", required=True, type=Path)
    cmp_.add_argument("--arm64", required=True, type=Path)
    cmp_.add_argument("--labels", required=True, type=Path)
    cmp_.add_argument("--photos", required=True, type=Path)
    cmp_.add_argument("--class-map", default="voc2coco")
    cmp_.add_argument("--golden", type=Path, help="tests/golden/preprocess_sha256.json")
    cmp_.add_argument("--pixels", type=Path, help="the same hashes computed on arm64")
    cmp_.add_argument("--meta", type=Path, help="JSON object merged into the report (checkout, timings)")
    cmp_.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    return cmd_detect(args) if args.command == "detect" else cmd_compare(args)


if __name__ == "__main__":
    sys.exit(main())

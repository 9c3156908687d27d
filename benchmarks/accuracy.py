"""Accuracy of the three real detectors on the labelled VOC2007 photos (mAP via pycocotools, recall).

Usage: .venv/bin/python benchmarks/accuracy.py [--assets ../shared/assets] [--json accuracy.json]

Each model is stamped with its preset into a temporary folder, run once over the photos at a low
threshold (mAP needs the whole precision-recall curve), and its recall is counted over the detections
at or above the threshold its card recommends. Ground truth: the COCO json, VOC names mapped to COCO.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import onnxruntime

from edge.inference.card import read_card
from edge.inference.labels import read_labels
from edge.inference.stamp import stamp_file
from export.evaluate import MAP_CONF, VOC_TO_COCO, Report, detect_folder, evaluate, load_coco_gt

# name -> (model file, preset, labels file), relative to the assets folder
DETECTORS = {
    "YOLOX-Nano": ("yolox_nano/yolox_nano.onnx", "yolox", "yolox_nano/coco_classes.txt"),
    "NanoDet-m-320": ("nanodet_m/nanodet_m_320.onnx", "nanodet", "nanodet_m/coco_classes.txt"),
    "FastestDet": ("fastestdet/FastestDet.onnx", "fastestdet", "fastestdet/coco.names"),
}
COLUMNS = ("model", "mAP@0.5", "mAP@0.5:0.95", "conf", "recall@0.5", "animal recall", "images", "GT boxes")


def measure(assets: Path, map_conf: float) -> dict[str, Report]:
    """Stamp, run and score each detector; model name -> report."""
    voc = assets / "voc2007_labeled"
    gt = load_coco_gt(voc / "labels_coco_json" / "instances_default.json")
    reports = {}
    with TemporaryDirectory(prefix="wildedge-accuracy-") as tmp:
        for name, (model, preset, labels) in DETECTORS.items():
            stamped = Path(tmp) / Path(model).name
            stamp_file(assets / model, stamped, preset=preset, labels=read_labels(assets / labels))
            card_conf = read_card(stamped).thresholds.conf
            start = time.perf_counter()
            results = detect_folder(stamped, voc / "images", conf=map_conf)
            logging.info("%s: %d photos in %.1f s", name, len(results), time.perf_counter() - start)
            reports[name] = evaluate(results, gt, class_map=VOC_TO_COCO, conf=card_conf)
    return reports


def table(reports: dict[str, Report]) -> str:
    """A Markdown table of the headline numbers."""
    rows = [COLUMNS]
    for name, r in reports.items():
        animals = r.groups["animals"]
        rows.append((name, f"{r.map50:.3f}", f"{r.map50_95:.3f}", f"{r.conf:g}",
                     f"{r.recall:.3f} ({r.matched}/{r.gt_boxes})",
                     f"{animals.recall:.3f} ({animals.matched}/{animals.gt_boxes})",
                     str(r.images), str(r.gt_boxes)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    beside = Path(__file__).resolve().parents[2] / "shared" / "assets"
    default_assets = os.environ.get("WILDEDGE_ASSETS") or beside
    parser.add_argument("--assets", type=Path, default=default_assets,
                        help="the shared assets folder (default: $WILDEDGE_ASSETS, else ../shared/assets)")
    parser.add_argument("--map-conf", type=float, default=MAP_CONF,
                        help=f"detection threshold of the run that mAP is computed from (default {MAP_CONF})")
    parser.add_argument("--json", type=Path, help="also write every report (per class too) to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # NanoDet's old exporter lists its initializers as graph inputs: one onnxruntime warning per tensor.
    onnxruntime.set_default_logger_severity(3)
    if not (args.assets / "voc2007_labeled").is_dir():
        print(f"error: {args.assets} holds no voc2007_labeled folder; pass --assets", file=sys.stderr)
        return 2
    reports = measure(args.assets, args.map_conf)
    print(table(reports))
    for name, r in reports.items():
        if r.dropped_classes:
            print(f"{name}: {sum(r.dropped_classes.values())} detections of {len(r.dropped_classes)} "
                  "COCO classes without a VOC counterpart dropped before scoring")
    if args.json:
        payload = {"map_conf": args.map_conf, "models": {k: v.to_dict() for k, v in reports.items()}}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

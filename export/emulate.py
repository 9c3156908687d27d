"""Detections computed on an emulated Raspberry Pi CPU: an arm64 Debian root run under qemu-user.

``wildedge export verify --emulate-root DIR`` scores the FP32 and INT8 files on the device's
arithmetic, next to the host's: the photos and models are copied into the root that
``scripts/arm64_check.sh`` builds (Debian bookworm arm64, wildedge installed there from aarch64
wheels), ``python -m export.emulate detect`` runs inside it through ``chroot`` with
``QEMU_CPU=cortex-a72`` (a Pi 4), and the detections come back as JSON at full precision; the host
scores them with the same evaluator as its own. Only inference runs on the emulated CPU: no torch
and no pycocotools are needed there.

The same module is the worker inside the root (``main``) and the host's caller
(:func:`detect_in_root`); ``scripts/arm64_eval.py`` uses :func:`detect_to_json` too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.errors import ExportError

MATCH_CONF = 0.3  # host detections counted for the box agreement
MATCH_IOU = 0.9
EXACT_IOU = 0.99  # issue 14's acceptance: same boxes at IoU > 0.99 ...
EXACT_SCORE = 1e-3  # ... and scores within 1e-3
#: Inside a root built by scripts/arm64_check.sh.
ROOT_MARK = ".wildedge-arm64-root"
ROOT_PYTHON = "/opt/arm64-check/venv/bin/python"
ROOT_WORK = "opt/arm64-check"
DEFAULT_CPU = "cortex-a72"
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


def _hwcaps() -> dict[str, Any]:
    """AT_HWCAP/AT_HWCAP2 as the process sees them (under qemu-user: the features of QEMU_CPU)."""
    if platform.machine() != "aarch64":
        return {}
    import ctypes

    getauxval = ctypes.CDLL(None).getauxval
    getauxval.restype = ctypes.c_ulong
    hwcap, hwcap2 = getauxval(16), getauxval(26)
    return {"hwcap": hex(hwcap), "hwcap2": hex(hwcap2), "asimddp": bool(hwcap & (1 << 20)),
            "fphp": bool(hwcap & (1 << 9)), "i8mm": bool(hwcap2 & (1 << 13))}


def detect_to_json(models: Sequence[Path], files: Sequence[Path], root: Path, *, threads: int | None) -> dict[str, Any]:
    """Every detection of each model on ``files`` (the device pipeline at the mAP threshold, as
    ``export verify`` runs it), at full float precision, with the machine, versions and timing."""
    import cv2
    import numpy as np
    import onnxruntime as ort

    from export.measure import MAP_CONF, detect_files, relative_names

    out: dict[str, Any] = {
        "machine": platform.machine(), "qemu_cpu": os.environ.get("QEMU_CPU"), "cpu_features": _hwcaps(),
        "python": platform.python_version(), "onnxruntime": ort.__version__, "opencv": cv2.__version__,
        "numpy": np.__version__, "threads": threads, "photos": relative_names(list(files), root), "models": {},
    }
    for model in models:
        started = time.perf_counter()
        results = detect_files(model, list(files), root, conf=MAP_CONF, threads=threads)
        seconds = time.perf_counter() - started
        out["models"][Path(model).name] = {
            "seconds": round(seconds, 3), "seconds_per_photo": round(seconds / max(1, len(files)), 4),
            "results": detection_rows(results),
        }
    return out


def detection_rows(results: Sequence[Any]) -> list[dict[str, Any]]:
    """``FileResult`` s as JSON entries, every box at full float precision (:func:`file_results` reverses it)."""
    return [{"file": r.file, "width": r.width, "height": r.height, "failure": r.failure,
             "detections": [[list(map(float, d.box)), float(d.score), d.class_id, d.label] for d in r.detections]}
            for r in results]


def file_results(entries: list[dict[str, Any]]) -> list[Any]:
    """The JSON entries of :func:`detect_to_json` back as ``FileResult`` s for the evaluator."""
    from edge.batch.results import FileResult
    from edge.inference.detector import Detection

    return [FileResult(e["file"], e["width"], e["height"],
                       [Detection(tuple(box), score, class_id, label)
                        for box, score, class_id, label in e["detections"]], e["failure"]) for e in entries]


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_agreement(host: list[dict[str, Any]], arm: list[dict[str, Any]]) -> dict[str, Any]:
    """Host detections with score > MATCH_CONF that an arm64 detection of the same label matches.

    One-to-one, host detections in score order, each taking its best-IoU unused arm64 box of the
    same label (any arm64 score: a 0.31 on one side and 0.29 on the other is the same object).
    ``matched`` counts IoU > 0.9; ``exact`` counts IoU > 0.99 with scores within 1e-3.
    """
    by_file = {e["file"]: e["detections"] for e in arm}
    total = matched = exact = 0
    worst_score = 0.0
    for entry in host:
        others = by_file.get(entry["file"], [])
        used: set[int] = set()
        for box, score, _, label in sorted(entry["detections"], key=lambda d: -d[1]):
            if score <= MATCH_CONF:
                continue
            total += 1
            best, best_iou = None, 0.0
            for k, (obox, _, _, olabel) in enumerate(others):
                if k in used or olabel != label:
                    continue
                iou = _iou(box, obox)
                if iou > best_iou:
                    best, best_iou = k, iou
            if best is None or best_iou <= MATCH_IOU:
                continue
            used.add(best)
            matched += 1
            diff = abs(score - others[best][1])
            worst_score = max(worst_score, diff)
            exact += best_iou > EXACT_IOU and diff <= EXACT_SCORE
    return {"host_detections": total, "matched": matched, "fraction": matched / total if total else None,
            "exact": exact, "exact_fraction": exact / total if total else None,
            "max_score_diff_matched": worst_score, "conf": MATCH_CONF, "iou": MATCH_IOU}


def check_root(root: Path) -> None:
    """Raise :class:`ExportError` (one line, what to do) unless ``root`` can run arm64 code here."""
    if not (root / ROOT_MARK).is_file() or not (root / ROOT_PYTHON.lstrip("/")).exists():
        raise ExportError(f"--emulate-root {root}: not an arm64 root with wildedge installed; build one with "
                          f"'sudo scripts/arm64_check.sh --root {root} --photos PHOTOS MODEL.onnx'")
    if os.geteuid() != 0:
        raise ExportError("--emulate-root needs root (it runs the arm64 root through chroot): run with sudo")
    if platform.machine() != "aarch64" and not BINFMT.exists():
        raise ExportError("qemu-aarch64 is not registered with binfmt_misc: run scripts/arm64_check.sh once (it "
                          "installs qemu-user-static and registers it), or 'update-binfmts --enable qemu-aarch64'")


def detect_in_root(root: Path, models: Sequence[Path], files: Sequence[Path], photos_root: Path, *,
                   threads: int | None = None, cpu: str = DEFAULT_CPU,
                   timeout_s: float = 7200) -> dict[str, Any]:
    """Run :func:`detect_to_json` inside the arm64 ``root`` under qemu (``QEMU_CPU=cpu``).

    Raises:
        ExportError: the root is unusable, or the run inside it failed (its last error line named).
    """
    root = Path(root)
    check_root(root)
    work = Path(tempfile.mkdtemp(prefix="verify-", dir=root / ROOT_WORK))
    inside = "/" + str(work.relative_to(root))
    try:
        for file in files:
            dst = work / "photos" / Path(file).relative_to(photos_root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, dst)
        (work / "models").mkdir()
        names = []
        for model in models:
            shutil.copy2(model, work / "models" / Path(model).name)
            names.append(f"{inside}/models/{Path(model).name}")
        command = ["chroot", str(root), "/usr/bin/env", f"QEMU_CPU={cpu}", "HOME=/root", ROOT_PYTHON, "-m",
                   "export.emulate", "detect", "--photos", f"{inside}/photos", "--out", f"{inside}/out.json",
                   *(["--threads", str(threads)] if threads else []), *names]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            if "No module named export.emulate" in done.stderr:
                last = "the wildedge in the root is older than this one: rerun scripts/arm64_check.sh to update it"
            raise ExportError(f"detection in the arm64 root {root} failed: {last}")
        return json.loads((work / "out.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m export.emulate detect --photos DIR --out FILE [--threads N] MODEL...`` (in the root)."""
    from export.calibration import list_images

    parser = argparse.ArgumentParser(prog="python -m export.emulate")
    sub = parser.add_subparsers(dest="command", required=True)
    detect = sub.add_parser("detect", help="detections of each model on the photos, as JSON")
    detect.add_argument("--photos", type=Path, required=True)
    detect.add_argument("--out", type=Path, required=True)
    detect.add_argument("--threads", type=int)
    detect.add_argument("models", type=Path, nargs="+")
    args = parser.parse_args(argv)
    files = list_images(args.photos)
    if not files:
        print(f"export.emulate: no photos in {args.photos}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(detect_to_json(args.models, files, args.photos, threads=args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 14's acceptance table: INT8 files made for a Pi 4, checked on arm64 under qemu and on this host.

    sudo .venv/bin/python benchmarks/int8_target.py [--budgets 1,3] [--out DIR] [--no-arm64]
        [--x86-cpu Haswell]

For each budget, the three detectors of ../shared/assets are stamped, quantized with
``wildedge export quantize --target pi4`` on the 30-photo split the export uses (the fixed half of
the 60 labelled VOC photos calibrates, the other half is held out and measured by the search), and
then scored on both halves, on this machine and in the Debian arm64 root of
``scripts/arm64_check.sh`` (Cortex-A72 under qemu-user). The calibration half is the independent
check: the search never measured there (2-fold cross-validation of the measurement). It prints,
per model: the share of convolutions in INT8, the reported drop and its interval, and FP32 - INT8
on both halves and both CPUs, with whether the device's drop lies inside the reported interval.

``--x86-cpu Haswell`` runs the quantization itself under ``qemu-x86_64 -cpu Haswell``: an x86
without VNNI, where u8s8 kernels would saturate without ``session.x64quantprecision``. Needs root
for the arm64 check (debootstrap, chroot); ``--no-arm64`` skips it. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("WILDEDGE_ASSETS", REPO.parent / "shared" / "assets"))
VOC = ASSETS / "voc2007_labeled"
LABELS = VOC / "labels_coco_json" / "instances_default.json"
MODELS = {  # name: (asset file, preset, label file)
    "fastestdet": ("fastestdet/FastestDet.onnx", "fastestdet", "fastestdet/coco.names"),
    "nanodet_m_320": ("nanodet_m/nanodet_m_320.onnx", "nanodet", "nanodet_m/coco_classes.txt"),
    "yolox_nano": ("yolox_nano/yolox_nano.onnx", "yolox", "yolox_nano/coco_classes.txt"),
}
HALVES = ("held_out", "calib")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wildedge(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    code = "import sys; from edge.cli import main; sys.argv[0] = 'wildedge'; sys.exit(main())"
    return subprocess.run([*prefix, sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True)


def prepare(out: Path) -> None:
    """Stamped FP32 models in out/models, the export's split in out/split/{calib,held_out}."""
    from export.calibration import list_images, split_images

    (out / "models").mkdir(parents=True, exist_ok=True)
    for name, (onnx, preset, names) in MODELS.items():
        target = out / "models" / f"{name}.onnx"
        if not target.exists():
            done = wildedge("model", "stamp", str(ASSETS / onnx), "-o", str(target), "--preset", preset,
                            "--labels", str(ASSETS / names))
            if done.returncode:
                sys.exit(f"stamping {name} failed: {done.stderr.strip()}")
    images = VOC / "images"
    calib, held = split_images(list_images(images), root=images)
    for half, files in (("calib", calib), ("held_out", held)):
        folder = out / "split" / half
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            if not (folder / f.name).exists():
                shutil.copy(f, folder / f.name)


def quantize(out: Path, budget: float, prefix: tuple[str, ...]) -> dict[str, dict]:
    reports = {}
    for name in MODELS:
        dst = out / "models" / f"{name}.b{budget:g}.onnx"
        started = time.perf_counter()
        done = wildedge("export", "quantize", str(out / "models" / f"{name}.onnx"), "-o", str(dst),
                        "--calib", str(out / "split" / "calib"), "--val", str(out / "split" / "held_out"),
                        "--gt-labels", str(LABELS), "--class-map", "voc2coco", "--target", "pi4",
                        "--budget", f"{budget:g}", "--max-search", "1800", "--json", prefix=prefix)
        if done.returncode not in (0, 1):
            sys.exit(f"quantizing {name} failed: {done.stderr.strip()[-2000:]}")
        reports[name] = json.loads(done.stdout)
        q = reports[name]["quantization"]
        log(f"{name} budget {budget:g}: {q['types']}, {q['convolutions']['int8']}/{q['convolutions']['total']} convs "
            f"INT8, drop {q['drop']:+.2f} in [{q['drop_interval'][0]:+.2f}, {q['drop_interval'][1]:+.2f}] "
            f"({time.perf_counter() - started:.0f} s)")
    return reports


def arm64_check(out: Path, budget: float, root: Path | None) -> dict[str, dict]:
    """mAP on both halves, this host and arm64, from scripts/arm64_check.sh's reports."""
    found: dict[str, dict] = {}
    for half in HALVES:
        report = out / f"arm64-b{budget:g}-{half}.json"
        models = [str(out / "models" / f"{n}{suffix}.onnx") for n in MODELS for suffix in ("", f".b{budget:g}")]
        cmd = ["bash", str(REPO / "scripts" / "arm64_check.sh"), "--photos", str(out / "split" / half),
               "--labels", str(LABELS), "--no-pixels", "--out", str(report),
               "--host-python", sys.executable, *(["--root", str(root)] if root else []), *models]
        log(f"arm64 check, budget {budget:g}, {half} half (a few minutes under qemu)")
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"scripts/arm64_check.sh failed: {done.stderr.strip()[-2000:]}")
        found[half] = json.loads(report.read_text())["models"]
    return found


def table(budget: float, reports: dict[str, dict], checked: dict[str, dict] | None) -> list[str]:
    rows = [f"budget {budget:g} (mAP@0.5 points), --target pi4; FP32 - INT8 per half, x86 / arm64",
            "| model | types | convs in INT8 | reported drop [interval] | recommendation | held out x86 / arm64 "
            "| calib half x86 / arm64 | arm64 drop inside the interval |",
            "|---|---|---|---|---|---|---|---|"]
    for name, report in reports.items():
        q = report["quantization"]
        low, high = q["drop_interval"]
        cells = [name, q["types"], f"{q['convolutions']['int8']}/{q['convolutions']['total']}",
                 f"{q['drop']:+.2f} [{low:+.2f}, {high:+.2f}]", q["recommendation"]["use"].upper()]
        inside = []
        for half in HALVES:
            if checked is None:
                cells.append("-")
                continue
            fp32 = checked[half][f"{name}.onnx"]
            int8 = checked[half][f"{name}.b{budget:g}.onnx"]
            host = fp32["map50_host"] - int8["map50_host"]
            arm = fp32["map50_arm64"] - int8["map50_arm64"]
            cells.append(f"{host:+.2f} / {arm:+.2f}")
            if half == "held_out":
                inside.append("yes" if low - 1e-3 <= arm <= high + 1e-3 else "no")
        cells.append(inside[0] if inside else "-")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="1", help="comma-separated budgets (default 1)")
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "wildedge" / "int8-target")
    parser.add_argument("--root", type=Path, help="arm64 root (default: scripts/arm64_check.sh's)")
    parser.add_argument("--no-arm64", action="store_true", help="skip the arm64 check")
    parser.add_argument("--x86-cpu", help="quantize under qemu-x86_64 -cpu NAME (e.g. Haswell: no VNNI)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, among {', '.join(MODELS)}")
    args = parser.parse_args()
    chosen = args.models.split(",")
    if not set(chosen) <= set(MODELS):
        print(f"int8_target: --models must be among {', '.join(MODELS)}", file=sys.stderr)
        return 2
    for name in set(MODELS) - set(chosen):
        del MODELS[name]
    if not LABELS.is_file():
        print(f"int8_target: the shared assets are missing ({VOC})", file=sys.stderr)
        return 2
    prefix: tuple[str, ...] = ()
    if args.x86_cpu:
        qemu = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
        if qemu is None:
            print("int8_target: --x86-cpu needs qemu-x86_64 (apt-get install qemu-user-static)", file=sys.stderr)
            return 2
        prefix = (qemu, "-cpu", args.x86_cpu)
    budgets = [float(b) for b in args.budgets.split(",")]
    prepare(args.out)
    out = []
    for budget in budgets:
        reports = quantize(args.out, budget, prefix)
        checked = None if args.no_arm64 else arm64_check(args.out, budget, args.root)
        out += [*table(budget, reports, checked), ""]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

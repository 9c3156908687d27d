"""Folder throughput of wildedge against a naive serial loop and against Ultralytics (on demand; not a test).

Three ratios from the issue, all measured in one run and printed beside their targets:

1. wildedge's batch pipeline / the serial loop a user would write (full-size ``cv2.imread``, the model's
   own letterbox/resize, ``session.run`` with onnxruntime's default options, the same decoder and NMS):
   >= 2.5x for the tiny models (FastestDet, YOLOX-Nano), >= 1.2x for a 640-px YOLOv8n.
2. ``wildedge detect DIR`` / ``YOLO(onnx).predict(DIR)``, each a whole process timed from launch to exit
   over ~100 photos, same ONNX file, same conf/iou/max_det: throughput >= 2x, peak RSS <= 1/5.
3. time per photo in the wildedge pipeline / model-only ``session.run`` (YOLOv8n): <= 1.3.

Photos are the 12 LILA camera-trap JPEGs upscaled to 4000x3000 (12 MP, INTER_CUBIC, quality 90),
repeated to the wanted count. YOLOv8n is built offline from the yaml inside ultralytics (random weights,
see ``_build_yolov8n.py``), so its rows need ultralytics and torch in this venv; item 2 always does, while
``--yolov8n PATH`` gives items 1 and 3 an existing ONNX without them.

usage:
  .venv-bench/bin/python benchmarks/throughput.py [--work DIR] [--sweep] [--json PATH]
  .venv/bin/python benchmarks/throughput.py        # the tiny models only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

import edge
from edge.batch import checkpoint
from edge.batch.runner import BatchRunner
from edge.batch.sources import Item, collect
from edge.errors import ModelError
from edge.imaging import read_image
from edge.inference.card import read_card
from edge.inference.detector import Detector
from edge.inference.labels import read_labels
from edge.inference.preprocess import preprocess
from edge.inference.session import default_threads
from edge.inference.stamp import stamp_file

HERE = Path(__file__).resolve().parent
TINY = {  # name -> (folder, onnx, preset, labels)
    "fastestdet": ("fastestdet", "FastestDet.onnx", "fastestdet", "coco.names"),
    "yolox_nano": ("yolox_nano", "yolox_nano.onnx", "yolox", "coco_classes.txt"),
}
TARGET_NAIVE = {"fastestdet": 2.5, "yolox_nano": 2.5, "yolov8n": 1.2}
TARGET_PROCESS_SPEED, TARGET_PROCESS_RSS, TARGET_OVERHEAD = 2.0, 0.2, 1.3
PHOTO_SIZE = (4000, 3000)


def default_config() -> tuple[int, int, bool]:
    """(workers, threads, spin) as ``wildedge detect`` runs by default: 2 workers, cores up to 4, no spin."""
    return min(2, default_threads()), default_threads(), False


@dataclass
class ModelRow:
    model: str
    input: str
    conf: float
    iou: float
    naive_fps: float = 0.0
    wildedge_fps: float = 0.0
    full_decode_fps: float = 0.0  # wildedge with --full-decode: the pipeline's overlap alone
    naive_detections: int = 0
    wildedge_detections: int = 0
    session_ms: float = 0.0
    pipeline_ms: float = 0.0
    single_photo_ms: float = 0.0
    sweep: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.wildedge_fps / self.naive_fps if self.naive_fps else 0.0


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


# -- data ------------------------------------------------------------------------------------------
def make_photos(assets: Path, work: Path, count: int) -> Path:
    """A folder of ``count`` 12-MP JPEGs: hard links to the 12 upscaled camera-trap photos in ``work``."""
    sources = sorted(p for p in (assets / "camera_traps_lila" / "images").iterdir()
                     if p.suffix.lower() in (".jpg", ".jpeg"))
    big = work / "photos-12mp"
    big.mkdir(parents=True, exist_ok=True)
    upscaled = []
    for src in sources:
        dst = big / f"{src.stem}.jpg"
        if not dst.exists():
            image = cv2.resize(cv2.imread(str(src)), PHOTO_SIZE, interpolation=cv2.INTER_CUBIC)
            tmp = big / f".{src.stem}.tmp.jpg"
            if not cv2.imwrite(str(tmp), image, [cv2.IMWRITE_JPEG_QUALITY, 90]):
                raise OSError(f"cannot write {tmp}")
            tmp.replace(dst)
        upscaled.append(dst)
    folder = work / f"set-{count}"
    if folder.is_dir() and len(list(folder.iterdir())) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for k in range(count):
        src = upscaled[k % len(upscaled)]
        dst = folder / f"{k:04d}_{src.name}"
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return folder


def prime_cache(folder: Path) -> None:
    """Read every file once so neither side pays for the first read from disk."""
    for path in folder.iterdir():
        path.read_bytes()


# -- models ----------------------------------------------------------------------------------------
def has_ultralytics() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("ultralytics", "torch"))


def ultralytics_env(work: Path) -> dict[str, str]:
    """No network: no update/font/hub checks, no pip installs, settings kept inside ``work``."""
    return {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_VERBOSE": "false",
            "YOLO_CONFIG_DIR": str(work / "ultralytics-config")}


def tiny_model(assets: Path, work: Path, name: str) -> Path:
    folder, onnx, preset, labels = TINY[name]
    dst = work / f"{name}_stamped.onnx"
    stamp_file(assets / folder / onnx, dst, preset=preset, labels=read_labels(assets / folder / labels))
    return dst


def yolov8n_model(args: argparse.Namespace, work: Path) -> tuple[Path | None, str]:
    """The stamped YOLOv8n ONNX, or None and why not."""
    coco = Path(edge.__file__).parent / "data" / "coco80.txt"
    src = args.yolov8n
    if src is None:
        if not has_ultralytics():
            return None, "ultralytics/torch are not installed in this venv and no --yolov8n PATH was given"
        src = work / "yolov8n.onnx"
        if not src.exists():
            photos = sorted((args.assets / "camera_traps_lila" / "images").iterdir())
            cmd = [sys.executable, str(HERE / "_build_yolov8n.py"), str(src), str(coco), *map(str, photos)]
            done = subprocess.run(cmd, env=ultralytics_env(work), capture_output=True, text=True, timeout=600,
                                  check=False)
            if done.returncode != 0 or not src.exists():
                return None, f"building yolov8n.onnx offline failed: {done.stderr.strip()[-500:]}"
    try:
        labels = read_card(src).labels  # an Ultralytics export carries its names
    except ModelError:  # no card and no Ultralytics names: assume COCO-80
        labels = read_labels(coco)
    dst = work / "yolov8n_stamped.onnx"
    stamp_file(Path(src), dst, preset="ultralytics", labels=labels)
    return dst, ""


# -- item 1: the naive loop and the pipeline ---------------------------------------------------------
class NaiveLoop:
    """The serial loop a user writes: full-size imread, the model's preprocessing, session.run, decode."""

    def __init__(self, path: Path, conf: float, iou: float) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # ORT defaults
        self.input = self.session.get_inputs()[0].name
        self.names = [o.name for o in self.session.get_outputs()]
        # borrowed for its card, decoder and NMS only, so both sides decode identically
        self.det = Detector(path, conf=conf, iou=iou, warmup=False)
        self.det.model.close()
        self.session.run(None, {self.input: self.det.model.zeros()})

    def run(self, files: list[Path]) -> int:
        found = 0
        spec = self.det.card.preprocess
        for path in files:
            image = cv2.imread(str(path))
            tensor, transform = preprocess(image, spec)
            outputs = dict(zip(self.names, self.session.run(None, {self.input: tensor}), strict=True))
            found += len(self.det.to_detections(self.det.decode(outputs), transform))
        return found


def pipeline(det: Detector, items: list[Item], workers: int, reduced: bool = True) -> int:
    found = 0
    for result in BatchRunner(det, workers=workers, reduced=reduced).run(items):
        if result.failure:
            raise RuntimeError(f"{result.file}: {result.failure}")
        found += len(result.detections)
    return found


def session_ms(det: Detector, tensor: np.ndarray, runs: int = 20) -> float:
    """Median model-only time: the same session as the pipeline's, nothing else running."""
    return 1000 * statistics.median(timed(det.infer, tensor)[0] for _ in range(runs))


def config_name(workers: int, threads: int, spin: bool) -> str:
    return f"workers={workers} threads={threads} spin={'on' if spin else 'off'}"


def measure_model(name: str, path: Path, folder: Path, conf: float | None, iou: float | None,
                  repeats: int, sweep: bool) -> ModelRow:
    items, _ = collect([folder])
    files = [item.path for item in items]
    workers, threads, spin = default_config()
    det = Detector(path, conf=conf, iou=iou, threads=threads, spin=spin)
    width, height = det.input_size
    row = ModelRow(name, f"{width}x{height}", det.conf, det.iou)
    naive = NaiveLoop(path, det.conf, det.iou)
    tensor, _ = det.prepare(read_image(files[0], needed=det.input_size).image)
    times: dict[str, list[float]] = {"naive": [], "wildedge": [], "full": [], "session": [], "single": []}
    for _ in range(repeats):  # interleaved, best of each: the machine is noisy
        seconds, row.naive_detections = timed(naive.run, files)
        times["naive"].append(seconds)
        seconds, row.wildedge_detections = timed(pipeline, det, items, workers)
        times["wildedge"].append(seconds)
        times["full"].append(timed(pipeline, det, items, workers, False)[0])
        times["session"].append(session_ms(det, tensor))
        singles = [timed(pipeline, det, [item], workers)[0] for item in items[:6]]
        times["single"].append(1000 * statistics.median(singles))
    row.naive_fps = len(files) / min(times["naive"])
    row.wildedge_fps = len(files) / min(times["wildedge"])
    row.full_decode_fps = len(files) / min(times["full"])
    row.pipeline_ms = 1000 * min(times["wildedge"]) / len(files)
    row.session_ms = min(times["session"])
    row.single_photo_ms = min(times["single"])
    det.close()
    if sweep:
        row.sweep = sweep_configs(path, items, det.conf, det.iou, repeats)
    return row


def sweep_configs(path: Path, items: list[Item], conf: float, iou: float, repeats: int) -> dict[str, float]:
    """files/s per (workers, intra-op threads, spin); detectors built once, configs interleaved."""
    dets = {(threads, spin): Detector(path, conf=conf, iou=iou, threads=threads, spin=spin)
            for threads in (1, 2) for spin in (False, True)}
    best: dict[str, float] = {}
    for _ in range(repeats):
        for (threads, spin), det in dets.items():
            for workers in (1, 2):
                seconds, _ = timed(pipeline, det, items, workers)
                key = config_name(workers, threads, spin)
                best[key] = max(best.get(key, 0.0), len(items) / seconds)
    for det in dets.values():
        det.close()
    return best


# -- item 2: whole processes -------------------------------------------------------------------------
# Launched by a small interpreter, not by us: Linux counts the pre-exec address space in a child's
# ru_maxrss, so a child forked straight from this (large) process would report at least our own RSS.
_LAUNCHER = """import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[2:])
elapsed = time.perf_counter() - start
with open(sys.argv[1], "w") as fh:
    fh.write(f"{code} {elapsed} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
"""


def run_process(cmd: list[str], env: dict[str, str], logs: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in bytes and stdout of one process."""
    out_path, err_path, stats = logs.with_suffix(".out"), logs.with_suffix(".err"), logs.with_suffix(".stats")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        subprocess.run([sys.executable, "-I", "-S", "-c", _LAUNCHER, str(stats), *cmd],
                       stdout=out, stderr=err, env=env, check=True)
    code, elapsed, maxrss_kb = stats.read_text().split()
    if int(code) != 0:
        tail = err_path.read_text(errors="replace").strip()[-800:]
        raise RuntimeError(f"{' '.join(cmd)} exited {code}: {tail}")
    return float(elapsed), int(maxrss_kb) * 1024, out_path.read_text(errors="replace")


def wildedge_command() -> list[str]:
    script = Path(sys.executable).parent / "wildedge"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from edge.cli import main; main()"]


def run_wildedge(model: Path, folder: Path, work: Path, label: str, extra: list[str]) -> dict:
    out = work / f"wildedge-{label}.json"
    out.unlink(missing_ok=True)
    checkpoint.checkpoint_path(out).unlink(missing_ok=True)
    cmd = [*wildedge_command(), "detect", str(folder), "-m", str(model), "-o", str(out), "-q", *extra]
    seconds, rss, _ = run_process(cmd, dict(os.environ), work / f"wildedge-{label}")
    found = sum(len(img.get("detections") or []) for img in json.loads(out.read_text())["images"])
    return {"files": len(list(folder.iterdir())), "seconds": seconds, "rss": rss, "detections": found}


def measure_processes(model: Path, folders: dict[str, Path], work: Path, conf: float, iou: float) -> dict:
    """Each tool on a 1-photo folder (start-up) and the full folder; wall time, peak RSS, detections.

    ``wildedge detect --full-decode`` is there for scale: it decodes every pixel, as Ultralytics does.
    """
    results: dict[str, dict] = {}
    env = ultralytics_env(work)
    thresholds = ["--conf", str(conf), "--iou", str(iou)]
    for label, folder in folders.items():
        results[f"wildedge detect/{label}"] = run_wildedge(model, folder, work, label, thresholds)
        for stream in (False, True):
            tool = "ultralytics predict " + ("stream" if stream else "list")
            cmd = [sys.executable, str(HERE / "_ultralytics_predict.py"), str(model), str(folder), str(conf),
                   str(iou), *(["--stream"] if stream else [])]
            seconds, rss, stdout = run_process(cmd, env, work / f"ultralytics-{stream}-{label}")
            found = json.loads(stdout.strip().splitlines()[-1])["detections"]
            count = len(list(folder.iterdir()))
            results[f"{tool}/{label}"] = {"files": count, "seconds": seconds, "rss": rss, "detections": found}
    full = folders["full"]
    results["wildedge detect --full-decode/full"] = run_wildedge(model, full, work, "full-decode",
                                                                 [*thresholds, "--full-decode"])
    return results


# -- report ----------------------------------------------------------------------------------------
@dataclass
class Check:
    what: str
    measured: float
    target: float
    at_least: bool  # True: measured >= target passes; False: measured <= target passes

    @property
    def ok(self) -> bool:
        return self.measured >= self.target if self.at_least else self.measured <= self.target

    def line(self) -> str:
        sign = ">=" if self.at_least else "<="
        return f"{self.what:<68} {self.measured:>7.3f}  target {sign} {self.target:<5} {verdict(self.ok)}"


def print_item1(rows: list[ModelRow], files: int, repeats: int) -> list[Check]:
    print(f"\nItem 1: folder throughput, {files} photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}, best of "
          f"{repeats}; wildedge {config_name(*default_config())}, reduced decode; naive: full imread, "
          "ORT defaults, serial")
    print(f"{'model':<11} {'input':>7} {'conf':>5} {'naive f/s':>10} {'wildedge f/s':>13} {'ratio':>6} "
          f"{'target':>7}       {'full-decode f/s':>15} {'dets naive/wildedge':>19}")
    checks = []
    for r in rows:
        check = Check(f"item 1: {r.model} wildedge / naive loop (x)", r.ratio, TARGET_NAIVE[r.model], True)
        checks.append(check)
        print(f"{r.model:<11} {r.input:>7} {r.conf:>5.2f} {r.naive_fps:>10.2f} {r.wildedge_fps:>13.2f} "
              f"{r.ratio:>5.2f}x {'>=' + str(check.target) + 'x':>7} {verdict(check.ok)}  "
              f"{r.full_decode_fps:>15.2f} {r.naive_detections:>11}/{r.wildedge_detections}")
    return checks


def print_item3(rows: list[ModelRow]) -> list[Check]:
    print("\nItem 3: pipeline time per photo / model-only session.run (same session; median of 20 runs; "
          "1-photo latency: one file through the pipeline, median of 6)")
    print(f"{'model':<11} {'session.run ms':>15} {'batch ms/photo':>15} {'ratio':>6} {'target':>7}       "
          f"{'1-photo latency ms':>19} {'ratio':>6}")
    checks = []
    for r in rows:
        check = Check("item 3: yolov8n batch time per photo / session.run", r.pipeline_ms / r.session_ms,
                      TARGET_OVERHEAD, False)
        if r.model == "yolov8n":
            checks.append(check)
        mark = verdict(check.ok) if r.model == "yolov8n" else "(info)"
        print(f"{r.model:<11} {r.session_ms:>15.1f} {r.pipeline_ms:>15.1f} {check.measured:>6.2f} "
              f"{'<=' + str(TARGET_OVERHEAD):>7} {mark:<6} "
              f"{r.single_photo_ms:>19.1f} {r.single_photo_ms / r.session_ms:>6.2f}")
    return checks


def print_item2(results: dict, conf: float, iou: float) -> list[Check]:
    print(f"\nItem 2: whole process, same yolov8n ONNX, conf {conf}, iou {iou}, max_det 300, imgsz 640 in "
          "both; 'list' = predict(folder) as the issue ran it, 'stream' = predict(folder, stream=True)")
    print(f"{'tool/folder':<37} {'files':>5} {'wall s':>7} {'files/s':>8} {'peak RSS MB':>12} "
          f"{'detections':>11}")
    for key, r in results.items():
        print(f"{key:<37} {r['files']:>5} {r['seconds']:>7.2f} {r['files'] / r['seconds']:>8.2f} "
              f"{r['rss'] / 2**20:>12.0f} {r['detections']:>11}")
    ours = results["wildedge detect/full"]
    checks = []
    for tool in ("ultralytics predict list", "ultralytics predict stream"):
        theirs = results[f"{tool}/full"]
        checks.append(Check(f"item 2: throughput, wildedge detect / {tool} (x)",
                            theirs["seconds"] / ours["seconds"], TARGET_PROCESS_SPEED, True))
        checks.append(Check(f"item 2: peak RSS, wildedge detect / {tool}", ours["rss"] / theirs["rss"],
                            TARGET_PROCESS_RSS, False))
    return checks


def print_sweep(rows: list[ModelRow]) -> str | None:
    swept = [r for r in rows if r.sweep]
    if not swept:
        return None
    keys = list(swept[0].sweep)
    print("\nSweep: wildedge files/s per setting (best of repeats); 'rel' = geometric mean vs the default")
    print(f"{'setting':<34} " + " ".join(f"{r.model:>11}" for r in swept) + f" {'rel':>6}")
    default = config_name(*default_config())
    rel = {}
    for key in keys:
        rel[key] = float(np.exp(np.mean([np.log(r.sweep[key] / r.sweep[default]) for r in swept])))
        print(f"{key:<34} " + " ".join(f"{r.sweep[key]:>11.2f}" for r in swept) + f" {rel[key]:>6.3f}")
    best = max(rel, key=rel.get)
    print(f"best overall: {best} ({rel[best]:.3f}x the default {default})")
    return best


def environment() -> dict:
    return {"python": platform.python_version(), "onnxruntime": ort.__version__, "opencv": cv2.__version__,
            "numpy": np.__version__, "cores": os.cpu_count(), "default_threads": default_threads(),
            "machine": platform.machine()}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="keep photos and models here (default: a tempdir)")
    parser.add_argument("--assets", type=Path, default=HERE.parent.parent / "shared" / "assets")
    parser.add_argument("--files", type=int, default=24, help="photos for items 1 and 3")
    parser.add_argument("--process-files", type=int, default=100, help="photos for item 2")
    parser.add_argument("--repeats", type=int, default=3, help="best-of count for items 1, 3 and the sweep")
    parser.add_argument("--models", default="fastestdet,yolox_nano,yolov8n")
    parser.add_argument("--yolov8n", type=Path, help="an existing YOLOv8n-class ONNX (skips the build)")
    parser.add_argument("--conf", type=float, default=0.25, help="YOLOv8n conf, both tools (tiny: card's)")
    parser.add_argument("--iou", type=float, default=0.45, help="YOLOv8n NMS IoU, both tools")
    parser.add_argument("--skip-processes", action="store_true", help="skip item 2")
    parser.add_argument("--sweep", action="store_true", help="also try workers/threads/spin settings")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args(argv)
    if args.files < 1 or args.process_files < 1 or args.repeats < 1:
        parser.error("--files, --process-files and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not (args.assets / "camera_traps_lila" / "images").is_dir():
        print(f"skipped: no test assets at {args.assets} (pass --assets)")
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    with tempfile.TemporaryDirectory(prefix="wildedge-bench-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        print(f"work dir {work}; {environment()}")
        folder = make_photos(args.assets, work, args.files)
        prime_cache(folder)
        paths: dict[str, Path] = {}
        skipped: dict[str, str] = {}
        for name in models:
            if name in TINY:
                paths[name] = tiny_model(args.assets, work, name)
            elif name == "yolov8n":
                path, why = yolov8n_model(args, work)
                if path is None:
                    skipped[name] = why
                else:
                    paths[name] = path
            else:
                raise SystemExit(f"unknown model {name!r}")
        rows = []
        for name, path in paths.items():
            print(f"measuring {name} ...", flush=True)
            conf, iou = (args.conf, args.iou) if name == "yolov8n" else (None, None)
            rows.append(measure_model(name, path, folder, conf, iou, args.repeats, args.sweep))

        processes: dict[str, dict] = {}
        if args.skip_processes:
            skipped["item 2"] = "--skip-processes"
        elif "yolov8n" not in paths:
            skipped["item 2"] = skipped.get("yolov8n", "yolov8n not among --models")
        elif not has_ultralytics():
            skipped["item 2"] = "ultralytics/torch are not installed in this venv"
        else:
            print("measuring whole processes ...", flush=True)
            full = make_photos(args.assets, work, args.process_files)
            one = make_photos(args.assets, work, 1)
            prime_cache(full)
            processes = measure_processes(paths["yolov8n"], {"1 photo": one, "full": full}, work,
                                          args.conf, args.iou)

        checks = print_item3(rows)
        if processes:
            checks += print_item2(processes, args.conf, args.iou)
        best = print_sweep(rows)
        print("\nSummary")
        checks = print_item1(rows, args.files, args.repeats) + checks
        print()
        for check in checks:
            print(check.line())
        if "yolov8n" in paths:
            print("note: yolov8n has random weights (see _build_yolov8n.py); its detections react to "
                  "resampling, so reduced and full-size decoding give different counts; the real tiny models "
                  "agree closely")
        for what, why in skipped.items():
            print(f"skipped {what}: {why}")
        print(f"total {time.perf_counter() - started:.0f} s")
        if args.json:
            report = {"environment": environment(), "args": {k: str(v) for k, v in vars(args).items()},
                      "models": [asdict(r) | {"ratio": r.ratio} for r in rows], "processes": processes,
                      "checks": [asdict(c) | {"ok": c.ok} for c in checks], "best_setting": best,
                      "skipped": skipped}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The field daemon's footprint: RSS in steady state, CPU while idle between timelapse shots, and the
time from start to the first stored result.

Usage: .venv/bin/python benchmarks/daemon.py [--assets ../shared/assets] [--model yolox|FILE.onnx]
       [--idle 30] [--steady 30] [--interval 2s] [--mqtt] [--json daemon.json]

``wildedge run`` runs as a real process with an OpenCV camera reading a video made of the
camera-trap photos of the assets (1280x720, the OpenCV capture path a USB camera takes), a real
nano detector stamped from the assets, and the default store settings (images of detections kept).

1. Start to first result: the daemon starts with a 1 h timelapse; as soon as systemd would hear
   READY, ``wildedge trigger`` asks for a capture; the time is from ``Popen`` to the frame's row
   being readable in the store (model load, camera open and one inference included).
2. Idle: the same process then waits for its next slot (an hour away); its CPU time over
   ``--idle`` seconds, as a share of one core. Target (issue 4): under 1 %.
3. Steady state: a second process shoots every ``--interval``; RSS is sampled every 0.2 s for
   ``--steady`` seconds after the third shot. Target: median at most 150 MB; the peak (during an
   inference, the model's activations) is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge.inference.labels import read_labels  # noqa: E402
from edge.inference.stamp import stamp_file  # noqa: E402
from edge.triggers import send_command  # noqa: E402

MODELS = {
    "yolox": ("yolox_nano/yolox_nano.onnx", "yolox", "yolox_nano/coco_classes.txt"),
    "nanodet": ("nanodet_m/nanodet_m_320.onnx", "nanodet", "nanodet_m/coco_classes.txt"),
    "fastestdet": ("fastestdet/FastestDet.onnx", "fastestdet", "fastestdet/coco.names"),
}
RSS_TARGET_MB = 150
IDLE_TARGET = 0.01
TICK = os.sysconf("SC_CLK_TCK")


def make_video(assets: Path, out: Path) -> Path:
    photos = sorted(p for p in (assets / "camera_traps_lila" / "images").iterdir() if p.suffix.lower() == ".jpg")
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 5, (1280, 720))
    for _ in range(20):  # 240 frames: more than any run here takes
        for photo in photos:
            writer.write(cv2.resize(cv2.imread(str(photo)), (1280, 720)))
    writer.release()
    return out


def write_config(folder: Path, name: str, *, video: Path, model: Path, interval: str, mqtt: str | None = None
                 ) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f"""
[device]
id = "bench-{name}"
state_dir = "{folder / name}"
[camera]
type = "opencv"
source = "{video}"
[trigger]
type = "timelapse"
interval = "{interval}"
[detector]
model = "{model}"
[health]
interval = "1m"
""" + (f'[mqtt]\nurl = "{mqtt}"\n' if mqtt else ""))
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def frames(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM frames").fetchone()[0]
    except sqlite3.Error:
        return 0


def start(config: Path, notify: str) -> subprocess.Popen:
    env = {**os.environ, "NOTIFY_SOCKET": notify}
    return subprocess.Popen([str(Path(sys.executable).with_name("wildedge")), "run", "--config", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(sock: socket.socket) -> None:
    while "READY=1" not in sock.recv(4096).decode().split("\n"):
        pass


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=Path, default=REPO.parent / "shared" / "assets")
    parser.add_argument("--model", default="yolox",
                        help=f"{', '.join(sorted(MODELS))} (stamped from the assets) or a stamped .onnx file")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measurement")
    parser.add_argument("--steady", type=float, default=30.0, help="seconds of steady-state RSS sampling")
    parser.add_argument("--interval", default="2s", help="timelapse interval of the steady-state run")
    parser.add_argument("--mqtt", action="store_true",
                        help="deliver to a local mosquitto (the daemon's MQTT thread included in the figures)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not args.assets.is_dir():
        parser.error(f"no assets at {args.assets} (use --assets)")

    results: dict[str, object] = {"model": args.model}
    with tempfile.TemporaryDirectory(prefix="wildedge-bench-") as tmp:
        folder = Path(tmp)
        if args.model in MODELS:
            src, preset, labels = MODELS[args.model]
            model = folder / f"{args.model}.onnx"
            stamp_file(args.assets / src, model, preset=preset, labels=read_labels(args.assets / labels))
        else:
            model = Path(args.model).resolve()
            if not model.is_file():
                parser.error(f"--model: {args.model} is neither {', '.join(sorted(MODELS))} nor a file")
        video = make_video(args.assets, folder / "camera.avi")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify = str(folder / "notify.sock")
        sock.bind(notify)
        sock.settimeout(120)

        # 1 + 2: first result, then idle between (hour-long) timelapse slots.
        broker = None
        if args.mqtt:
            sys.path.insert(0, str(REPO / "tests"))
            from broker import Mosquitto  # the test suite's real-mosquitto helper

            broker = Mosquitto(folder / "mosquitto").start()
        url = broker.url if broker is not None else None
        config = write_config(folder, "idle", video=video, model=model, interval="1h", mqtt=url)
        db = folder / "idle" / "wildedge.db"
        began = time.perf_counter()
        proc = start(config, notify)
        try:
            wait_ready(sock)
            ready = time.perf_counter() - began
            send_command(folder / "idle" / "control.sock", {"cmd": "capture"})
            while frames(db) < 1:
                time.sleep(0.01)
            first = time.perf_counter() - began
            time.sleep(2.0)  # let the capture's aftermath (commit, health) settle
            cpu0, wall0 = cpu_seconds(proc.pid), time.perf_counter()
            time.sleep(args.idle)
            idle = (cpu_seconds(proc.pid) - cpu0) / (time.perf_counter() - wall0)
            idle_rss = rss_mb(proc.pid)
        finally:
            stop(proc)
        results.update(ready_s=round(ready, 2), first_result_s=round(first, 2), idle_cpu=round(idle, 5),
                       idle_rss_mb=round(idle_rss, 1))

        # 3: steady state with a shot every --interval.
        config = write_config(folder, "steady", video=video, model=model, interval=args.interval, mqtt=url)
        db = folder / "steady" / "wildedge.db"
        proc = start(config, notify)
        samples: list[float] = []
        try:
            wait_ready(sock)
            deadline = time.perf_counter() + 120
            while frames(db) < 3 and time.perf_counter() < deadline:
                time.sleep(0.05)
            shots0, end = frames(db), time.perf_counter() + args.steady
            while time.perf_counter() < end:
                samples.append(rss_mb(proc.pid))
                time.sleep(0.2)
            shots = frames(db) - shots0
        finally:
            stop(proc)
        sock.close()
        if broker is not None:
            broker.stop()
        results.update(steady_rss_median_mb=round(statistics.median(samples), 1),
                       steady_rss_max_mb=round(max(samples), 1), steady_shots=shots)

    steady = float(results["steady_rss_median_mb"])  # type: ignore[arg-type]
    peak = float(results["steady_rss_max_mb"])  # type: ignore[arg-type]
    print(f"daemon footprint, {args.model} detector, OpenCV camera (1280x720 video), {os.cpu_count()} cores"
          + (", MQTT delivery to a local mosquitto" if args.mqtt else ""))
    print(f"  start -> READY               {results['ready_s']:>8.2f} s")
    print(f"  start -> first stored result {results['first_result_s']:>8.2f} s")
    print(f"  idle CPU between shots       {100 * idle:>8.3f} % of a core   "
          f"(target < {100 * IDLE_TARGET:g} %: {'ok' if idle < IDLE_TARGET else 'MISSED'})")
    print(f"  idle RSS                     {results['idle_rss_mb']:>8.1f} MB")
    print(f"  steady RSS (median over {results['steady_shots']} shots every {args.interval}) {steady:.1f} MB = "
          f"{steady / RSS_TARGET_MB:.2f}x the {RSS_TARGET_MB} MB target ({'ok' if steady <= RSS_TARGET_MB else 'MISSED'})")
    print(f"  peak RSS during inference    {peak:>8.1f} MB = {peak / RSS_TARGET_MB:.2f}x the target")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

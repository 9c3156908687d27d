"""A scripted day of a trap with every fault at once (not a test; run on demand).

Usage: .venv/bin/python benchmarks/faults.py [--copies 3] [--seed 1] [--json faults.json] [--tmp DIR]

Needs ../shared/assets (real photos, the FastestDet detector) and mosquitto. Run as root for the
disk phase (the state directory lives on a 24 MiB tmpfs that a filler file fills) and with the
Debian package ``faketime`` for the clock steps (the daemon runs under libfaketime with its
monotonic clocks left alone); without either, that phase is skipped and the output says so.

The day, compressed into a few minutes: ``wildedge run`` watches a folder (a sticky-trap or
camera-card stream) that a feeder fills with real photos, one every 0.4 s ("timelapse") and a
burst of 6 every 12 s; the device delivers to a real mosquitto with a persistent QoS 1
subscriber (the collector's part); commands must be signed (HMAC key file). Meanwhile, on a
schedule: two broker outages, the wall clock stepped back to 1970-01-02 and then forward to the
right time, the disk filled to the last byte by another program and freed, the watched folder
removed for 5 s, three SIGKILLs of the daemon (one during an outage), and a stream of fuzzed and
hostile commands (unsigned, wrongly signed, retained, malformed, oversized, out-of-bounds ``set``)
with a signed ``ping`` every few seconds. At the end the feeder stops, the daemon is restarted
once more, and the run waits until every photo is recorded and every event delivered.

Prints frames in, frames recorded (and duplicates), events made, events delivered, events lost
(must be 0), peak RSS of the daemon, time not detecting (from each kill to the restarted daemon's
"running" line, plus the folder's absence), and what happened to the commands.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from broker import Mosquitto  # noqa: E402
from daemon_helpers import fill_disk, folder_config  # noqa: E402
from mqtt_helpers import Subscriber  # noqa: E402

from edge.commands import sign_command  # noqa: E402
from edge.payload_decode import decode_event  # noqa: E402

ASSETS = REPO.parent / "shared" / "assets"
WILDEDGE = str(Path(sys.executable).with_name("wildedge"))
FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
KEY = b"field-key-0123456789abcdef"
MiB = 1 << 20
#: One signed set, sent again and again by the hostile stream (a replay); each run of it logs a line.
REPLAYED = json.dumps(sign_command("set", {"id": "replayed-set", "values": {"detector.conf": 0.3}}, KEY,
                                   ts=int(time.time()))).encode()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Daemon:
    """``wildedge run`` as a process; peak RSS polled from /proc (VmHWM), "running" times kept."""

    def __init__(self, config: Path, logs: Path, env: dict[str, str]) -> None:
        self.config, self.logs, self.env = config, logs, env
        self.proc: subprocess.Popen | None = None
        self.peak_kib = 0
        self.starts = 0
        self.down_s = 0.0
        self._down_since: float | None = None
        self._log_file = None

    def start(self) -> None:
        self.starts += 1
        path = self.logs / f"daemon-{self.starts}.log"
        self._log_file = open(path, "w")  # noqa: SIM115 - closed in stop/kill
        self.proc = subprocess.Popen([WILDEDGE, "run", "--config", str(self.config)], stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env=self.env)
        threading.Thread(target=self._watch, args=(self.proc, path), daemon=True).start()

    def _watch(self, proc: subprocess.Popen, path: Path) -> None:
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except OSError:
                pass
            if self._down_since is not None and "wildedge running" in path.read_text(errors="replace"):
                self.down_s += time.monotonic() - self._down_since
                self._down_since = None
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._down_since = time.monotonic()
        self._log_file.close()

    def stop(self) -> int:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)
        self._log_file.close()
        return self.proc.returncode

    def wait_running(self, timeout: float = 120) -> None:
        path = self.logs / f"daemon-{self.starts}.log"
        deadline = time.monotonic() + timeout
        while "wildedge running" not in path.read_text(errors="replace"):
            if time.monotonic() > deadline or not self.alive():
                raise RuntimeError(f"the daemon did not start: {path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("daemon-*.log")))


def stamp_detector(out: Path) -> Path:
    from conftest import DETECTORS

    from edge.inference.labels import read_labels
    from edge.inference.stamp import stamp_file

    model, preset, labels = DETECTORS["fastestdet"]
    dst = out / "fastestdet.onnx"
    stamp_file(ASSETS / model, dst, preset=preset, labels=read_labels(ASSETS / labels))
    return dst


def hostile_command(rng: random.Random, prefix: str) -> tuple[str, bytes, bool]:
    """(topic, payload, retain) of one hostile command, chosen at random."""
    now = int(time.time())
    name = rng.choice(["capture", "set", "status", "ping", "reboot", "../set", "set/x"])
    body: Any
    kind = rng.randrange(9)
    if kind == 0:
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    elif kind == 1:
        payload = b"{" * rng.randrange(1, 5000)  # deep or broken JSON
    elif kind == 2:
        payload = json.dumps({"id": "x", "values": {"storage.max_age": "1ms"}}).encode()  # unsigned
    elif kind == 3:
        body = sign_command("set", {"id": f"w{rng.random()}", "values": {"privacy.person": "keep"}},
                            b"not the key", ts=now)
        payload = json.dumps(body).encode()
    elif kind == 4:  # signed with the right key but out of bounds
        body = sign_command("set", {"id": f"b{rng.random()}", "values": {
            rng.choice(["storage.max_age", "health.interval", "detector.conf"]):
                rng.choice(["1ms", "0s", 1.0, -1, "yes"])}}, KEY, ts=now)
        payload = json.dumps(body).encode()
        name = "set"
    elif kind == 5:
        payload = b"x" * rng.choice([20_000, 200_000])  # over the device's 16 KiB packet limit
    elif kind == 6:  # a signed command captured once and replayed byte for byte: runs at most once
        payload = REPLAYED
        name = "set"
    elif kind == 7:
        payload = json.dumps({"id": 5, "burst": "all", "sig": "00" * 32, "ts": "now"}).encode()
    else:
        payload = json.dumps({"id": "n" * 10_000}).encode()
    return f"{prefix}/cmd/{name}", payload, rng.random() < 0.1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=3, help="each of the 72 photos is dropped this many times")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--tmp", type=Path, help="work folder (default: a new temporary one)")
    args = parser.parse_args()
    if not ASSETS.is_dir():
        print(f"needs the shared assets at {ASSETS}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="faults-", dir=args.tmp))
    notes: list[str] = []
    disk = work / "disk"
    disk.mkdir()
    small_disk = False
    if os.geteuid() == 0:
        small_disk = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(disk)],
                                    capture_output=True).returncode == 0
    if not small_disk:
        notes.append("disk phase skipped (needs root to mount a small tmpfs)")
    clock_steps = FAKETIME.exists()
    if not clock_steps:
        notes.append("clock steps skipped (apt install faketime)")
    try:
        return run_day(args, rng, work, disk, small_disk, clock_steps, notes)
    finally:
        if small_disk:
            subprocess.run(["umount", "-l", str(disk)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def run_day(args: argparse.Namespace, rng: random.Random, work: Path, disk: Path, small_disk: bool,
            clock_steps: bool, notes: list[str]) -> int:
    photos = sorted([*(ASSETS / "voc2007_labeled/images").iterdir(), *(ASSETS / "camera_traps_lila/images").iterdir()])
    queue = [(copy, src) for copy in range(args.copies) for src in photos]
    rng.shuffle(queue)
    watched = work / "inbox"
    watched.mkdir()
    staging = work / "staging"
    staging.mkdir()
    state = disk / "state"
    key_file = work / "command.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    model = stamp_detector(work)
    (work / "broker").mkdir()
    broker = Mosquitto(work / "broker", max_queued_messages=100_000, autosave_interval=1)
    broker.start()
    config = folder_config(
        work / "wildedge.toml", state=state, photos=watched, model=model, device='timezone = "UTC"',
        camera='mode = "watch"\nsettle = "0.3s"\npoll = "0.2s"',
        storage='save_images = "detections"\nmin_free = "2MB"\nreserve = "2MB"',
        extra=f'[health]\ninterval = "2s"\n[mqtt]\nurl = "{broker.url}"\ncrops = true\ncrop_min_interval = "1s"\n'
              f'require_subscriber = true\ncommand_key_file = "{key_file}"\ndrain_timeout = "1s"')
    faketime_file = work / "faketime"
    faketime_file.write_text("+0\n")
    env = dict(os.environ)
    if clock_steps:
        env.update(LD_PRELOAD=str(FAKETIME), FAKETIME_TIMESTAMP_FILE=str(faketime_file),
                   FAKETIME_DONT_FAKE_MONOTONIC="1", FAKETIME_CACHE_DURATION="1")
    logs = work / "logs"
    logs.mkdir()
    sub = Subscriber(broker.host, broker.port, topic="wildedge/trap-01/#", client_id="collector")
    daemon = Daemon(config, logs, env)
    daemon.start()
    started = time.monotonic()
    stop = threading.Event()
    dropped: list[str] = []
    folder_gone = threading.Event()
    commands = {"hostile": 0, "signed_pings": 0, "replays": 0}

    def feeder() -> None:
        next_burst = time.monotonic() + 12
        while queue and not stop.is_set():
            count = 6 if time.monotonic() >= next_burst else 1
            if count > 1:
                next_burst = time.monotonic() + 12
            for _ in range(min(count, len(queue))):
                while folder_gone.is_set() and not stop.is_set():
                    time.sleep(0.05)
                copy, src = queue.pop()
                name = f"{copy}-{src.name}"
                shutil.copy(src, staging / name)
                os.replace(staging / name, watched / name)  # atomic: the camera never sees half a file
                dropped.append(name)
            time.sleep(0.4)

    def commander() -> None:
        pub = sub.client
        pub.publish("wildedge/trap-01/cmd/capture", json.dumps({"id": "retained"}), qos=1, retain=True)
        n = 0
        while not stop.is_set():
            n += 1
            if n % 15 == 0:
                body = sign_command("ping", {"id": f"ok-{n}"}, KEY, ts=int(time.time()))
                pub.publish("wildedge/trap-01/cmd/ping", json.dumps(body), qos=1)
                commands["signed_pings"] += 1
            else:
                topic, payload, retain = hostile_command(rng, "wildedge/trap-01")
                pub.publish(topic, payload, qos=1, retain=retain)
                commands["hostile"] += 1
                commands["replays"] += payload is REPLAYED
            time.sleep(0.2)

    threads = [threading.Thread(target=feeder, daemon=True), threading.Thread(target=commander, daemon=True)]
    for thread in threads:
        thread.start()

    def at(offset: float, what: str, action: Callable[[], None]) -> None:
        delay = started + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        log(f"t={offset:5.1f}s  {what}")
        action()

    def restart() -> None:
        daemon.kill()
        time.sleep(1.0)
        daemon.start()

    filler: list[Path] = []
    schedule: list[tuple[float, str, Callable[[], None]]] = [
        (8, "broker down (8 s)", broker.stop),
        (16, "broker up", broker.start),
    ]
    if clock_steps:
        schedule += [(22, "wall clock stepped back to 1970-01-02", lambda: faketime_file.write_text(
            "@1970-01-02 00:00:00\n"))]
    schedule += [(30, "SIGKILL 1, restart", restart)]
    if small_disk:
        schedule += [(38, "another program fills the disk to the last byte", lambda: filler.append(fill_disk(disk))),
                     (53, "filler removed", lambda: filler.pop().unlink())]
    if clock_steps:
        schedule += [(46, "wall clock stepped forward to the right time", lambda: faketime_file.write_text("+0\n"))]

    def vanish() -> None:
        folder_gone.set()
        os.rename(watched, work / "inbox-away")

    def come_back() -> None:
        os.rename(work / "inbox-away", watched)
        folder_gone.clear()

    schedule += [
        (60, "watched folder removed (5 s)", vanish),
        (65, "watched folder back", come_back),
        (72, "SIGKILL 2, restart", restart),
        (80, "broker down (10 s)", broker.stop),
        (84, "SIGKILL 3 during the outage, restart", restart),
        (90, "broker up", broker.start),
    ]
    schedule.sort(key=lambda s: s[0])
    for offset, what, action in schedule:
        at(offset, what, action)
    threads[0].join()
    log(f"feeder done: {len(dropped)} photos dropped")
    stop.set()
    threads[1].join()
    at(time.monotonic() - started + 2, "restart once more (a normal stop and start)", lambda: (daemon.stop(),
                                                                                               daemon.start()))
    daemon.wait_running()
    db = state / "wildedge.db"

    def recorded() -> tuple[int, int]:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute("SELECT count(DISTINCT source), count(*) FROM frames "
                                "WHERE source IS NOT NULL").fetchone()

    def store_events() -> set[str]:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return {r[0] for r in conn.execute("SELECT uid FROM events")}

    def delivered() -> set[str]:
        ids = set()
        for message in sub.on("/event"):
            try:
                ids.add(decode_event(message.payload)["id"])
            except (ValueError, KeyError):
                pass
        return ids

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if recorded()[0] >= len(dropped) and store_events() <= delivered():
                break
        except sqlite3.Error:
            pass
        time.sleep(0.5)
    day = time.monotonic() - started
    code = daemon.stop()
    distinct, rows = recorded()
    made = store_events()
    got = delivered()
    text = daemon.log_text()
    answers = [json.loads(m.payload) for m in sub.on("/cmd/result")]
    ok_pings = sum(1 for a in answers if a.get("ok") and str(a.get("id", "")).startswith("ok-"))
    executed_hostile = sum(1 for a in answers if a.get("ok") and not str(a.get("id", "")).startswith("ok-")
                           and a.get("id") != "replayed-set")
    replayed = text.count("remote settings changed: detector.conf=0.3")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        in_1970 = conn.execute("SELECT count(*) FROM frames WHERE recorded_at < '1971'").fetchone()[0]
        health = json.loads(conn.execute("SELECT snapshot FROM health ORDER BY id DESC LIMIT 1").fetchone()[0])
    vanish_s = 5.0
    figures = {
        "day_s": round(day, 1),
        "frames_in": len(dropped),
        "frames_recorded": distinct,
        "frames_recorded_twice": rows - distinct,
        "events_made": len(made),
        "events_delivered": len(made & got),
        "events_lost": len(made - got) + (len(dropped) - distinct),
        "peak_rss_mb": round(daemon.peak_kib / 1024, 1),
        "time_not_detecting_s": round(daemon.down_s + vanish_s, 1),
        "daemon_starts": daemon.starts,
        "last_exit_code": code,
        "hostile_commands": commands["hostile"],
        "hostile_commands_executed": executed_hostile,
        "replayed_signed_set_sent": commands["replays"],
        "replayed_signed_set_executed": replayed,
        "signed_pings": commands["signed_pings"],
        "signed_pings_answered_ok": ok_pings,
        "frames_recorded_while_clock_at_1970": in_1970,
        "disk_reserve_released": text.count("released the"),
        "unrecorded_in_last_run": health["counts"].get("unrecorded", 0),
        "tracebacks": text.count("Traceback"),
        "skipped": notes,
    }
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    sub.close()
    broker.stop()
    return 0 if figures["events_lost"] == 0 and figures["frames_recorded_twice"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

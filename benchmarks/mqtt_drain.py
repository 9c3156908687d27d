"""Delivery throughput: messages/s drained from an outbox backlog to a real mosquitto (not a test).

Usage: .venv/bin/python benchmarks/mqtt_drain.py [--events 10000] [--inflight 1,20,100] [--repeat 3]
       [--small-events N] [--profile 20] [--tmp DIR] [--json mqtt_drain.json]

A fresh store is filled with ``--events`` realistic events (motion bursts of 1-3 frames with 1-3
classified detections each, encoded with the v1 wire format, one QoS 1 event message per event
queued by ``Store.commit_burst``, one transaction per burst); that is timed once and printed as the
queueing rate. Each run below gets its own copy of that file, so every backlog is fresh and alike.

1. Drain, for each ``--inflight`` value: a mosquitto on 127.0.0.1 (tests/broker.py, sessions
   persisted, per-message logging off) and a QoS 1 subscriber to ``wildedge/#`` in a separate
   process (MQTT 5, so it does not share the publisher's GIL) are up; then ``edge.mqtt.Publisher``
   starts and the time is from ``start()`` to every row acknowledged (``DeliveryState.acked``,
   checked against ``Store.outbox_depth()``) and to the subscriber holding every event. Inflight 1
   can run on a smaller backlog, ``--small-events`` (the output says so). Time inside ``Store.ack_many``
   and ``Store.pending`` is measured by wrapping them on the store; CPU time of the delivery
   thread, the broker and the subscriber is read from the kernel.
2. After reconnect (max_inflight 20): the publisher starts while the broker is down and backs off;
   the broker starts after its first refused connect; the time is from the broker's start to all
   acknowledged, with the part spent waiting for the publisher's backoff shown on its own. The
   subscriber's persistent session was made before the outage, so it misses nothing.

Every run is repeated ``--repeat`` times, the settings interleaved; medians are printed, and the
ratio to max_inflight=1 is taken within each round. Absolute rates depend on the machine, on what
else runs on it, and on the store's filesystem (every ack batch is one SQLite commit with
``synchronous=FULL``, one fsync): compare the ratios. ``--profile N`` adds one run at
max_inflight=N with cProfile on the delivery thread (its own time includes waiting in ``select``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import multiprocessing as mp
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import paho.mqtt.client as paho
from broker import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge import payload as wire
from edge.config import config_from_dict
from edge.mqtt import Publisher
from edge.store import Store
from edge.store.images import image_relpath
from edge.store.records import DetectionRecord, EventRecord, FrameRecord, OutboxMessage, new_uid

DEVICE = "trap-01"
MV = wire.model_id("a" * 64, "b" * 64)
LABELS = ["animal", "person", "vehicle"]
SPECIES = ["red fox", "roe deer", "red deer", "wild boar", "badger", "chamois", "alpine ibex", "brown hare"]
START = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
POLL_S = 0.005
TICK = os.sysconf("SC_CLK_TCK")


# -- the backlog -------------------------------------------------------------------------------------
def _detection(rng: random.Random) -> DetectionRecord:
    class_id = rng.choices((0, 1, 2), weights=(90, 7, 3))[0]
    x1, y1 = rng.uniform(0, 0.7), rng.uniform(0.2, 0.7)
    box = (x1, y1, min(1.0, x1 + rng.uniform(0.05, 0.3)), min(1.0, y1 + rng.uniform(0.05, 0.3)))
    species = rng.randrange(len(SPECIES))
    cls = (species, SPECIES[species], rng.uniform(0.5, 0.99)) if class_id == 0 else None
    return DetectionRecord(class_id, LABELS[class_id], rng.uniform(0.3, 0.98), box, cls)


def burst_records(rng: random.Random, *, at: datetime, mono: float, boot: str
                  ) -> tuple[list[FrameRecord], EventRecord]:
    """One motion burst of 1-3 frames with 1-3 detections each (most classified) and its event."""
    burst = new_uid()
    frames = []
    for index in range(rng.randint(1, 3)):
        uid = new_uid()
        when = at + timedelta(milliseconds=400 * index)
        frames.append(FrameRecord(uid, when, mono + 0.4 * index, boot, True, "motion", burst, index,
                                  1920, 1080, rng.uniform(60, 110), image_path=image_relpath(when, uid),
                                  detections=[_detection(rng) for _ in range(rng.randint(1, 3))]))
    best_frame, best = max(((f, d) for f in frames for d in f.detections), key=lambda fd: fd[1].score)
    counts: dict[int, int] = {}
    for det in best_frame.detections:
        counts[det.class_id] = counts.get(det.class_id, 0) + 1
    voters = [d.classification for f in frames for d in f.detections if d.classification is not None]
    top = max({c[0] for c in voters}, key=lambda c: sum(v[0] == c for v in voters)) if voters else None
    summary = {
        "frames": len(frames), "frames_with_detections": len(frames),
        "classes": [{"class_id": c, "label": LABELS[c], "count": n, "best_score": best.score,
                     "best_frame_uid": best_frame.uid, "new": None} for c, n in sorted(counts.items())],
        "best": {"frame_uid": best_frame.uid, "index": best_frame.burst_index, "class_id": best.class_id,
                 "label": best.label, "score": best.score, "box": list(best.box)},
        "classification": None if top is None else {
            "class_id": top, "label": SPECIES[top], "votes": sum(v[0] == top for v in voters),
            "voters": len(voters), "mean_prob": statistics.fmean(v[2] for v in voters), "tally": []},
    }
    event = EventRecord(new_uid(), burst, at, best_frame.monotonic, boot, True, "motion", best_frame.image_path,
                        best_frame.uid, summary)
    return frames, event


def make_burst(rng: random.Random, k: int) -> tuple[list[FrameRecord], EventRecord, OutboxMessage]:
    """The ``k``-th burst of the backlog, its event and its event message."""
    frames, event = burst_records(rng, at=START + timedelta(seconds=37 * k), mono=5000.0 + 37 * k,
                                  boot="5f1c9a3e-8d2b-4c7a-9e1f-0a2b3c4d5e6f")
    best = next(f for f in frames if f.uid == event.best_frame_uid)
    data = wire.encode_event(event, best, device=DEVICE, model_id=MV, image=best.image_path)
    return frames, event, OutboxMessage(wire.topics("wildedge", DEVICE).event, data, qos=1, event_uid=event.uid)


def queue_backlog(folder: Path, count: int) -> tuple[Path, float, int]:
    """A closed store holding ``count`` queued events; the seconds ``commit_burst`` took, payload bytes."""
    rng = random.Random(7)
    bursts = [make_burst(rng, k) for k in range(count)]
    db = folder / "wildedge.db"
    with Store(db, images_dir=folder / "images") as store:
        began = time.perf_counter()
        for frames, event, message in bursts:
            store.commit_burst(frames, event, [message])
        took = time.perf_counter() - began
        depth = store.outbox_depth()
    if depth.count != count:
        raise RuntimeError(f"queued {depth.count} messages, expected {count}")
    return db, took, depth.bytes


def copy_store(template: Path, folder: Path, keep: int) -> Store:
    """An open copy of the queued store with only its ``keep`` newest messages still queued."""
    folder.mkdir(parents=True)
    for suffix in ("", "-wal"):
        if Path(f"{template}{suffix}").exists():
            shutil.copyfile(f"{template}{suffix}", folder / f"wildedge.db{suffix}")
    store = Store(folder / "wildedge.db", images_dir=folder / "images")
    surplus = store.outbox_depth().count - keep
    if surplus > 0:  # the oldest count as delivered already: what a smaller backlog looks like
        store.ack_many([row.seq for row in store.pending(limit=surplus)])
    return store


# -- the server side -----------------------------------------------------------------------------------
def start_broker(folder: Path) -> Mosquitto:
    """A mosquitto configured like the tests' but without a log line per packet, and with no cap on
    the subscriber's queue (its default 1000 drops QoS 1 messages when the subscriber falls behind)."""
    broker = Mosquitto(folder, max_queued_messages=0)
    broker.conf.write_text(broker.conf.read_text().replace("log_type all", "log_type error\nlog_type warning"))
    return broker


def _subscriber(host: str, port: int, ready: Any, stop: Any, unique: Any, total: Any) -> None:
    """The collector (a child process): counts event messages, and distinct events, on a persistent session."""
    seen: set[bytes] = set()

    def on_connect(client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe("wildedge/#", qos=1)

    def on_message(_c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        if not message.topic.endswith("/event"):
            return
        key = bytes(message.payload)  # unique per event (it carries the event id); cheaper than parsing
        with total.get_lock():
            total.value += 1
            if key not in seen:
                seen.add(key)
                unique.value += 1

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="collector", protocol=paho.MQTTv5)
    client.reconnect_delay_set(0.05, 0.2)
    client.on_connect = on_connect
    client.on_subscribe = lambda *_args: ready.set()
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect_async(host, port, 30, clean_start=False, properties=props)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()


class Collector:
    """The subscriber process and its shared counters."""

    def __init__(self, broker: Mosquitto) -> None:
        ctx = mp.get_context("spawn")
        self.ready, self._stop = ctx.Event(), ctx.Event()
        self.unique, self.total = ctx.Value("q", 0), ctx.Value("q", 0)
        self.proc = ctx.Process(target=_subscriber, daemon=True, args=(
            broker.host, broker.port, self.ready, self._stop, self.unique, self.total))
        self.proc.start()
        if not self.ready.wait(20):
            self.close()
            raise RuntimeError("the subscriber did not subscribe within 20 s")

    def cpu_s(self) -> float:
        return cpu_seconds(self.proc.pid)

    def close(self) -> None:
        self._stop.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# -- measuring ------------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def broker_pid() -> int:
    """The mosquitto child of this process (there is one at a time)."""
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            if Path(f"/proc/{pid}/comm").read_text().strip() == "mosquitto":
                return int(pid)
    raise RuntimeError("no mosquitto child process")


class Timed:
    """Wraps a bound method; sums the wall time spent in it and counts calls and items."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self.method, self.seconds, self.calls, self.items = method, 0.0, 0, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return self.method(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - began
            self.calls += 1
            self.items += len(args[0]) if args else 0


class MeasuredPublisher(Publisher):
    """The real publisher; its delivery thread exposes its CPU clock and optionally runs under cProfile."""

    def __init__(self, *args: Any, profile: cProfile.Profile | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.profile = profile
        self.cpu_clock: int | None = None

    def _run(self) -> None:
        self.cpu_clock = time.pthread_getcpuclockid(threading.get_ident())
        if self.profile is None:
            super()._run()
            return
        self.profile.enable()
        try:
            super()._run()
        finally:
            self.profile.disable()

    def cpu_s(self) -> float:
        return time.clock_gettime(self.cpu_clock) if self.cpu_clock is not None else 0.0


def mqtt_cfg(url: str, inflight: int) -> Any:
    return config_from_dict({"device": {"id": DEVICE}, "camera": {"type": "folder", "path": "."},
                             "detector": {"model": "d.onnx"},
                             "mqtt": {"url": url, "max_inflight": inflight}}).mqtt


def wait_drained(pub: MeasuredPublisher, store: Store, sub: Collector, count: int, began: float,
                 timeout: float) -> tuple[float, float]:
    """Seconds from ``began`` to every row acked (outbox empty) and to the subscriber holding all."""
    acked_at = received_at = None
    deadline = began + timeout
    while acked_at is None or received_at is None:
        now = time.perf_counter()
        if now > deadline:
            raise RuntimeError(f"not drained in {timeout:.0f} s: {pub.state.acked}/{count} acked, "
                               f"{sub.unique.value}/{count} received; {pub.state.as_dict()}")
        if acked_at is None and pub.state.acked >= count and store.outbox_depth().count == 0:
            acked_at = now - began
        if received_at is None and sub.unique.value >= count:
            received_at = now - began
        time.sleep(POLL_S)
    return acked_at, received_at


def drain_run(template: Path, folder: Path, count: int, inflight: int, *, profile: bool) -> dict[str, Any]:
    """One backlog of ``count`` drained at ``max_inflight=inflight`` (part 1 of the docstring)."""
    store = copy_store(template, folder / "store", count)
    depth = store.outbox_depth()
    acks, reads = Timed(store.ack_many), Timed(store.pending)
    store.ack_many, store.pending = acks, reads  # type: ignore[method-assign]
    prof = cProfile.Profile() if profile else None
    broker = start_broker(folder / "broker").start()
    try:
        sub = Collector(broker)
        try:
            mosq = broker_pid()
            broker_cpu0, sub_cpu0 = cpu_seconds(mosq), sub.cpu_s()
            pub = MeasuredPublisher(mqtt_cfg(broker.url, inflight), device=DEVICE, store=store, profile=prof)
            began = time.perf_counter()
            pub.start()
            try:
                drained, received = wait_drained(pub, store, sub, count, began, timeout=max(120.0, count / 20))
                cpu = {"delivery_thread": pub.cpu_s(), "broker": cpu_seconds(mosq) - broker_cpu0,
                       "subscriber": sub.cpu_s() - sub_cpu0}
                state = pub.state.as_dict()
            finally:
                pub.stop()
            duplicates = sub.total.value - sub.unique.value
        finally:
            sub.close()
    finally:
        broker.stop()
        store.close()
    result = {
        "inflight": inflight, "messages": count, "payload_bytes": depth.bytes,
        "drained_s": round(drained, 4), "received_s": round(received, 4),
        "msgs_per_s": round(count / drained, 1), "bytes_per_s": round(depth.bytes / drained),
        "ack_many_s": round(acks.seconds, 4), "ack_share": round(acks.seconds / drained, 4),
        "ack_batches": acks.calls, "ack_batch_mean": round(acks.items / max(1, acks.calls), 2),
        "pending_s": round(reads.seconds, 4), "pending_share": round(reads.seconds / drained, 4),
        "pending_calls": reads.calls,
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "disconnects": state["disconnects"], "duplicates": duplicates,
    }
    if prof is not None:
        result["profile"] = profile_top(prof)
    return result


def reconnect_run(template: Path, folder: Path, count: int, inflight: int) -> dict[str, Any]:
    """The backlog drained after the broker comes back (part 2 of the docstring)."""
    store = copy_store(template, folder / "store", count)
    broker = start_broker(folder / "broker").start()
    sub = Collector(broker)  # its persistent session outlives the outage
    try:
        broker.stop()
        pub = MeasuredPublisher(mqtt_cfg(broker.url, inflight), device=DEVICE, store=store)
        pub.start()
        try:
            deadline = time.monotonic() + 20
            while not pub.state.errors:
                if time.monotonic() > deadline:
                    raise RuntimeError("the publisher never tried to connect")
                time.sleep(POLL_S)
            began = time.perf_counter()
            broker.start()
            while not pub.state.connected:
                if time.perf_counter() - began > 30:
                    raise RuntimeError(f"no reconnect in 30 s: {pub.state.as_dict()}")
                time.sleep(POLL_S)
            connected = time.perf_counter() - began
            drained, received = wait_drained(pub, store, sub, count, began, timeout=max(120.0, count / 20))
            retries = sum(pub.state.errors.values())
        finally:
            pub.stop()
    finally:
        sub.close()
        broker.stop()
        store.close()
    return {"inflight": inflight, "messages": count, "connected_s": round(connected, 4),
            "drained_s": round(drained, 4), "received_s": round(received, 4), "failed_connects": retries,
            "msgs_per_s_from_broker_start": round(count / drained, 1),
            "msgs_per_s_from_connect": round(count / (drained - connected), 1)}


def profile_top(prof: cProfile.Profile, limit: int = 15) -> list[dict[str, Any]]:
    """The delivery thread's functions with the most own time."""
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (path, line, name), (_cc, calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(path).name}:{line}({name})" if line else name
        rows.append({"function": where, "calls": calls, "own_s": round(own, 4), "cumulative_s": round(cumulative, 4)})
    rows.sort(key=lambda r: r["own_s"], reverse=True)
    return rows[:limit]


# -- main ------------------------------------------------------------------------------------------------
def _inflights(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of integers, got {text!r}") from None
    if not values or any(not 1 <= v <= 1000 for v in values):
        raise argparse.ArgumentTypeError(f"values must be within 1..1000, got {text!r}")
    return values


def _filesystem(path: Path) -> str:
    best = ("?", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        _dev, mount, kind, *_ = line.split()
        if str(path.resolve()).startswith(mount) and len(mount) >= len(best[1]):
            best = (kind, mount)
    return best[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000, help="backlog size")
    parser.add_argument("--inflight", type=_inflights, default=[1, 20, 100], help="max_inflight values, e.g. 1,20,100")
    parser.add_argument("--small-events", type=int,
                        help="a smaller backlog for max_inflight=1 (one commit per message: slow on SD cards); "
                             "default: --events")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every run; medians are printed")
    parser.add_argument("--profile", type=int, metavar="N",
                        help="one more run at max_inflight=N under cProfile (not in the medians)")
    parser.add_argument("--tmp", type=Path, help="folder for the stores and brokers (default: the system's temp)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.events < 1 or args.repeat < 1 or (args.small_events is not None and args.small_events < 1):
        parser.error("--events, --small-events and --repeat must be >= 1")
    small = args.events if args.small_events is None else min(args.events, args.small_events)
    # The publisher's expected warnings (connection refused while the broker is down) are noise here;
    # anything that breaks delivery shows up as a run that does not drain.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")

    results: dict[str, Any] = {"events": args.events, "cores": os.cpu_count(), "repeat": args.repeat}
    with tempfile.TemporaryDirectory(prefix="wildedge-drain-", dir=args.tmp) as tmp:
        folder = Path(tmp)
        results["filesystem"] = _filesystem(folder)
        template, queue_s, payload = queue_backlog(folder / "template", args.events)
        results["queue"] = {"events": args.events, "seconds": round(queue_s, 3),
                            "events_per_s": round(args.events / queue_s, 1),
                            "payload_bytes_mean": round(payload / args.events, 1)}
        # Rounds interleave the settings, so a burst of load from elsewhere hits all of them alike.
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.inflight}
        reconnects = []
        for round_ in range(args.repeat):
            for inflight in args.inflight:
                count = small if inflight == 1 else args.events
                runs[inflight].append(drain_run(template, folder / f"run-{round_}-{inflight}", count, inflight,
                                                profile=False))
            reconnects.append(reconnect_run(template, folder / f"reconnect-{round_}", args.events, 20))
        if args.profile is not None:
            results["profile"] = drain_run(template, folder / "profile", args.events, args.profile, profile=True)

    results["drain"] = [summarise(inflight, rounds, runs.get(1)) for inflight, rounds in runs.items()]
    results["reconnect"] = {**{k: _median(r[k] for r in reconnects) for k in reconnects[0]}, "runs": reconnects}
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _median(values: Iterator[float] | list[float]) -> float:
    return round(statistics.median(values), 4)


def summarise(inflight: int, rounds: list[dict[str, Any]], base: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Medians over the rounds; the ratio to max_inflight=1 is taken within each round, then its median."""
    keys = ("messages", "msgs_per_s", "bytes_per_s", "ack_share", "ack_batch_mean", "pending_share",
            "drained_s", "received_s")
    out: dict[str, Any] = {"inflight": inflight, **{k: _median(r[k] for r in rounds) for k in keys}}
    out["msgs_per_s_range"] = [min(r["msgs_per_s"] for r in rounds), max(r["msgs_per_s"] for r in rounds)]
    out["ratio_to_inflight_1"] = _median(
        r["msgs_per_s"] / b["msgs_per_s"] for r, b in zip(rounds, base)) if base else None
    out["cpu_us_per_msg"] = {k: round(1e6 * statistics.median(r["cpu_s"][k] / r["messages"] for r in rounds))
                             for k in rounds[0]["cpu_s"]}
    out["disconnects"] = sum(r["disconnects"] for r in rounds)
    out["duplicates"] = sum(r["duplicates"] for r in rounds)
    out["runs"] = rounds
    return out


def report(results: dict[str, Any]) -> str:
    queue = results["queue"]
    lines = [
        (f"MQTT outbox drain, {results['events']} events, store on {results['filesystem']}, "
         f"{results['cores']} cores, medians of {results['repeat']} rounds (compare ratios, not absolute rates)"),
        (f"  queueing (commit_burst, one transaction per burst): {queue['events_per_s']:.0f} events/s, "
         f"mean event payload {queue['payload_bytes_mean']:.0f} B"),
        "",
        ("  inflight  messages  msg/s (min..max)      x inflight=1   KB/s  in ack_many (mean batch)  "
         "in pending   CPU us/msg: delivery/broker/subscriber"),
    ]
    for run in results["drain"]:
        ratio = f"{run['ratio_to_inflight_1']:.2f}x" if run["ratio_to_inflight_1"] is not None else "-"
        low, high = run["msgs_per_s_range"]
        cpu = run["cpu_us_per_msg"]
        lines.append(
            f"  {run['inflight']:>8} {run['messages']:>9.0f} {run['msgs_per_s']:>6.0f} ({low:>5.0f}..{high:<5.0f})"
            f" {ratio:>14} {run['bytes_per_s'] / 1000:>6.0f} {100 * run['ack_share']:>10.1f} % "
            f"({run['ack_batch_mean']:>5.1f}) {100 * run['pending_share']:>15.1f} %   "
            f"{cpu['delivery_thread']:>4}/{cpu['broker']}/{cpu['subscriber']}")
    base = next((r for r in results["drain"] if r["inflight"] == 1), None)
    if base is not None and base["messages"] < results["events"]:
        lines.append(f"  (inflight=1 drained a backlog of {base['messages']:.0f} only: --small-events)")
    if any(r["disconnects"] or r["duplicates"] for r in results["drain"]):
        lines.append("  disconnects/duplicates: " + ", ".join(
            f"inflight {r['inflight']}: {r['disconnects']}/{r['duplicates']}" for r in results["drain"]))
    rec = results["reconnect"]
    lines += ["", (f"  after reconnect (inflight 20, {rec['messages']:.0f} messages): broker start -> connected "
                   f"{rec['connected_s']:.2f} s (publisher backoff) -> drained {rec['drained_s']:.2f} s: "
                   f"{rec['msgs_per_s_from_broker_start']:.0f} msg/s from broker start, "
                   f"{rec['msgs_per_s_from_connect']:.0f} msg/s from connect; "
                   f"subscriber complete {rec['received_s']:.2f} s")]
    if "profile" in results:
        prof = results["profile"]
        lines += ["", (f"  cProfile of the delivery thread, one run at inflight {prof['inflight']} "
                       f"({prof['msgs_per_s']:.0f} msg/s under the profiler), by own time:")]
        lines += [f"    {p['own_s']:>7.3f} s own {p['cumulative_s']:>7.3f} s cum {p['calls']:>7} calls  "
                  f"{p['function']}" for p in prof["profile"]]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""Collector throughput: events/s stored from a broker backlog by `wildedge collect run` (not a test).

Usage: .venv/bin/python benchmarks/collector.py [--devices 50] [--events 20000] [--repeat 3]
       [--profile] [--tmp DIR] [--json collector.json]

The backlog: ``--events`` event messages from ``--devices`` simulated traps (motion bursts of 1-3
frames with 1-3 detections each, most classified, encoded with the v1 wire format), in time order
across the devices, with one model message per device first and a health or an effort message after
every 20th event of a device (about 5 %). It is made once and replayed by every run.

One run, for each of SQLite, PostgreSQL with one collector and PostgreSQL with two collectors in one
``--share`` group: a fresh mosquitto on 127.0.0.1 (tests/broker.py, sessions persisted, no per-message
log, no cap on a session's queue) and a fresh database; the collector process(es) start once, so
their persistent sessions and subscriptions exist, and stop (SIGTERM); the whole backlog is
published at QoS 1 and waits in their offline sessions (a share group's queue is split between its
sessions round-robin); then the collectors start again. Timed from that start: the first event in
the database (startup: interpreter, imports, connect) and every event in it (``SELECT count(*)
FROM events``, polled every 50 ms). The sustained rate counts from the first event on, so it leaves
startup out. CPU seconds of each collector process (and of mosquitto, and of PostgreSQL's
backends) are read from /proc over that same sustained part.

Afterwards every run is checked: the events table holds exactly the generated event ids, and the
health and effort tables every health and effort message, each once.

The rounds interleave the three setups, so load from elsewhere hits all of them alike; medians are
printed, and the ratio to SQLite is taken within each round. SQLite commits with
``synchronous=FULL`` (an fsync per batch) on the filesystem of ``--tmp``; the PostgreSQL cluster is
tests/pg.py's, which runs with fsync=off, synchronous_commit=off and full_page_writes=off and has no
way to override them, so its figures are an upper bound for a durable server: compare ratios, and
read the PostgreSQL ones as "the collector's own cost". ``--profile`` adds one SQLite and one
PostgreSQL run with the collector under cProfile (its main thread: the store loop; paho's network
thread is not in it), printed by own time.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import paho.mqtt.client as paho
from broker import Mosquitto
from mqtt_drain import LABELS, SPECIES, _median, burst_records
from paho.mqtt.enums import CallbackAPIVersion
from pg import PostgresCluster, find_bindir

from edge import payload as wire
from edge.store.records import new_uid

WILDEDGE = str(Path(sys.executable).with_name("wildedge"))
DETECTOR = wire.ModelInfo("md_v5a.0.0.onnx", "ef07334231bdbf727bb5ad1c8f6e30b1a435e2407ebac9bc547fe3915357e940",
                          LABELS, 0.2, 0.45)
CLASSIFIER = wire.ModelInfo("species.onnx", "7245855c803660a7b841fb6cca298826c604d53dcc7f18355f0e6fe24eca76b5",
                            SPECIES, 0.5)
MV = wire.model_id(DETECTOR.sha256, CLASSIFIER.sha256)
START = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
POLL_S = 0.05
TICK = os.sysconf("SC_CLK_TCK")
SETUPS = (("sqlite", 1), ("postgresql", 1), ("postgresql", 2))


# -- the backlog -------------------------------------------------------------------------------------
@dataclass
class Backlog:
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    event_ids: set[str] = field(default_factory=set)
    health: int = 0
    effort: int = 0

    @property
    def bytes(self) -> int:
        return sum(len(p) for _, p in self.messages)


def _event(rng: random.Random, device: str, boot: str, at: datetime, mono: float) -> tuple[str, bytes]:
    """One motion burst's event message (benchmarks/mqtt_drain.py's bursts); (event id, payload)."""
    frames, event = burst_records(rng, at=at, mono=mono, boot=boot)
    best = next(f for f in frames if f.uid == event.best_frame_uid)
    return event.uid, wire.encode_event(event, best, device=device, model_id=MV, image=best.image_path)


def _health(device: str, boot: str, at: datetime, mono: float, rng: random.Random) -> bytes:
    snapshot = {"at": at.timestamp(), "clock_synchronised": True, "boot_id": boot, "monotonic_s": mono,
                "uptime_s": mono, "cpu_temp_c": rng.uniform(35, 70), "load_avg": [rng.uniform(0, 2)] * 3,
                "mem_total_bytes": 4 << 30, "mem_available_bytes": rng.randint(1, 3) << 30,
                "disk_total_bytes": 59392 << 20, "disk_free_bytes": rng.randint(20000, 50000) << 20,
                "queue_depth": rng.randint(0, 50), "queue_bytes": rng.randint(0, 20000), "inference_ms": 83.4,
                "camera": {"state": "ok", "failures": 0, "reopened": 0}, "disk_low": False,
                "counts": {"frames": int(mono), "events": int(mono) // 40, "failures": 0, "triggers": int(mono) // 9}}
    return wire.encode_health(snapshot, device=device)


def make_backlog(devices: int, events: int, seed: int = 7) -> Backlog:
    """``events`` event messages spread over ``devices`` traps, in time order, plus state messages."""
    rng = random.Random(seed)
    names = [f"trap-{i:03d}" for i in range(1, devices + 1)]
    boots = {d: str(new_uid()) for d in names}
    out = Backlog()
    for device in names:
        model = wire.encode_model(device=device, detector=DETECTOR, classifier=CLASSIFIER, at=START,
                                  clock_synced=True)
        out.messages.append((f"wildedge/{device}/model", model))
    done = dict.fromkeys(names, 0)
    for k in range(events):
        device = names[k % devices] if k < devices else rng.choice(names)
        n = done[device] = done[device] + 1
        at, mono = START + timedelta(seconds=11 * k), 500.0 + 11 * k
        uid, payload = _event(rng, device, boots[device], at, mono)
        out.messages.append((f"wildedge/{device}/event", payload))
        out.event_ids.add(uid)
        if n % 40 == 20:
            out.messages.append((f"wildedge/{device}/health", _health(device, boots[device], at, mono + 1, rng)))
            out.health += 1
        elif n % 40 == 0:
            period = {"motion": (n, 0, n, 0), "timelapse": (12, 11, 1, 0)}
            out.messages.append((f"wildedge/{device}/effort", wire.encode_effort(
                device=device, uid=new_uid(), start=at - timedelta(hours=1), end=at, clock_synced=True,
                boot_id=boots[device], monotonic=mono + 1, counts=period)))
            out.effort += 1
    return out


def publish(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> float:
    """Publish everything at QoS 1 and wait for every PUBACK; the seconds it took."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-devices", protocol=paho.MQTTv5)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port, 60)
    client.loop_start()
    try:
        began = time.perf_counter()
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(120)
            if not info.is_published():
                raise RuntimeError(f"a message was not acknowledged by the broker: {info.rc}")
        return time.perf_counter() - began
    finally:
        client.disconnect()
        client.loop_stop()


# -- processes -----------------------------------------------------------------------------------------
def start_broker(folder: Path) -> Mosquitto:
    """mqtt_drain.py's broker (no per-message log, no cap on a session's queue), logging subscriptions."""
    broker = Mosquitto(folder, max_queued_messages=0)
    broker.conf.write_text(broker.conf.read_text().replace(
        "log_type all", "log_type error\nlog_type warning\nlog_type subscribe"))
    return broker.start()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (PostgreSQL's backends and workers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (OSError, IndexError):
            pass  # ended since
    return total


@contextmanager
def collectors(n: int, db_url: str, broker: Mosquitto, folder: Path, tag: str,
               profile: Path | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` collector processes (a share group when n > 1), stopped with SIGTERM on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    share = ["--share", "bench"] if n > 1 else []
    try:
        for i in range(n):
            head = [WILDEDGE] if profile is None else [sys.executable, "-m", "cProfile", "-o",
                                                       str(profile.with_suffix(f".{i}.prof")), WILDEDGE]
            with open(folder / f"collector-{i}.log", "ab") as log:
                procs.append(subprocess.Popen(
                    [*head, "collect", "run", "--broker", broker.url, "--db", db_url, "--client-id",
                     f"bench-collector-{i}", *share], stdout=log, stderr=log, stdin=subprocess.DEVNULL))
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for i, proc in enumerate(procs):
            try:
                code = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code != 0 and not sys.exc_info()[0]:
                raise RuntimeError(f"{tag}: collector {i} exited with {code}:\n"
                                   + (folder / f"collector-{i}.log").read_text(errors="replace")[-2000:])


def wait_subscribed(broker: Mosquitto, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """Until the broker has logged each collector's last subscription (they are in the sessions then)."""
    deadline = time.monotonic() + timeout
    wanted = [f"bench-collector-{i} 1 wildedge/+/model" for i in range(len(procs))]
    while not all(w in broker.log() for w in wanted):
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError(f"the collectors did not subscribe:\n{broker.log()[-2000:]}")
        time.sleep(0.05)


# -- databases -----------------------------------------------------------------------------------------
class Sqlite:
    name = "sqlite"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def fresh(self, tag: str) -> tuple[str, Callable[[str], int]]:
        import sqlite3

        path = self.folder / f"{tag}.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(f"file:{path}?mode=rwc", uri=True, isolation_level=None, timeout=30)

        def query(sql: str) -> Any:
            try:
                return conn.execute(sql).fetchall()
            except sqlite3.OperationalError:
                return None  # not migrated yet

        return f"sqlite:///{path}", query


class Postgres:
    name = "postgresql"

    def __init__(self, cluster: PostgresCluster) -> None:
        self.cluster = cluster

    def fresh(self, tag: str) -> tuple[str, Callable[[str], Any]]:
        import psycopg

        name = self.cluster.create_database()
        conn = psycopg.connect(host=str(self.cluster.socket_dir), user="wildedge", dbname=name, autocommit=True)
        self.own_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]

        def query(sql: str) -> Any:
            try:
                return conn.execute(sql).fetchall()  # type: ignore[arg-type]
            except psycopg.errors.UndefinedTable:
                return None

        return self.cluster.url(name), query

    def backend_pids(self) -> list[int]:
        """The postmaster's children but the benchmark's own polling backend."""
        pids = children(self.cluster._proc.pid) if self.cluster._proc is not None else []
        return [p for p in pids if p != self.own_pid]


#: Collector backends of this database waiting for a lock (the clock advisory locks, or a row's insert).
LOCK_WAITS = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
              "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")


# -- one run -------------------------------------------------------------------------------------------
def run_once(db: Sqlite | Postgres, n: int, backlog: Backlog, folder: Path, tag: str,
             profile: bool = False) -> dict[str, Any]:
    """One replay of ``backlog`` into a fresh database by ``n`` collectors (the module docstring)."""
    folder.mkdir(parents=True)
    url, query = db.fresh(tag)
    broker = start_broker(folder / "broker")
    try:
        with collectors(n, url, broker, folder, tag) as procs:
            wait_subscribed(broker, procs)
        publish_s = publish(broker, backlog.messages)
        total = len(backlog.event_ids)
        prof = folder / "collector" if profile else None
        with collectors(n, url, broker, folder, tag, profile=prof) as procs:
            began = time.perf_counter()
            first = stored = 0
            first_at = None
            samples = waiting = 0
            deadline = began + max(300.0, total / 20)
            while True:
                now = time.perf_counter()
                stored = (query("SELECT count(*) FROM events") or [(0,)])[0][0]
                if first_at is None and stored:
                    first_at, first = now, stored
                    cpu0 = [cpu_seconds(p.pid) for p in procs]
                    broker_cpu0 = cpu_seconds(broker._proc.pid)
                    db_cpu0 = tree_cpu(db.backend_pids()) if isinstance(db, Postgres) else 0.0
                if stored >= total:
                    break
                if first_at is not None and isinstance(db, Postgres):
                    samples += 1
                    waiting += query(LOCK_WAITS)[0][0] > 0
                if now > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"{tag}: {stored}/{total} events stored after {now - began:.0f} s")
                time.sleep(POLL_S)
            cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0)]
            broker_cpu = cpu_seconds(broker._proc.pid) - broker_cpu0
            db_cpu = tree_cpu(db.backend_pids()) - db_cpu0 if isinstance(db, Postgres) else 0.0
        check(query, backlog, tag)
    finally:
        broker.stop()
    sustained = now - first_at
    result = {"backend": db.name, "collectors": n, "events": total, "publish_s": round(publish_s, 3),
              "first_event_s": round(first_at - began, 3), "total_s": round(now - began, 3),
              "sustained_s": round(sustained, 3),
              "events_per_s": round((total - first) / sustained, 1) if sustained > 0 else None,
              "cpu_s": [round(c, 3) for c in cpu], "broker_cpu_s": round(broker_cpu, 3),
              "db_cpu_s": round(db_cpu, 3) if isinstance(db, Postgres) else None,
              "lock_wait_share": round(waiting / samples, 3) if samples else None}
    if profile:
        result["profile"] = profile_top([folder / f"collector.{i}.prof" for i in range(n)])
    return result


def check(query: Callable[[str], Any], backlog: Backlog, tag: str) -> None:
    """Every event id stored once, nothing else; every health and effort message stored once."""
    ids = [str(r[0]) for r in query("SELECT id FROM events")]
    if len(ids) != len(set(ids)) or set(ids) != backlog.event_ids:
        raise RuntimeError(f"{tag}: {len(ids)} event rows, {len(set(ids))} distinct, "
                           f"{len(set(ids) & backlog.event_ids)} of the {len(backlog.event_ids)} generated")
    for table, want in (("health", backlog.health), ("effort", backlog.effort)):
        got = query(f"SELECT count(*) FROM {table}")[0][0]
        if got != want:
            raise RuntimeError(f"{tag}: {got} {table} rows, expected {want}")
    rejects = query("SELECT count(*) FROM rejects")[0][0]
    if rejects:
        raise RuntimeError(f"{tag}: {rejects} messages rejected: {query('SELECT reason, detail FROM rejects')[:3]}")


def profile_top(files: list[Path], limit: int = 18) -> list[dict[str, Any]]:
    """The collector's functions with the most own time (its main thread), with their cumulative time."""
    stats = pstats.Stats(*(str(f) for f in files if f.exists()))
    rows = []
    for (path, line, name), (_cc, calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(path).parent.name}/{Path(path).name}:{line}({name})" if line else name
        rows.append({"function": where, "calls": calls, "own_s": round(own, 3), "cumulative_s": round(cumulative, 3)})
    own = sorted(rows, key=lambda r: r["own_s"], reverse=True)[:limit]
    ours = [r for r in rows if any(k in r["function"] for k in ("collector/", "edge/", "jsonschema/validators"))]
    return own + [r for r in sorted(ours, key=lambda r: r["cumulative_s"], reverse=True)[:limit] if r not in own]


# -- main ----------------------------------------------------------------------------------------------
def _filesystem(path: Path) -> str:
    best = ("?", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        _dev, mount, kind, *_ = line.split()
        if str(path.resolve()).startswith(mount) and len(mount) >= len(best[1]):
            best = (kind, mount)
    return best[0]


def _interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=50, help="simulated traps")
    parser.add_argument("--events", type=int, default=20_000, help="event messages in the backlog")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every setup; medians are printed")
    parser.add_argument("--profile", action="store_true",
                        help="one more SQLite and PostgreSQL run with the collector under cProfile (not in the medians)")
    parser.add_argument("--tmp", type=Path, help="folder for the databases and brokers (default: the system's temp)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.devices < 1 or args.events < args.devices or args.repeat < 1:
        parser.error("--devices and --repeat must be >= 1, --events >= --devices")
    signal.signal(signal.SIGTERM, _interrupt)  # cleanup as on Ctrl-C

    backlog = make_backlog(args.devices, args.events)
    results: dict[str, Any] = {
        "devices": args.devices, "events": len(backlog.event_ids), "messages": len(backlog.messages),
        "health": backlog.health, "effort": backlog.effort, "payload_bytes": backlog.bytes,
        "cores": os.cpu_count(), "repeat": args.repeat, "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, check=False).stdout.strip()}
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wildedge-collector-", dir=args.tmp)))
        results["filesystem"] = _filesystem(tmp)
        dbs: dict[str, Sqlite | Postgres] = {"sqlite": Sqlite(tmp / "sqlite")}
        bindir = find_bindir()
        if bindir is None:
            print("PostgreSQL is not installed (initdb/postgres not found): SQLite only", file=sys.stderr)
        else:
            dbs["postgresql"] = Postgres(stack.enter_context(PostgresCluster(bindir)))
            results["postgresql"] = {"bindir": str(bindir), "fsync": "off", "synchronous_commit": "off"}
        setups = [s for s in SETUPS if s[0] in dbs]
        for round_ in range(args.repeat):
            for backend, n in setups:
                tag = f"{backend}-x{n}-r{round_}"
                runs.setdefault((backend, n), []).append(run_once(dbs[backend], n, backlog, tmp / tag, tag))
                print(f"  {tag}: {runs[(backend, n)][-1]['events_per_s']:.0f} events/s", file=sys.stderr, flush=True)
        if args.profile:
            results["profile"] = [run_once(dbs[b], 1, backlog, tmp / f"profile-{b}", f"profile-{b}", profile=True)
                                  for b in dbs]
    results["runs"] = [summarise(backend, n, rounds, runs[("sqlite", 1)]) for (backend, n), rounds in runs.items()]
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def summarise(backend: str, n: int, rounds: list[dict[str, Any]], base: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds; the ratio to SQLite x1 is taken within each round, then its median."""
    keys = ("events", "publish_s", "first_event_s", "total_s", "sustained_s", "events_per_s")
    out: dict[str, Any] = {"backend": backend, "collectors": n, **{k: _median(r[k] for r in rounds) for k in keys}}
    out["events_per_s_range"] = [min(r["events_per_s"] for r in rounds), max(r["events_per_s"] for r in rounds)]
    out["ratio_to_sqlite_1"] = _median(r["events_per_s"] / b["events_per_s"] for r, b in zip(rounds, base))
    per_k = [[1000 * c / (r["events"] / n) for c in r["cpu_s"]] for r in rounds]  # each collector ~1/n of them
    out["cpu_s_per_1000"] = [round(statistics.median(p[i] for p in per_k), 3) for i in range(n)]
    out["broker_cpu_s_per_1000"] = round(statistics.median(1000 * r["broker_cpu_s"] / r["events"] for r in rounds), 3)
    if rounds[0]["db_cpu_s"] is not None:
        out["db_cpu_s_per_1000"] = round(statistics.median(1000 * r["db_cpu_s"] / r["events"] for r in rounds), 3)
        out["lock_wait_share"] = _median(r["lock_wait_share"] or 0.0 for r in rounds)
    out["runs"] = rounds
    return out


def report(results: dict[str, Any]) -> str:
    lines = [
        (f"Collector replay of a broker backlog: {results['events']} events from {results['devices']} devices "
         f"({results['messages']} messages: + {results['health']} health, {results['effort']} effort, "
         f"{results['devices']} model; {results['payload_bytes'] / results['messages']:.0f} B mean), "
         f"{results['cores']} cores, temp on {results['filesystem']}, {results['date']}, at {results['commit']}, "
         f"medians of {results['repeat']} rounds (compare ratios, not absolute rates)"),
        "",
        ("  backend     collectors  events  startup s  sustained s  events/s (min..max)   x SQLite x1  "
         "CPU s/1000 ev: collector(s) | broker | PG backends   lock waits"),
    ]
    for run in results["runs"]:
        low, high = run["events_per_s_range"]
        cpu = "+".join(f"{c:.2f}" for c in run["cpu_s_per_1000"])
        db_cpu = f"{run['db_cpu_s_per_1000']:.2f}" if "db_cpu_s_per_1000" in run else "-"
        locks = f"{100 * run['lock_wait_share']:.0f} %" if "lock_wait_share" in run else "-"
        lines.append(
            f"  {run['backend']:<11} {run['collectors']:>10} {run['events']:>7.0f} {run['first_event_s']:>10.2f} "
            f"{run['sustained_s']:>12.2f} {run['events_per_s']:>9.0f} ({low:>5.0f}..{high:<5.0f}) "
            f"{run['ratio_to_sqlite_1']:>12.2f}x  {cpu:>11} | {run['broker_cpu_s_per_1000']:.2f} | {db_cpu:>4}"
            f" {locks:>12}")
    lines += ["", ("  startup: collector start -> first batch committed (interpreter, imports, connect, and storing "
                   "a first batch of up to 1000 messages);"),
              ("  sustained: first batch -> all stored, events/s over it (the first batch's events left out); "
               "CPU over it, per 1000 events each collector stored (~1/n);"),
              "  lock waits: share of polls in which a collector's PostgreSQL backend waited for a lock"]
    if "postgresql" in results:
        lines.append("  PostgreSQL: tests/pg.py's throwaway cluster on a Unix socket with fsync=off, "
                     "synchronous_commit=off, full_page_writes=off (not overridable): no disk flush per commit")
    else:
        lines.append("  PostgreSQL: not installed, skipped")
    lines.append("  SQLite: WAL, synchronous=FULL (one fsync per batch commit)")
    for prof in results.get("profile", []):
        lines += ["", (f"  cProfile of the collector's main thread, {prof['backend']} x1 "
                       f"({prof['events_per_s']:.0f} events/s under the profiler), by own time, then ours by cumulative:")]
        lines += [f"    {p['own_s']:>7.3f} s own {p['cumulative_s']:>7.3f} s cum {p['calls']:>8} calls  {p['function']}"
                  for p in prof["profile"]]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

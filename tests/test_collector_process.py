"""The collector's acceptance stream: two daemons over real photos, a real mosquitto, a collector
SIGKILLed and restarted, the broker restarted, a daemon SIGKILLed: every event stored exactly once.

On SQLite with one collector; on PostgreSQL with two collector processes in one MQTT share group.
The devices set ``require_subscriber``: mosquitto 2.0.11 does not restore shared subscriptions of
offline sessions after a restart, so without it the events published before the first collector
resubscribes are acknowledged to the device and given to nobody (34 of 213 in one run).
"""

from __future__ import annotations

import itertools
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy
from collector_helpers import collector_process
from daemon_helpers import WILDEDGE, copy_photos, frame_count, run_and_kill, wait_until
from mqtt_helpers import daemon_config

from edge.daemon import state_paths
from edge.store import Store


def _device(tmp_path: Path, name: str, *, model: Path, photos: Path, url: str,
            location: tuple[float, float] | None = None) -> tuple[Path, Path]:
    """A daemon config for device ``name`` in its own folder (sending ``location`` when given);
    (config, store database)."""
    folder = tmp_path / name
    folder.mkdir()
    mqtt = 'effort_interval = "5s"\nrequire_subscriber = true\n'
    device = f'id = "{name}"'
    if location is not None:
        mqtt += "send_location = true\n"
        device += f"\nlatitude = {location[0]}\nlongitude = {location[1]}"
    cfg = daemon_config(folder, model=model, photos=photos, url=url, mqtt_extra=mqtt)
    cfg.write_text(cfg.read_text().replace('id = "trap-01"', device))
    return cfg, state_paths(folder / "state")[0]


def _expected(db: Path) -> dict[str, int]:
    """Event id -> number of detections in its best frame, from a device's own store."""
    with Store(db, images_dir=db.parent / "images") as store:
        assert store.outbox_depth().count == 0
        best = {f.uid: len(f.detections) for f in store.frames()}
        return {e.uid: best[e.best_frame_uid] for e in store.events()}


class Central:
    """Reads the collector database, whichever dialect, while collectors write it."""

    def __init__(self, url: str) -> None:
        self.engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))

    def rows(self, sql: str) -> list[tuple]:
        try:
            with self.engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sqlalchemy.text(sql))]
        except sqlalchemy.exc.SQLAlchemyError:
            return []  # not created or migrated yet

    def count(self) -> int:
        found = self.rows("SELECT count(*) FROM events")
        return found[0][0] if found else 0


@pytest.mark.assets
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_event_stored_exactly_once_through_kills_and_restarts(backend, request, tmp_path, assets, stamped,
                                                                     broker_factory):
    broker = broker_factory(autosave_interval=1)
    if backend == "sqlite":
        url, group, ids = f"sqlite:///{tmp_path / 'collector.db'}", [], ["collector-1"]
    else:
        url, group, ids = request.getfixturevalue("pg_url"), ["--share", "collectors"], ["collector-1", "collector-2"]
    central = Central(url)
    photos_a, photos_b = tmp_path / "photos_a", tmp_path / "photos_b"
    count_a = copy_photos(assets, photos_a, copies=2)
    copy_photos(assets, photos_b)
    cfg_a, db_a = _device(tmp_path, "trap-a", model=stamped["fastestdet"], photos=photos_a, url=broker.url,
                          location=(46.5, 8.25))
    cfg_b, db_b = _device(tmp_path, "trap-b", model=stamped["fastestdet"], photos=photos_b, url=broker.url)
    logs = {cid: tmp_path / f"{cid}.log" for cid in ids}
    collectors = {cid: collector_process(url, broker.url, *group, client_id=cid, log=logs[cid]) for cid in ids}
    wait_until(lambda: central.rows("SELECT version FROM schema_version"), 30)
    wait_until(lambda: all(log.exists() and "connected to" in log.read_text() for log in logs.values()), 30)
    time.sleep(0.5)  # subscribed: the broker keeps their sessions from here on
    rng = random.Random(11)
    device_b = subprocess.Popen([*WILDEDGE, "run", "--config", str(cfg_b), "--once"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    victims = itertools.cycle(ids)

    def kill_collector() -> None:
        cid = next(victims)
        wait_until(lambda: central.count() > 0, 60)
        collectors[cid].send_signal(signal.SIGKILL)
        collectors[cid].wait(10)
        time.sleep(rng.uniform(0.2, 1.0))
        collectors[cid] = collector_process(url, broker.url, *group, client_id=cid, log=logs[cid])

    def restart_broker() -> None:
        broker.stop()
        time.sleep(rng.uniform(0.2, 1.0))
        broker.start()

    try:
        kills = 0
        for round_ in range(6):
            if frame_count(db_a) == count_a:
                break
            meanwhile = (kill_collector, restart_broker, kill_collector, None)[round_ % 4]
            kills += run_and_kill(cfg_a, db_a, rng, max_delay=0.8, meanwhile=meanwhile)
        assert kills >= 2
        done = subprocess.run([*WILDEDGE, "run", "--config", str(cfg_a), "--once"], capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        assert device_b.wait(300) == 0
        expected = {**_expected(db_a), **_expected(db_b)}
        assert len(expected) > count_a // 2 + 36  # both devices saw animals in most photos
        try:
            wait_until(lambda: central.count() >= len(expected), 60)
        except AssertionError:
            have = {r[0] for r in central.rows("SELECT id FROM events")}
            missing = sorted(set(expected) - have)
            raise AssertionError(f"{len(missing)} of {len(expected)} events missing: {missing[:5]}") from None
        time.sleep(1.0)  # anything resent late would show up as an extra row now
        stored = dict(central.rows("SELECT e.id, count(d.idx) FROM events e LEFT JOIN detections d "
                                   "ON d.event_id = e.id GROUP BY e.id"))
        assert stored == expected  # each event exactly once, with its detections
        assert {r[0] for r in central.rows("SELECT DISTINCT device FROM events")} == {"trap-a", "trap-b"}
        assert central.rows("SELECT count(*) FROM rejects") == [(0,)], central.rows("SELECT * FROM rejects")
        assert central.rows("SELECT count(*) FROM models") == [(2,)]
        assert central.rows("SELECT count(*) FROM effort")[0][0] > 0
        states = dict(central.rows("SELECT device, state FROM devices"))
        assert states["trap-a"] == "stopped"  # its last run ended with the broker up
        # trap-b's one run may end while the broker restarts: then its goodbye cannot go out and the
        # broker's Last Will for it ("offline") is the last word, as it should be.
        assert states["trap-b"] in ("stopped", "offline")
        assert central.rows("SELECT device, latitude_e6, longitude_e6 FROM devices ORDER BY device") == [
            ("trap-a", 46_500_000, 8_250_000), ("trap-b", None, None)]
    finally:
        if device_b.poll() is None:
            device_b.kill()
        for cid, proc in collectors.items():
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, logs[cid].read_text()[-3000:]
        central.engine.dispose()
    if len(ids) > 1:  # the share group split the stream: every collector stored events
        for cid, log in logs.items():
            stored = [int(n) for n in re.findall(r"stopped: stored (\d+)", log.read_text())]
            assert sum(stored) > 0, f"{cid} stored nothing: {log.read_text()[-2000:]}"

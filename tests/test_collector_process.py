"""The collector's acceptance stream: two daemons over real photos, a real mosquitto, the collector
SIGKILLed and restarted, the broker restarted, a daemon SIGKILLed: every event stored exactly once."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from collector_helpers import collector_process, event_ids, rows
from daemon_helpers import WILDEDGE, copy_photos, frame_count, run_and_kill, wait_until
from mqtt_helpers import daemon_config

from edge.daemon import state_paths
from edge.store import Store

pytest.importorskip("sqlalchemy")


def _device(tmp_path: Path, name: str, *, model: Path, photos: Path, url: str) -> tuple[Path, Path]:
    """A daemon config for device ``name`` in its own folder; (config, store database)."""
    folder = tmp_path / name
    folder.mkdir()
    cfg = daemon_config(folder, model=model, photos=photos, url=url,
                        mqtt_extra='effort_interval = "5s"')
    cfg.write_text(cfg.read_text().replace('id = "trap-01"', f'id = "{name}"'))
    return cfg, state_paths(folder / "state")[0]


def _expected(db: Path) -> dict[str, int]:
    """Event id -> number of detections in its best frame, from a device's own store."""
    with Store(db, images_dir=db.parent / "images") as store:
        assert store.outbox_depth().count == 0
        best = {f.uid: len(f.detections) for f in store.frames()}
        return {e.uid: best[e.best_frame_uid] for e in store.events()}


@pytest.mark.assets
@pytest.mark.slow
def test_every_event_stored_exactly_once_through_kills_and_restarts(tmp_path, assets, stamped, broker_factory):
    broker = broker_factory(autosave_interval=1)
    photos_a, photos_b = tmp_path / "photos_a", tmp_path / "photos_b"
    count_a = copy_photos(assets, photos_a, copies=2)
    copy_photos(assets, photos_b)
    cfg_a, db_a = _device(tmp_path, "trap-a", model=stamped["fastestdet"], photos=photos_a, url=broker.url)
    cfg_b, db_b = _device(tmp_path, "trap-b", model=stamped["fastestdet"], photos=photos_b, url=broker.url)
    central = tmp_path / "collector.db"
    url = f"sqlite:///{central}"
    log = tmp_path / "collector.log"
    collector = collector_process(url, broker.url, log=log)
    wait_until(lambda: rows(central, "SELECT version FROM schema_version"), 30)
    time.sleep(1.0)  # subscribed: the broker keeps its session from here on
    rng = random.Random(11)
    device_b = subprocess.Popen([*WILDEDGE, "run", "--config", str(cfg_b), "--once"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def kill_collector() -> None:
        nonlocal collector
        wait_until(lambda: len(event_ids(central)) > 0, 60)
        collector.send_signal(signal.SIGKILL)
        collector.wait(10)
        time.sleep(rng.uniform(0.2, 1.0))
        collector = collector_process(url, broker.url, log=log)

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
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert device_b.wait(300) == 0
        expected = {**_expected(db_a), **_expected(db_b)}
        assert len(expected) > count_a // 2 + 36  # both devices saw animals in most photos
        wait_until(lambda: len(event_ids(central)) >= len(expected), 60)
        time.sleep(1.0)  # anything resent late would show up as an extra row now
        stored = dict(rows(central, "SELECT e.id, count(d.idx) FROM events e LEFT JOIN detections d "
                                    "ON d.event_id = e.id GROUP BY e.id"))
        assert stored == expected  # each event exactly once, with its detections
        devices = dict(rows(central, "SELECT device, count(*) FROM events GROUP BY device"))
        assert set(devices) == {"trap-a", "trap-b"}
        assert rows(central, "SELECT count(*) FROM rejects")[0][0] == 0, rows(central, "SELECT * FROM rejects")
        assert rows(central, "SELECT count(*) FROM models")[0][0] == 2
        assert rows(central, "SELECT count(*) FROM effort")[0][0] > 0
        assert {r[0] for r in rows(central, "SELECT state FROM devices")} == {"stopped"}
    finally:
        if device_b.poll() is None:
            device_b.kill()
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(30) == 0, log.read_text()[-3000:]

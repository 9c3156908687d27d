"""The acceptance stream: ``wildedge run`` as a process over real photos, the broker stopped and
restarted, the daemon SIGKILLed and restarted; the server's subscriber must end with every event."""

from __future__ import annotations

import json
import random
import subprocess
import time

import pytest
from daemon_helpers import WILDEDGE, copy_photos, frame_count, run_and_kill
from mqtt_helpers import Subscriber, daemon_config

from edge import payload as wire
from edge.daemon import state_paths
from edge.store import Store


@pytest.mark.assets
@pytest.mark.slow
def test_every_event_arrives_through_broker_restarts_and_sigkills(tmp_path, assets, stamped, broker_factory):
    broker = broker_factory(autosave_interval=1)
    photos = tmp_path / "photos"
    count = copy_photos(assets, photos, copies=2)
    cfg = daemon_config(tmp_path, model=stamped["nanodet"], photos=photos, url=broker.url)
    db, images, _ = state_paths(tmp_path / "state")
    sub = Subscriber(broker.host, broker.port)
    rng = random.Random(5)
    kills = 0
    try:
        def link_down() -> None:  # the link goes down in the middle of the stream
            broker.stop()
            time.sleep(rng.uniform(0.2, 1.0))
            broker.start()

        for round_ in range(8):
            if frame_count(db) == count:
                break
            kills += run_and_kill(cfg, db, rng, max_delay=0.6, meanwhile=link_down if round_ % 2 == 0 else None)
        assert kills >= 3
        # A killed daemon's Last Will tells the server it went away without saying goodbye.
        sub.wait_for(lambda: any(json.loads(m.payload)["st"] == "offline" for m in sub.on("/status")))
        done = subprocess.run([*WILDEDGE, "run", "--config", str(cfg), "--once"], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        with Store(db, images_dir=images) as store:
            assert store.outbox_depth().count == 0, done.stderr[-3000:]
            expected = {e.uid for e in store.events()}
            assert len(store.frames()) == count
        assert len(expected) > count // 2
        sub.wait_for(lambda: {wire.decode_id(json.loads(m.payload)["e"]) for m in sub.on("/event")} >= expected,
                     timeout=30)
        received = {wire.decode_id(json.loads(m.payload)["e"]) for m in sub.on("/event")}
        assert received == expected  # at least once each, and nothing that is not in the store
        sub.wait_for(lambda: json.loads(sub.on("/status")[-1].payload)["st"] == "stopped")
        assert sub.on("/effort")  # the sampling effort went too
    finally:
        sub.close()

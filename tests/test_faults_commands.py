"""Hostile remote commands against a running daemon and a real mosquitto: retained commands, repeats,
quick successive ``set``s, and values that would delete history or blind the person filter."""

from __future__ import annotations

import json
import time

import pytest
from daemon_helpers import wait_until
from test_mqtt import _ask, running  # noqa: F401 (the fixture)

from edge.config import config_from_dict
from edge.errors import ConfigError
from edge.mqtt.device import REMOTE_MAX_CONF, apply_set


@pytest.mark.assets
def test_a_retained_command_is_never_executed(running):  # noqa: F811
    daemon, sub, _thread = running
    sub.client.publish("wildedge/trap-01/cmd/capture", b'{"id":"retained-1"}', qos=1, retain=True).wait_for_publish(10)
    wait_until(lambda: daemon.publisher.state.commands_ignored >= 1)
    # A reconnect would bring it again: it is ignored again, never run.
    daemon.publisher._client.disconnect()
    wait_until(lambda: daemon.publisher.state.commands_ignored >= 2, 30)
    time.sleep(0.5)
    assert daemon.counts["frames"] == 0
    assert not [m for m in sub.on("/cmd/result") if b"retained-1" in m.payload]
    sub.client.publish("wildedge/trap-01/cmd/capture", b"", qos=1, retain=True).wait_for_publish(10)  # clear it


@pytest.mark.assets
def test_a_repeated_command_is_answered_again_not_run_again(running):  # noqa: F811
    daemon, sub, _thread = running
    first = _ask(sub, "capture", '{"id": "once-1", "burst": 1}')
    wait_until(lambda: daemon.counts["frames"] == 1)
    again = _ask(sub, "capture", '{"id": "once-1", "burst": 1}')
    assert first == again and first["ok"]
    time.sleep(0.5)
    assert daemon.counts["frames"] == 1
    assert daemon.publisher.state.commands_ignored == 1
    assert _ask(sub, "capture", '{"id": "once-2", "burst": 1}')["ok"]  # another id runs
    wait_until(lambda: daemon.counts["frames"] == 2)


@pytest.mark.assets
def test_two_quick_sets_both_hold(running):  # noqa: F811
    daemon, sub, _thread = running
    before = len(sub.on("/cmd/result"))
    sub.publish("wildedge/trap-01/cmd/set", '{"id": "s1", "values": {"trigger.cooldown": "3s"}}')
    sub.publish("wildedge/trap-01/cmd/set", '{"id": "s2", "values": {"detector.conf": 0.4}}')
    sub.wait_for(lambda: len(sub.on("/cmd/result")) >= before + 2)
    assert all(json.loads(m.payload)["ok"] for m in sub.on("/cmd/result")[before:])
    wait_until(lambda: daemon.pipeline.detector.conf == 0.4)
    assert daemon.config.trigger.cooldown.total_seconds() == 3  # the first set was not lost
    persisted = json.loads((daemon.state_dir / "remote-settings.json").read_text())
    assert persisted == {"trigger.cooldown": "3s", "detector.conf": 0.4}


@pytest.mark.assets
def test_values_that_destroy_data_or_defeat_privacy_are_refused(running):  # noqa: F811
    daemon, sub, _thread = running
    for values, key in (({"storage.max_age": "1ms"}, "storage.max_age"), ({"health.interval": "1ms"}, "health.interval"),
                        ({"detector.conf": 1.0, "storage.save_images": "all"}, "detector.conf"),
                        ({"mqtt.effort_interval": "1s"}, "mqtt.effort_interval")):
        reply = _ask(sub, "set", json.dumps({"values": values}))
        assert not reply["ok"] and key in reply["err"], reply
    assert not (daemon.state_dir / "remote-settings.json").exists()  # nothing was persisted


def test_remote_bounds_without_a_daemon(tmp_path):
    config = config_from_dict({"device": {"id": "t", "state_dir": str(tmp_path)}, "camera": {"type": "folder", "path": "."},
                               "detector": {"model": "d.onnx"}, "mqtt": {"url": "mqtt://localhost"}})
    with pytest.raises(ConfigError, match="storage.max_age: at least 1 day"):
        apply_set(config, {"storage.max_age": "2h"}, state_dir=tmp_path)
    with pytest.raises(ConfigError, match="detector.conf: at most"):
        apply_set(config, {"detector.conf": REMOTE_MAX_CONF + 0.01}, state_dir=tmp_path)
    new = apply_set(config, {"storage.max_age": "30d", "detector.conf": REMOTE_MAX_CONF}, state_dir=tmp_path)
    assert new.detector.conf == REMOTE_MAX_CONF and new.storage.max_age.days == 30

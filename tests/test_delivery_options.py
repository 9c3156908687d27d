"""Delivery options: ``require_subscriber`` (a message the broker gives to nobody, PUBACK 0x10, stays
queued) and ``send_location`` (the device's position in its status messages)."""

from __future__ import annotations

import json
import time

import pytest
from daemon_helpers import wait_until
from mqtt_helpers import Subscriber
from test_mqtt import _mqtt, _queue, store  # noqa: F401 (the fixture)

from edge import payload_decode
from edge.config import config_from_dict
from edge.errors import ConfigError
from edge.mqtt import Publisher


def test_messages_wait_for_a_subscriber_and_then_arrive(broker, store):
    uids = _queue(store, 10)
    with Publisher(_mqtt(broker.url, require_subscriber=True), device="trap-01", store=store) as pub:
        wait_until(lambda: pub.state.unheard >= 10)
        assert store.outbox_depth().count == 10  # acknowledged by the broker, given to nobody: kept
        sub = Subscriber(broker.host, broker.port, topic="wildedge/+/event")
        try:
            wait_until(lambda: store.outbox_depth().count == 0, 30)  # the retry after RETRY_UNHEARD_S
            sub.wait_for(lambda: len(sub.on("/event")) >= 10)
            assert {json.loads(m.payload)["e"] for m in sub.on("/event")} == set(uids)
        finally:
            sub.close()


def test_without_the_option_the_broker_drops_them(broker, store):
    _queue(store, 3)
    with Publisher(_mqtt(broker.url), device="trap-01", store=store) as pub:
        wait_until(lambda: store.outbox_depth().count == 0)
        time.sleep(0.2)
        assert pub.state.unheard == 0 and pub.state.acked == 3


def test_status_messages_carry_the_location_when_asked(broker, store):
    sub = Subscriber(broker.host, broker.port, topic="wildedge/+/status")
    try:
        with Publisher(_mqtt(broker.url), device="trap-01", store=store, location=(46.5, 8.25)):
            sub.wait_for(lambda: sub.on("/status"))
        sub.wait_for(lambda: len(sub.on("/status")) >= 2)
        statuses = [payload_decode.decode_status(m.payload) for m in sub.on("/status")]
        assert [s["state"] for s in statuses] == ["online", "stopped"]
        assert {s["location"] for s in statuses} == {(46.5, 8.25)}
    finally:
        sub.close()
    with Publisher(_mqtt(broker.url), device="trap-02", store=store) as pub:
        will = payload_decode.decode_status(pub._make()._will_payload)
        assert will["state"] == "offline" and will["location"] is None  # not sent unless asked


def test_send_location_needs_a_location():
    base = {"device": {"id": "trap-01"}, "camera": {"type": "folder", "path": "."}, "detector": {"model": "d.onnx"},
            "mqtt": {"url": "mqtt://localhost", "send_location": True}}
    with pytest.raises(ConfigError, match="mqtt.send_location: needs device.latitude"):
        config_from_dict(base)
    cfg = config_from_dict({**base, "device": {"id": "trap-01", "latitude": 46.5, "longitude": 8.25}})
    assert cfg.mqtt.send_location

"""Home Assistant MQTT discovery: config payloads, templates rendered against real encoded messages,
the daily tally across DST changes, and the retained configs on a real mosquitto."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
import pytest
from mqtt_helpers import Subscriber
from paho.mqtt.enums import CallbackAPIVersion

from edge import payload as wire
from edge.mqtt import homeassistant as ha

DEVICE = "trap-01"
AMS = ZoneInfo("Europe/Amsterdam")
OBJECTS = ["cpu_temperature", "disk_free", "outbox_queue", "last_detection", "last_detection_time",
           "detections_today"]
SNAPSHOT: dict[str, Any] = {
    "at": "2026-06-01T03:15:00+00:00", "clock_synchronised": True, "boot_id": "5f1c9a3e-0000", "monotonic_s": 5476.5,
    "cpu_temp_c": 48.312, "disk_free_bytes": 48_031_965_184, "queue_depth": 3, "queue_bytes": 512,
}


def _configs(**kwargs: Any) -> dict[str, dict[str, Any]]:
    messages = ha.discovery_messages(prefix="wildedge", device=DEVICE, version="0.1.0", **kwargs)
    return {topic: json.loads(payload) for topic, payload in messages}


def _render(template: str, payload: bytes) -> str:
    """``template`` rendered as Home Assistant does for an MQTT message: ``value_json`` when it is JSON."""
    jinja2 = pytest.importorskip("jinja2")  # not a dependency of ours; comes with torch in the dev venv
    try:
        variables = {"value_json": json.loads(payload)}
    except ValueError:
        variables = {}
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(
        value=payload.decode(), **variables)


def _template(object_id: str) -> str:
    return next(s.value_template for s in ha.SENSORS if s.object_id == object_id)


# -- discovery configs -----------------------------------------------------------------------------

def test_discovery_configs_follow_the_ha_schema() -> None:
    messages = ha.discovery_messages(prefix="wildedge", device=DEVICE, version="0.1.0")
    topics = [topic for topic, _ in messages]
    assert topics == [f"homeassistant/sensor/trap-01/{o}/config" for o in OBJECTS]
    configs = [json.loads(payload) for _, payload in messages]
    assert all(payload == wire.dumps(c) for (_, payload), c in zip(messages, configs))  # compact, no NaN
    assert [c["unique_id"] for c in configs] == [f"wildedge_trap-01_{o}" for o in OBJECTS]
    assert len({c["unique_id"] for c in configs}) == len(configs)
    for config in configs:
        assert {"name", "unique_id", "state_topic", "value_template", "availability", "device"} <= set(config)
        assert None not in config.values()
        assert config["availability"] == [{"topic": "wildedge/trap-01/status",
                                           "value_template": ha.AVAILABILITY_TEMPLATE}]
        assert config["device"] == {"identifiers": ["wildedge_trap-01"], "name": DEVICE, "manufacturer": "wildedge",
                                    "model": "wildedge field daemon", "sw_version": "0.1.0"}
        assert config["origin"] == {"name": "wildedge", "sw_version": "0.1.0"}
    by_id = {c["unique_id"].removeprefix("wildedge_trap-01_"): c for c in configs}
    assert {o for o, c in by_id.items() if c["state_topic"] == "wildedge/trap-01/health"} == set(OBJECTS[:3])
    assert {o for o, c in by_id.items() if c["state_topic"] == "wildedge/trap-01/ha"} == set(OBJECTS[3:])
    temp = by_id["cpu_temperature"]
    assert (temp["device_class"], temp["unit_of_measurement"], temp["state_class"]) == \
        ("temperature", "°C", "measurement")
    assert (by_id["disk_free"]["device_class"], by_id["disk_free"]["unit_of_measurement"]) == ("data_size", "MiB")
    assert by_id["last_detection_time"]["device_class"] == "timestamp"
    assert by_id["detections_today"]["state_class"] == "total_increasing"
    assert "device_class" not in by_id["last_detection"] and "battery" not in json.dumps(configs)


def test_topics_follow_the_prefixes_and_ha_node_id_rules() -> None:
    configs = ha.discovery_messages(prefix="site/alps", device="trap.01", ha_prefix="ha/disc", version="1.2")
    topic, payload = configs[0]
    assert topic == "ha/disc/sensor/trap_01/cpu_temperature/config"  # HA allows [a-zA-Z0-9_-] only
    config = json.loads(payload)
    assert config["state_topic"] == "site/alps/trap.01/health" and config["unique_id"] == "wildedge_trap.01_cpu_temperature"
    assert config["availability"][0]["topic"] == "site/alps/trap.01/status"
    assert ha.ha_state_topic("site/alps", "trap.01") == "site/alps/trap.01/ha"
    assert ha.removal_messages(device="trap.01", ha_prefix="ha/disc") == [(t, b"") for t, _ in configs]


@pytest.mark.parametrize("kwargs", [{"prefix": "wild/+"}, {"ha_prefix": ""}, {"ha_prefix": "home/#"},
                                    {"device": "trap 01"}, {"version": ""}])
def test_bad_discovery_arguments_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        ha.discovery_messages(**{"prefix": "wildedge", "device": DEVICE, "version": "0.1.0", **kwargs})


# -- templates against real messages ------------------------------------------------------------------

def test_health_templates_render_real_health_messages() -> None:
    health = wire.encode_health(SNAPSHOT, device=DEVICE)
    assert json.loads(health)["tc"] == 483
    assert _render(_template("cpu_temperature"), health) == "48.3"
    assert _render(_template("disk_free"), health) == "45807"
    assert _render(_template("outbox_queue"), health) == "3"
    cold = wire.encode_health({**SNAPSHOT, "cpu_temp_c": -12.46, "queue_depth": 0}, device=DEVICE)
    assert _render(_template("cpu_temperature"), cold) == "-12.5"
    assert _render(_template("outbox_queue"), cold) == "0"
    # A value the device cannot read is absent: 'None' makes HA show unknown rather than a stale value.
    sparse = wire.encode_health({k: v for k, v in SNAPSHOT.items() if k not in ("cpu_temp_c", "disk_free_bytes")},
                                device=DEVICE)
    assert _render(_template("cpu_temperature"), sparse) == "None"
    assert _render(_template("disk_free"), sparse) == "None"


def test_state_templates_render_real_state_messages() -> None:
    at = datetime(2026, 6, 1, 6, 30, 12, 345678, tzinfo=AMS)
    state = ha.ha_state(last_label="red fox", last_time=at, today=3)
    assert _render(_template("last_detection"), state) == "red fox"
    rendered = _render(_template("last_detection_time"), state)
    assert rendered == "2026-06-01T04:30:12Z"
    assert datetime.fromisoformat(rendered) == at.replace(microsecond=0)  # parses as the aware instant
    assert _render(_template("detections_today"), state) == "3"
    empty = ha.ha_state(last_label=None, last_time=None, today=0)
    assert [_render(_template(o), empty) for o in OBJECTS[3:]] == ["", "None", "0"]


@pytest.mark.parametrize(("payload", "expected"), [
    (wire.encode_status(device=DEVICE, state="online", at=1780283655, clock_synced=True), "online"),
    (wire.encode_status(device=DEVICE, state="offline"), "offline"),
    (wire.encode_status(device=DEVICE, state="stopped", at=1780283655), "offline"),
    (b"", "offline"),  # a cleared retained status
])
def test_availability_template_maps_status_to_online_or_offline(payload: bytes, expected: str) -> None:
    assert _render(ha.AVAILABILITY_TEMPLATE, payload) == expected


# -- the state message -----------------------------------------------------------------------------

def test_ha_state_is_compact_utc_and_has_no_nulls() -> None:
    at = datetime(2026, 6, 1, 6, 30, 0, 999999, tzinfo=AMS)
    assert ha.ha_state(last_label="fox", last_time=at, today=3) == \
        b'{"v":1,"last":"fox","at":"2026-06-01T04:30:00Z","today":3}'
    assert ha.ha_state(last_label=None, last_time=None, today=0) == b'{"v":1,"today":0}'
    # An unsynchronised clock starts in 1970: still a valid timestamp for HA.
    assert ha.ha_state(last_label=None, last_time=datetime(1970, 1, 1, 0, 1, 30, tzinfo=UTC), today=1) \
        == b'{"v":1,"at":"1970-01-01T00:01:30Z","today":1}'
    assert json.loads(ha.ha_state(last_label="x" * 300, last_time=None, today=1))["last"] == "x" * 255


@pytest.mark.parametrize("kwargs", [{"today": -1}, {"today": True}, {"today": 1.0}, {"last_label": ""},
                                    {"last_time": datetime(2026, 6, 1, 4, 30)}])
def test_bad_ha_state_arguments_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ha.ha_state(**{"last_label": "fox", "last_time": None, "today": 1, **kwargs})


# -- the daily tally -----------------------------------------------------------------------------------

def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_tally_resets_at_local_midnight_across_spring_forward() -> None:
    tally = ha.DetectionTally()
    assert tally.today() == 0 and tally.next_reset() is None
    tally.add("badger", _utc(2026, 3, 28, 22, 30), AMS)  # 23:30 CET, Saturday
    tally.add("red fox", _utc(2026, 3, 28, 23, 30), AMS)  # 00:30 CET Sunday: still the 28th in UTC
    assert tally.today() == 1
    assert tally.next_reset() == _utc(2026, 3, 29, 22, 0)  # midnight CEST: a 23-hour day
    tally.add("red fox", _utc(2026, 3, 29, 21, 59), AMS)  # 23:59 CEST, the same local day
    assert tally.today() == 2
    assert tally.today(now=_utc(2026, 3, 29, 21, 59, 59)) == 2
    assert tally.today(now=_utc(2026, 3, 29, 22, 0)) == 0  # local midnight: the count restarts
    assert json.loads(tally.state(now=_utc(2026, 3, 29, 22, 0))) == \
        {"v": 1, "last": "red fox", "at": "2026-03-29T21:59:00Z", "today": 0}
    tally.add("roe deer", _utc(2026, 3, 29, 22, 0, 30), AMS)  # 00:00:30 CEST Monday
    assert tally.today() == 1 and tally.next_reset() == _utc(2026, 3, 30, 22, 0)


def test_tally_resets_at_local_midnight_across_fall_back() -> None:
    tally = ha.DetectionTally()
    tally.add("boar", _utc(2026, 10, 24, 22, 0), AMS)  # 00:00 CEST, Sunday 25 October
    tally.add("boar", _utc(2026, 10, 25, 0, 30), AMS)  # 02:30 CEST
    tally.add("boar", _utc(2026, 10, 25, 1, 30), AMS)  # 02:30 CET, the repeated hour
    assert tally.next_reset() == _utc(2026, 10, 25, 23, 0)  # a 25-hour day
    tally.add("boar", _utc(2026, 10, 25, 22, 30), AMS)  # 23:30 CET: 24.5 h after midnight, same day
    assert tally.today() == 4
    tally.add("boar", _utc(2026, 10, 25, 23, 0), AMS)  # 00:00 CET Monday
    assert tally.today() == 1


def test_tally_keeps_the_latest_detection_and_ignores_earlier_days() -> None:
    tally = ha.DetectionTally()
    tally.add("red fox", _utc(2026, 6, 1, 10), AMS)
    tally.add("badger", _utc(2026, 5, 31, 10), AMS)  # the clock stepped back a day: not today's
    tally.add("roe deer", _utc(2026, 6, 1, 9), AMS)  # earlier today: counted, not the latest
    assert json.loads(tally.state()) == {"v": 1, "last": "red fox", "at": "2026-06-01T10:00:00Z", "today": 2}
    with pytest.raises(ValueError):
        tally.add("fox", datetime(2026, 6, 1, 10), AMS)
    with pytest.raises(ValueError):
        tally.add("", _utc(2026, 6, 1, 10), AMS)
    with pytest.raises(TypeError):
        tally.add("fox", _utc(2026, 6, 1, 10), "Europe/Amsterdam")  # type: ignore[arg-type]


# -- a real broker -------------------------------------------------------------------------------------

def test_retained_discovery_reaches_a_late_subscriber_and_removal_clears_it(broker) -> None:
    messages = ha.discovery_messages(prefix="wildedge", device=DEVICE, version="0.1.0")
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="trap-01", protocol=paho.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
        late = Subscriber(broker.host, broker.port, topic="homeassistant/#", client_id="home-assistant")
        try:
            late.wait_for(lambda: len(late.on("/config")) >= len(messages))
            got = {m.topic: (m.payload, m.retain) for m in late.on("/config")}
            assert got == {topic: (payload, True) for topic, payload in messages}
        finally:
            late.close()
        for topic, payload in [*ha.removal_messages(device=DEVICE), ("homeassistant/sentinel", b"1")]:
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
        after = Subscriber(broker.host, broker.port, topic="homeassistant/#", client_id="after-removal")
        try:
            after.wait_for(lambda: after.on("/sentinel"))
            time.sleep(0.3)  # retained messages arrive together on subscribe; give stragglers a moment
            assert after.on("/config") == []
        finally:
            after.close()
    finally:
        client.disconnect()
        client.loop_stop()


"""Home Assistant MQTT discovery: config payloads, templates rendered against real encoded messages,
the daily tally across DST changes, and the retained configs on a real mosquitto."""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import UTC, datetime, timedelta
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
    node = "trap_01_" + hashlib.sha256(b"trap.01").hexdigest()[:8]
    assert topic == f"ha/disc/sensor/{node}/cpu_temperature/config"  # HA allows [a-zA-Z0-9_-] only
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
    state = ha.ha_state(device=DEVICE, last_label="red fox", last_time=at, today=3)
    assert _render(_template("last_detection"), state) == "red fox"
    rendered = _render(_template("last_detection_time"), state)
    assert rendered == "2026-06-01T04:30:12Z"
    assert datetime.fromisoformat(rendered) == at.replace(microsecond=0)  # parses as the aware instant
    assert _render(_template("detections_today"), state) == "3"
    empty = ha.ha_state(device=DEVICE, last_label=None, last_time=None, today=0)
    assert [_render(_template(o), empty) for o in OBJECTS[3:]] == ["", "None", "0"]
    # The day not known yet (clock never synchronised): HA shows unknown for the count and the time.
    unknown = ha.ha_state(device=DEVICE, last_label="badger", last_time=None, today=None)
    assert [_render(_template(o), unknown) for o in OBJECTS[3:]] == ["badger", "None", "None"]


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
    assert ha.ha_state(device=DEVICE, last_label="fox", last_time=at, today=3) == \
        b'{"v":1,"d":"trap-01","last":"fox","at":"2026-06-01T04:30:00Z","today":3}'
    assert ha.ha_state(device=DEVICE, last_label=None, last_time=None, today=0) == b'{"v":1,"d":"trap-01","today":0}'
    assert ha.ha_state(device=DEVICE, last_label=None, last_time=None, today=None) == b'{"v":1,"d":"trap-01"}'
    assert json.loads(ha.ha_state(device=DEVICE, last_label="x" * 300, last_time=None, today=1))["last"] == "x" * 255


@pytest.mark.parametrize("kwargs", [{"today": -1}, {"today": True}, {"today": 1.0}, {"last_label": ""},
                                    {"last_time": datetime(2026, 6, 1, 4, 30)}, {"device": "trap 01"}])
def test_bad_ha_state_arguments_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ha.ha_state(**{"device": DEVICE, "last_label": "fox", "last_time": None, "today": 1, **kwargs})


# -- the daily tally -----------------------------------------------------------------------------------

def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


BOOTED = _utc(2026, 3, 1)  # the simulated device's boot: boot time = seconds since then


def _boot(at: datetime) -> float:
    return (at - BOOTED).total_seconds()


def _live(tally: ha.DetectionTally, label: str, at: datetime, tz: Any = AMS) -> None:
    """A live camera's detection at ``at`` on a synchronised clock (``now`` is ``at``)."""
    tally.add(label, at=at, boot_time=_boot(at), tz=tz, now=at, monotonic=_boot(at))


def _refresh(tally: ha.DetectionTally, now: datetime) -> bool:
    return tally.refresh(now=now, monotonic=_boot(now))


def test_tally_resets_at_local_midnight_across_spring_forward() -> None:
    tally = ha.DetectionTally(DEVICE)
    assert tally.today() is None and tally.next_reset() is None  # no clock reading yet: the day is unknown
    _live(tally, "badger", _utc(2026, 3, 28, 22, 30))  # 23:30 CET, Saturday
    _live(tally, "red fox", _utc(2026, 3, 28, 23, 30))  # 00:30 CET Sunday: still the 28th in UTC
    assert tally.today() == 1
    assert tally.next_reset() == _utc(2026, 3, 29, 22, 0)  # midnight CEST: a 23-hour day
    _live(tally, "red fox", _utc(2026, 3, 29, 21, 59))  # 23:59 CEST, the same local day
    assert tally.today() == 2
    assert not _refresh(tally, _utc(2026, 3, 29, 21, 59, 59)) and tally.today() == 2
    assert _refresh(tally, _utc(2026, 3, 29, 22, 0)) and tally.today() == 0  # local midnight: starts again
    assert json.loads(tally.state()) == {"v": 1, "d": DEVICE, "last": "red fox", "at": "2026-03-29T21:59:00Z",
                                         "today": 0}
    _live(tally, "roe deer", _utc(2026, 3, 29, 22, 0, 30))  # 00:00:30 CEST Monday
    assert tally.today() == 1 and tally.next_reset() == _utc(2026, 3, 30, 22, 0)


def test_tally_resets_at_local_midnight_across_fall_back() -> None:
    tally = ha.DetectionTally(DEVICE)
    _live(tally, "boar", _utc(2026, 10, 24, 22, 0))  # 00:00 CEST, Sunday 25 October
    _live(tally, "boar", _utc(2026, 10, 25, 0, 30))  # 02:30 CEST
    _live(tally, "boar", _utc(2026, 10, 25, 1, 30))  # 02:30 CET, the repeated hour
    assert tally.next_reset() == _utc(2026, 10, 25, 23, 0)  # a 25-hour day
    _live(tally, "boar", _utc(2026, 10, 25, 22, 30))  # 23:30 CET: 24.5 h after midnight, same day
    assert tally.today() == 4
    _live(tally, "boar", _utc(2026, 10, 25, 23, 0))  # 00:00 CET Monday
    assert tally.today() == 1


def test_replayed_photos_of_other_days_never_flip_today_with_a_trusted_rtc() -> None:
    """rtc = true, a card of old photos replayed at noon: today follows the clock, not the photos.

    Before: each old photo made its own day the counted one and every health tick reset it, so HA's
    total_increasing sensor read 1, 0, 1, 0 (each drop a new meter cycle)."""
    tally = ha.DetectionTally(DEVICE)
    now = _utc(2026, 6, 1, 10)
    _refresh(tally, now)
    seen = [tally.today()]
    photos = [_utc(2018, 5, 12, 6), _utc(2026, 6, 1, 6), _utc(2019, 1, 2, 3), _utc(2026, 5, 31, 23),
              _utc(2026, 6, 1, 8), _utc(2030, 1, 1)]
    for photo in photos:
        now += timedelta(seconds=7)
        tally.add("chamois", at=photo, boot_time=_boot(now), tz=AMS, now=now, monotonic=_boot(now))
        seen.append(tally.today())
        _refresh(tally, now + timedelta(seconds=1))  # a health tick between photos
        seen.append(tally.today())
    # Only the photos taken on 1 June (local time) count: 2026-05-31 23:00 UTC is 01:00 on 1 June in Amsterdam.
    assert seen == [0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3, 3]
    assert seen == sorted(seen)
    tally.add("hare", at=_utc(2026, 5, 31, 21), boot_time=_boot(now), tz=AMS, now=now, monotonic=_boot(now))
    assert tally.today() == 3  # 23:00 on 31 May in Amsterdam: another day
    assert json.loads(tally.state())["at"] == "2030-01-01T00:00:00Z"  # the latest photo time is the last


def test_unsynced_detection_shows_its_label_then_its_time_once_the_clock_is_synchronised() -> None:
    tally = ha.DetectionTally(DEVICE)
    # Booted without network or RTC: the device clock says 1970 and is not synchronised.
    assert not tally.refresh(now=None, monotonic=100)
    tally.add("red fox", at=None, boot_time=130, tz=AMS, now=None, monotonic=131)
    assert json.loads(tally.state()) == {"v": 1, "d": DEVICE, "last": "red fox"}  # no invented 1970 time
    tally.add("badger", at=None, boot_time=160, tz=AMS, now=None, monotonic=161)
    assert json.loads(tally.state()) == {"v": 1, "d": DEVICE, "last": "badger"}
    # NTP at boot time 400 gives 2026-06-01 10:00 UTC: the detections are placed the way a server corrects.
    synced = _utc(2026, 6, 1, 10)
    assert tally.refresh(now=synced, monotonic=400)
    assert json.loads(tally.state()) == {"v": 1, "d": DEVICE, "last": "badger", "at": "2026-06-01T09:56:00Z",
                                         "today": 2}
    # The clock loses synchronisation later: the day stays known from the boot-time offset.
    tally.add("roe deer", at=None, boot_time=500, tz=AMS, now=None, monotonic=500)
    assert json.loads(tally.state())["at"] == "2026-06-01T10:01:40Z" and tally.today() == 3
    assert tally.refresh(now=None, monotonic=400 + 14 * 3600) and tally.today() == 0  # past local midnight


def test_a_folder_photo_on_an_unsynced_device_keeps_its_camera_time() -> None:
    tally = ha.DetectionTally(DEVICE)
    tally.add("lynx", at=_utc(2018, 5, 12, 6, 41), boot_time=90, tz=AMS, now=None, monotonic=91)
    assert json.loads(tally.state()) == {"v": 1, "d": DEVICE, "last": "lynx", "at": "2018-05-12T06:41:00Z"}


def test_tally_keeps_the_latest_detection_and_ignores_earlier_days() -> None:
    tally = ha.DetectionTally(DEVICE)
    now = _utc(2026, 6, 1, 10, 30)
    for label, at in (("red fox", _utc(2026, 6, 1, 10)), ("badger", _utc(2026, 5, 31, 10)),
                      ("roe deer", _utc(2026, 6, 1, 9))):
        tally.add(label, at=at, boot_time=_boot(now), tz=AMS, now=now, monotonic=_boot(now))
    assert json.loads(tally.state()) == {"v": 1, "d": DEVICE, "last": "red fox", "at": "2026-06-01T10:00:00Z",
                                         "today": 2}
    # The clock stepped back a day: the counted day does not go back, and nothing is lost.
    _refresh(tally, _utc(2026, 5, 31, 12))
    assert tally.today() == 2
    with pytest.raises(ValueError):
        tally.add("fox", at=datetime(2026, 6, 1, 10), boot_time=1, tz=AMS, now=None, monotonic=1)
    with pytest.raises(ValueError):
        tally.add("", at=None, boot_time=1, tz=AMS, now=None, monotonic=1)
    with pytest.raises(ValueError):
        tally.add("fox", at=None, boot_time=-1, tz=AMS, now=None, monotonic=1)
    with pytest.raises(TypeError):
        tally.add("fox", at=None, boot_time=1, tz="Europe/Amsterdam", now=None, monotonic=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ha.DetectionTally("trap 01")


def test_tally_survives_a_restart_within_the_day_and_not_into_the_next() -> None:
    tally = ha.DetectionTally(DEVICE)
    for hour in (6, 7, 8):
        _live(tally, "ibex", _utc(2026, 6, 1, hour))
    saved = tally.dumps()
    again = ha.DetectionTally(DEVICE)
    again.restore(saved)
    assert again.today() is None  # restarted, clock not synchronised yet: the day is not known
    _refresh(again, _utc(2026, 6, 1, 12))
    assert json.loads(again.state()) == json.loads(tally.state()) == \
        {"v": 1, "d": DEVICE, "last": "ibex", "at": "2026-06-01T08:00:00Z", "today": 3}
    tomorrow = ha.DetectionTally(DEVICE)
    tomorrow.restore(saved)
    _refresh(tomorrow, _utc(2026, 6, 2, 12))
    assert tomorrow.today() == 0
    for bad in ("not json", '{"day": "2026-13-01"}', '{"count": -1}', '{"at": "2026-06-01T08:00:00"}'):
        broken = ha.DetectionTally(DEVICE)
        broken.restore(bad)
        _refresh(broken, _utc(2026, 6, 1, 12))
        assert json.loads(broken.state()) == {"v": 1, "d": DEVICE, "today": 0}


# -- Home Assistant's documented discovery rules, checked ---------------------------------------------
# Home Assistant cannot be installed offline in a test extra here (the wheel alone is 35 MB and it
# pins hundreds of dependencies, some conflicting with ours), so its rules are checked one by one.
# Sources: the MQTT integration docs (https://www.home-assistant.io/integrations/mqtt/, "Discovery
# topic", "Discovery payload"), the sensor entity docs (https://developers.home-assistant.io/docs/core/
# entity/sensor/), and HA 2024.3.3's source (homeassistant/components/mqtt/discovery.py, mqtt/sensor.py,
# sensor/__init__.py, sensor/const.py), read from its wheel on PyPI.

#: homeassistant/components/mqtt/discovery.py TOPIC_MATCHER (applied after the discovery prefix).
HA_TOPIC_MATCHER = re.compile(r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config")
#: homeassistant/components/sensor/const.py SensorStateClass.
HA_STATE_CLASSES = {"measurement", "total", "total_increasing"}
#: mqtt/sensor.py _PLATFORM_SCHEMA_BASE + MQTT_RO_SCHEMA + MQTT_ENTITY_COMMON_SCHEMA keys we use (long names).
HA_SENSOR_KEYS = {"name", "unique_id", "state_topic", "value_template", "device_class", "unit_of_measurement",
                  "state_class", "suggested_display_precision", "entity_category", "icon", "availability",
                  "device", "origin"}
IDS = ["trap-01", "trap.01", "trap_01", "Trap.01", "a", "x" * 64, "site.a.cam-2"]


def _discovery(device: str) -> list[tuple[str, dict[str, Any]]]:
    return [(t, json.loads(p)) for t, p in ha.discovery_messages(prefix="wildedge", device=device, version="1.0")]


@pytest.mark.parametrize("device", IDS)
def test_rule_discovery_topic_format_and_characters(device: str) -> None:
    """Docs, "Discovery topic": <discovery_prefix>/<component>/[<node_id>/]<object_id>/config, node_id and
    object_id only [a-zA-Z0-9_-]. Source: discovery.py TOPIC_MATCHER."""
    for topic, _ in _discovery(device):
        match = HA_TOPIC_MATCHER.fullmatch(topic.removeprefix("homeassistant/"))
        assert match and match.group("component") == "sensor" and match.group("node_id") == ha.node_id(device)


def test_rule_one_discovery_id_per_entity_across_devices() -> None:
    """discovery.py: an entity is keyed by (component, "node_id object_id"); a second config on the same
    topic updates the first entity ("Component has already been discovered ... sending update"), so two
    devices must never share a topic: trap.01 and trap_01 used to."""
    seen: dict[tuple[str, str], str] = {}
    for device in IDS:
        for topic, _ in _discovery(device):
            match = HA_TOPIC_MATCHER.fullmatch(topic.removeprefix("homeassistant/"))
            key = (match.group("component"), f"{match.group('node_id')} {match.group('object_id')}")
            assert seen.setdefault(key, device) == device, f"{device} and {seen[key]} share {topic}"
    assert ha.node_id("trap-01") == "trap-01" and ha.node_id("trap_01") == "trap_01"  # safe ids stay put


@pytest.mark.parametrize("device", IDS)
def test_rule_unique_ids_and_device_identifiers_are_distinct(device: str) -> None:
    """Docs, "Discovery payload": unique_id identifies the entity (required to customise it in the UI);
    device.identifiers groups the entities of one device. Distinct across sensors and devices."""
    unique = {c["unique_id"] for d in IDS for _, c in _discovery(d)}
    assert len(unique) == len(IDS) * len(OBJECTS)
    assert {tuple(c["device"]["identifiers"]) for _, c in _discovery(device)} == {(f"wildedge_{device}",)}


@pytest.mark.parametrize("device", IDS[:2])
def test_rule_sensor_payload_uses_only_known_options_and_valid_values(device: str) -> None:
    """mqtt/sensor.py DISCOVERY_SCHEMA removes unknown keys silently (REMOVE_EXTRA): a typo would be lost.
    state_class must be a SensorStateClass (sensor/const.py); a timestamp sensor needs an aware ISO time
    (sensor/__init__.py: "missing timezone information"); suggested_display_precision a positive int."""
    for _, config in _discovery(device):
        assert set(config) <= HA_SENSOR_KEYS, set(config) - HA_SENSOR_KEYS
        assert config.get("state_class", "measurement") in HA_STATE_CLASSES
        assert isinstance(config.get("suggested_display_precision", 0), int)
        assert config["state_topic"].startswith(f"wildedge/{device}/")
    state = ha.ha_state(device=device, last_label="fox", last_time=_utc(2026, 6, 1, 4, 30), today=1)
    rendered = _render(_template("last_detection_time"), state)
    assert datetime.fromisoformat(rendered).tzinfo is not None


def test_rule_total_increasing_only_drops_at_a_new_day() -> None:
    """Sensor entity docs: for total_increasing "a decreasing value is interpreted as the start of a new
    meter cycle". The count may only drop at local midnight: a day of live detections with old photos
    and clock readings interleaved never lowers it; the next day starts again at 0."""
    tally, now = ha.DetectionTally(DEVICE), _utc(2026, 6, 1, 0, 5)
    _refresh(tally, now)
    values = []
    for step in range(200):
        now += timedelta(minutes=7)
        if step % 3 == 0:
            _live(tally, "fox", now)
        elif step % 3 == 1:
            tally.add("fox", at=now - timedelta(days=step), boot_time=_boot(now), tz=AMS, now=now,
                      monotonic=_boot(now))
        else:
            _refresh(tally, now)
        values.append((now.astimezone(AMS).date(), tally.today()))
    for (day_a, a), (day_b, b) in zip(values, values[1:]):
        assert b >= a or day_b > day_a, (day_a, a, day_b, b)
    assert any(b < a for (_, a), (_, b) in zip(values, values[1:]))  # it did reset at midnight


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



@pytest.mark.assets
def test_daemon_replaying_old_photos_with_a_trusted_rtc_counts_only_today_and_keeps_it_across_a_restart(
        tmp_path, assets, stamped, broker) -> None:
    """A card with a 2018 photo and one of today, rtc = true: "today" is 1 (not 1-0-1-0), the last
    detection is today's photo with its camera time, and a restart publishes the same count."""
    import shutil

    from test_capture import _tiff, _with_exif

    from edge.clock import SystemClock
    from edge.config import config_from_dict
    from edge.daemon import Daemon

    photo = sorted((assets / "camera_traps_lila" / "images").iterdir())[1].read_bytes()
    card = tmp_path / "card"
    card.mkdir()
    now = datetime.now(UTC).replace(microsecond=0)
    taken = {"a_2018.jpg": datetime(2018, 5, 12, 6, 41, 3, tzinfo=UTC), "b_today.jpg": now - timedelta(minutes=1),
             "c_2019.jpg": datetime(2019, 1, 2, 3, 4, 5, tzinfo=UTC)}
    for name, when in taken.items():
        (card / name).write_bytes(_with_exif(photo, _tiff({}, {0x9003: when.strftime("%Y:%m:%d %H:%M:%S")})))
    config = config_from_dict({
        "device": {"id": "trap.01", "state_dir": str(tmp_path / "state"), "timezone": "UTC", "rtc": True},
        "camera": {"type": "folder", "path": str(card)},
        "detector": {"model": str(stamped["fastestdet"]), "conf": 0.15},
        "privacy": {"person": "keep"}, "storage": {"min_free": 0},
        "mqtt": {"url": broker.url, "keepalive": "5s", "ha_discovery": True},
    })
    expected_today = int(taken["b_today.jpg"].date() == datetime.now(UTC).date())

    def retained_state(client_id: str) -> dict[str, Any]:
        sub = Subscriber(broker.host, broker.port, topic="wildedge/trap.01/ha", client_id=client_id)
        try:
            sub.wait_for(lambda: sub.on("/ha"))
            return json.loads(sub.on("/ha")[-1].payload)
        finally:
            sub.close()

    assert Daemon(config, once=True, clock=SystemClock(rtc=True)).run() == 0
    first = retained_state("ha-1")
    assert first == {"v": 1, "d": "trap.01", "last": first["last"],
                     "at": taken["b_today.jpg"].strftime("%Y-%m-%dT%H:%M:%SZ"), "today": expected_today}
    shutil.rmtree(card)
    card.mkdir()  # nothing new on the card: the restart only publishes the kept state
    assert Daemon(config, once=True, clock=SystemClock(rtc=True)).run() == 0
    assert retained_state("ha-2") == first

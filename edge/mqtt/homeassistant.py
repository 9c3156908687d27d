"""Home Assistant MQTT discovery (``[mqtt] ha_discovery``): one HA device per wildedge device.

Pure functions: :func:`discovery_messages` makes the retained config messages (topic
``<ha_prefix>/sensor/<device>/<object>/config``, HA's MQTT discovery schema) for six sensors. Three
read the health message (CPU temperature, disk free, outbox queue); three read a small retained
state message on ``<prefix>/<device>/ha`` (:func:`ha_state`), which names the last detection in
words because Home Assistant cannot map an event's class indices. :class:`DetectionTally` keeps
what that message says. Every sensor is available while the retained status says ``online``.

A value the device could not read is absent from its message; the templates then render
``'None'``, which HA shows as ``unknown`` (an empty string would keep a stale number).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from edge import payload as wire

HA_STATE_LEVEL = "ha"
MANUFACTURER = "wildedge"
MODEL = "wildedge field daemon"
MAX_STATE_CHARS = 255  # Home Assistant refuses longer states
#: What HA accepts as ``<node_id>`` in a discovery topic; other characters of a device id become ``_``.
_NODE_BAD = re.compile(r"[^A-Za-z0-9_-]")
AVAILABILITY_TEMPLATE = "{{ 'online' if value_json is defined and value_json.st == 'online' else 'offline' }}"


def _value(key: str, expr: str = "", missing: str = "None") -> str:
    """A value template: ``expr`` (default ``value_json.<key>``) when ``key`` is present, else ``missing``."""
    return f"{{{{ {expr or f'value_json.{key}'} if value_json.{key} is defined else '{missing}' }}}}"


@dataclass(frozen=True, slots=True)
class Sensor:
    """One discovered sensor: its object id, name, source message and HA options."""

    object_id: str
    name: str
    source: str  # "health" or "ha"
    value_template: str
    options: dict[str, Any]


SENSORS: tuple[Sensor, ...] = (
    Sensor("cpu_temperature", "CPU temperature", "health", _value("tc", "(value_json.tc / 10) | round(1)"),
           {"device_class": "temperature", "unit_of_measurement": "°C", "state_class": "measurement",
            "suggested_display_precision": 1, "entity_category": "diagnostic"}),
    Sensor("disk_free", "Disk free", "health", _value("df"),
           {"device_class": "data_size", "unit_of_measurement": "MiB", "state_class": "measurement",
            "suggested_display_precision": 0, "entity_category": "diagnostic"}),
    Sensor("outbox_queue", "Outbox queue", "health", _value("q"),
           {"state_class": "measurement", "icon": "mdi:tray-full", "entity_category": "diagnostic"}),
    # A text sensor shows 'None' literally, so an absent label renders as an empty state instead.
    Sensor("last_detection", "Last detection", "ha", _value("last", missing=""), {"icon": "mdi:paw"}),
    Sensor("last_detection_time", "Last detection time", "ha", _value("at"), {"device_class": "timestamp"}),
    Sensor("detections_today", "Detections today", "ha", _value("today"),
           {"state_class": "total_increasing", "icon": "mdi:counter"}),
)


def ha_state_topic(prefix: str, device: str) -> str:
    """``<prefix>/<device>/ha``: where :func:`ha_state` messages go (retained, QoS 1)."""
    t = wire.topics(prefix, device)
    return f"{t.prefix}/{t.device}/{HA_STATE_LEVEL}"


def _config_topic(ha_prefix: str, device: str, object_id: str) -> str:
    wire.topics(ha_prefix, device)  # the same rules as our own prefix: non-empty levels, no wildcards
    return f"{ha_prefix}/sensor/{_NODE_BAD.sub('_', device)}/{object_id}/config"


def discovery_messages(*, prefix: str, device: str, ha_prefix: str = "homeassistant",
                       version: str) -> list[tuple[str, bytes]]:
    """The retained discovery config messages of ``device``'s sensors: ``(topic, payload)`` pairs.

    Args:
        prefix: ``[mqtt] prefix``, where the device's own messages go.
        device: the device id.
        ha_prefix: Home Assistant's discovery prefix (``[mqtt] ha_prefix``).
        version: the software version HA shows for the device (``edge.__version__``).

    Raises:
        ValueError: a prefix or the device id is not a valid topic level, or the version is empty.
    """
    if not isinstance(version, str) or not version:
        raise ValueError(f"version must be a non-empty string: {version!r}")
    t = wire.topics(prefix, device)
    state_topics = {"health": t.health, "ha": ha_state_topic(prefix, device)}
    block = {"identifiers": [f"wildedge_{device}"], "name": device, "manufacturer": MANUFACTURER,
             "model": MODEL, "sw_version": version}
    out = []
    for sensor in SENSORS:
        config = {"name": sensor.name, "unique_id": f"wildedge_{device}_{sensor.object_id}",
                  "state_topic": state_topics[sensor.source], "value_template": sensor.value_template,
                  **sensor.options,
                  "availability": [{"topic": t.status, "value_template": AVAILABILITY_TEMPLATE}],
                  "device": block, "origin": {"name": MANUFACTURER, "sw_version": version}}
        out.append((_config_topic(ha_prefix, device, sensor.object_id), wire.dumps(config)))
    return out


def removal_messages(*, device: str, ha_prefix: str = "homeassistant") -> list[tuple[str, bytes]]:
    """Empty retained payloads on every config topic: HA then deletes the device's sensors."""
    return [(_config_topic(ha_prefix, device, s.object_id), b"") for s in SENSORS]


def _aware(value: Any, what: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime: {value!r}")
    return value


def _label(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"label must be a non-empty string: {value!r}")
    return value[:MAX_STATE_CHARS]


def ha_state(*, last_label: str | None, last_time: datetime | None, today: int) -> bytes:
    """The retained state message on :func:`ha_state_topic`: ``{"v":1,"last":..,"at":..,"today":..}``.

    ``at`` is UTC to the second (``2026-06-01T04:30:00Z``); unknown values are left out, never null.

    Raises:
        ValueError: an empty label, a naive time, or ``today`` not an integer >= 0.
    """
    if isinstance(today, bool) or not isinstance(today, int) or today < 0:
        raise ValueError(f"today must be an integer >= 0: {today!r}")
    out: dict[str, Any] = {"v": wire.VERSION}
    if last_label is not None:
        out["last"] = _label(last_label)
    if last_time is not None:
        utc = _aware(last_time, "last_time").astimezone(UTC).replace(microsecond=0, tzinfo=None)
        out["at"] = utc.isoformat() + "Z"
    out["today"] = today
    return wire.dumps(out)


class DetectionTally:
    """Detections of the device's local day, and the latest one: what :func:`ha_state` reports.

    The count restarts at local midnight (a calendar day, so 23 or 25 hours across a DST change).
    A detection dated before the counted day (a clock stepped back) is not counted for today.
    """

    def __init__(self) -> None:
        self._day: date | None = None
        self._tz: tzinfo = UTC
        self._count = 0
        self._label: str | None = None
        self._time: datetime | None = None

    def add(self, label: str, at: datetime, tz: tzinfo) -> None:
        """Count one detection made at ``at``; ``tz`` is the device's zone (``[device] timezone``)."""
        label, at = _label(label), _aware(at, "at")
        if not isinstance(tz, tzinfo):
            raise TypeError(f"tz must be a tzinfo: {tz!r}")
        self._tz, day = tz, at.astimezone(tz).date()
        if self._day is None or day > self._day:
            self._day, self._count = day, 0
        if day == self._day:
            self._count += 1
        if self._time is None or at >= self._time:
            self._label, self._time = label, at

    def today(self, now: datetime | None = None) -> int:
        """Detections of the counted day; 0 once ``now`` is on a later local day."""
        if self._day is None:
            return 0
        if now is not None and _aware(now, "now").astimezone(self._tz).date() > self._day:
            return 0
        return self._count

    def next_reset(self) -> datetime | None:
        """The local midnight that ends the counted day (UTC), when to publish ``state(now)``; None before any."""
        if self._day is None:
            return None
        # fold=0 puts a midnight that a DST gap skips at the day's first real instant.
        midnight = datetime.combine(self._day + timedelta(days=1), time(0), tzinfo=self._tz)
        return midnight.astimezone(UTC)

    def state(self, now: datetime | None = None) -> bytes:
        """The :func:`ha_state` message of the tally (``today`` as of ``now`` when given)."""
        return ha_state(last_label=self._label, last_time=self._time, today=self.today(now))

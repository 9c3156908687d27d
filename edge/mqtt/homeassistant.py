"""Home Assistant MQTT discovery (``[mqtt] ha_discovery``): one HA device per wildedge device.

Pure functions: :func:`discovery_messages` makes the retained config messages (topic
``<ha_prefix>/sensor/<node>/<object>/config``, HA's MQTT discovery schema) for six sensors; ``<node>``
is :func:`node_id`, the device id where HA allows it as it is. Three
read the health message (CPU temperature, disk free, outbox queue); three read a small retained
state message on ``<prefix>/<device>/ha`` (:func:`ha_state`), which names the last detection in
words because Home Assistant cannot map an event's class indices. :class:`DetectionTally` keeps
what that message says. Every sensor is available while the retained status says ``online``.

A value the device could not read is absent from its message; the templates then render
``'None'``, which HA shows as ``unknown`` (an empty string would keep a stale number).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from edge import payload as wire

logger = logging.getLogger(__name__)

HA_STATE_LEVEL = "ha"
#: The store's meta key under which the daemon keeps :meth:`DetectionTally.dumps` across restarts.
TALLY_KEY = "ha_tally"
MANUFACTURER = "wildedge"
MODEL = "wildedge field daemon"
MAX_STATE_CHARS = 255  # Home Assistant refuses longer states
#: What HA accepts as ``<node_id>`` in a discovery topic (docs: "Discovery topic"; HA's TOPIC_MATCHER).
_NODE_OK = re.compile(r"[A-Za-z0-9_-]+")
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


def node_id(device: str) -> str:
    """The ``<node_id>`` level of ``device``'s discovery topics: HA allows only ``[A-Za-z0-9_-]``.

    A device id made of those is used as it is (so existing topics stay put). Any other (one with a
    ``.``) has them replaced by ``_`` and the first 8 hex digits of the id's sha256 appended, so that
    ``trap.01`` (``trap_01_<hash>``) and ``trap_01`` never share topics: HA keys a discovered entity
    by (component, node id, object id), and two devices on one topic would overwrite each other.
    A device with a ``.`` in its id that published discovery before this rule leaves its old configs
    retained under ``<ha_prefix>/sensor/<id with _>/``: HA keeps using them (same unique ids and state
    topics) until they are cleared by hand, which only its owner can tell apart from another device's.
    """
    device = wire.topics("wildedge", device).device  # checks the id
    if _NODE_OK.fullmatch(device):
        return device
    return f"{_NODE_BAD.sub('_', device)}_{hashlib.sha256(device.encode()).hexdigest()[:8]}"


def _config_topic(ha_prefix: str, device: str, object_id: str) -> str:
    wire.topics(ha_prefix, device)  # the same rules as our own prefix: non-empty levels, no wildcards
    return f"{ha_prefix}/sensor/{node_id(device)}/{object_id}/config"


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


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"a boot-relative time must be seconds >= 0: {value!r}")
    return float(value)


def ha_state(*, device: str, last_label: str | None, last_time: datetime | None, today: int | None) -> bytes:
    """The retained state message on :func:`ha_state_topic`: ``{"v":1,"d":..,"last":..,"at":..,"today":..}``.

    ``at`` is UTC to the second (``2026-06-01T04:30:00Z``); unknown values (``today`` None: the
    device does not know which day it is) are left out, never null. The wire format's schema has
    it as ``$defs/ha`` (docs/wire-format.md).

    Raises:
        ValueError: a bad device id, an empty label, a naive time, or ``today`` not an integer >= 0.
    """
    if today is not None and (isinstance(today, bool) or not isinstance(today, int) or today < 0):
        raise ValueError(f"today must be an integer >= 0: {today!r}")
    out: dict[str, Any] = wire._head(device)
    if last_label is not None:
        out["last"] = _label(last_label)
    if last_time is not None:
        utc = _aware(last_time, "last_time").astimezone(UTC).replace(microsecond=0, tzinfo=None)
        out["at"] = utc.isoformat() + "Z"
    if today is not None:
        out["today"] = today
    return wire.dumps(out)


class DetectionTally:
    """What :func:`ha_state` reports: the latest detection, and the detections of the device's local day.

    "Today" is the device's own current local day, read from its clock (``now``), never from a
    detection: a replayed photo from another day neither resets nor advances it, so the count only
    grows within a day and restarts at local midnight (a calendar day, 23 or 25 hours across a DST
    change). A detection counts for today when its time falls on that day: a live camera's always,
    a folder camera's photo only when it was taken today.

    Times: a detection's time is known when the device clock was synchronised or when it is the
    camera's own (a folder camera's photo). A live detection made while the clock was not
    synchronised is kept by its boot-relative time and placed (and counted, if it falls on today)
    as soon as the clock is synchronised, the same correction a server makes. Until then its label
    is shown with no time, and ``today`` is absent (HA shows unknown): the device does not know
    which day it is. Once the clock has been synchronised the tally keeps the offset between wall
    and boot time, so a clock that later loses synchronisation still knows the day.
    """

    META_KEY = TALLY_KEY

    def __init__(self, device: str) -> None:
        self.device = wire.topics("wildedge", device).device  # checks the id
        self._day: date | None = None
        self._tz: tzinfo = UTC
        self._count = 0
        self._label: str | None = None
        self._time: datetime | None = None
        self._offset: timedelta | None = None  # wall time - boot time, from the last synchronised reading
        self._pending: list[float] = []  # boot times of live detections made before the offset was known
        self._last_pending: float | None = None  # the latest detection is one of them: its boot time

    def _now(self, now: datetime | None, monotonic: float) -> datetime | None:
        if now is not None:
            self._offset = _aware(now, "now") - timedelta(seconds=_seconds(monotonic))
            return now
        return None if self._offset is None else self._offset + timedelta(seconds=_seconds(monotonic))

    def refresh(self, *, now: datetime | None, monotonic: float, tz: tzinfo | None = None) -> bool:
        """Follow the device clock: ``now`` when it is synchronised (else None), ``monotonic`` its boot time.

        Moves "today" to the current local day (never back) and places detections that waited for a
        synchronised clock. Returns whether :meth:`state` changed.
        """
        if tz is not None:
            if not isinstance(tz, tzinfo):
                raise TypeError(f"tz must be a tzinfo: {tz!r}")
            self._tz = tz
        before = self.state()
        current = self._now(now, monotonic)
        if current is None:
            return False
        day = current.astimezone(self._tz).date()
        if self._day is None or day > self._day:
            self._day, self._count = day, 0
        offset = current - timedelta(seconds=_seconds(monotonic))
        for boot_time in self._pending:
            self._count += self._on_today(offset + timedelta(seconds=boot_time))
        self._pending = []
        if self._last_pending is not None:
            self._time, self._last_pending = offset + timedelta(seconds=self._last_pending), None
        return self.state() != before

    def follow(self, clock: Any, tz: tzinfo | None = None) -> bool:
        """:meth:`refresh` from an ``edge.clock`` clock (its time counts only when it is synchronised)."""
        return self.refresh(now=clock.now() if clock.synchronised() else None, monotonic=clock.monotonic(), tz=tz)

    def add_event(self, event: Any, frames: Sequence[Any], *, clock: Any, tz: tzinfo) -> None:
        """Count a stored event (``EventRecord``) of the daemon, whose burst is ``frames`` (``Processed``).

        Its label is the burst's species vote, else the detector's best label; its time is known when
        the device clock was synchronised or when it is a folder camera's photo (the camera's time).
        """
        vote = event.summary.get("classification") or {}
        label = vote.get("label") or event.summary["best"]["label"]
        best = next((p.record for p in frames if p.record.uid == event.best_frame_uid), None)
        known = event.clock_synced or (best is not None and wire.camera_clock(best))
        synced = clock.synchronised()
        self.add(label, at=event.captured_at if known else None, boot_time=event.monotonic, tz=tz,
                 now=clock.now() if synced else None, monotonic=clock.monotonic())

    def _on_today(self, at: datetime) -> bool:
        return self._day is not None and at.astimezone(self._tz).date() == self._day

    def add(self, label: str, *, at: datetime | None, boot_time: float, tz: tzinfo, now: datetime | None,
            monotonic: float) -> None:
        """Count one detection.

        Args:
            label: what was seen (the burst's species vote, else the detector's label).
            at: its time when known (a synchronised device clock, or a folder camera's photo time);
                None for a live detection made while the clock was not synchronised.
            boot_time: its boot-relative time (placed with it once the clock is synchronised).
            tz: the device's zone (``[device] timezone``).
            now, monotonic: as for :meth:`refresh`.
        """
        label = _label(label)
        if at is not None:
            at = _aware(at, "at")
        self.refresh(now=now, monotonic=monotonic, tz=tz)
        if at is None and self._offset is not None:
            at = self._offset + timedelta(seconds=_seconds(boot_time))
        if at is None:
            self._pending.append(_seconds(boot_time))
            self._label, self._time, self._last_pending = label, None, _seconds(boot_time)
            return
        self._count += self._on_today(at)
        if self._last_pending is None and (self._time is None or at >= self._time):
            self._label, self._time = label, at

    def today(self) -> int | None:
        """Detections of the device's current local day; None while it does not know the day."""
        return self._count if self._day is not None and self._offset is not None else None

    def next_reset(self) -> datetime | None:
        """The local midnight that ends the counted day (UTC), when to :meth:`refresh`; None before any."""
        if self._day is None:
            return None
        # fold=0 puts a midnight that a DST gap skips at the day's first real instant.
        midnight = datetime.combine(self._day + timedelta(days=1), time(0), tzinfo=self._tz)
        return midnight.astimezone(UTC)

    def state(self) -> bytes:
        """The :func:`ha_state` message of the tally, as of the last :meth:`add` or :meth:`refresh`."""
        return ha_state(device=self.device, last_label=self._label, last_time=self._time, today=self.today())

    def dumps(self) -> str:
        """What survives a restart (the counted day, its count, the latest detection) as JSON text."""
        return json.dumps({"day": self._day.isoformat() if self._day else None, "count": self._count,
                           "label": self._label, "at": self._time.isoformat() if self._time else None})

    def restore(self, text: str | None) -> None:
        """Take back what :meth:`dumps` wrote; unreadable text is ignored (the tally starts empty)."""
        try:
            data = json.loads(text) if text else {}
            day = date.fromisoformat(data["day"]) if data.get("day") else None
            count = data.get("count", 0)
            label = _label(data["label"]) if data.get("label") is not None else None
            at = _aware(datetime.fromisoformat(data["at"]), "at") if data.get("at") else None
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"bad count {count!r}")
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            logger.warning("Home Assistant tally not restored: %s", err)
            return
        self._day, self._count, self._label, self._time = day, count, label, at

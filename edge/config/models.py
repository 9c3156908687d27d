"""The daemon's config: one pydantic model per TOML section, and ``Config`` holding them all."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from edge.config.sources import CameraConfig, Section, TriggerConfig, problem_at
from edge.config.units import ByteSize, Duration, PositiveDuration, UserPath

_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
SECRETS_HINT = (
    "secrets do not belong in the config file: put the password in a file readable only by the daemon "
    "and set password_file, or pass it as a systemd credential (LoadCredential=, read from "
    "$CREDENTIALS_DIRECTORY)")


class DeviceConfig(Section):
    """Who this device is, where it keeps its state, and where on Earth it stands."""

    id: str = Field(description="device name: MQTT topic level and client id")
    profile: str | None = Field(
        None, description="device profile (firmware_configs/profiles/NAME.toml) whose [camera] and [detector] keys "
                          "fill in what this file leaves out")
    state_dir: UserPath = Field(Path("/var/lib/wildedge"), description="SQLite store and images/ live here")
    latitude: float | None = Field(None, ge=-90, le=90, description="decimal degrees, north positive")
    longitude: float | None = Field(None, ge=-180, le=180, description="decimal degrees, east positive")
    timezone: str | None = Field(None, description="IANA zone name; default: the system's local zone")
    rtc: bool = Field(False, description="trust the wall clock without NTP (battery-backed RTC)")
    max_image_pixels: int = Field(
        100_000_000, ge=1, description="a photo whose header claims more pixels is a failed frame, never decoded")

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _DEVICE_ID.fullmatch(value):
            raise ValueError(
                f"invalid device id {value!r}: 1-64 letters, digits, '_', '.' or '-', starting with a letter "
                "or digit (it becomes an MQTT topic level)")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            close = difflib.get_close_matches(value, sorted(available_timezones()), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "use an IANA name such as 'Europe/Amsterdam'"
            raise ValueError(f"unknown time zone {value!r} ({hint})") from None
        return value

    @model_validator(mode="after")
    def _check_location(self) -> DeviceConfig:
        if (self.latitude is None) != (self.longitude is None):
            missing = "longitude" if self.longitude is None else "latitude"
            raise problem_at(missing, "missing: latitude and longitude go together (decimal degrees)")
        return self

    def zone(self) -> tzinfo:
        """The configured zone, or the system's local zone when none is set."""
        if self.timezone is not None:
            return ZoneInfo(self.timezone)
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else ZoneInfo("UTC")


class DetectorConfig(Section):
    """The detection model and optional overrides of its card's thresholds."""

    model: UserPath = Field(description="ONNX detector file (carries its model card)")
    conf: float | None = Field(None, ge=0, le=1, description="score threshold; default: the card's")
    iou: float | None = Field(None, ge=0, le=1, description="NMS IoU threshold; default: the card's")
    threads: int | None = Field(None, ge=1, le=64, description="inference threads; default: onnxruntime's")


class ClassifierConfig(Section):
    """An optional second-stage classifier run on detection crops."""

    model: UserPath = Field(description="ONNX classifier file")
    classes: tuple[str, ...] | None = Field(
        None, description="detector labels whose crops are classified; default: all")
    min_confidence: float = Field(0.0, ge=0, le=1, description="top probability below this counts as unknown")
    margin: float = Field(0.1, ge=0, le=1, description="top-1 must beat top-2 by this much")

    @field_validator("classes")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("empty: leave `classes` out to classify every detection, or remove [classifier]")
        return value


class EventsConfig(Section):
    """How detections of a burst become an event."""

    mode: Literal["burst", "sticky"] = Field(
        "burst", description="burst: every burst with detections; sticky: only objects not seen before")
    match_iou: float = Field(0.3, gt=0, le=1, description="sticky: IoU at which a box is the same object")


class PrivacyConfig(Section):
    """What happens to images that show a person."""

    person: Literal["drop", "blur", "keep"] = Field("drop", description="drop, blur or keep such images")
    labels: tuple[str, ...] = Field(("person", "human"), description="detector labels that mean a person")

    @field_validator("labels")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError('empty: to keep images of people, set person = "keep" instead')
        return value


class StorageConfig(Section):
    """Which images are kept on the device, and for how long."""

    save_images: Literal["all", "detections", "none"] = Field(
        "detections", description="which frames' images are written to disk")
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of saved images")
    max_age: PositiveDuration = Field(
        timedelta(days=30), description="delete delivered frames and images older than this")
    min_free: ByteSize = Field(
        200_000_000, ge=0, description="keep at least this much disk free (the oldest images go first)")
    reserve: ByteSize = Field(
        16_000_000, ge=0, description="disk space held in <state_dir>/reserve and given back when the disk is "
                                      "full, so results are still recorded and retention can run; 0 turns it off")


class HealthConfig(Section):
    """Periodic health snapshots."""

    interval: PositiveDuration = Field(timedelta(minutes=5), description="time between health snapshots")


#: What ``[mqtt] remote_set`` allows by default: thresholds, intervals, windows and storage settings.
REMOTE_SET_DEFAULT = (
    "detector.conf", "detector.iou", "classifier.min_confidence", "classifier.margin", "events.match_iou",
    "trigger.*", "storage.save_images", "storage.jpeg_quality", "storage.max_age", "storage.min_free",
    "health.interval", "mqtt.effort_interval", "mqtt.health", "mqtt.crops", "mqtt.crop_min_interval")
#: Sections no remote ``set`` may ever touch: identity and paths, cameras, the privacy policy.
_NEVER_REMOTE_SECTIONS = {"device": "identity and paths", "camera": "camera paths and hardware",
                          "privacy": "the privacy policy"}
#: Single keys no remote ``set`` may ever touch, even under a ``section.*`` pattern.
_NEVER_REMOTE_KEYS = {"detector.model": "a model path", "classifier.model": "a model path",
                      "trigger.type": "the trigger's kind"}
#: The only ``[mqtt]`` keys a remote ``set`` may touch; the rest is the broker, identity and security.
_REMOTE_MQTT_KEYS = frozenset({"effort_interval", "health", "crops", "crop_min_interval"})
_REMOTE_PATTERN = re.compile(r"([a-z_]+)\.([a-z_]+|\*)")


def _remote_refusal(pattern: str) -> str | None:
    """Why ``pattern`` (``section.key`` or ``section.*``) may never be allowed remotely, or None."""
    match = _REMOTE_PATTERN.fullmatch(pattern)
    if match is None:
        return f"{pattern!r} is not \"section.key\" or \"section.*\""
    section, key = match.groups()
    if section in _NEVER_REMOTE_SECTIONS:
        return f"{pattern!r}: {_NEVER_REMOTE_SECTIONS[section]} can never be set remotely"
    if pattern in _NEVER_REMOTE_KEYS:
        return f"{pattern!r}: {_NEVER_REMOTE_KEYS[pattern]} can never be set remotely"
    known = _section_keys(section)
    if not known or (key != "*" and key not in known):
        names = sorted(known) if known else sorted(Config.model_fields)
        guess = difflib.get_close_matches(key if known else section, names, n=1)
        hint = f" (did you mean {section + '.' if known else ''}{guess[0]}?)" if guess else ""
        return f"{pattern!r}: no such config key{hint}"
    if section == "mqtt" and key != "*" and key not in _REMOTE_MQTT_KEYS:
        return (f"{pattern!r}: broker, identity and security keys can never be set remotely (mqtt keys that can: "
                f"{', '.join(sorted(_REMOTE_MQTT_KEYS))})")
    return None


def _section_keys(section: str) -> set[str]:
    """The keys of config section ``section`` (every trigger kind's for ``trigger``); empty if none."""
    from edge.config.sources import ExternalTrigger, MotionTrigger, TimelapseTrigger

    if section == "trigger":
        return {k for model in (TimelapseTrigger, MotionTrigger, ExternalTrigger) for k in model.model_fields}
    field = Config.model_fields.get(section)
    model = getattr(field, "annotation", None)
    model = next((a for a in getattr(model, "__args__", (model,)) if isinstance(a, type) and issubclass(a, Section)),
                 None)
    return set(model.model_fields) if model is not None else set()


def remote_settable(key: str, patterns: Sequence[str]) -> bool:
    """Whether a remote ``set`` may change ``key``: allowed by one of ``patterns`` and never forbidden.

    ``section.*`` allows every key of the section that may be set remotely at all (never
    ``trigger.type``, a model path, or an ``[mqtt]`` key outside the four documented ones).
    """
    if _remote_refusal(key) is not None or "*" in key:
        return False
    section = key.split(".", 1)[0]
    return any(pattern in (key, f"{section}.*") for pattern in patterns)


class BrokerUrl:
    """``tls``, ``host`` and ``port`` of the ``url`` attribute (``mqtt://`` or ``mqtts://``), for the
    daemon's ``[mqtt]`` and the collector's broker options alike."""

    __slots__ = ()
    url: str

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS (``mqtts://``)."""
        return broker_address(self.url)[0]

    @property
    def host(self) -> str:
        """The broker's host name or address."""
        return broker_address(self.url)[1]

    @property
    def port(self) -> int:
        """The broker's port: the URL's, else 1883 (mqtt) or 8883 (mqtts)."""
        return broker_address(self.url)[2]


class MqttConfig(Section, BrokerUrl):
    """The MQTT broker results are delivered to."""

    url: str = Field(description="mqtt://host[:port] or mqtts://host[:port] (TLS)")
    prefix: str = Field("wildedge", description="first topic level")
    username: str | None = Field(None, min_length=1, description="broker user name")
    password_file: UserPath | None = Field(None, description="file holding the broker password")
    ca_file: UserPath | None = Field(None, description="mqtts: CA bundle; default: the system's")
    cert_file: UserPath | None = Field(None, description="mqtts: client certificate (PEM)")
    key_file: UserPath | None = Field(None, description="mqtts: client private key (PEM)")
    keepalive: Duration = Field(timedelta(seconds=60), description="MQTT keepalive, whole seconds")
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="MQTT version; auto tries 5 and falls back to 3.1.1 when the broker refuses it")
    session_expiry: PositiveDuration = Field(
        timedelta(days=7), description="how long the broker keeps the session (queued commands) while offline")
    max_inflight: int = Field(20, ge=1, le=1000, description="messages published and not yet acknowledged")
    max_queue: int = Field(
        200_000, ge=100, description="outbox messages kept while undelivered; beyond, the oldest are dropped")
    max_queue_bytes: ByteSize = Field(
        64_000_000, ge=100_000, description="payload bytes kept in the outbox while undelivered; beyond, crops "
                                              "go first, then the oldest messages")
    max_queue_age: PositiveDuration = Field(
        timedelta(days=365), description="undelivered outbox messages older than this are dropped")
    effort_interval: PositiveDuration = Field(
        timedelta(hours=1), description="time between sampling-effort summaries (frames, empty, events)")
    drain_timeout: Duration = Field(
        timedelta(seconds=60), description="--once and finished replays: wait this long for the outbox to empty")
    health: bool = Field(True, description="publish health snapshots on <prefix>/<device>/health")
    send_location: bool = Field(
        False, description="send [device] latitude/longitude in the status message (a collector's Camtrap DP "
                           "deployments need them; a trap's position can be sensitive)")
    require_subscriber: bool = Field(
        False, description="keep an event or effort message queued while the broker says nobody subscribes to it "
                           "(MQTT 5 reason 0x10), e.g. before the collector has (re)subscribed")
    crops: bool = Field(False, description="publish a small JPEG crop of each event's best detection")
    crop_max_bytes: ByteSize = Field(20_000, ge=1000, description="largest crop sent; smaller JPEG quality first")
    crop_min_interval: Duration = Field(timedelta(minutes=1), description="at most one crop per this time")
    ha_discovery: bool = Field(False, description="publish Home Assistant MQTT discovery for this device")
    ha_prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix")
    remote_set: tuple[str, ...] = Field(
        REMOTE_SET_DEFAULT, description="keys a remote set command may change: \"section.key\" or \"section.*\"; "
                                        "[] turns set off. Never privacy, device, camera, model or broker keys")
    command_key_file: UserPath | None = Field(
        None, description="file holding the HMAC-SHA256 key every command must be signed with; default: the "
                          "systemd credential command-key when there is one, else commands are not signed")
    # Present only so that `password = ...` gets the secrets hint rather than "unknown key".
    password: SkipJsonSchema[Any] = Field(None, exclude=True, repr=False)

    @field_validator("password")
    @classmethod
    def _no_password(cls, value: Any) -> None:
        raise ValueError(SECRETS_HINT)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        # Credentials first: the other messages echo the URL, which must not carry a password into logs.
        if "@" in value:
            raise ValueError("credentials do not belong in the URL: set username and password_file")
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError as err:
            raise ValueError(f"invalid URL {value!r}: {err}") from None
        if parts.scheme not in _DEFAULT_PORTS:
            raise ValueError(f"must start with mqtt:// or mqtts:// (got {value!r})")
        if not parts.hostname:
            raise ValueError(f"no host in {value!r} (use e.g. mqtt://broker.example:1883)")
        if port == 0 or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"must be mqtt[s]://host[:port] only (got {value!r})")
        return value

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value or any(not level for level in value.split("/")) or set(value) & {"+", "#", "\0"}:
            raise ValueError(
                f"invalid topic prefix {value!r}: non-empty levels separated by '/', without '+', '#' "
                "or a leading/trailing '/'")
        return value

    @field_validator("remote_set")
    @classmethod
    def _check_remote_set(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            problem = _remote_refusal(pattern)
            if problem is not None:
                raise ValueError(f"{problem}; such keys need someone at the config file")
        return value

    @field_validator("keepalive")
    @classmethod
    def _check_keepalive(cls, value: timedelta) -> timedelta:
        seconds = value.total_seconds()
        if seconds != int(seconds) or not 1 <= seconds <= 65535:
            raise ValueError(f"must be a whole number of seconds from 1s to 65535s (got {seconds:g}s)")
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> MqttConfig:
        for key in ("ca_file", "cert_file", "key_file"):
            if getattr(self, key) is not None and not self.tls:
                raise problem_at(key, "TLS files need an mqtts:// url")
        if self.key_file is not None and self.cert_file is None:
            raise problem_at("cert_file", "missing: key_file needs cert_file")
        if self.password_file is not None and self.username is None:
            raise problem_at("username", "missing: password_file needs username")
        return self


def broker_address(url: str) -> tuple[bool, str, int]:
    """``(tls, host, port)`` of an ``mqtt://`` or ``mqtts://`` URL (default ports 1883 and 8883).

    Raises:
        ValueError: the port is not a number.
    """
    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    return tls, parts.hostname or "", parts.port or _DEFAULT_PORTS["mqtts" if tls else "mqtt"]


class Config(Section):
    """The whole daemon config file."""

    device: DeviceConfig
    camera: CameraConfig
    trigger: TriggerConfig | None = Field(
        None, description="when to capture; required for live cameras. A folder camera without one processes "
                    "each file as it appears; with one, it reads the new files when the trigger fires")
    detector: DetectorConfig
    classifier: ClassifierConfig | None = None
    events: EventsConfig = EventsConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    storage: StorageConfig = StorageConfig()
    health: HealthConfig = HealthConfig()
    mqtt: MqttConfig | None = None

    @model_validator(mode="after")
    def _check_cross(self) -> Config:
        if self.mqtt is not None and self.mqtt.send_location and self.device.latitude is None:
            raise problem_at("mqtt.send_location", "needs device.latitude and device.longitude")
        if self.trigger is None:
            if self.camera.type != "folder":
                raise problem_at("trigger", "missing: add a [trigger] section (a live camera needs one)")
            return self
        if self.trigger.type == "motion" and not self.camera.can_preview:
            raise problem_at(
                "trigger.type",
                "a motion trigger needs a live camera (picamera2 or opencv); "
                f"a {self.camera.type} camera has no preview stream: "
                'use type = "timelapse" or "external"')
        if self.device.latitude is None:
            for index, window in enumerate(self.trigger.windows):
                if window.uses_sun:
                    raise problem_at(
                        f"trigger.active[{index}]",
                        f"{window.text!r} uses sunrise/sunset: set device.latitude and device.longitude")
        return self

"""The field daemon's config file: typed sections, value types, and loading with ``--set`` overrides.

``load_config(path, overrides=[...])`` returns a frozen :class:`Config` or raises
:class:`InvalidConfigError` (a ``ConfigError``) whose ``problems`` list one ``key.path: message``
line per problem. The keys are documented in ``docs/config.md``.
"""

from __future__ import annotations

from edge.config.load import (
    InvalidConfigError,
    apply_override,
    config_from_dict,
    format_error,
    load_config,
    parse_override_value,
)
from edge.config.models import (
    ClassifierConfig,
    Config,
    DetectorConfig,
    DeviceConfig,
    EventsConfig,
    HealthConfig,
    MqttConfig,
    PrivacyConfig,
    StorageConfig,
)
from edge.config.sources import (
    CameraConfig,
    ExternalTrigger,
    FolderCamera,
    MotionTrigger,
    OpenCVCamera,
    Picamera2Camera,
    TimelapseTrigger,
    TriggerConfig,
)
from edge.config.units import (
    ByteSize,
    Duration,
    PositiveDuration,
    SunTime,
    WindowEnd,
    WindowSpec,
    parse_duration,
    parse_size,
    parse_window,
)

__all__ = [
    "ByteSize", "CameraConfig", "ClassifierConfig", "Config", "DetectorConfig", "DeviceConfig", "Duration",
    "EventsConfig", "ExternalTrigger", "FolderCamera", "HealthConfig", "InvalidConfigError", "MotionTrigger",
    "MqttConfig", "OpenCVCamera", "Picamera2Camera", "PositiveDuration", "PrivacyConfig", "StorageConfig",
    "SunTime", "TimelapseTrigger", "TriggerConfig", "WindowEnd", "WindowSpec", "apply_override",
    "config_from_dict", "format_error", "load_config", "parse_duration", "parse_override_value",
    "parse_size", "parse_window",
]

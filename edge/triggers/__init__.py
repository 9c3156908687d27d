"""Triggers: when the daemon captures. Timelapse (wall-clock slots), motion (preview frame difference),
external (GPIO PIR sensor, commands), one-shot; active windows by clock time or sunrise/sunset; and
the control socket that carries commands from the CLI to a running daemon.

gpiozero is imported only when a :class:`GpioTrigger` opens.
"""

from __future__ import annotations

from edge.triggers.base import Fire, OnceTrigger, Trigger, as_utc
from edge.triggers.control import ControlServer, send_command
from edge.triggers.external import ExternalTriggers, GpioTrigger
from edge.triggers.motion import MotionDetector, MotionResult, MotionTrigger
from edge.triggers.timelapse import Timelapse
from edge.triggers.windows import HORIZON, ActiveWindows, system_zone

__all__ = [
    "HORIZON", "ActiveWindows", "ControlServer", "ExternalTriggers", "Fire", "GpioTrigger", "MotionDetector",
    "MotionResult", "MotionTrigger", "OnceTrigger", "Timelapse", "Trigger", "as_utc", "send_command",
    "system_zone",
]

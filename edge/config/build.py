"""From a validated :class:`~edge.config.Config` to runtime objects: the camera and the triggers.

Kept apart from the models so that loading and checking a config never imports OpenCV paths,
picamera2 or gpiozero; the capture and trigger modules themselves import their hardware
libraries only when a device opens.
"""

from __future__ import annotations

from datetime import timedelta, tzinfo
from typing import Callable

from edge import capture
from edge.capture.base import Camera
from edge.clock import Clock
from edge.config.models import Config
from edge.triggers import (
    ActiveWindows,
    ExternalTriggers,
    GpioTrigger,
    MotionDetector,
    MotionTrigger,
    Timelapse,
)
from edge.triggers.base import Trigger

#: Frames wider than this are downscaled before motion detection (a picamera2 lores stream is
#: used at its own size).
MOTION_WIDTH = 320


def build_camera_factory(
    cfg: Config, *, clock: Clock, is_processed: Callable[[str], bool], tz: tzinfo | None = None,
) -> Callable[[], Camera]:
    """A function making a fresh, unopened camera for ``[camera]`` (called again on every reopen)."""
    cam = cfg.camera
    if cam.type == "folder":
        return lambda: capture.FolderCamera(
            cam.path, mode=cam.mode, recursive=cam.recursive, settle=cam.settle, poll=cam.poll,
            is_processed=is_processed, clock=clock, tz=tz, max_pixels=cfg.device.max_image_pixels)
    if cam.type == "opencv":
        return lambda: capture.OpenCVCamera(
            cam.source, width=cam.width, height=cam.height, preview_width=MOTION_WIDTH, clock=clock)
    return lambda: capture.Picamera2Camera(
        width=cam.width, height=cam.height, lores_width=cam.lores_width, lores_height=cam.lores_height,
        settle=cam.settle, lock_exposure=cam.lock_exposure, clock=clock)


def build_windows(cfg: Config, *, tz: tzinfo | None = None) -> ActiveWindows:
    """The trigger's ``active`` windows (always active when none are given)."""
    return ActiveWindows(cfg.trigger.windows if cfg.trigger is not None else (), tz=tz, latitude=cfg.device.latitude,
                         longitude=cfg.device.longitude)


def build_external(cfg: Config, *, clock: Clock | None = None) -> ExternalTriggers:
    """The queue that sensors, commands and stop requests put fires on.

    The cooldown applies to sensor fires only (``[trigger] type = "external"``); commands and
    stop requests always go through.
    """
    trig = cfg.trigger
    if trig is None:
        return ExternalTriggers(clock=clock)
    cooldown = trig.cooldown if trig.type == "external" else timedelta(0)
    return ExternalTriggers(cooldown=cooldown, burst=trig.burst, clock=clock)


def build_triggers(
    cfg: Config, *, tz: tzinfo | None = None, external: ExternalTriggers,
) -> tuple[list[Trigger], GpioTrigger | None]:
    """The scheduled triggers the loop polls, and the GPIO sensor (unopened) when one is set."""
    trig = cfg.trigger
    windows = build_windows(cfg, tz=tz)
    if trig.type == "timelapse":
        return [Timelapse(trig.interval, tz=tz, windows=windows, burst=trig.burst)], None
    if trig.type == "motion":
        detector = MotionDetector(threshold=trig.threshold, min_area=trig.min_area, max_area=trig.max_area,
                                  blur=trig.blur, alpha=trig.alpha, width=MOTION_WIDTH)
        return [MotionTrigger(detector, fps=trig.fps, cooldown=trig.cooldown, windows=windows,
                              burst=trig.burst)], None
    gpio = GpioTrigger(trig.gpio_pin, external) if trig.gpio_pin is not None else None
    return [], gpio

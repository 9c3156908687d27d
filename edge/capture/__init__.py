"""Capture backends behind the ``Camera`` seam: folder (replay/watch), OpenCV, picamera2, fake,
and the reopening wrapper that keeps the daemon alive through device failures.

picamera2 itself is imported only when a :class:`Picamera2Camera` opens.
"""

from __future__ import annotations

from edge.capture.base import Camera, Frame
from edge.capture.exif import exif_time_utc, read_exif_datetime
from edge.capture.fake import FakeCamera
from edge.capture.folder import DEFAULT_EXTENSIONS, FolderCamera, natural_key
from edge.capture.opencv import OpenCVCamera, describe_source, grey_preview
from edge.capture.picam import Picamera2Camera
from edge.capture.reopen import ReopeningCamera

__all__ = [
    "DEFAULT_EXTENSIONS",
    "Camera",
    "FakeCamera",
    "FolderCamera",
    "Frame",
    "OpenCVCamera",
    "Picamera2Camera",
    "ReopeningCamera",
    "describe_source",
    "exif_time_utc",
    "grey_preview",
    "natural_key",
    "read_exif_datetime",
]

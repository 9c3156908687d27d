"""From per-frame detections to events: burst summaries, sticky-card arrivals, the privacy policy."""

from __future__ import annotations

from edge.group.burst import (
    BestDetection,
    Classification,
    ClassSummary,
    EventSummary,
    FrameDetections,
    Vote,
    normalise_box,
    summarise_burst,
)
from edge.group.privacy import PrivacyOutcome, PrivacyPolicy
from edge.group.sticky import NewObjectFilter

__all__ = [
    "BestDetection",
    "ClassSummary",
    "Classification",
    "EventSummary",
    "FrameDetections",
    "NewObjectFilter",
    "PrivacyOutcome",
    "PrivacyPolicy",
    "Vote",
    "normalise_box",
    "summarise_burst",
]

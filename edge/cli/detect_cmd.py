"""``wildedge detect``: run a detector (and optional classifier) over photos and videos."""

from __future__ import annotations


def detect() -> None:
    """Detect objects in photos and videos (being built)."""

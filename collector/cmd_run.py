"""``wildedge collect run``: subscribe to every device's topics and store what arrives."""

from __future__ import annotations


def run() -> None:
    """Subscribe to the devices' topics and store every message (work in progress)."""
    raise NotImplementedError

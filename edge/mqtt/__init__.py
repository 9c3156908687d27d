"""MQTT delivery: the outbox drained to a broker at least once (publisher), the client's
connection settings (connect), and what the daemon queues and answers (device).

paho-mqtt is imported only by this package; the daemon imports it only when ``[mqtt]`` is set.
"""

from __future__ import annotations

from edge.mqtt.device import EventMessages, apply_set, enqueue_effort, model_message, read_overrides
from edge.mqtt.publisher import DeliveryState, Publisher

__all__ = ["DeliveryState", "EventMessages", "Publisher", "apply_set", "enqueue_effort", "model_message",
           "read_overrides"]

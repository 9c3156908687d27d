"""``[mqtt] require_subscriber``: a message the broker gives to nobody (PUBACK 0x10) stays queued."""

from __future__ import annotations

import json
import time

from daemon_helpers import wait_until
from mqtt_helpers import Subscriber
from test_mqtt import _mqtt, _queue, store  # noqa: F401 (the fixture)

from edge.mqtt import Publisher


def test_messages_wait_for_a_subscriber_and_then_arrive(broker, store):
    uids = _queue(store, 10)
    with Publisher(_mqtt(broker.url, require_subscriber=True), device="trap-01", store=store) as pub:
        wait_until(lambda: pub.state.unheard >= 10)
        assert store.outbox_depth().count == 10  # acknowledged by the broker, given to nobody: kept
        sub = Subscriber(broker.host, broker.port, topic="wildedge/+/event")
        try:
            wait_until(lambda: store.outbox_depth().count == 0, 30)  # the retry after RETRY_UNHEARD_S
            sub.wait_for(lambda: len(sub.on("/event")) >= 10)
            assert {json.loads(m.payload)["e"] for m in sub.on("/event")} == set(uids)
        finally:
            sub.close()


def test_without_the_option_the_broker_drops_them(broker, store):
    _queue(store, 3)
    with Publisher(_mqtt(broker.url), device="trap-01", store=store) as pub:
        wait_until(lambda: store.outbox_depth().count == 0)
        time.sleep(0.2)
        assert pub.state.unheard == 0 and pub.state.acked == 3

"""The mosquitto fixtures against paho-mqtt 2: round trip, persistent sessions across a restart, TLS,
passwords and ACLs, and what the broker answers a denied publish."""

from __future__ import annotations

import queue
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import paho.mqtt.client as mqtt
import pytest
from broker import Mosquitto, TlsFiles
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

WAIT = 5.0
Factory = Callable[..., Mosquitto]


class Probe:
    """A paho client that records what the broker answers: CONNACK, PUBACKs and messages."""

    def __init__(self, client_id: str = "", *, protocol: MQTTProtocolVersion = mqtt.MQTTv5) -> None:
        # One connection per probe: a refused one is not retried.
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=protocol, reconnect_on_failure=False)
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.answered = threading.Event()  # a CONNACK came, or the connection closed without one
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.acks: dict[int, queue.Queue[ReasonCode]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: self.answered.set()
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_publish = lambda _c, _u, mid, code, _p: self._ack(mid).put(code)

    def _on_connect(self, _c: Any, _u: Any, flags: mqtt.ConnectFlags, code: ReasonCode, _p: Any) -> None:
        self.connack, self.session_present = code, flags.session_present
        self.answered.set()

    def _ack(self, mid: int) -> queue.Queue[ReasonCode]:
        return self.acks.setdefault(mid, queue.Queue())

    def connect(self, broker: Mosquitto, *, clean_start: bool = True, expiry: int = 0) -> ReasonCode | None:
        """Connect and wait for the CONNACK; None when the connection closed without one."""
        if self.client.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = expiry
            self.client.connect(broker.host, broker.port, clean_start=clean_start, properties=props)
        else:
            self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.answered.wait(WAIT), "no CONNACK and no disconnect"
        return self.connack

    def subscribe(self, topic: str) -> None:
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(WAIT)

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """A QoS 1 publish; the reason code of its PUBACK."""
        info = self.client.publish(topic, payload, qos=1)
        return self._ack(info.mid).get(timeout=WAIT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def test_round_trip(broker: Mosquitto) -> None:
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    with Probe() as sub, Probe() as pub:
        assert sub.connect(broker) == "Success"
        sub.subscribe("wildedge/test/#")
        assert pub.connect(broker) == "Success"
        assert pub.publish("wildedge/test/a", b"fox") == "Success"
        message = sub.messages.get(timeout=WAIT)
        # MQTT v5 tells a publisher that nobody subscribes (0x10); it is a success code all the same.
        code = pub.publish("nobody/listens", b"owl")
        assert (code.value, code.is_failure) == (0x10, False)
    assert (message.topic, message.payload, message.qos) == ("wildedge/test/a", b"fox", 1)


@pytest.mark.parametrize("between", ["reconnect", "broker restart"])
def test_persistent_session_gets_what_was_sent_while_offline(broker: Mosquitto, between: str) -> None:
    with Probe("collector") as sub:
        assert sub.connect(broker, clean_start=False, expiry=3600) == "Success"
        sub.subscribe("wildedge/#")
    with Probe("trap-01") as pub:
        pub.connect(broker)
        assert pub.publish("wildedge/trap-01/det", b"deer") == "Success"  # queued for the session
    port = broker.port
    if between == "broker restart":
        broker.restart()  # SIGTERM: mosquitto saves the queued message to its database
    assert broker.port == port
    with Probe("collector") as sub:
        assert sub.connect(broker, clean_start=False, expiry=3600) == "Success"
        assert sub.session_present
        message = sub.messages.get(timeout=WAIT)
    assert (message.topic, message.payload) == ("wildedge/trap-01/det", b"deer")


def test_kill_then_start_serves_the_same_address(broker: Mosquitto) -> None:
    url = broker.url
    broker.kill()
    assert not broker.running
    broker.start()
    with Probe() as probe:
        assert probe.connect(broker) == "Success"
    assert broker.url == url


def _tls_probe(tls: TlsFiles, cert: Path, key: Path) -> Probe:
    probe = Probe()
    probe.client.tls_set(ca_certs=str(tls.ca), certfile=str(cert), keyfile=str(key))
    return probe


def test_tls_client_certificate(broker_factory: Factory, tls_files: TlsFiles) -> None:
    broker = broker_factory(tls=tls_files, client_certs=True)
    assert broker.url.startswith("mqtts://127.0.0.1:")
    with _tls_probe(tls_files, tls_files.client_cert, tls_files.client_key) as probe:
        assert probe.connect(broker) == "Success"
    assert "u'trap-01'" in broker.log()  # use_identity_as_username: the CN is the user name


def test_tls_rogue_certificate_is_refused(broker_factory: Factory, tls_files: TlsFiles) -> None:
    broker = broker_factory(tls=tls_files, client_certs=True)
    with _tls_probe(tls_files, tls_files.rogue_cert, tls_files.rogue_key) as probe:
        # TLS 1.3: the client finishes its handshake before the server checks the certificate, so
        # the refusal arrives either during connect() or as a closed connection without CONNACK.
        try:
            assert probe.connect(broker) is None
        except (ssl.SSLError, ConnectionError):
            pass
    assert "certificate verify failed" in broker.log()


def test_password(broker_factory: Factory) -> None:
    broker = broker_factory(passwords={"trap-01": "s3cret", "collector": "other"})
    for password, expected in [("s3cret", "Success"), ("wrong", "Not authorized"), (None, "Not authorized")]:
        with Probe() as probe:
            if password is not None:
                probe.client.username_pw_set("trap-01", password)
            # mosquitto 2.0 answers a wrong password with 0x87 Not authorized, not 0x86
            assert probe.connect(broker) == expected, password


ACL = "topic readwrite wildedge/#\ntopic read denied/#\n"


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v3.1.1"])
def test_acl_denied_publish(broker_factory: Factory, protocol: MQTTProtocolVersion) -> None:
    broker = broker_factory(acl=ACL)
    with Probe() as sub, Probe(protocol=protocol) as pub:
        sub.connect(broker)
        sub.subscribe("#")
        pub.connect(broker)
        code = pub.publish("denied/x", b"not delivered")
        if protocol == mqtt.MQTTv5:
            assert (code.value, code.is_failure) == (0x87, True)  # PUBACK "Not authorized"
        else:
            assert code == "Success"  # 3.1.1 has no reason codes: the message is dropped silently
        assert pub.client.is_connected()
        assert pub.publish("wildedge/x", b"delivered") == "Success"
        # Messages from one client arrive in order: had the denied one been delivered, it came first.
        assert sub.messages.get(timeout=WAIT).topic == "wildedge/x"
    assert "Denied PUBLISH" in broker.log()


def test_start_failure_shows_the_log(broker_factory: Factory) -> None:
    with pytest.raises(RuntimeError, match="(?s)exited with code .*no_such_option"):
        broker_factory(extra_config="no_such_option 1\n")

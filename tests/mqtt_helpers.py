"""A test-side MQTT subscriber (the server's part) and config builders for the delivery tests."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class Subscriber:
    """A persistent-session QoS 1 subscriber that records every message it gets, reconnecting on its own."""

    def __init__(self, host: str, port: int, *, topic: str = "wildedge/#", client_id: str = "collector",
                 tls: Any = None) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()  # set on the SUBACK: from then on nothing published is missed
        self.topic = topic
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.5)
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_args: self.ready.clear()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self.ready.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect_async(host, port, 30, clean_start=False, properties=props)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise RuntimeError("the test subscriber could not connect")

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(message)

    def on(self, suffix: str) -> list[paho.MQTTMessage]:
        with self.lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def json(self, suffix: str) -> list[dict]:
        return [json.loads(m.payload) for m in self.on(suffix)]

    def wait_for(self, predicate, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                with self.lock:
                    topics = [m.topic for m in self.messages][-20:]
                raise AssertionError(f"not received in {timeout} s; last topics: {topics}")
            time.sleep(0.05)

    def publish(self, topic: str, payload: bytes | str, *, correlation: bytes | None = None) -> None:
        props = None
        if correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        self.client.publish(topic, payload, qos=1, properties=props).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def daemon_config(tmp_path: Path, *, model: Path, photos: Path, url: str, extra: str = "",
                  mqtt_extra: str = "", camera: str = "") -> Path:
    """A TOML config: folder camera over ``photos``, the stamped ``model``, MQTT to ``url``."""
    from daemon_helpers import folder_config

    return folder_config(
        tmp_path / "wildedge.toml", state=tmp_path / "state", photos=photos, model=model, device='timezone = "UTC"',
        camera=camera, detector="conf = 0.15",
        extra=f'[privacy]\nperson = "keep"\n[health]\ninterval = "1s"\n[mqtt]\nurl = "{url}"\nkeepalive = "5s"\n'
              f'drain_timeout = "30s"\n{mqtt_extra}\n{extra}')


class V311OnlyProxy:
    """A TCP proxy to a real broker that turns MQTT 5 clients away as a 3.1.1-only broker does and
    relays 3.1.1 connections unchanged. ``reply`` is the CONNACK sent to an MQTT 5 CONNECT: by
    default 3.1.1's return code 1 "unacceptable protocol version" (what MQTT 3.1.1 section 3.1.2.2
    prescribes); ``V5_REFUSAL`` is MQTT 5's reason 0x84 "Unsupported Protocol Version".

    mosquitto itself always accepts MQTT 5, so this is how the client's fallback meets a broker
    that does not; the MQTT behind the proxy is the real broker's.
    """

    V311_REFUSAL = bytes([0x20, 0x02, 0x00, 0x01])
    V5_REFUSAL = bytes([0x20, 0x03, 0x00, 0x84, 0x00])

    def __init__(self, host: str, port: int, *, reply: bytes = V311_REFUSAL) -> None:
        import socket

        self.reply = reply
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.refused = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            head, length = self._read_connect(conn)
            level = head[-1] if head else None
            if level == 5:
                self.refused += 1
                # Read the rest of the CONNECT first: closing on unread data would reset the
                # connection before the client sees the CONNACK.
                rest = length - 7
                while rest > 0 and (chunk := conn.recv(rest)):
                    rest -= len(chunk)
                conn.sendall(self.reply)
                conn.shutdown(socket.SHUT_WR)
                time.sleep(0.1)
                conn.close()
                continue
            upstream = socket.create_connection(self.target)
            upstream.sendall(head)
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _read_connect(conn: Any) -> tuple[bytes, int]:
        """The CONNECT packet up to its protocol level byte, and its remaining length."""
        def exactly(n: int) -> bytes:
            data = b""
            while len(data) < n and (chunk := conn.recv(n - len(data))):
                data += chunk
            return data

        head = exactly(1)
        length, shift = 0, 0
        while True:
            byte = exactly(1)
            if not byte:
                return b"", 0
            head += byte
            length |= (byte[0] & 0x7F) << shift
            shift += 7
            if not byte[0] & 0x80:
                break
        return head + exactly(7), length  # name length (2), "MQTT" (4), protocol level (1)

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()

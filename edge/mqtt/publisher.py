"""Delivery: drain the SQLite outbox to the broker, at least once, in order, surviving everything.

One thread owns the paho client and does everything with it (connect, network loop, publish,
acks, commands), so nothing about the client is shared between threads. The rules:

* A row leaves the outbox only after its PUBACK (``Store.ack_many``), never when it is sent.
* At most ``max_inflight`` rows are in flight; the drain reads the outbox in ``seq`` order after
  the last row handed to paho. After a reconnect paho resends what was in flight (same message
  ids, DUP set); after a restart the cursor starts at 0 and every row still queued is sent again.
  The server deduplicates by event id.
* A PUBACK with a failure reason code (MQTT 5: an ACL that denies the topic answers 0x87 "Not
  authorized") keeps the row; it is retried after ``RETRY_REFUSED_S`` and counted in health.
  Under MQTT 3.1.1 a broker cannot say so: mosquitto acknowledges and drops the message.
* With ``require_subscriber``, a PUBACK saying "No matching subscribers" (MQTT 5 reason 0x10: the
  broker accepted the message and gave it to nobody) keeps the row too; it is retried after
  ``RETRY_UNHEARD_S``. This is what keeps events while no collector is subscribed, e.g. right
  after a mosquitto restart, which does not restore shared subscriptions of offline sessions.
* Connection failures back off exponentially with jitter (1 s to 5 min); a refused CONNACK (bad
  password, not authorised) is logged once per outage and shown in health.
* Status (``online`` on connect, ``offline`` as Last Will, ``stopped`` on a clean stop) and the
  model message are retained and published directly; health goes out at QoS 0 when connected.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge import commands
from edge import payload as wire
from edge.clock import Clock, SystemClock
from edge.errors import ConfigError, StoreError
from edge.mqtt.connect import V5, V311, Backoff, connect, make_client, read_command_key
from edge.mqtt.replay import META_KEY as REPLAY_META
from edge.mqtt.replay import ReplayGuard
from edge.store import Store

logger = logging.getLogger(__name__)

LOOP_S = 0.2  # network loop timeout: how often an idle publisher looks at the outbox
RETRY_REFUSED_S = 60.0
RETRY_UNHEARD_S = 5.0
#: A command whose correlation id was seen this recently is answered again, not executed again.
#: It spans the whole +-300 s a signed command's ``ts`` is accepted in, so a replay within it is caught.
COMMAND_DEDUP_S = 600.0
BAD_SIGNATURE_LOG_S = 60.0  # a flood of unsigned commands logs one warning per this time
COMMAND_DEDUP_MAX = 256
#: PUBACK reason "No matching subscribers" (MQTT 5, a success code: the broker kept nothing).
NO_SUBSCRIBERS = 0x10
LOOK_S = 5.0  # an idle publisher reads the outbox this often even without notify()
#: Reason code values that mean "this broker does not speak MQTT 5" (CONNACK 0x84, or 3.1.1's 1).
_UNSUPPORTED = {0x84, 1}

CommandHandler = Callable[[commands.Command], dict[str, Any]]


@dataclass
class DeliveryState:
    """What health reports about delivery."""

    connected: bool = False
    listening: bool = False  # the broker acknowledged the command subscription
    protocol: str = V5
    connects: int = 0
    disconnects: int = 0
    published: int = 0
    acked: int = 0
    refused: int = 0
    unheard: int = 0  # acknowledged with "no matching subscribers" and kept (require_subscriber)
    commands: int = 0
    commands_ignored: int = 0  # retained, or a repeat of a command already answered
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Publisher:
    """The delivery thread for one device (see the module docstring); ``start`` / ``stop``.

    Args:
        cfg: the ``[mqtt]`` section.
        device: the device id (client id and topic level).
        store: the open store whose outbox is drained.
        on_command: answers a parsed command with a result dict (raise nothing; errors are replies).
        model: the retained model message, published on every connect; None for none.
        location: (latitude, longitude) sent in every status message (``[mqtt] send_location``).
        clock: whether and what the wall time is, for signed commands' ``ts``; default the system's.

    Raises:
        ConfigError: the command key file cannot be read, is empty, or group/others may read it.
    """

    def __init__(self, cfg: Any, *, device: str, store: Store, on_command: CommandHandler | None = None,
                 model: bytes | None = None, retained: Sequence[tuple[str, bytes]] = (),
                 location: tuple[float, float] | None = None, clock: Clock | None = None) -> None:
        self.cfg = cfg
        # Read once at start: a key file others may read stops the daemon here, with one line.
        self.command_key = read_command_key(getattr(cfg, "command_key_file", None))
        self.clock = clock or SystemClock()
        self._bad_signature_logged = -BAD_SIGNATURE_LOG_S
        self.device = device
        self.store = store
        self.topics = wire.topics(cfg.prefix, device)
        self.on_command = on_command
        self.model = model
        self.location = location
        # Retained messages published on every connect: discovery configs, then the latest states.
        self._retained: dict[str, bytes] = dict(retained)
        self.state = DeliveryState(protocol=V311 if cfg.protocol == V311 else V5)
        self._client: paho.Client | None = None
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self._cursor = 0  # highest seq handed to paho
        self._acks: list[int] = []
        self._refused_seq: int | None = None
        self._retry_at = 0.0
        self._next_try = 0.0
        self._backoff = Backoff()
        self._connack_by = 0.0
        # A broker that has not answered CONNECT within a keepalive period is not going to.
        self._connack_timeout = max(5.0, min(30.0, cfg.keepalive.total_seconds()))
        self._direct: queue.Queue[tuple[str, bytes, int, bool]] = queue.Queue(maxsize=1000)
        self._stop = threading.Event()
        self._dirty = threading.Event()  # the outbox may have rows not yet handed to paho
        self._dirty.set()
        self._next_look = 0.0
        self._thread: threading.Thread | None = None
        self._stopped_acked = threading.Event()
        self._stopped_mid: int | None = None
        self._seen: dict[tuple, tuple] = {}  # command key -> its answer (topic, payload, properties)
        self._seen_at: dict[tuple, float] = {}
        # Signed commands already run, across restarts (edge/mqtt/replay.py).
        self.replay = ReplayGuard(lambda: store.get_meta(REPLAY_META),
                                  lambda text: store.set_meta(REPLAY_META, text)) if self.command_key else None

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Publish ``stopped`` (retained), wait briefly for its PUBACK, disconnect, join the thread."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout + 2.0)
        self._thread = None

    def __enter__(self) -> Publisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def notify(self) -> None:
        """New rows are in the outbox: look at it on the next loop turn (from any thread)."""
        self._dirty.set()

    def set_retained(self, topic: str, data: bytes) -> None:
        """Publish a retained state now (when connected) and again after every reconnect."""
        self._retained[topic] = data
        self.publish_direct(topic, data, qos=1, retain=True)

    def publish_direct(self, topic: str, data: bytes, *, qos: int = 0, retain: bool = False) -> bool:
        """Send outside the outbox (health, command results) when connected; False when dropped."""
        if not self.state.connected:
            return False
        try:
            self._direct.put_nowait((topic, data, qos, retain))
        except queue.Full:
            return False
        return True

    # -- the thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                client = self._client
                if client is None or not self.state.connected:
                    self._try_connect()
                    if self._client is not None and self._connack_by:
                        self._client.loop(LOOP_S)
                        self._check_connack()
                    continue
                client.loop(LOOP_S)
                if self.state.connected:  # refill the window first: the acks' fsync need not stall it
                    self._send_direct()
                    self._drain()
                self._flush_acks()
            self._goodbye()
        except Exception:  # the delivery thread must never die silently: the outbox keeps everything
            logger.exception("MQTT delivery thread failed; delivery stops until restart")
            self.state.last_error = "delivery thread failed (see the log)"
            self.state.connected = False

    def _try_connect(self) -> None:
        now = time.monotonic()
        if now < self._next_try or self._connack_by:
            if not self._connack_by:
                self._stop.wait(min(1.0, self._next_try - now))
            return
        try:
            if self._client is None:
                self._client = self._make()
            connect(self._client, self.cfg, protocol=self.state.protocol)
        except (OSError, ConfigError, ValueError) as err:
            self._failed(f"cannot connect to {self.cfg.host}:{self.cfg.port}: {err}")
            return
        self._connack_by = time.monotonic() + self._connack_timeout

    def _check_connack(self) -> None:
        if self._connack_by and time.monotonic() > self._connack_by and not self.state.connected:
            self._connack_by = 0.0
            if self._client is not None:
                self._client.disconnect()
            self._failed(f"no CONNACK from {self.cfg.host}:{self.cfg.port} within {self._connack_timeout:g} s")

    def _make(self) -> paho.Client:
        client = make_client(self.cfg, device=self.device, protocol=self.state.protocol,
                             will_topic=self.topics.status, will_payload=wire.encode_status(
                                 device=self.device, state="offline", location=self.location))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _failed(self, message: str) -> None:
        delay = self._backoff.next()
        self._next_try = time.monotonic() + delay
        if self.state.last_error != message:
            logger.warning("MQTT: %s; retrying in %.0f s", message, delay)
        else:
            logger.debug("MQTT: %s (again); retrying in %.0f s", message, delay)
        self.state.last_error = message

    # -- paho callbacks (run inside client.loop, in this thread) -------------------------------------
    def _on_connect(self, client: paho.Client, _userdata: Any, flags: Any, reason: Any, _props: Any) -> None:
        self._connack_by = 0.0
        if reason.is_failure:
            code = getattr(reason, "value", None)
            if code in _UNSUPPORTED and self.cfg.protocol == "auto" and self.state.protocol == V5:
                logger.info("MQTT: the broker does not speak MQTT 5; falling back to 3.1.1")
                self._switch_protocol(V311)
                return
            self._failed(f"broker refused the connection: {reason}")
            return
        self.state.connected = True
        self._dirty.set()
        self.state.connects += 1
        self.state.last_error = None
        self._backoff.reset()
        logger.info("MQTT: connected to %s:%d (MQTT %s, session %s)", self.cfg.host, self.cfg.port,
                    self.state.protocol, "resumed" if getattr(flags, "session_present", False) else "new")
        if self.state.protocol == V5:
            # Retain As Published: a command published retained keeps its flag even when it arrives
            # live, so it is ignored every time, not only at the reconnects after the first.
            client.subscribe(self.topics.cmd_filter, options=SubscribeOptions(qos=1, retainAsPublished=True))
        else:
            client.subscribe(self.topics.cmd_filter, qos=1)
        client.publish(self.topics.status, wire.encode_status(device=self.device, state="online",
                                                              at=time.time(), location=self.location),
                       qos=1, retain=True)
        if self.model is not None:
            client.publish(self.topics.model, self.model, qos=1, retain=True)
        for topic, data in list(self._retained.items()):
            client.publish(topic, data, qos=1, retain=True)

    def _switch_protocol(self, protocol: str) -> None:
        if self._client is not None:
            self._client.disconnect()
        self._client = None
        self.state.protocol = protocol
        self._inflight.clear()
        self._cursor = 0  # a new client has no session: send everything still queued again
        self._dirty.set()
        self._next_try = 0.0

    def _on_subscribe(self, _client: Any, _userdata: Any, _mid: int, reasons: Any, _props: Any) -> None:
        refused = [r for r in reasons if r.is_failure]
        if refused:
            logger.warning("MQTT: the broker refused the command subscription %s: %s",
                           self.topics.cmd_filter, refused[0])
        self.state.listening = not refused

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        was, waiting = self.state.connected, self._connack_by
        self.state.connected = False
        self.state.listening = False
        self._connack_by = 0.0
        if self._stop.is_set():
            return
        if was:
            self.state.disconnects += 1
            self._failed(f"disconnected: {reason}")
        elif waiting:
            # Closed before any CONNACK: a TLS 1.3 broker refusing our certificate looks like this.
            self._failed(f"the broker closed the connection before accepting it ({reason})")

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, reason: Any, _props: Any) -> None:
        if mid == self._stopped_mid:
            self._stopped_acked.set()
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return
        if reason.is_failure:
            self.state.refused += 1
            message = f"broker refused message {seq}: {reason}"
            if self.state.last_error != message:
                logger.warning("MQTT: %s; it stays queued and is retried in %.0f s", message, RETRY_REFUSED_S)
            self.state.last_error = message
            self._keep(seq, RETRY_REFUSED_S)
            return
        if getattr(reason, "value", 0) == NO_SUBSCRIBERS and self.cfg.require_subscriber:
            if not self.state.unheard:
                logger.warning("MQTT: nobody subscribes to %s yet; messages stay queued and are retried every "
                               "%.0f s", self.topics.event, RETRY_UNHEARD_S)
            self.state.unheard += 1
            self._keep(seq, RETRY_UNHEARD_S)
            return
        self._acks.append(seq)

    def _keep(self, seq: int, delay: float) -> None:
        """Leave ``seq`` queued: the drain goes back to it after ``delay`` seconds."""
        if self._refused_seq is None or seq < self._refused_seq:
            self._refused_seq = seq
            self._retry_at = time.monotonic() + delay

    def _on_message(self, client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        name = message.topic.rsplit("/", 1)[-1]
        if name == "result":
            return  # our own replies match cmd/+
        if message.retain:
            # A retained command would run again at every reconnect (and for every new subscriber).
            self.state.commands_ignored += 1
            logger.warning("MQTT: ignored a retained command on %s (commands are never retained; clear it with "
                           "an empty retained message)", message.topic)
            return
        self.state.commands += 1
        props = getattr(message, "properties", None)
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        key = self._seen_key(name, message.payload, correlation, signed=self.command_key is not None)
        if key is not None and key in self._seen:
            # The same command again within the window (a QoS 1 resend, a client retrying): answer as before.
            self.state.commands_ignored += 1
            topic, reply, out = self._seen[key]
            client.publish(topic, reply, qos=1, properties=out)
            return
        try:
            signed = self.command_key is not None
            now = self.clock.now().timestamp() if signed and self.clock.synchronised() else None
            command = commands.parse_command(name, message.payload, key=self.command_key, now=now)
            if self.replay is not None:
                body = json.loads(message.payload)  # parse_command has just read it as a JSON object
                why = self.replay.refuse(body)
                if why is not None:
                    raise commands.CommandError("replayed", why, command.correlation)
                self.replay.note(body)
            result = self.on_command(command) if self.on_command else {"ok": False, "error": "no handler"}
            ok = bool(result.pop("ok", True))
            if ok:
                reply = commands.encode_result(device=self.device, correlation=command.correlation, ok=True,
                                               result=result)
            else:
                reply = commands.encode_result(device=self.device, correlation=command.correlation, ok=False,
                                               error=str(result.get("error") or "refused"),
                                               code=str(result.get("code", "refused")))
        except commands.CommandError as err:
            reply = commands.encode_result(device=self.device, correlation=err.correlation, ok=False, error=str(err),
                                       code=err.code)
            if err.code in ("bad_signature", "replayed"):
                # Not remembered: unsigned junk must not push signed commands out of the replay memory.
                key = None
                if time.monotonic() - self._bad_signature_logged >= BAD_SIGNATURE_LOG_S:
                    self._bad_signature_logged = time.monotonic()
                    logger.warning("MQTT: refused a command on %s: %s", message.topic, err)
        except Exception:  # a handler bug must not take delivery down; the sender gets an answer
            logger.exception("MQTT command %r failed", name)
            reply = commands.encode_result(device=self.device, correlation=None, ok=False, error="internal error",
                                       code="internal")
        out = None
        if correlation is not None and self.state.protocol == V5:
            out = Properties(PacketTypes.PUBLISH)
            out.CorrelationData = correlation
        client.publish(self.topics.cmd_result, reply, qos=1, properties=out)
        if key is not None:
            self._remember(key, (self.topics.cmd_result, reply, out))

    @staticmethod
    def _seen_key(name: str, payload: bytes, correlation: bytes | None, *, signed: bool = False) -> tuple | None:
        """What identifies a command for de-duplication: its name and correlation (``id`` or MQTT 5
        correlation data); None for a command without one (it cannot be told from a new one).

        With a command key, its signature instead: a replay cannot change it (the ``id`` is signed,
        MQTT 5 correlation data is not), and every signed command has one."""
        if correlation is not None and not signed:
            return name, bytes(correlation)
        try:
            body = json.loads(payload or b"{}")
            ident = body.get("sig" if signed else "id")
        except (ValueError, AttributeError, RecursionError):
            return None
        if not isinstance(ident, str):
            return None
        return (name, "sig", ident.lower()) if signed else (name, ident)

    def _remember(self, key: tuple, answer: tuple) -> None:
        now = time.monotonic()
        self._seen[key] = answer
        self._seen_at[key] = now
        for old in [k for k, at in self._seen_at.items() if now - at > COMMAND_DEDUP_S]:
            self._seen.pop(old, None)
            self._seen_at.pop(old, None)
        while len(self._seen) > COMMAND_DEDUP_MAX:
            oldest = min(self._seen_at, key=self._seen_at.__getitem__)
            self._seen.pop(oldest, None)
            self._seen_at.pop(oldest, None)

    # -- outbox ---------------------------------------------------------------------------------------
    def _drain(self) -> None:
        if self._refused_seq is not None and time.monotonic() >= self._retry_at:
            self._cursor = min(self._cursor, self._refused_seq - 1)
            self._refused_seq = None
            self._dirty.set()
        room = self.cfg.max_inflight - len(self._inflight)
        if room <= 0 or self._client is None:
            return
        now = time.monotonic()
        if not self._dirty.is_set() and now < self._next_look:
            return  # idle: nothing new was queued (the look every LOOK_S is a safety net)
        self._dirty.clear()
        self._next_look = now + LOOK_S
        try:
            rows = self.store.pending(limit=room, after_seq=self._cursor)
        except StoreError as err:
            logger.warning("MQTT: cannot read the outbox: %s", err)
            return
        if len(rows) == room:
            self._dirty.set()  # a full page: there may be more
        for row in rows:
            info = self._client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                return  # connection lost meanwhile: on_disconnect has been called
            self._cursor = row.seq
            self.state.published += 1
            if row.qos == 0:
                self._acks.append(row.seq)  # QoS 0 is done once written
            else:
                self._inflight[info.mid] = row.seq

    def _flush_acks(self) -> None:
        if not self._acks:
            return
        acks, self._acks = self._acks, []
        try:
            self.store.ack_many(acks)
        except StoreError as err:
            # Not acked: the rows are sent again later, a duplicate the server drops by id.
            logger.warning("MQTT: acks not recorded (%d messages will be sent again): %s", len(acks), err)
            return
        self.state.acked += len(acks)

    def _send_direct(self) -> None:
        while self._client is not None:
            try:
                topic, data, qos, retain = self._direct.get_nowait()
            except queue.Empty:
                return
            self._client.publish(topic, data, qos=qos, retain=retain)

    def _goodbye(self) -> None:
        client = self._client
        if client is None:
            return
        if self.state.connected:
            info = client.publish(self.topics.status, wire.encode_status(device=self.device, state="stopped",
                                                                         at=time.time(), location=self.location),
                                  qos=1, retain=True)
            self._stopped_mid = info.mid
            deadline = time.monotonic() + 2.0
            while not self._stopped_acked.is_set() and time.monotonic() < deadline and self.state.connected:
                client.loop(0.05)
            self._flush_acks()
        client.disconnect()
        client.loop(0.1)
        self.state.connected = False

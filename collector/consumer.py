"""The collector's MQTT side: subscribe to every device's topics, store in batches, acknowledge after commit.

paho runs with ``manual_ack``: a QoS 1 message is acknowledged (PUBACK) only once the
transaction holding its rows has committed, so a collector killed at any point, or a database
that goes away, loses nothing: the broker keeps what was not acknowledged in the collector's
persistent session and sends it again. Duplicates are harmless (rows are idempotent by id).

An acknowledgement belongs to one connection: message ids are reused on the next one, so a
message received before a reconnect is never acknowledged after it (the broker resends it).

Threads: paho's network loop receives into a queue; :meth:`Collector.run` (the caller's thread)
takes whatever has arrived as one batch, stores it in one transaction, then acknowledges it. The
broker's in-flight window (MQTT 5 Receive Maximum) bounds how much waits in memory.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from collector.db.engine import describe
from collector.ingest import BatchResult, Incoming, Outcome, record_reject, store_batch
from collector.wire import Rejected
from edge.config.models import BrokerUrl
from edge.errors import CollectorError, ConfigError
from edge.mqtt.connect import secure
from edge.sdnotify import Notifier

logger = logging.getLogger(__name__)

#: Topic kinds that are retained state: every collector of a share group subscribes to them
#: unshared, because a broker never sends retained messages to a shared subscription.
RETAINED_KINDS = ("status", "model")
STREAM_KINDS = ("event", "effort", "health", "crop/+")
RECEIVE_MAXIMUM = 1000
_STOPPING, _BROKEN = object(), object()
_MAX_PACKET = 268_435_455


@dataclass(frozen=True, slots=True)
class BrokerOptions(BrokerUrl):
    """Where and how to connect: ``mqtt://HOST[:PORT]`` or ``mqtts://`` (TLS), credentials, session."""

    url: str
    client_id: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    session_expiry: int = 7 * 86400
    keepalive: int = 30

    def check(self) -> None:
        """Raises CollectorError (one line) for a URL or file that cannot work."""
        try:
            parts = urlsplit(self.url)
            parts.port
        except ValueError as err:
            raise CollectorError(f"--broker: {err}") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise CollectorError(f"--broker: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {self.url!r}")
        if parts.username or parts.password:
            raise CollectorError("--broker: credentials do not belong in the URL; use --username and --password-file")
        for name in ("ca_file", "cert_file", "key_file", "password_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise CollectorError(f"--{name.replace('_', '-')}: no such file: {path}")
        if (self.ca_file or self.cert_file or self.key_file) and not self.tls:
            raise CollectorError("TLS files need an mqtts:// broker URL")
        if self.password_file is not None and self.username is None:
            raise CollectorError("--password-file needs --username")


def subscriptions(prefix: str, share: str | None) -> list[str]:
    """The topic filters: stream kinds shared when ``share`` names a group, retained state never."""
    head = f"$share/{share}/" if share else ""
    return [f"{head}{prefix}/+/{kind}" for kind in STREAM_KINDS] + [f"{prefix}/+/{kind}" for kind in RETAINED_KINDS]


@dataclass(slots=True)
class _Item:
    generation: int
    mid: int
    qos: int
    message: Incoming


@dataclass(slots=True)
class Stats:
    """What the collector did since it started (logged every minute, returned by :meth:`Collector.run`)."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    db_failures: int = 0
    connects: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Collector:
    """Receives from the broker and stores into ``engine``; :meth:`run` until :meth:`stop`.

    Args:
        engine: the migrated database.
        broker: connection options.
        prefix: the devices' topic prefix (``[mqtt] prefix``, default ``wildedge``).
        share: an MQTT shared-subscription group: collectors in one group split the stream.
        allow: device ids to accept (None: every device).
        max_payload: larger messages are rejected; much larger ones are never sent to us (MQTT 5
            Maximum Packet Size), so a 200 MB message cannot blow up the process.
        batch_max: most messages stored in one transaction.
        notifier: systemd notifications (READY once connecting, WATCHDOG while the loop turns,
            also while it waits for the database, STOPPING); default: from the environment.
    """

    def __init__(self, engine: Engine, *, broker: BrokerOptions, prefix: str = "wildedge", share: str | None = None,
                 allow: frozenset[str] | None = None, max_payload: int = 1 << 20, batch_max: int = 1000,
                 clock: Callable[[], float] = time.time, notifier: Notifier | None = None) -> None:
        broker.check()
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self._next_ping = 0.0
        self.engine = engine
        self.broker = broker
        self.prefix = prefix
        self.share = share
        self.allow = allow
        self.max_payload = max_payload
        self.batch_max = batch_max
        self.stats = Stats()
        self._clock = clock
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._stop = threading.Event()
        self._generation = 0
        self._subscribed = threading.Event()
        self._unreachable = False
        self._client = self._make_client()

    # -- MQTT ----------------------------------------------------------------------------------------
    def _make_client(self) -> paho.Client:
        b = self.broker
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=b.client_id, protocol=paho.MQTTv5,
                             manual_ack=True)
        client.reconnect_delay_set(1, 60)
        try:
            secure(client, b, where="broker")
        except ConfigError as err:
            raise CollectorError(str(err)) from None
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.broker.session_expiry
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        # Twice the payload limit plus room for the topic and header: oversize messages up to that
        # are counted and rejected; beyond it the broker drops them instead of sending them here.
        props.MaximumPacketSize = min(_MAX_PACKET, 2 * self.max_payload + 65536)
        return props

    def _on_connect(self, client: paho.Client, _userdata: object, _flags: object, reason: object,
                    _props: object) -> None:
        if getattr(reason, "is_failure", False):
            logger.error("broker %s refused the connection: %s", self.broker.url, reason)
            return
        self._generation += 1
        self._unreachable = False
        self.stats.connects += 1
        logger.info("connected to %s as %s", self.broker.url, self.broker.client_id)
        filters = subscriptions(self.prefix, self.share)
        client.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])

    def _on_connect_fail(self, _client: paho.Client, _userdata: object) -> None:
        if not self._unreachable:
            logger.warning("cannot reach the broker %s; retrying (up to every 60 s)", self.broker.url)
        self._unreachable = True

    def _on_subscribe(self, _client: paho.Client, _userdata: object, _mid: int, reasons: list, _props: object) -> None:
        refused = [str(r) for r in reasons if getattr(r, "is_failure", False)]
        if refused:
            logger.error("the broker refused %d subscriptions (%s): check its ACL for the collector's user",
                         len(refused), ", ".join(refused))
        self._subscribed.set()

    def _on_disconnect(self, _client: paho.Client, _userdata: object, _flags: object, reason: object,
                       _props: object) -> None:
        self._subscribed.clear()
        if self._stop.is_set():
            return
        if getattr(reason, "value", None) == 142:  # Session taken over
            logger.error("another client connected with the id %r: give every collector its own --client-id",
                         self.broker.client_id)
        else:
            logger.warning("disconnected from %s (%s); reconnecting", self.broker.url, reason)

    def _on_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", "replace")
        self.stats.received += 1
        self._queue.put(_Item(self._generation, msg.mid, msg.qos,
                              Incoming(topic, bytes(msg.payload), int(self._clock()))))

    @property
    def subscribed(self) -> threading.Event:
        """Set while connected and subscribed (tests wait for it)."""
        return self._subscribed

    # -- the store loop ------------------------------------------------------------------------------
    def run(self) -> Stats:
        """Connect, then store and acknowledge until :meth:`stop`; returns what was done."""
        try:
            self._client.connect_async(self.broker.host, self.broker.port, self.broker.keepalive, clean_start=False,
                                       properties=self._connect_properties())
        except (OSError, ValueError) as err:
            raise CollectorError(f"--broker {self.broker.url}: {err}") from None
        self._client.loop_start()
        self.notifier.ready(f"collecting from {self.broker.url}")
        last_log = time.monotonic()
        try:
            while not self._stop.is_set():
                self._alive()
                batch = self._take()
                if batch:
                    self._store(batch)
                if time.monotonic() - last_log > 60:
                    self._log_stats()
                    last_log = time.monotonic()
        finally:
            self.notifier.stopping()
            self.notifier.close()
            self._client.disconnect()
            self._client.loop_stop()
            self._log_stats()
        return self.stats

    def _alive(self) -> None:
        """A watchdog keep-alive when one is due (the loop turns at least every 0.2 s)."""
        interval = self.notifier.watchdog_interval()
        if interval is not None and time.monotonic() >= self._next_ping:
            self.notifier.watchdog()
            self._next_ping = time.monotonic() + interval

    def stop(self) -> None:
        """Finish the batch being stored, then disconnect (what was not stored stays unacknowledged)."""
        self._stop.set()

    def _take(self) -> list[_Item]:
        try:
            batch = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        while len(batch) < self.batch_max:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _store(self, batch: list[_Item]) -> None:
        result = self._commit([item.message for item in batch])
        if result is _STOPPING:
            return  # nothing of this batch is acknowledged: the broker resends it
        if result is _BROKEN:
            logger.error("storing a batch of %d failed; storing its messages one by one", len(batch))
            for item in batch:
                if not self._store_alone(item):
                    return
        else:
            for outcome in result.outcomes:
                self._count(outcome.stored, outcome.reject)
        self.stats.batches += 1
        self._ack(batch)

    def _commit(self, messages: list[Incoming], *, reject: Rejected | None = None) -> BatchResult | object:
        """Store ``messages`` (or keep them as ``reject``) in one transaction, retrying while the database
        is away; :data:`_STOPPING` when asked to stop meanwhile, :data:`_BROKEN` when storing raised."""
        delay, down_since = 0.5, None
        while True:
            try:
                with self.engine.begin() as conn:
                    if reject is not None:
                        record_reject(conn, messages[0], reject)
                        result = BatchResult([Outcome("?", reject=reject.reason)])
                    else:
                        result = store_batch(conn, messages, prefix=self.prefix, max_payload=self.max_payload,
                                             allow=self.allow)
                break
            except SQLAlchemyError as err:
                self.stats.db_failures += 1
                if down_since is None:
                    down_since = time.monotonic()
                    logger.error("database unavailable (%s); %d messages wait unacknowledged, retrying",
                                 describe(err), len(messages))
                # Waiting for the database is what this process should do now: still alive.
                deadline = time.monotonic() + delay
                while (left := deadline - time.monotonic()) > 0:
                    self._alive()
                    if self._stop.wait(min(left, 1.0)):
                        return _STOPPING
                delay = min(delay * 2, 30.0)
            except Exception:  # a bug must not stall the stream: the caller finds the message
                logger.exception("storing %d messages raised", len(messages))
                return _BROKEN
        if down_since is not None:
            logger.warning("database back after %.0f s", time.monotonic() - down_since)
        return result

    def _store_alone(self, item: _Item) -> bool:
        """One message in its own transaction; one that still breaks the code is kept as an ``internal``
        reject. False when stopping."""
        result = self._commit([item.message])
        if result is _BROKEN:
            result = self._commit([item.message], reject=Rejected("internal", "storing it raised; see the log"))
        if result is _STOPPING or result is _BROKEN:
            return False
        outcome = result.outcomes[0]
        self._count(outcome.stored, outcome.reject)
        return True

    def _count(self, stored: bool, reject: str | None) -> None:
        if reject is not None:
            self.stats.rejected += 1
            self.stats.by_reason[reject] = self.stats.by_reason.get(reject, 0) + 1
        elif stored:
            self.stats.stored += 1
        else:
            self.stats.duplicates += 1

    def _ack(self, batch: list[_Item]) -> None:
        generation = self._generation
        for item in batch:
            if item.qos > 0 and item.generation == generation:
                self._client.ack(item.mid, item.qos)

    def _log_stats(self) -> None:
        s = self.stats
        logger.info("received %d, stored %d, duplicates %d, rejected %d%s", s.received, s.stored, s.duplicates,
                    s.rejected, f" ({s.by_reason})" if s.by_reason else "")


def default_client_id(share: str | None) -> str:
    """``wildedge-collector-<host>[-<group>]``: stable across restarts, so the broker keeps the session."""
    host = socket.gethostname().split(".")[0] or "host"
    return f"wildedge-collector-{host}" + (f"-{share}" if share else "")

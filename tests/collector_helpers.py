"""Shared by the collector tests: a collector in a thread or a process, and reading its database."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as paho
from daemon_helpers import WILDEDGE, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from collector.consumer import BrokerOptions, Collector
from collector.db import migrate, open_engine


@contextmanager
def running_collector(url: str, broker_url: str, *, client_id: str = "collector-test",
                      broker: dict | None = None, **options: object) -> Iterator[Collector]:
    """A :class:`Collector` storing into ``url`` in a background thread, subscribed when yielded;
    ``broker`` holds further :class:`BrokerOptions` (TLS files, credentials)."""
    engine = open_engine(url)
    migrate(engine)
    collector = Collector(engine, broker=BrokerOptions(url=broker_url, client_id=client_id, **(broker or {})),
                          **options)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            collector.run()
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        if not collector.subscribed.wait(10):
            raise AssertionError("the collector did not subscribe")
        yield collector
    finally:
        collector.stop()
        thread.join(20)
        engine.dispose()
    if errors:
        raise errors[0]


def collector_process(db_url: str, broker_url: str, *extra: str, client_id: str = "collector-proc",
                      log: Path | None = None) -> subprocess.Popen:
    """``wildedge collect run`` as a process (stderr to ``log`` when given)."""
    if log is None:
        return subprocess.Popen([*WILDEDGE, "collect", "run", "--broker", broker_url, "--db", db_url,
                                 "--client-id", client_id, *extra], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([*WILDEDGE, "collect", "run", "--broker", broker_url, "--db", db_url,
                                 "--client-id", client_id, *extra], stdout=out, stderr=out)


def publisher(host: str, port: int, client_id: str = "test-device") -> paho.Client:
    """A connected MQTT 5 client for publishing test messages."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.connect(host, port, 30)
    client.loop_start()
    return client


def publish_all(client: paho.Client, messages: list[tuple[str, bytes]], *, retain: bool = False) -> None:
    infos = [client.publish(topic, payload, qos=1, retain=retain) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(20)


def rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of one query on a SQLite collector database (read-only, while the collector writes)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []  # not migrated yet


def event_ids(db: Path) -> list[str]:
    return [r[0] for r in rows(db, "SELECT id FROM events")]


def wait_for_events(db: Path, count: int, timeout: float = 60) -> None:
    wait_until(lambda: len(event_ids(db)) >= count, timeout)

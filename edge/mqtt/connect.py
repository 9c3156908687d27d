"""Building the paho-mqtt client from ``[mqtt]``: protocol, session, TLS, credentials, Last Will,
and the reconnect backoff. paho is imported here and in :mod:`edge.mqtt.publisher` only.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.errors import ConfigError

logger = logging.getLogger(__name__)

#: The file a systemd credential named so is read from when ``password_file`` is not set.
CREDENTIAL_NAME = "mqtt-password"
#: The systemd credential the command signing key is read from when ``command_key_file`` is not set.
COMMAND_KEY_CREDENTIAL = "command-key"
V5, V311 = "5", "3.1.1"
#: The largest packet the device accepts (MQTT 5 Maximum Packet Size, sent in CONNECT): a 4 KiB
#: command plus 12 KiB for its topic, correlation data, user properties and the fixed header. The
#: broker drops anything bigger instead of sending it, so a huge "command" never reaches the daemon's
#: memory; commands between 4 and 16 KiB still get a ``too_large`` reply.
MAX_PACKET = 16 * 1024


def read_password(password_file: Path | None, *, environ: dict[str, str] | None = None) -> str | None:
    """The broker password: ``password_file``, else ``$CREDENTIALS_DIRECTORY/mqtt-password``.

    Read at every connect, so a rotated password is picked up without a restart. A ``password_file``
    that its group or others may read is refused; a file under ``$CREDENTIALS_DIRECTORY`` is not
    checked (systemd owns it: 0400 or 0440, in a directory only the service can reach).

    Raises:
        ConfigError: ``password_file`` is set but cannot be read, or is group- or world-readable.
    """
    data = _read_secret(password_file, CREDENTIAL_NAME, environ=environ,
                        readable=lambda path, mode: f"MQTT password file {path} is readable by others (mode "
                                                    f"{mode:04o}): run `chmod 600 {path}`",
                        unreadable=lambda path, why: f"cannot read the MQTT password file {path}: {why}")
    try:
        return None if data is None else data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"the MQTT password ({password_file or CREDENTIAL_NAME}) is not UTF-8 text") from None


def read_command_key(key_file: Path | None, *, environ: dict[str, str] | None = None) -> bytes | None:
    """The command signing key: ``key_file``, else ``$CREDENTIALS_DIRECTORY/command-key``; None for none.

    The key is the file's bytes without a trailing newline (as ``read_password`` reads the password).
    The same rule as the password file: a ``key_file`` its group or others may read is refused,
    a systemd credential is not checked.

    Raises:
        ConfigError: the file cannot be read, is group- or world-readable, or is empty.
    """
    key = _read_secret(key_file, COMMAND_KEY_CREDENTIAL, environ=environ,
                       readable=lambda path, mode: f"mqtt.command_key_file: {path} is readable by others (mode "
                                                   f"{mode:04o}): run `chmod 600 {path}`",
                       unreadable=lambda path, why: f"mqtt.command_key_file: cannot read {path}: {why}")
    if key is not None and not key:
        raise ConfigError(f"mqtt.command_key_file: {key_file} is empty (use e.g. `openssl rand -hex 32 > "
                          f"{key_file}`)")
    return key


def _read_secret(path: Path | None, credential: str, *, environ: dict[str, str] | None,
                 readable: Callable[[Path, int], str], unreadable: Callable[[Path, str], str]) -> bytes | None:
    """A secret's bytes without a trailing newline: ``path``, else the systemd credential ``credential``.

    Raises:
        ConfigError: ``readable(path, mode)`` when its group or others may read it (systemd's credentials
            excepted), ``unreadable(path, reason)`` when it cannot be read.
    """
    env = os.environ if environ is None else environ
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if path is None and credentials:
        candidate = Path(credentials) / credential
        path = candidate if candidate.is_file() else None
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO) and not _in_credentials(Path(path), credentials):
                raise ConfigError(readable(Path(path), stat.S_IMODE(mode)))
            return fh.read().rstrip(b"\r\n")
    except OSError as err:
        raise ConfigError(unreadable(Path(path), str(err.strerror or err))) from None


def _in_credentials(path: Path, credentials: str | None) -> bool:
    """Whether ``path`` lies in systemd's credential directory for this service."""
    if not credentials:
        return False
    try:
        return path.resolve().is_relative_to(Path(credentials).resolve())
    except OSError:
        return False


@dataclass
class Backoff:
    """Exponential reconnect delays with "equal jitter": half fixed, half random.

    Jitter keeps a fleet of traps that lost the same broker from reconnecting in lockstep.
    """

    initial: float = 1.0
    maximum: float = 300.0
    attempt: int = 0

    def next(self, rng: random.Random | None = None) -> float:
        ceiling = min(self.maximum, self.initial * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


def make_client(cfg: Any, *, device: str, protocol: str, will_topic: str, will_payload: bytes) -> paho.Client:
    """A configured, unconnected client for ``[mqtt]`` ``cfg`` speaking ``protocol`` ("5" or "3.1.1").

    The client id is the device id and the session persists (MQTT 5: ``clean_start`` false with a
    session expiry; 3.1.1: ``clean_session`` false), so the broker keeps subscriptions and queued
    commands while the device is away.

    Raises:
        ConfigError: a TLS file or the password file cannot be read.
    """
    if protocol == V5:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=paho.MQTTv5)
    else:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=paho.MQTTv311,
                             clean_session=False)
    client.max_inflight_messages_set(cfg.max_inflight)
    # The outbox is the queue: the drain never hands paho more than max_inflight messages at a time.
    client.max_queued_messages_set(0)
    client.will_set(will_topic, will_payload, qos=1, retain=True)
    secure(client, cfg)
    return client


def secure(client: paho.Client, cfg: Any, *, where: str = "mqtt") -> None:
    """Credentials and TLS on an unconnected client, from ``cfg``: anything with ``username``,
    ``password_file``, ``tls``, ``ca_file``, ``cert_file`` and ``key_file`` (``[mqtt]``, the collector's
    broker options). Certificates are always verified.

    Raises:
        ConfigError: a TLS file or the password file cannot be read (named under ``where``).
    """
    if cfg.username is not None:
        client.username_pw_set(cfg.username, read_password(cfg.password_file))
    if not cfg.tls:
        return
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(cfg, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{where}.{key}: no such file: {path}")
    try:
        client.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                       certfile=str(cfg.cert_file) if cfg.cert_file else None,
                       keyfile=str(cfg.key_file) if cfg.key_file else None,
                       cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(f"{where} TLS files cannot be loaded: {err}") from None


def connect(client: paho.Client, cfg: Any, *, protocol: str, session: bool = True) -> None:
    """Open the connection (blocking socket connect; the CONNACK arrives through ``client.loop``).

    ``session=False`` asks for a throwaway session (``wildedge check``), leaving nothing on the broker.
    Under MQTT 5 the CONNECT carries a Maximum Packet Size of :data:`MAX_PACKET`.

    Raises:
        OSError: the broker cannot be reached (refused, unreachable, TLS handshake failed).
    """
    keepalive = int(cfg.keepalive.total_seconds())
    if protocol == V5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(cfg.session_expiry.total_seconds()) if session else 0
        props.MaximumPacketSize = MAX_PACKET
        client.connect(cfg.host, cfg.port, keepalive, clean_start=not session, properties=props)
    else:
        client.connect(cfg.host, cfg.port, keepalive)

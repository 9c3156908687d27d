"""The command channel from the CLI to a running daemon: one JSON request and reply per connection.

The daemon serves a UNIX stream socket in its state directory (``wildedge trigger`` talks to it). A
request is one JSON object with a ``cmd`` key, sent as one line; the reply is one JSON object with
``ok``. Malformed input gets ``{"ok": false, "error": ...}``; a failing handler is logged and
answered the same way; neither stops the server. The socket file is 0600 in a 0700 state directory:
only the daemon's user (and root) may connect, and it may ask for a capture, the status or a ping.
Changing settings (``set``) is refused here: it is a remote command (MQTT), validated and answered
on ``cmd/result``; at the device, edit the config file.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from edge.errors import ConfigError

logger = logging.getLogger(__name__)

#: Requests and replies larger than this are refused.
MAX_MESSAGE = 64 * 1024
#: A client that connects and says nothing is dropped after this many seconds.
CLIENT_TIMEOUT_S = 5.0
#: sockaddr_un holds 108 bytes on Linux, the terminating NUL included.
_MAX_PATH = 107

#: What ``wildedge trigger`` sends (``capture``, ``status``) and ``ping``: a ``commands`` allowlist.
CONTROL_COMMANDS = frozenset({"capture", "status", "ping"})
#: Refused on the socket whatever the handler knows: settings change over MQTT only.
REMOTE_ONLY = frozenset({"set"})
#: The socket file's mode.
SOCKET_MODE = 0o600

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_MESSAGE:
            raise ValueError(f"message longer than {MAX_MESSAGE} bytes")
    return data.split(b"\n", 1)[0]


def _check_path(path: Path) -> str:
    name = os.fsencode(path)
    if len(name) > _MAX_PATH:
        raise ConfigError(
            f"control socket path {path} is longer than {_MAX_PATH} bytes: use a shorter state_dir")
    return str(path)


class ControlServer:
    """Serve ``handler`` on a UNIX socket at ``path`` from a daemon thread; a context manager.

    Args:
        path: the socket file (in the state directory), created 0600.
        handler: request dict -> reply dict; called on the server thread.
        commands: the only commands passed to ``handler`` (:data:`CONTROL_COMMANDS` is what
            ``wildedge trigger`` needs); None passes any but :data:`REMOTE_ONLY`, always refused.

    Raises:
        ConfigError: on start, when another daemon already listens there, the path holds something
            other than a socket, or the socket cannot be created.
    """

    def __init__(self, path: Path, handler: Handler, *, commands: Collection[str] | None = None) -> None:
        self.path = Path(path)
        self.handler = handler
        self.commands = None if commands is None else frozenset(commands) - REMOTE_ONLY
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.served = 0
        self.errors = 0

    def start(self) -> None:
        if self._sock is not None:
            return
        address = _check_path(self.path)
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address)  # under the daemon's umask 077 the socket is born 0700 at most
            os.chmod(address, SOCKET_MODE)
            sock.listen(8)
        except OSError as err:
            sock.close()
            raise ConfigError(f"cannot create the control socket {self.path}: {err}") from err
        sock.settimeout(0.5)  # wakes the accept loop to see the stop flag
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="wildedge-control", daemon=True)
        self._thread.start()
        logger.info("control socket listening at %s", self.path)

    def _remove_stale(self) -> None:
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ConfigError(
                f"{self.path} exists and is not a socket: move it away (it is not ours to delete)")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)  # nobody answers: left behind by a daemon that died
            logger.info("removed a stale control socket at %s", self.path)
            return
        finally:
            probe.close()
        raise ConfigError(f"another wildedge daemon is listening on {self.path}")

    def _serve(self) -> None:
        sock = self._sock
        while sock is not None and not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                logger.exception("control socket accept failed")
                self._stop.wait(0.5)
                continue
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_TIMEOUT_S)
        try:
            line = _read_line(conn)
        except (OSError, ValueError) as err:
            self.errors += 1
            self._reply(conn, {"ok": False, "error": f"cannot read the request: {err}"})
            return
        reply = self.dispatch(line)
        self.served += 1
        self._reply(conn, reply)

    def dispatch(self, line: bytes) -> dict[str, Any]:
        """The reply to one request line (JSON bytes); never raises."""
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            self.errors += 1
            return {"ok": False, "error": f"malformed request (not JSON): {err}"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            self.errors += 1
            return {"ok": False,
                    "error": 'a request is a JSON object with a "cmd" string, e.g. {"cmd": "capture"}'}
        cmd = request["cmd"]
        if cmd in REMOTE_ONLY:
            self.errors += 1
            return {"ok": False, "error": f"{cmd!r} is not served on the control socket: settings change "
                                          "over MQTT (cmd/set) or in the config file"}
        if self.commands is not None and cmd not in self.commands:
            self.errors += 1
            return {"ok": False, "error": f"unknown command {cmd!r} ({', '.join(sorted(self.commands))})"}
        try:
            reply = self.handler(request)
        except Exception as err:  # a bad command must not take the channel down: log it, answer it
            self.errors += 1
            logger.exception("control command %r failed", request.get("cmd"))
            return {"ok": False, "error": f"{type(err).__name__}: {err}"}
        if not isinstance(reply, dict):
            self.errors += 1
            logger.error("control handler returned %r for %r, not a dict",
                         type(reply).__name__, request["cmd"])
            return {"ok": False, "error": "internal error: the daemon gave no reply"}
        return reply

    def _reply(self, conn: socket.socket, reply: dict[str, Any]) -> None:
        data = json.dumps(reply, default=str).encode() + b"\n"
        try:
            conn.sendall(data)
        except OSError as err:
            logger.debug("control client went away before the reply: %s", err)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # The accept loop wakes twice a second; a client being answered has CLIENT_TIMEOUT_S at most.
            self._thread.join(timeout=CLIENT_TIMEOUT_S + 1.0)
            self._thread = None
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
            try:
                self.path.unlink(missing_ok=True)
            except OSError as err:
                # Closing often happens while an earlier error unwinds (a card gone read-only, a
                # deleted state directory): a socket file left behind must not replace that error.
                logger.warning("cannot remove the control socket %s: %s", self.path, err.strerror or err)

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send_command(path: Path, request: dict[str, Any], *, timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the daemon listening at ``path`` and return its reply.

    Raises:
        ConfigError: no daemon listens at ``path``, or it did not answer within ``timeout`` seconds.
        ValueError: ``request`` is not a JSON-serialisable dict with a "cmd".
    """
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        raise ValueError(f'request must be a dict with a "cmd" string (got {request!r})')
    data = json.dumps(request).encode() + b"\n"
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"request longer than {MAX_MESSAGE} bytes")
    address = _check_path(Path(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise ConfigError(
                f"no wildedge daemon is listening on {path} "
                "(is `wildedge run` running with this config?)") from err
        except OSError as err:
            raise ConfigError(f"cannot reach the daemon at {path}: {err}") from err
        try:
            sock.sendall(data)
            line = _read_line(sock)
        except TimeoutError as err:
            raise ConfigError(f"the daemon at {path} did not answer within {timeout:g} s") from err
        except (OSError, ValueError) as err:
            raise ConfigError(f"lost the connection to the daemon at {path}: {err}") from err
    try:
        reply = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"the daemon at {path} sent a malformed reply: {line[:200]!r}") from err
    if not isinstance(reply, dict):
        raise ConfigError(f"the daemon at {path} sent a malformed reply: {reply!r}")
    return reply

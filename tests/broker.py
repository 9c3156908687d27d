"""A real mosquitto for the tests: one process per broker on 127.0.0.1, and throwaway TLS certificates.

The broker keeps its port across restarts (clients reconnect to the same address) and its session
database in its folder, so QoS 1 sessions survive a ``restart()`` as they do on a real server. A
``kill()`` is a crash: what arrived since the last autosave is lost, as on a real server.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

def find_tool(name: str) -> Path | None:
    """``name`` on PATH or in the sbin folders (Debian puts mosquitto in /usr/sbin); None when absent."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=search)
    return Path(found) if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost, a client ("trap-01") signed by
    the CA and a rogue client signed by another CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


class Mosquitto:
    """A mosquitto process configured in ``directory``; a context manager that starts and stops it."""

    def __init__(
        self,
        directory: Path,
        *,
        binary: Path | None = None,
        tls: TlsFiles | None = None,
        client_certs: bool = False,
        passwords: dict[str, str] | None = None,
        acl: str | None = None,
        max_inflight_messages: int = 20,
        max_queued_messages: int = 1000,
        autosave_interval: int | None = None,
        extra_config: str = "",
    ) -> None:
        if client_certs and tls is None:
            raise ValueError("client_certs=True needs tls")
        found = binary or find_tool("mosquitto")
        if found is None:
            raise FileNotFoundError("mosquitto is not installed (apt install mosquitto)")
        self.binary = found
        self.directory = directory
        self.tls = tls
        self.host = "127.0.0.1"
        self.port = free_port()
        self.conf = directory / "mosquitto.conf"
        self.log_file = directory / "mosquitto.log"
        self._stderr = directory / "stderr.txt"
        self._proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        lines = self._listener_lines(tls, client_certs)
        lines.append(f"allow_anonymous {'false' if passwords is not None else 'true'}")
        if passwords is not None:
            lines.append(f"password_file {self._write_passwords(passwords)}")
        if acl is not None:
            lines.append(f"acl_file {self._write_private('acl', acl)}")
        lines += [
            "persistence true",
            f"persistence_location {directory}/",  # 1.x joins it to the file name as text; 2.x adds a /
            f"max_inflight_messages {max_inflight_messages}",
            f"max_queued_messages {max_queued_messages}",
            f"log_dest file {self.log_file}",
            "log_type all",
            "log_timestamp_format %H:%M:%S",
            "connection_messages true",
        ]
        if autosave_interval is not None:
            lines.append(f"autosave_interval {autosave_interval}")
        if os.geteuid() == 0:
            # As root mosquitto drops to the "mosquitto" user, which cannot write into a 0700 tmp_path.
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n" + extra_config, encoding="utf-8")

    def _listener_lines(self, tls: TlsFiles | None, client_certs: bool) -> list[str]:
        # mosquitto 2 listens on loopback only when a listener is named, and names are needed anyway.
        lines = [f"listener {self.port} {self.host}"]
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}"]
            if client_certs:
                # The certificate's CN becomes the user name, so ACLs can name the device.
                lines += ["require_certificate true", "use_identity_as_username true"]
        return lines

    def _write_private(self, name: str, text: str) -> Path:
        path = self.directory / name
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)
        return path

    def _write_passwords(self, passwords: dict[str, str]) -> Path:
        for user, password in passwords.items():
            if not user or any(c in user + password for c in ":\n\r"):
                raise ValueError(f"user name and password may not be empty or hold ':' or newlines: {user!r}")
        tool = find_tool("mosquitto_passwd")
        if tool is None:
            raise FileNotFoundError("mosquitto_passwd is not installed (apt install mosquitto)")
        path = self._write_private("passwords", "".join(f"{u}:{p}\n" for u, p in passwords.items()))
        subprocess.run([str(tool), "-U", str(path)], check=True, capture_output=True, timeout=30)
        return path

    @property
    def url(self) -> str:
        """``mqtt://`` or ``mqtts://`` with host and port."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        """The broker's log so far (all types), with whatever it printed before it opened the log file."""
        parts = [p.read_text(encoding="utf-8", errors="replace") for p in (self._stderr, self.log_file)
                 if p.exists()]
        return "".join(parts)

    def start(self) -> Self:
        """Start mosquitto and wait until its port accepts connections.

        Raises:
            RuntimeError: it is already running, exited, or did not listen within 10 s (with its log).
        """
        if self.running:
            raise RuntimeError(f"mosquitto on port {self.port} is already running")
        atexit.register(self.kill)
        with open(self._stderr, "ab") as err:
            self._proc = subprocess.Popen(
                [str(self.binary), "-c", str(self.conf)], stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                preexec_fn=_die_with_parent(),  # noqa: PLW1509 (it only calls prctl, resolved beforehand)
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.kill()
                raise RuntimeError(f"mosquitto exited with code {code}:\n{self.log()}")
            try:  # a TLS listener logs this probe as "unexpected eof"
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.url} in {START_TIMEOUT:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its sessions), then SIGKILL if it has not exited within 5 s."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: a crash; what arrived since the last autosave (``autosave_interval``) is lost."""
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        atexit.unregister(self.kill)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> Self:
        """A clean stop and a start on the same port, with the saved sessions."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Mosquitto({self.url}, running={self.running})"


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGKILL mosquitto when the thread that started it ends
    (pytest killed by SIGKILL included), where atexit cannot run."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it

    def preexec() -> None:
        prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG

    return preexec


# -- certificates -------------------------------------------------------------------------------
_REQ_CONF = """[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
"""


def _openssl(*args: str | Path) -> None:
    try:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"openssl {args[0]} failed: {err.stderr.decode(errors='replace')}") from err


def _key(path: Path) -> Path:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    return path


def _ca(directory: Path, name: str, conf: Path) -> tuple[Path, Path]:
    key, cert = _key(directory / f"{name}.key"), directory / f"{name}.crt"
    _openssl("req", "-x509", "-new", "-key", key, "-subj", f"/CN={name}", "-days", "2",
             "-config", conf, "-extensions", "ca", "-out", cert)
    return cert, key


def _leaf(directory: Path, name: str, cn: str, ca: tuple[Path, Path], kind: str,
          conf: Path) -> tuple[Path, Path]:
    key, csr, cert = _key(directory / f"{name}.key"), directory / f"{name}.csr", directory / f"{name}.crt"
    _openssl("req", "-new", "-key", key, "-subj", f"/CN={cn}", "-config", conf, "-out", csr)
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-days", "2",
             "-set_serial", f"0x{secrets.token_hex(8)}", "-extfile", conf, "-extensions", kind, "-out", cert)
    csr.unlink()
    return cert, key


def make_tls(directory: Path) -> TlsFiles:
    """A throwaway CA, its server ("localhost", 127.0.0.1) and client ("trap-01") certificates, and a
    "trap-01" client certificate from a rogue CA; EC P-256 keys, valid for two days."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "openssl.cnf"  # our own: the system's openssl.cnf differs between distributions
    conf.write_text(_REQ_CONF, encoding="utf-8")
    ca = _ca(directory, "wildedge-test-ca", conf)
    server = _leaf(directory, "server", "localhost", ca, "server", conf)
    client = _leaf(directory, "client", "trap-01", ca, "client", conf)
    rogue = _leaf(directory, "rogue", "trap-01", _ca(directory, "rogue-ca", conf), "client", conf)
    return TlsFiles(ca=ca[0], server_cert=server[0], server_key=server[1], client_cert=client[0],
                    client_key=client[1], rogue_cert=rogue[0], rogue_key=rogue[1])

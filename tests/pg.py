"""A throwaway PostgreSQL for the tests: one cluster per session on a Unix socket, one database per test.

The cluster lives in a temp folder of its own (``/tmp/wildedge-pg-*``: pytest's folders are 0700 and
root's, and a socket path must stay under 108 bytes), listens on no TCP port at all
(``listen_addresses=''``) and runs without fsync. The postmaster is started directly, not through
``pg_ctl start``: ``pg_ctl`` exits once the server is up, and the server would then outlive a killed
pytest; started by us, it gets PR_SET_PDEATHSIG as mosquitto does (tests/broker.py). As root it runs
as ``postgres`` (or ``nobody``), since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import ctypes
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SUPERUSER = "wildedge"
_PR_SET_PDEATHSIG = 1


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``: ``pg_config --bindir`` or the newest
    /usr/lib/postgresql/*/bin (Debian keeps them off PATH); None when the server is not installed."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version(Path(p).parent.name))
    candidates += [Path(p) for p in reversed(versions)]
    if found := shutil.which("initdb"):
        candidates.append(Path(found).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists")


def _preexec(account: pwd.struct_passwd | None, *, die_with_parent: bool) -> Callable[[], None]:
    """Drop to ``account`` (when root), then ask Linux to SIGKILL the child when its parent thread ends.

    The order matters: a change of user id clears the parent-death signal.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None

    def preexec() -> None:
        if account is not None:
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
        if die_with_parent and prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))

    return preexec


def remove_stale(older_than: float = 600.0) -> None:
    """Delete the folders of clusters whose pytest was killed (SIGKILL leaves them behind): no live
    postmaster, and untouched for ``older_than`` seconds (a folder being set up right now is kept)."""
    for folder in Path(tempfile.gettempdir()).glob("wildedge-pg-*"):
        try:
            if time.time() - folder.stat().st_mtime < older_than:
                continue
            pid_file = folder / "data" / "postmaster.pid"
            if pid_file.exists():
                os.kill(int(pid_file.read_text().split()[0]), 0)
                continue  # alive: another session's cluster
        except ProcessLookupError:
            pass
        except (OSError, ValueError, IndexError):
            continue
        shutil.rmtree(folder, ignore_errors=True)


class PostgresCluster:
    """An initdb'd cluster in a temp folder and its postmaster; a context manager that starts and stops it."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        remove_stale()
        self.directory = Path(tempfile.mkdtemp(prefix="wildedge-pg-"))
        self.data = self.directory / "data"
        self.socket_dir = self.directory  # the socket is .s.PGSQL.5432 here
        self.log_file = self.directory / "postgres.log"
        self._account = _run_as()
        self._proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        if self._account is not None:
            env.update(HOME=str(self.directory), USER=self._account.pw_name, LOGNAME=self._account.pw_name)
        return env

    def start(self) -> Self:
        """initdb (trust auth, superuser ``wildedge``), then the postmaster; returns once it accepts connections.

        Raises:
            RuntimeError: initdb failed, or the server exited or did not accept connections in time (with its log).
        """
        if self._account is not None:
            os.chown(self.directory, self._account.pw_uid, self._account.pw_gid)
        self.directory.chmod(0o755)
        initdb = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
             "--no-locale", "--no-sync", "--no-instructions"],
            capture_output=True, env=self._env(), cwd=self.directory, timeout=120, check=False,
            preexec_fn=_preexec(self._account, die_with_parent=True),
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}):\n{initdb.stderr.decode(errors='replace')}")
        settings = {"listen_addresses": "", "unix_socket_directories": str(self.socket_dir), "fsync": "off",
                    "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "100",
                    "shared_buffers": "32MB", "dynamic_shared_memory_type": "posix", "log_min_messages": "warning",
                    "deadlock_timeout": "200ms"}
        args = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with open(self.log_file, "ab") as log:
            if self._account is not None:
                os.chown(self.log_file, self._account.pw_uid, self._account.pw_gid)
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self._env(), cwd=self.directory,
                preexec_fn=_preexec(self._account, die_with_parent=True),  # noqa: PLW1509 (it only calls setuid and prctl)
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                self.stop()
                raise RuntimeError(f"postgres exited with code {code}:\n{self.log()}")
            try:
                with psycopg.connect(**self._connect_args("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"postgres did not accept connections in {START_TIMEOUT:.0f} s:\n{self.log()}")

    def _connect_args(self, dbname: str) -> dict[str, str]:
        return {"host": str(self.socket_dir), "user": SUPERUSER, "dbname": dbname}

    def log(self) -> str:
        """The server's log so far."""
        return self.log_file.read_text(encoding="utf-8", errors="replace") if self.log_file.exists() else ""

    def url(self, dbname: str) -> str:
        """The SQLAlchemy URL of database ``dbname`` over the Unix socket."""
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}"

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        """Run one statement in autocommit mode (CREATE/DROP DATABASE cannot run in a transaction)."""
        import psycopg

        with psycopg.connect(**self._connect_args(dbname), autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        name = f"test_{next(self._names)}"
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending any connection a test left open."""
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL after 10 s, and the temp folder removed."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PostgresCluster({self.socket_dir}, running={self._proc is not None and self._proc.poll() is None})"

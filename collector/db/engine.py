"""Opening the collector's database by URL: SQLite (the default, embedded, WAL) or PostgreSQL.

One code path for both: SQLAlchemy Core statements, with the two dialects' ``INSERT ... ON
CONFLICT`` chosen by :func:`insert`. SQLite is set up so that a transaction is ``BEGIN
IMMEDIATE`` (a writer takes the lock at once instead of failing at its first write) and every
commit is synced to disk (``synchronous=FULL``): the collector acknowledges a message to the
broker only after its commit, and a power cut must not lose what it acknowledged.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.sql.dml import Insert

from edge.errors import CollectorError

logger = logging.getLogger(__name__)

DEFAULT_FILE = "wildedge-collector.db"
BUSY_TIMEOUT_S = 30.0


def default_url(cwd: Path | None = None) -> str:
    """The database used when no ``--db`` is given: a SQLite file in the current folder."""
    return f"sqlite:///{(cwd or Path.cwd()) / DEFAULT_FILE}"


def redact(url: str) -> str:
    """``url`` safe for logs and errors (the password replaced by ``***``)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def open_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for ``url`` (``sqlite:///PATH`` or ``postgresql://...``), not yet connected.

    Raises:
        CollectorError: the URL is not one of the two supported kinds, or a driver is missing.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CollectorError(f"--db: cannot parse {url!r}; use sqlite:///PATH or "
                             "postgresql://USER@HOST/DBNAME") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite(parsed, read_only=read_only)
    if backend in ("postgresql", "postgres"):
        return _postgresql(parsed, read_only=read_only)
    raise CollectorError(f"--db: {backend!r} databases are not supported; use sqlite:///PATH or postgresql://...")


def _wal(cursor: Any) -> str:
    """``PRAGMA journal_mode=WAL``, retried while another connection is switching the same new file.

    SQLite answers "database is locked" at once there, without the busy handler: two collectors
    starting together on a new database failed that way in 21 of 300 tries.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            return str(cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite(parsed: Any, *, read_only: bool) -> Engine:
    database = parsed.database
    if not database or database == ":memory:":
        raise CollectorError("--db: an in-memory SQLite database would lose everything; give a file, "
                             "sqlite:///PATH")
    path = Path(os.path.expanduser(database))
    if read_only:
        if not path.is_file():
            raise CollectorError(f"--db: no database at {path} (start `wildedge collect run` first, or fix the path)")
        url = f"sqlite:///file:{path}?mode=ro&uri=true"
    else:
        if not path.parent.is_dir():
            raise CollectorError(f"--db: the folder {path.parent} does not exist")
        url = f"sqlite:///{path}"
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling issues BEGIN lazily and never for DDL; take it over.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            if not read_only:
                mode = _wal(cursor)
                if str(mode).lower() != "wal":
                    logger.warning("%s: WAL mode unavailable on this filesystem (got %s)", path, mode)
                cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _postgresql(parsed: Any, *, read_only: bool) -> Engine:
    try:
        import psycopg  # noqa: F401  (only to fail with one line when it is missing)
    except ImportError:
        raise CollectorError("PostgreSQL needs psycopg 3: pip install 'wildedge[collector]'") from None
    parsed = parsed.set(drivername="postgresql+psycopg")
    args: dict[str, Any] = {"connect_timeout": 10}
    if read_only:
        args["options"] = "-c default_transaction_read_only=on"
    # pool_pre_ping: a connection the server dropped (restart, failover) is replaced, not reused.
    return create_engine(parsed, connect_args=args, pool_pre_ping=True)


def insert(engine_or_conn: Any, table: Any) -> Insert:
    """``INSERT`` for ``table`` in the dialect of ``engine_or_conn``, so ``on_conflict_*`` works on both."""
    name = engine_or_conn.dialect.name
    if name == "sqlite":
        return sqlite.insert(table)
    if name == "postgresql":
        return postgresql.insert(table)
    raise CollectorError(f"unsupported database dialect {name!r}")


def describe(err: SQLAlchemyError) -> str:
    """One line for a database error: the driver's own message without SQLAlchemy's boilerplate."""
    orig = getattr(err, "orig", None)
    text = str(orig if orig is not None else err).strip().splitlines()
    return text[0] if text else type(err).__name__

"""Versioned migrations of the collector's database: a list of steps and a one-row version table.

Each step takes the database from version n to n + 1 inside one transaction, holding a lock
that makes concurrent collectors (several processes in a share group starting at once) migrate
once: SQLite's ``BEGIN IMMEDIATE`` write lock, PostgreSQL's transaction-level advisory lock.
Append only: a shipped step never changes, since databases in use have already run it. Step 1
creates the tables as :mod:`collector.db.schema` defines them today, so every later step checks
before it changes anything (a fresh database already has what it adds). (Alembic
would do this too, with a revision graph, an ini file and a script folder; a dozen tables with a
linear history do not need them.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Connection, Engine, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from collector.db import schema
from collector.db.engine import describe, redact
from edge.errors import CollectorError

logger = logging.getLogger(__name__)

#: An arbitrary 64-bit key for pg_advisory_xact_lock ("wildedge" in ASCII).
_PG_LOCK = 0x77696C6465646765


def _v1(conn: Connection) -> None:
    """The first schema: every table of collector.db.schema as of version 1."""
    schema.metadata.create_all(conn)


def _v2(conn: Connection) -> None:
    """Where each device says it stands: ``devices.latitude_e6/longitude_e6`` (status ``la``/``lo``)."""
    have = {column["name"] for column in inspect(conn).get_columns("devices")}
    for name in ("latitude_e6", "longitude_e6"):
        if name not in have:
            conn.execute(text(f"ALTER TABLE devices ADD COLUMN {name} BIGINT"))


MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2]
VERSION = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    """The database's schema version (0: empty)."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    row = conn.execute(select(schema.schema_version.c.version)).first()
    return 0 if row is None else int(row[0])


def migrate(engine: Engine) -> int:
    """Bring the database to :data:`VERSION`; returns the version it was at.

    Raises:
        CollectorError: the database cannot be reached or written, or is newer than this code.
    """
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
            found = current_version(conn)
            if found > VERSION:
                raise CollectorError(
                    f"database {redact(str(engine.url))} has schema version {found}, newer than this wildedge "
                    f"knows ({VERSION}); upgrade wildedge")
            if found == 0 and _has_foreign_tables(conn):
                raise CollectorError(f"database {redact(str(engine.url))} holds other tables and no wildedge "
                                     "schema; give the collector a database of its own")
            for step in range(found, VERSION):
                MIGRATIONS[step](conn)
                logger.info("collector database migrated to schema version %d", step + 1)
            if found < VERSION:
                conn.execute(schema.schema_version.delete())
                conn.execute(schema.schema_version.insert().values(version=VERSION))
            return found
    except SQLAlchemyError as err:
        raise CollectorError(f"cannot open the collector database {redact(str(engine.url))}: {describe(err)}") \
            from None


def _has_foreign_tables(conn: Connection) -> bool:
    ours = set(schema.metadata.tables)
    return bool(set(inspect(conn).get_table_names()) - ours)

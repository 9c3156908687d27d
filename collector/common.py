"""What the ``wildedge collect`` commands share: the extra check, one-line failures, the --db option."""

from __future__ import annotations

import importlib.util
import logging
from typing import Annotated, NoReturn

import typer

from edge.errors import CollectorError

logger = logging.getLogger(__name__)

#: Modules of the ``collector`` extra, by what a command needs.
_EXTRA = {"db": ("sqlalchemy",), "web": ("sqlalchemy", "starlette", "jinja2", "uvicorn")}

DbOption = Annotated[str | None, typer.Option(
    "--db", help="sqlite:///PATH or postgresql://USER@HOST/DB; default: sqlite:///./wildedge-collector.db",
    show_default=False)]


def require_extra(what: str = "db") -> None:
    """Fail with one line when a module of the ``collector`` extra is missing."""
    missing = [name for name in _EXTRA[what] if importlib.util.find_spec(name) is None]
    if missing:
        fail(f"the collector needs {', '.join(missing)}: pip install 'wildedge[collector]'")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit with ``code`` (2: usage or setup error)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def open_db(url: str | None, *, read_only: bool = False, migrate: bool = True):
    """The engine for ``--db`` (migrated unless ``read_only``); one-line failure on any problem."""
    from collector.db import default_url, open_engine
    from collector.db import migrate as run_migrations
    from collector.db.migrate import VERSION, current_version

    try:
        engine = open_engine(url or default_url(), read_only=read_only)
        if read_only:
            _check_readable(engine, VERSION, current_version)
        elif migrate:
            run_migrations(engine)
        return engine
    except CollectorError as err:
        fail(str(err))


def _check_readable(engine, version: int, current_version) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from collector.db import redact
    from collector.db.engine import describe

    try:
        with engine.connect() as conn:
            found = current_version(conn)
    except SQLAlchemyError as err:
        raise CollectorError(f"cannot open the collector database {redact(str(engine.url))}: {describe(err)}") \
            from None
    if found == 0:
        raise CollectorError(f"{redact(str(engine.url))} is not a collector database (run `wildedge collect run "
                             "--db ...` first)")
    if found > version:
        raise CollectorError(f"{redact(str(engine.url))} has schema version {found}, newer than this wildedge "
                             f"knows ({version}); upgrade wildedge")

"""What the ``wildedge collect`` commands share: the extra check, one-line failures, the --db option."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from edge.errors import CollectorError

logger = logging.getLogger(__name__)

#: Modules of the ``collector`` extra, by what a command needs.
_EXTRA = {"db": ("sqlalchemy",), "web": ("sqlalchemy", "starlette", "jinja2", "uvicorn")}
_HINT = "use sqlite:///PATH or postgresql://USER@HOST/DBNAME"

# No punctuation glued to the URLs: rich cuts a word wider than the help column with an ellipsis.
DbOption = Annotated[str | None, typer.Option(
    "--db", help="The collector database: sqlite:///PATH or postgresql://USER@HOST/DB "
                 "(default: wildedge-collector.db in the current folder)", show_default=False)]


def require_extra(what: str = "db") -> None:
    """Fail with one line when a module of the ``collector`` extra is missing."""
    missing = [name for name in _EXTRA[what] if importlib.util.find_spec(name) is None]
    if missing:
        fail(f"the collector needs {', '.join(missing)}: pip install 'wildedge[collector]'")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit with ``code`` (2: usage or setup error)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def parse_db(url: str | None) -> Any:
    """``--db`` as a SQLAlchemy URL (the default when None), a password in its query moved to its password.

    Never echoes text that may hold a password: only a value without ``@`` is quoted back.

    Raises:
        CollectorError: the value is empty, not a URL, or a URL that cannot be parsed.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from collector.db import default_url

    if url is None:
        url = default_url()
    if not url.strip():
        raise CollectorError(f"--db is empty; {_HINT}")
    shown = repr(url) if "@" not in url else "the URL"
    if "://" not in url:
        raise CollectorError(f"--db: {shown} is not a database URL; for a SQLite file write sqlite:///{url}"
                             if "@" not in url else f"--db: not a database URL; {_HINT}")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CollectorError(f"--db: cannot parse {shown}; {_HINT}") from None
    except ValueError:  # SQLAlchemy's int() of the port
        raise CollectorError(f"--db: the port in {shown} is not a number; {_HINT}") from None
    if parsed.host and "@" in parsed.host:
        raise CollectorError("--db: the URL has more than one '@': write an '@' in the password as %40")
    if "password" in parsed.query and parsed.username:  # libpq's ?password=: moved where redaction hides it
        secret = parsed.query["password"]
        parsed = parsed.difference_update_query(["password"]).set(
            password=secret if isinstance(secret, str) else secret[-1])
    return parsed


def sqlite_file(url: str | None) -> Path | None:
    """The file of a ``sqlite:///PATH`` ``--db`` (None for PostgreSQL or a URL that does not parse)."""
    try:
        parsed = parse_db(url)
    except CollectorError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database).expanduser()


def open_db(url: str | None, *, read_only: bool = False, migrate: bool = True):
    """The engine for ``--db`` (migrated unless ``read_only``); one-line failure on any problem."""
    from collector.db import migrate as run_migrations
    from collector.db import open_engine, redact
    from collector.db.migrate import VERSION, current_version

    secrets: list[str] = []
    try:
        parsed = parse_db(url)
        for secret in (parsed.password, parsed.query.get("password")):
            if isinstance(secret, str) and len(secret) >= 4:  # a shorter one would mangle words
                secrets.append(secret)
        path = sqlite_file(url)
        if path is not None and path.is_dir():
            raise CollectorError(f"--db: {path} is a folder; give the database file, e.g. "
                                 f"sqlite:///{path / 'wildedge-collector.db'}")
        engine = open_engine(parsed.render_as_string(hide_password=False), read_only=read_only)
        if read_only:
            _check_readable(engine, redact(parsed.render_as_string(hide_password=False)), VERSION, current_version)
        elif migrate:
            run_migrations(engine)
        return engine
    except CollectorError as err:
        fail(_scrub(str(err), secrets))


def _scrub(message: str, secrets: list[str]) -> str:
    """``message`` without any password of ``secrets`` (the last guard: drivers may quote a URL)."""
    from urllib.parse import quote

    for secret in secrets:
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            if form:
                message = message.replace(form, "***")
    return message


def _check_readable(engine, shown: str, version: int, current_version) -> None:
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from collector.db.engine import describe

    try:
        with engine.connect() as conn:
            found = current_version(conn)
            others = found == 0 and bool(inspect(conn).get_table_names())
    except SQLAlchemyError as err:
        raise CollectorError(f"cannot open the collector database {shown}: {describe(err)}") from None
    if others:
        raise CollectorError(f"{shown} is another program's database (it has tables, none of them the "
                             "collector's); give --db the database `wildedge collect run` writes")
    if found == 0:
        raise CollectorError(f"{shown} is not a collector database (run `wildedge collect run --db ...` first)")
    if found > version:
        raise CollectorError(f"{shown} has schema version {found}, newer than this wildedge knows ({version}); "
                             "upgrade wildedge")

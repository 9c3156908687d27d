"""The read-only web page: a Starlette app on a read-only engine (GET only, everything escaped, strict headers).

Routes: ``/`` (devices, detections per day, latest crops, events, rejects; filters ``device``,
``class``, ``from``, ``to``), ``/crops/<event id>.jpg`` (a crop from the database),
``/export/<format>`` (the same filters), ``/static/*``. Nothing here writes; the page fetches
nothing from outside the server and runs no script, so it works on a field laptop offline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collector import queries
from collector.db.engine import describe
from collector.web import exports, plot

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
}


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response (errors and static files too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _v in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in names]
            await send(message)

        await self.app(scope, receive, with_headers)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["utc"] = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") if t is not None else ""
    env.filters["ago"] = _ago
    env.filters["query"] = lambda params: urlencode(params)
    return env


def _ago(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def filters_of(request: Request) -> queries.Filters:
    """The page's filters from the query string; a bad value is a 400 naming it."""
    q = request.query_params
    try:
        return queries.Filters.parse(device=q.get("device"), label=q.get("class"), start=q.get("from"),
                                     end=q.get("to"))
    except ValueError as err:
        raise HTTPException(400, str(err)) from None


def create_app(engine: Engine, *, now: Callable[[], float] = time.time) -> Starlette:
    """The web app reading ``engine`` (open it read-only: ``collector.common.open_db(url, read_only=True)``)."""
    env = _environment()

    def render(name: str, code: int = 200, headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**context), status_code=code, headers=headers)

    def index(request: Request) -> Response:
        f = filters_of(request)
        t = now()
        with engine.connect() as conn:
            devices = queries.device_rows(conn, now=t)
            counts = queries.daily_counts(conn, f, now=t)
            context = {"devices": devices, "filters": f, "plot": plot.build(counts), "days": counts.days,
                       "crops": queries.latest_crops(conn, f), "events": queries.event_rows(conn, f),
                       "rejects": queries.reject_counts(conn), "device_ids": queries.device_ids(conn),
                       "labels": queries.class_labels(conn), "formats": exports.FORMATS,
                       "query": f.query(), "generated": int(t),
                       "export_query": {k: v for k, v in f.query().items() if k != "class"}}
        return render("index.html", **context)

    def crop(request: Request) -> Response:
        name = request.path_params["name"]
        event_id = name.removesuffix(".jpg")
        with engine.connect() as conn:
            data = queries.crop_jpeg(conn, event_id) if name.endswith(".jpg") else None
        if data is None:
            raise HTTPException(404, f"no crop {name}")
        return Response(bytes(data), media_type="image/jpeg",
                        headers={"cache-control": "private, max-age=86400, immutable"})

    def export(request: Request) -> Response:
        fmt = request.path_params["fmt"]
        if fmt not in exports.FORMATS:
            raise HTTPException(404, f"no export format {fmt!r}; use one of {', '.join(exports.FORMATS)}")
        return exports.respond(engine, fmt, filters_of(request))

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return render("error.html", exc.status_code, exc.headers, status=exc.status_code, message=exc.detail)

    def db_error(request: Request, exc: SQLAlchemyError) -> Response:
        logger.warning("database error on %s: %s", request.url.path, describe(exc))
        return render("error.html", 503, status=503, message=f"the database is unavailable: {describe(exc)}")

    routes = [Route("/", index, methods=["GET"]),
              Route("/crops/{name}", crop, methods=["GET"]),
              Route("/export/{fmt}", export, methods=["GET"]),
              Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, SQLAlchemyError: db_error})
    app.add_middleware(SecurityHeaders)
    return app

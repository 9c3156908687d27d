"""``/export/<format>``: the page's filtered selection as a download, through ``collector.export`` when it has a writer."""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response

from collector.queries import Filters

logger = logging.getLogger(__name__)

#: Format -> (file name, media type) of the download.
FORMATS: dict[str, tuple[str, str]] = {
    "megadetector": ("wildedge-megadetector.json", "application/json"),
    "camtrapdp": ("wildedge-camtrapdp.zip", "application/zip"),
    "coco": ("wildedge-coco.json", "application/json"),
    "csv": ("wildedge-detections.csv", "text/csv; charset=utf-8"),
}
#: The function of ``collector.export`` this route calls: ``export_to(engine, fmt, path, *, devices, since, until)``.
WRITER = "export_to"


def _writer() -> Callable[..., Any] | None:
    try:
        module = importlib.import_module("collector.export")
    except ImportError:
        return None
    return getattr(module, WRITER, None)


def respond(engine: Engine, fmt: str, filters: Filters) -> Response:
    """The export of ``filters`` (device and dates; not class) in ``fmt`` as a download; camtrapdp as a zip."""
    write = _writer()
    if write is None:
        raise HTTPException(501, f"exports from the web page are not available in this version: "
                                 f"use `wildedge collect export --format {fmt}` on the server")
    if filters.label:
        raise HTTPException(400, "exports select by device and date, not by class: remove the class filter")
    name, media_type = FORMATS[fmt]
    since = datetime.fromisoformat(filters.start).replace(tzinfo=UTC) if filters.start else None
    until = datetime.fromisoformat(filters.end).replace(tzinfo=UTC) + timedelta(days=1) if filters.end else None
    tmp = tempfile.TemporaryDirectory(prefix="wildedge-export-")
    try:
        out = Path(tmp.name) / (name.removesuffix(".zip") if fmt == "camtrapdp" else name)
        write(engine, fmt, out, devices=[filters.device] if filters.device else [], since=since, until=until)
        if fmt == "camtrapdp":
            out = Path(shutil.make_archive(str(out), "zip", root_dir=out))
    except ValueError as err:
        tmp.cleanup()
        raise HTTPException(400, f"cannot export {fmt}: {err}") from None
    except BaseException:
        tmp.cleanup()
        raise
    logger.info("export %s (%s): %d bytes", fmt, filters.query() or "everything", out.stat().st_size)
    return FileResponse(out, media_type=media_type, filename=name, background=BackgroundTask(tmp.cleanup))

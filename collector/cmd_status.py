"""``wildedge collect status``: one line per device (state, last seen, disk, temperature, clock, outbox, today)."""

from __future__ import annotations

import json
import logging
import time
from typing import Annotated

import typer

from collector.common import DbOption, open_db, require_extra

logger = logging.getLogger(__name__)

_COLUMNS = ("DEVICE", "STATE", "LAST SEEN", "DISK FREE", "TEMP", "CLOCK", "OUTBOX", "TODAY", "MARK")


def status(db: DbOption = None,
           json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output (a JSON list).")]
           = False) -> None:
    """Show every device: state, last seen, disk, temperature, clock, outbox depth, events today (UTC)."""
    require_extra("db")
    from collector import queries

    engine = open_db(db, read_only=True)
    try:
        with engine.connect() as conn:
            rows = queries.device_rows(conn, now=time.time())
    finally:
        engine.dispose()
    if json_output:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        typer.echo("no devices yet: nothing has been received")
        return
    typer.echo(render_table(rows))


def render_table(rows: list) -> str:  # list[queries.DeviceRow]
    """The plain-text table of ``rows``, columns padded to their widest cell."""
    cells = [_COLUMNS] + [(
        r.device, r.state or "?", ago(r.age_s), _disk(r.disk_free_mib, r.disk_total_mib, r.disk_low),
        "?" if r.temp_c is None else f"{r.temp_c:.1f} C", r.clock, "?" if r.queue_depth is None else str(r.queue_depth),
        str(r.events_today), " ".join(r.marks)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def ago(seconds: int) -> str:
    """``seconds`` as a short age: ``42s ago``, ``5m ago``, ``3h ago``, ``2d ago``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _disk(free: int | None, total: int | None, low: bool | None) -> str:
    if free is None:
        return "?"
    text = f"{free / 1024:.1f} GiB"
    if total:
        text += f" ({100 * free // total}%)"
    return text + (" LOW" if low else "")

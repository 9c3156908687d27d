"""``wildedge collect export``: the collector's events in an ecologist's format, through the device's writers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from collector.common import DbOption, fail, open_db, require_extra, sqlite_file

logger = logging.getLogger(__name__)


def parse_frame_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` as two positive integers.

    Raises:
        ValueError: ``text`` is not of that form.
    """
    width, sep, height = text.lower().partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit() or not int(width) or not int(height):
        raise ValueError(f"--frame-size: {text!r} is not WIDTHxHEIGHT in pixels, e.g. 1920x1080")
    return int(width), int(height)


def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write (a directory for camtrapdp).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="megadetector | camtrapdp | coco | csv.")]
    = "megadetector",
    db: DbOption = None,
    device: Annotated[list[str] | None, typer.Option(
        "--device", help="Only this device (repeatable); default: every device.")] = None,
    since: Annotated[str | None, typer.Option(help="Events from this date/time (UTC unless zoned).")] = None,
    until: Annotated[str | None, typer.Option(help="Events before this date/time; a bare date includes that day.")]
    = None,
    locations: Annotated[Path | None, typer.Option(
        "--locations", help="CSV of device,latitude,longitude for camtrapdp; default: where each device "
                            "reported it stands ([mqtt] send_location).")] = None,
    frame_size: Annotated[str | None, typer.Option(
        "--frame-size", help="WIDTHxHEIGHT of the devices' frames: coco needs pixels, and the wire does not "
                             "carry frame sizes.")] = None,
    categories: Annotated[str, typer.Option(
        "--categories", help="megadetector: MegaDetector's 1 animal / 2 person / 3 vehicle, each box's own class "
                             "kept as a classification (for Timelapse, AddaxAI and MegaDetector's tools); native: "
                             "the detectors' own labels. megadetector format only.")] = "native",
) -> None:
    """Export the collected events as MegaDetector 1.6 JSON, a Camtrap DP package, COCO JSON or CSV."""
    from edge.outputs.event_writers import FORMATS, categories_problem
    from edge.outputs.events import parse_when

    if fmt not in FORMATS:
        fail(f"--format {fmt!r} is unknown; choose one of {', '.join(FORMATS)}")
    if (problem := categories_problem(categories, fmt)) is not None:
        fail(problem)
    try:
        lo = parse_when(since, option="--since") if since else None
        hi = parse_when(until, option="--until", end_of_day=True) if until else None
        size = parse_frame_size(frame_size) if frame_size else None
    except ValueError as err:
        fail(str(err))
    if lo is not None and hi is not None and hi <= lo:
        fail("--until must be after --since")
    if fmt == "coco" and size is None:  # the writer says so too, but only after reading every event
        fail("coco needs pixel sizes and the collector does not receive them: pass --frame-size WIDTHxHEIGHT, "
             "or use megadetector, csv or camtrapdp")
    from edge.outputs.target import output_problem

    database = sqlite_file(db)
    problem = output_problem(fmt, output, keep=[database] if database is not None else [])
    if problem:
        fail(problem)
    require_extra("db")
    from collector.export import export_to, load_locations

    try:
        places = load_locations(locations) if locations is not None else None
    except ValueError as err:
        fail(str(err))
    engine = open_db(db, read_only=True)
    try:
        written = export_to(engine, fmt, output, devices=device or (), since=lo, until=hi, locations=places,
                            frame_size=size, categories=categories)
    except ValueError as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write {output}: {err.strerror or err}", code=1)
    finally:
        engine.dispose()
    typer.echo(f"wrote {written} ({fmt})")

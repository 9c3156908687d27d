"""``wildedge results``: a device's own results, summarised, and exported in an ecologist's format.

The store is read, never written: a daemon may be running. Failures end with one ``error:`` line
(exit 2 for a bad config or option, 1 for a store that is missing or unreadable).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from edge.cli.run_cmd import ConfigOption, _load
from edge.errors import ModelError, StoreError
from edge.outputs.target import output_problem

logger = logging.getLogger(__name__)

FormatOption = Annotated[str, typer.Option(
    "--format", "-f", help="megadetector (1.6 JSON) | camtrapdp (directory) | coco (JSON) | csv.")]

#: What a Camtrap DP export writes into its folder; anything else there is the user's, never replaced.
def device_models(cfg: Any, conn: Any) -> Any:
    """The models named by the config, from their cards; the store's labels when a card is unreadable."""
    from edge.inference.card import read_card
    from edge.outputs.events import ModelRef, Models

    def ref(path: Path, conf: float | None, kind: str) -> ModelRef:
        try:
            card = read_card(path)
        except (ModelError, OSError) as err:
            column = "class_id, label" if kind == "det" else "cls_id, cls_label"
            seen = dict(conn.execute(f"SELECT DISTINCT {column} FROM detections WHERE {column.split(',')[0]} "
                                     "IS NOT NULL").fetchall())
            labels = tuple(seen.get(i, f"class {i}") for i in range(max(seen, default=-1) + 1))
            logger.warning("model %s unreadable (%s): labels taken from the store", path, err)
            return ModelRef(Path(path).stem, labels, conf if conf is not None else 0.0)
        name = card.name or card.decoder.name
        threshold = conf if conf is not None else card.thresholds.conf
        return ModelRef(name, tuple(card.labels), threshold, tuple(card.preprocess.input_size))  # type: ignore[arg-type]

    detector = ref(cfg.detector.model, cfg.detector.conf, "det")
    classifier = None
    if cfg.classifier is not None:
        classifier = ref(cfg.classifier.model, cfg.classifier.min_confidence, "cls")
    return Models(detector, classifier)


def _print_summary(summary: Any, store: Path) -> None:
    typer.echo(f"store        {store}")
    typer.echo(f"frames       {summary.frames}")
    typer.echo(f"events       {summary.events}")
    for label, n in summary.per_class.items():
        typer.echo(f"  {label:<20} {n}")
    last = summary.last_event.strftime("%Y-%m-%d %H:%M:%S UTC") if summary.last_event else "none"
    typer.echo(f"last event   {last}")
    typer.echo(f"outbox       {summary.queued} messages waiting ({summary.queued_bytes} bytes)")


def results(
    config: ConfigOption,
    fmt: FormatOption = "megadetector",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the export here (a directory for camtrapdp); without it, only the summary.")]
    = None,
    since: Annotated[str | None, typer.Option(help="Events captured from this date/time (UTC unless zoned).")]
    = None,
    until: Annotated[str | None, typer.Option(help="Events captured before this date/time; a bare date "
                                                      "includes that day.")] = None,
    categories: Annotated[str, typer.Option(
        "--categories", help="megadetector: MegaDetector's 1 animal / 2 person / 3 vehicle, each box's own class "
                             "kept as a classification; native: the detector's labels. megadetector format only.")]
    = "native",
) -> None:
    """Summarise this device's stored results; with -o, export them (read-only: safe beside a running daemon)."""
    from edge.daemon import state_paths
    from edge.outputs.device_store import open_readonly, read_export, summarise
    from edge.outputs.event_writers import FORMATS, categories_problem, write_events
    from edge.outputs.events import parse_when

    if fmt not in FORMATS:
        typer.echo(f"error: --format {fmt!r} is unknown; choose one of {', '.join(FORMATS)}", err=True)
        raise typer.Exit(2)
    if (problem := categories_problem(categories, fmt)) is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    try:
        lo = parse_when(since, option="--since") if since else None
        hi = parse_when(until, option="--until", end_of_day=True) if until else None
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if lo is not None and hi is not None and hi <= lo:
        typer.echo("error: --until must be after --since", err=True)
        raise typer.Exit(2)
    cfg = _load(config, None)
    db_path = state_paths(Path(cfg.device.state_dir))[0]
    if db_path.exists() and not db_path.is_file():
        typer.echo(f"error: the store {db_path} is not a file (check device.state_dir in {config})", err=True)
        raise typer.Exit(1)
    problem = None if output is None else output_problem(
        fmt, output, keep=[db_path])
    if problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    try:
        with open_readonly(db_path) as conn:
            _print_summary(summarise(conn), db_path)
            if output is None:
                return
            folder = Path(cfg.camera.path) if cfg.camera.type == "folder" else None
            export = read_export(conn, device=cfg.device.id, models=device_models(cfg, conn), since=lo, until=hi,
                                 latitude=cfg.device.latitude, longitude=cfg.device.longitude, folder=folder)
        write_events(fmt, export, output, categories=categories)
    except StoreError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    except ValueError as err:
        typer.echo(f"error: {err}" if str(output) in str(err) else f"error: -o {output}: {err}", err=True)
        raise typer.Exit(2) from None
    except OSError as err:
        typer.echo(f"error: cannot write {output}: {err.strerror or err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {len(export.events)} events to {output} ({fmt})")

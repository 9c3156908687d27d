"""``wildedge model ...``: show a card, stamp a card into a third-party ONNX file, pull published models."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from edge.errors import ModelError, WildedgeError
from edge.inference.card import ModelCard, read_card
from edge.inference.labels import read_labels
from edge.inference.presets import PRESETS, preset_names
from edge.inference.stamp import stamp_file

app = typer.Typer(help="Inspect and stamp model cards; pull published models.", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _print_card(card: ModelCard) -> None:
    pre, thr = card.preprocess, card.thresholds
    rows = [
        ("name", card.name or "-"),
        ("task", card.task),
        ("card version", str(card.card_version)),
        ("input", f"{pre.input_size[0]}x{pre.input_size[1]} {pre.layout} {pre.colour}"),
        ("resize", f"{pre.resize} ({pre.interpolation}, pad {pre.pad_value:g}, {pre.size_rounding})"),
        ("scale", f"{pre.scale:.6g}  mean {list(pre.mean)}  std {list(pre.std)}"),
        ("decoder", f"{card.decoder.name} {json.dumps(card.decoder.params) if card.decoder.params else ''}".strip()),
        ("thresholds", f"conf {thr.conf:g}  iou {thr.iou:g}  {'class-agnostic' if thr.class_agnostic else 'per-class'} "
                       f"NMS  max {thr.max_detections}"),
        ("labels", f"{len(card.labels)}: {', '.join(card.labels[:8])}{' ...' if len(card.labels) > 8 else ''}"),
        ("source", f"{card.source.file or '-'} sha256 {card.source.sha256 or '-'}"),
        ("exporter", f"{card.exporter.name} {card.exporter.version}"),
        ("quantization", json.dumps(card.quantization) if card.quantization else "none"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


@app.command("show")
def show(
    model: Annotated[Path, typer.Argument(help="ONNX model file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the card as JSON.")] = False,
) -> None:
    """Print the model card of MODEL."""
    try:
        card = read_card(model)
    except ModelError as err:
        raise _fail(str(err)) from err
    if as_json:
        typer.echo(json.dumps(json.loads(card.to_json()), indent=2))
    else:
        _print_card(card)


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise typer.BadParameter(f"expected WIDTHxHEIGHT or N, got {text!r}") from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise typer.BadParameter(f"expected WIDTHxHEIGHT or N, got {text!r}")


def _parse_triple(text: str | None, name: str) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{name} expects three comma-separated numbers, got {text!r}") from None
    if len(values) != 3:
        raise typer.BadParameter(f"{name} expects three comma-separated numbers, got {text!r}")
    return values  # type: ignore[return-value]


def _categories(scheme: str | None, mapping: Path | None) -> dict | None:
    """The card's ``categories`` field from --categories / --category-map (one-line errors)."""
    import json

    if scheme is not None and scheme not in ("native", "megadetector"):
        raise _fail(f"--categories must be native or megadetector, got {scheme!r}")
    if mapping is None:
        return {"scheme": scheme} if scheme is not None else None
    if scheme == "native":
        raise _fail("--category-map goes with --categories megadetector (or alone), not native")
    try:
        data = json.loads(mapping.read_text(encoding="utf-8"))
    except OSError as err:
        raise _fail(f"--category-map {mapping}: {err.strerror or err}") from err
    except ValueError as err:
        raise _fail(f"--category-map {mapping}: not JSON ({err})") from err
    if not isinstance(data, dict):
        raise _fail(f"--category-map {mapping}: must be a JSON object of label: animal|person|vehicle")
    return {"scheme": "megadetector", "map": data}


@app.command("stamp")
def stamp(
    model: Annotated[Path, typer.Argument(help="Third-party ONNX file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the stamped copy.")],
    preset: Annotated[str, typer.Option(help=f"Model family: {', '.join(preset_names())}.")],
    labels: Annotated[Path, typer.Option(help="Class names: text (one per line) or JSON.")],
    input_size: Annotated[Optional[str], typer.Option(help="WIDTHxHEIGHT; default: the graph's.")] = None,
    colour: Annotated[Optional[str], typer.Option(help="RGB or BGR.")] = None,
    scale: Annotated[Optional[float], typer.Option(help="Pixel multiplier, e.g. 0.00392157 (1/255) or 1.")] = None,
    mean: Annotated[Optional[str], typer.Option(help="Three comma-separated means (after scaling).")] = None,
    std: Annotated[Optional[str], typer.Option(help="Three comma-separated stds (after scaling).")] = None,
    resize: Annotated[Optional[str], typer.Option(
        help="letterbox_topleft, letterbox_centre, stretch or centre_crop.")] = None,
    pad_value: Annotated[Optional[float], typer.Option(min=0.0, max=255.0, help="Letterbox fill value (0..255).")] = None,
    conf: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Recommended confidence threshold.")] = None,
    iou: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Recommended NMS IoU threshold.")] = None,
    name: Annotated[str, typer.Option(
        help="Model name recorded in the card; default: file stem. -m takes the stamped file's path (a "
             "published model runs by name after 'wildedge model pull NAME --from FILE').")] = "",
    categories: Annotated[Optional[str], typer.Option(
        help="Category scheme results are written in by default: megadetector (1 animal / 2 person / "
             "3 vehicle; COCO names map by themselves) or native.")] = None,
    category_map: Annotated[Optional[Path], typer.Option(
        help="JSON file {label: animal|person|vehicle} for labels that are not COCO names (implies "
             "--categories megadetector).")] = None,
) -> None:
    """Write a model card into a copy of a third-party ONNX file."""
    from edge.batch.checkpoint import check_output

    try:  # a folder or unwritable place for -o: one line now, not an OS error after the work
        check_output(output, example=f"{model.stem}_card.onnx")
    except WildedgeError as err:
        raise _fail(str(err)) from err
    if preset not in PRESETS:
        raise _fail(f"unknown preset {preset!r}; choose one of: {', '.join(preset_names())}")
    pre: dict = {}
    if colour is not None:
        if colour.upper() not in ("RGB", "BGR"):
            raise _fail(f"--colour must be RGB or BGR, got {colour!r}")
        pre["colour"] = colour.upper()
    for key, value in (("scale", scale), ("resize", resize), ("pad_value", pad_value),
                       ("mean", _parse_triple(mean, "--mean")), ("std", _parse_triple(std, "--std"))):
        if value is not None:
            pre[key] = value
    thr = {k: v for k, v in (("conf", conf), ("iou", iou)) if v is not None}
    scheme = _categories(categories, category_map)
    try:
        card = stamp_file(
            model, output, preset=preset, labels=read_labels(labels),
            input_size=_parse_size(input_size) if input_size else None, name=name,
            preprocess_overrides=pre, threshold_overrides=thr, categories=scheme,
        )
    except (ModelError, ValueError) as err:
        raise _fail(str(err)) from err
    typer.echo(f"stamped {output} ({card.task}, {card.decoder.name}, "
               f"{card.preprocess.input_size[0]}x{card.preprocess.input_size[1]}, {len(card.labels)} labels); "
               f"run it with -m {output}")


@contextmanager
def _download_progress(name: str) -> Iterator[Callable[[int, int | None], None] | None]:
    """A rich progress bar on an interactive stderr, else no callback (logging reports the download)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
                  transient=True) as bar:
        task = bar.add_task(f"pull {name}", total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@app.command("pull")
def pull_cmd(
    name: Annotated[str, typer.Argument(help="Published model name (see 'wildedge model list').")],
    force: Annotated[bool, typer.Option("--force", help="Download and stamp again even if cached.")] = False,
    source: Annotated[Optional[Path], typer.Option(
        "--from", metavar="FILE",
        help="Offline: a copy of the published file fetched by other means; it must match the pinned "
             "sha256, and is stamped into the cache so that -m NAME works.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Cache folder; default $WILDEDGE_CACHE, else $XDG_CACHE_HOME/wildedge.")] = None,
) -> None:
    """Download a published model (or take a local copy with --from), check its sha256 and stamp its
    card into the cache; prints the model's path. Then -m NAME works offline."""
    from edge.models import cached_model, pull

    try:
        cached = None if force or source is not None else cached_model(name, cache_dir=cache_dir)
        with _download_progress(name) as progress:
            path = pull(name, cache_dir=cache_dir, force=force, progress=progress, source=source)
    except ModelError as err:
        raise _fail(str(err)) from err
    how = f"from {source}" if source is not None else "already cached" if cached is not None else "pulled"
    typer.echo(f"{path} ({how})")


@app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the models as JSON.")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Cache folder; default $WILDEDGE_CACHE, else $XDG_CACHE_HOME/wildedge.")] = None,
) -> None:
    """List the published models and whether each is in the cache."""
    from edge.models import DEFAULT_MODEL, cached_model, load_registry

    try:
        registry = load_registry()
        rows = []
        for name, entry in registry.items():
            path = cached_model(name, cache_dir=cache_dir, registry=registry)
            rows.append({
                "name": name, "default": name == DEFAULT_MODEL, "preset": entry.preset,
                "licence": entry.licence, "cached": path is not None, "path": str(path) if path else None,
                "url": entry.url, "sha256": entry.sha256, "description": entry.description,
            })
    except ModelError as err:
        raise _fail(str(err)) from err
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = [("NAME", "PRESET", "LICENCE", "CACHED", "DESCRIPTION")]
    table += [(r["name"] + (" *" if r["default"] else ""), r["preset"], r["licence"] or "-",
               "yes" if r["cached"] else "no", r["description"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        typer.echo("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + "  " + row[4])
    typer.echo(f"* default model ({DEFAULT_MODEL})")

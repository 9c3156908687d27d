"""``wildedge detect``: run a detector (and optional classifier) over photos and videos."""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from edge.batch import checkpoint
from edge.batch.results import FileResult, ModelInfo, RunInfo
from edge.batch.runner import BatchRunner
from edge.batch.sources import collect, nothing_found
from edge.errors import WildedgeError
from edge.inference.card import sha256_file
from edge.inference.session import default_threads

logger = logging.getLogger(__name__)

FORMATS = ("megadetector", "coco", "csv")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _format_for(output: Path, fmt: str | None) -> str:
    if fmt is None:
        return "csv" if output.suffix.lower() == ".csv" else "megadetector"
    if fmt not in FORMATS:
        raise _fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def _tiling(tile: int | None, overlap: float | None, full_frame: bool) -> float:
    """The tile overlap to use; refuses tiling options that cannot work or would be ignored."""
    from edge.inference.tiling import MIN_TILE

    if tile is None:
        if overlap is not None:
            raise _fail("--overlap needs --tile")
        if not full_frame:
            raise _fail("--no-full-frame needs --tile")
        return 0.2
    if tile < MIN_TILE:
        raise _fail(f"--tile must be at least {MIN_TILE} pixels, got {tile} (leave --tile out for no tiling)")
    if overlap is not None and not 0.0 <= overlap < 1.0:
        raise _fail(f"--overlap must be within [0, 1), got {overlap}")
    return 0.2 if overlap is None else overlap


def _coco_gt(path: Path | None, out_format: str, categories: str | None):
    """The ground truth of ``--coco-gt`` (read before any model is loaded); checks ``--categories``."""
    from edge.outputs.categories import SCHEMES
    from edge.outputs.coco import load_coco_gt

    if categories is not None and categories not in SCHEMES:
        raise _fail(f"--categories must be one of {', '.join(SCHEMES)}, got {categories!r}")
    if path is None:
        return None
    if out_format != "coco":
        raise _fail(f"--coco-gt needs --format coco (the output is {out_format})")
    try:
        return load_coco_gt(path)
    except ValueError as err:
        raise _fail(str(err)) from err


def _categories(card, categories: str | None, *, keep_classes: bool):
    """How the detector's classes are written: ``--categories``, else the card's scheme, else native."""
    from edge.outputs.categories import categories_for

    scheme = categories or (card.categories.scheme if card.categories else "native")
    mapping = card.categories.map if card.categories else None
    if not keep_classes and scheme != "megadetector":
        raise ValueError("--no-detector-classes needs --categories megadetector (or a card that sets it)")
    try:
        return categories_for(card.labels, scheme, mapping, keep_classes=keep_classes)
    except ValueError as err:
        raise ValueError(f"--categories {scheme}: {err}") from None


def _progress(total: int, enabled: bool):
    """A rich progress bar on an interactive terminal, else nothing."""
    if not enabled or not sys.stderr.isatty():
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("detect"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True)


def detect(
    paths: Annotated[list[Path], typer.Argument(
        metavar="PATH", help="Photos, videos or folders (searched recursively).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Detector: an ONNX file or a pulled model name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Results file.")],
    classifier: Annotated[Optional[str], typer.Option("--classifier", "-c", help="Classifier ONNX file.")] = None,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", help="megadetector (default; format 1.6, read by Timelapse and AddaxAI), coco or csv "
                         "(default for a .csv output).")] = None,
    categories: Annotated[Optional[str], typer.Option(
        help="native (the detector's own classes; COCO's ids for a COCO-80 model) or megadetector "
             "(1 animal, 2 person, 3 vehicle, as MegaDetector tools expect; the detector's class is kept as a "
             "classification); default: the model card's, else native.")] = None,
    detector_classes: Annotated[bool, typer.Option(
        "--detector-classes/--no-detector-classes",
        help="With --categories megadetector: keep each box's own class as a classification. MegaDetector's "
             "merge_detections needs --no-detector-classes to merge into a file without classifications.")] = True,
    addaxai: Annotated[bool, typer.Option(
        "--addaxai", help="Also write AddaxAI's image_recognition_file.json / video_recognition_file.json into "
                          "the one input folder (best with --categories megadetector).")] = False,
    coco_gt: Annotated[Optional[Path], typer.Option(
        "--coco-gt", help="With --format coco: take image and category ids from this COCO ground-truth file "
                          "(matched by file name and class name).")] = None,
    conf: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, help="Confidence threshold; default: the card's.")] = None,
    iou: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, help="NMS IoU threshold; default: the card's.")] = None,
    tile: Annotated[Optional[int], typer.Option(help=(
        "Tile size in pixels (at least 32) for small objects on large frames; each tile is resized to the "
        "model's input."))] = None,
    overlap: Annotated[Optional[float], typer.Option(
        help="With --tile: tile overlap ratio in [0, 1); default 0.2.")] = None,
    full_frame: Annotated[bool, typer.Option(
        "--full-frame/--no-full-frame", help="With --tile, also run on the whole frame.")] = True,
    classify_classes: Annotated[str, typer.Option(
        help="Comma-separated detector classes whose crops the classifier sees; 'animal' also means every "
             "COCO animal class.")] = "animal",
    top_k: Annotated[int, typer.Option(min=1, help="Classifications kept per crop.")] = 5,
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="Inference threads; default: cores, at most 4.")] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="Image-decoding threads running beside inference; default: 2 (1 on a single core).")] = None,
    video_every: Annotated[int, typer.Option(min=1, help="Process every Nth video frame.")] = 10,
    reduced: Annotated[bool, typer.Option(
        "--reduced/--full-decode", help="Decode large JPEGs at 1/2, 1/4 or 1/8 size when the model input "
                                        "is much smaller (boxes are still in full-resolution terms).")] = True,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its checkpoint.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Detect animals (and classify them) in photos and videos; write MegaDetector, COCO or CSV results.

    Exit code: 0 when every file was processed, 1 when some failed (each listed in the output with
    its reason), 2 on a usage or model error.
    """
    from edge.inference.classifier import Classifier
    from edge.inference.detector import Detector
    from edge.models import resolve_model
    from edge.outputs import write_addaxai, write_results

    overlap = _tiling(tile, overlap, full_frame)
    out_format = _format_for(output, fmt)
    gt = _coco_gt(coco_gt, out_format, categories)
    if addaxai and (len(paths) != 1 or not paths[0].is_dir()):
        raise _fail("--addaxai needs exactly one input folder (AddaxAI reads its files from that folder)")
    try:  # before any model is loaded: a bad -o must not cost a whole run
        checkpoint.check_output(output, example="results.csv" if out_format == "csv" else "results.json")
    except WildedgeError as err:
        raise _fail(str(err)) from err
    try:
        items, base = collect(paths)
    except FileNotFoundError as err:
        raise _fail(str(err)) from err
    if not items:
        raise _fail(nothing_found(paths))
    if addaxai:
        from edge.outputs import ADDAXAI_FILES

        try:  # AddaxAI's files go into the input folder: it must be writable
            checkpoint.check_output(base / ADDAXAI_FILES["photos"])
        except WildedgeError as err:
            raise _fail(f"--addaxai: {err}") from err
    try:
        detector_path = resolve_model(model)
        det = Detector(detector_path, conf=conf, iou=iou, threads=threads, spin=False)
        cls = None
        classify_ids = None
        if classifier is not None:
            cls = Classifier(resolve_model(classifier), top_k=top_k, threads=threads, spin=False)
            from edge.config.preflight import resolve_classes  # the daemon's classifier.classes rule

            classify_ids = resolve_classes([c.strip() for c in classify_classes.split(",") if c.strip()],
                                           det.labels, key="--classify-classes", model=detector_path)
        cats = _categories(det.card, categories, keep_classes=detector_classes)
        runner = BatchRunner(det, classifier=cls, classify_ids=classify_ids, tile=tile, overlap=overlap,
                             full_frame=full_frame, reduced=reduced, video_every=video_every,
                             workers=workers or min(2, default_threads()))
    except (WildedgeError, ValueError) as err:
        raise _fail(str(err)) from err

    settings = {
        "detector": sha256_file(detector_path), "classifier": sha256_file(cls.model.path) if cls else None,
        "conf": det.conf, "iou": det.iou, "tile": tile, "overlap": overlap if tile else None,
        "full_frame": full_frame if tile else None, "classify": sorted(classify_ids or []),
        "top_k": top_k if cls else None, "video_every": video_every, "reduced": reduced, "base": str(base),
    }
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _fail(f"cannot create the output folder {output.parent}: {err.strerror}") from err
    ckpt = checkpoint.checkpoint_path(output)
    done: dict[str, FileResult] = {}
    if ckpt.exists():
        if not resume:
            raise _fail(f"{ckpt} holds an interrupted run: pass --resume to continue it, or delete it")
        try:
            done = checkpoint.load(ckpt, settings)
        except WildedgeError as err:
            raise _fail(str(err)) from err
        logger.info("resuming: %d of %d files already done", sum(i.name in done for i in items), len(items))
    todo = [item for item in items if item.name not in done]

    started = time.perf_counter()
    progress = _progress(len(items), not quiet)
    new: dict[str, FileResult] = {}
    with checkpoint.CheckpointWriter(ckpt, settings, append=bool(done)) as writer:
        if progress is not None:
            progress.start()
            task = progress.add_task("detect", total=len(items), completed=len(items) - len(todo))
        try:
            for result in runner.run(todo):
                writer.add(result)
                new[result.file] = result
                if progress is not None:
                    progress.advance(task)
        finally:
            if progress is not None:
                progress.stop()
    results = [new.get(item.name) or done[item.name] for item in items]
    run = RunInfo(
        detector=ModelInfo(detector_path.name, det.labels, det.conf, det.input_size,
                           typical_conf=det.card.thresholds.conf),
        classifier=ModelInfo(cls.model.path.name, cls.labels, 0.0, cls.card.preprocess.input_size,
                             typical_conf=cls.card.thresholds.conf) if cls else None,
        completed=datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        categories=cats,
        settings={"iou_threshold": det.iou, "tile": tile, "video_every": video_every,
                  "classifier_top_k": top_k if cls else None},
    )
    try:
        write_results(out_format, results, output, run=run, base_dir=base, coco_gt=gt)
        if addaxai:
            write_addaxai(results, base, run=run)
    except OSError as err:
        raise _fail(f"cannot write {output}: {err.strerror or err}; the results are kept in {ckpt}: "
                    "fix the cause and rerun with --resume") from err
    ckpt.unlink(missing_ok=True)

    failed = [r for r in results if r.failure]
    if not quiet:
        elapsed = time.perf_counter() - started
        found = sum(len(r.detections) for r in results)
        rate = len(todo) / elapsed if elapsed > 0 else 0.0
        typer.echo(
            f"{len(results)} files, {len(failed)} failed, {found} detections -> {output} ({out_format}); "
            f"{len(todo)} processed in {elapsed:.1f} s ({rate:.2f} files/s)", err=True,
        )
        for r in failed[:10]:
            typer.echo(f"  failed: {r.file}: {r.failure}", err=True)
        if len(failed) > 10:
            typer.echo(f"  ... and {len(failed) - 10} more (see the output file)", err=True)
    raise typer.Exit(1 if failed else 0)

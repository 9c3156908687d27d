"""An existing ONNX file: its wildedge card or Ultralytics metadata is kept, else ``--preset`` stamps one."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import ValidationError

from edge.errors import CardMissingError, ExportError, ModelError
from edge.inference.card import ModelCard, format_errors, read_card, sha256_file
from edge.inference.presets import PRESETS, preset_names
from export.deps import require
from export.sources.base import Kind, LoadedModel, check_file, make_card

logger = logging.getLogger(__name__)


def graph_input_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of the graph's fixed NCHW/NHWC image input, else None."""
    onnx = require("onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError and others for files that are not ONNX
        raise ExportError(f"cannot read {path} as ONNX: {err}") from err
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise ExportError(f"{path}: expected one image input, the graph has {len(inputs)}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        return None
    if dims[1] == 3 and dims[2] and dims[3]:
        return dims[3], dims[2]
    if dims[3] == 3 and dims[1] and dims[2]:
        return dims[2], dims[1]
    return None


def load(
    path: str | Path,
    *,
    kind: Kind,
    preset: str | None = None,
    labels: list[str] | None = None,
    imgsz: int | None = None,
    url: str | None = None,
) -> LoadedModel:
    """Take an ONNX file as it is: keep its card (or Ultralytics metadata), or stamp ``preset`` + ``labels``.

    ``labels`` alone replaces the labels of a kept card. The card's task must be ``kind``.

    Raises:
        ExportError: no card and no ``preset``; unknown preset; a card of the other task; no labels.
    """
    file = check_file(path, "ONNX file")
    sha256 = sha256_file(file)
    if preset is not None:
        if preset not in PRESETS:
            raise ExportError(f"unknown preset {preset!r}; choose one of: {', '.join(preset_names())}")
        if not labels:
            raise ExportError(f"stamping {file.name} with --preset {preset} needs --labels FILE")
        size = (imgsz, imgsz) if imgsz else graph_input_size(file)
        if size is None:
            raise ExportError(f"{file} has a dynamic input size: pass --imgsz N")
        card = make_card(preset, labels=labels, input_size=size, name=file.stem, source=file, sha256=sha256,
                         url=url)
    else:
        try:
            card = read_card(file)
        except CardMissingError as err:
            raise ExportError(f"{file} has no model card and no Ultralytics metadata: pass --preset FAMILY "
                              "--labels FILE") from err
        except ModelError as err:
            raise ExportError(str(err)) from err
        updates: dict = {}
        if labels:
            updates["labels"] = list(labels)
        if imgsz:
            updates["preprocess"] = {**card.preprocess.model_dump(), "input_size": (imgsz, imgsz)}
        if card.source.sha256 is None:
            updates["source"] = {"file": file.name, "sha256": sha256, "url": url}
        try:
            card = ModelCard.model_validate({**card.model_dump(), **updates})
        except ValidationError as err:
            raise ExportError(f"invalid model card for {file.name}: {format_errors(err)}") from err
    if card.task != kind:
        wanted = "detector" if kind == "detect" else "classifier"
        raise ExportError(f"{file.name} is a {card.task} model, not a {wanted}")
    logger.info("taking ONNX %s as is (%s, %s, %d labels)", file, card.task, card.decoder.name,
                len(card.labels))
    return LoadedModel(kind, card, "onnx", file.stem, file, onnx_path=file)

"""Make a float ONNX file quantizable: opset 13+, no initializers posing as inputs, pre-processed.

Each stage is a function from one file to another that carries the model card (metadata key
``wildedge.card``) across, because the onnx tools that rewrite the graph do not all keep it.

- :func:`upgrade_opset`: per-channel QDQ needs ``DequantizeLinear(axis=...)``, which opset 13 added;
  an opset-11 file quantized per channel fails to load ("Unrecognized attribute: axis").
- :func:`strip_initializer_inputs`: old exporters (NanoDet's) list every initializer as a graph input
  too. onnxruntime then treats them as overridable inputs, will not constant-fold them, and the
  quantized graph fails at run time ("Gather ... indices element out of data bounds").
- :func:`pre_process`: onnxruntime's ``quant_pre_process`` (shape inference and graph optimisation),
  whose stamp ``quantize_static`` checks.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from edge.errors import ExportError
from edge.inference.card import CARD_KEY
from edge.inference.onnxmeta import read_metadata, write_metadata
from export.deps import require

logger = logging.getLogger(__name__)

MIN_OPSET = 13


def _done(stage: str, dst: Path, started: float) -> Path:
    logger.info("%s: %s (%.0f kB) in %.2f s", stage, dst.name, dst.stat().st_size / 1024,
                time.perf_counter() - started)
    return dst


def carry_card(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy the model card of ``src`` into ``dst`` in place (nothing when ``src`` has none)."""
    card = read_metadata(src).get(CARD_KEY)
    if card is not None and read_metadata(dst).get(CARD_KEY) != card:
        write_metadata(dst, dst, {CARD_KEY: card})


def _load(path: Path):
    onnx = require("onnx")
    try:
        return onnx.load(str(path))
    except Exception as err:  # onnx raises DecodeError, OSError, ... for unreadable files
        raise ExportError(f"cannot read ONNX file {path}: {err}") from err


def opset_of(model) -> int:
    """The default-domain (``ai.onnx``) opset version of a ModelProto."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ExportError("the model imports no ai.onnx opset")


def upgrade_opset(src: Path, dst: Path, *, target: int = MIN_OPSET) -> Path:
    """Write ``src`` converted to opset ``target`` at ``dst`` when its opset is lower; else a copy."""
    onnx = require("onnx")
    started = time.perf_counter()
    model = _load(src)
    current = opset_of(model)
    if current < target:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, target)
        except Exception as err:  # the converter raises bare RuntimeErrors naming the op
            raise ExportError(f"cannot convert {src.name} from opset {current} to {target}: {err}") from err
        logger.info("%s: opset %d -> %d", src.name, current, target)
    onnx.save(model, str(dst))
    carry_card(src, dst)
    return _done("opset", dst, started)


def strip_initializer_inputs(src: Path, dst: Path) -> Path:
    """Write ``src`` without the graph inputs that are really initializers (weights)."""
    onnx = require("onnx")
    started = time.perf_counter()
    model = _load(src)
    weights = {init.name for init in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in weights]
    removed = len(model.graph.input) - len(keep)
    if removed:
        del model.graph.input[:]
        model.graph.input.extend(keep)
        logger.info("%s: removed %d initializers listed as graph inputs", src.name, removed)
    onnx.save(model, str(dst))
    carry_card(src, dst)
    return _done("strip", dst, started)


def _name_nodes(path: Path) -> None:
    """Give every node a unique name in place: nodes are kept in float by name."""
    onnx = require("onnx")
    model = _load(path)
    seen: set[str] = set()
    renamed = 0
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_wildedge_{index}"
            renamed += 1
        seen.add(node.name)
    if renamed:
        logger.info("%s: named %d unnamed or duplicate nodes", path.name, renamed)
        onnx.save(model, str(path))


def pre_process(src: Path, dst: Path) -> Path:
    """Run onnxruntime's ``quant_pre_process`` (shape inference, optimisation) from ``src`` to ``dst``."""
    shape_inference = require("onnxruntime.quantization.shape_inference")
    started = time.perf_counter()
    try:
        shape_inference.quant_pre_process(str(src), str(dst))
    except Exception as err:  # symbolic shape inference gives up on some graphs: retry without it
        logger.info("%s: symbolic shape inference failed (%s); retrying without it", src.name, err)
        try:
            shape_inference.quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        except Exception as err2:
            raise ExportError(f"onnxruntime cannot pre-process {src.name} for quantization: {err2}") from err2
    _name_nodes(dst)
    carry_card(src, dst)
    return _done("pre-process", dst, started)


def prepare(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """All three stages: ``src`` (float ONNX) to a quantizable ``dst`` with the same card.

    Raises:
        ExportError: the file cannot be read, converted or pre-processed.
        MissingExtraError: onnx or onnxruntime.quantization is not installed.
    """
    src_path, dst_path = Path(src), Path(dst)
    if not src_path.is_file():
        raise ExportError(f"model file not found: {src_path}")
    started = time.perf_counter()
    with TemporaryDirectory(prefix="wildedge-prepare-") as tmp:
        upgraded = upgrade_opset(src_path, Path(tmp) / "opset.onnx")
        stripped = strip_initializer_inputs(upgraded, Path(tmp) / "stripped.onnx")
        dst_path.parent.mkdir(parents=True, exist_ok=True)
        pre_process(stripped, dst_path)
    return _done("prepare", dst_path, started)

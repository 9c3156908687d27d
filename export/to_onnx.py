"""The FP32 stage: torch module -> ONNX (opset 17) -> onnxslim -> model card -> parity check -> load check.

Each step is a function from paths to a path. :func:`to_onnx` chains them with the intermediate files
in a ``TemporaryDirectory``, logging each step's duration and output size, and returns what it measured.

The graph comes from the TorchScript-based exporter (``dynamo=False``): the torch.export-based one
needs the extra ``onnxscript`` package, handles the legacy ``dynamic_axes`` only partly, and
Ultralytics' heads (shape-cached anchors) are traced by the same exporter Ultralytics itself uses.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import ExportError, ModelError
from edge.imaging import IMAGE_SUFFIXES, read_image
from edge.inference.card import ModelCard, write_card
from edge.inference.preprocess import preprocess
from edge.inference.session import session_options
from export.deps import require
from export.parity import Parity, compare
from export.sources.base import LoadedModel

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "images"
PARITY_IMAGES = 4
# Warnings the legacy exporter gives that are harmless for a fixed-size export: its own deprecation
# notice; TracerWarnings where a model branches on a tensor (Ultralytics' anchor cache, torchvision's
# size asserts), as the traced branch is the one every input of this fixed size takes; its constant
# folder skipping strided Slices (RT-DETR), which onnxslim folds right after; and its caution about
# negative indices in advanced indexing (RT-DETR gathers top-k indices, never negative; the parity
# check that follows would catch a wrong gather).
_KNOWN_WARNINGS: tuple[tuple[str, str], ...] = (
    ("DeprecationWarning", r"legacy TorchScript-based ONNX export|The feature will be removed"),
    ("TracerWarning", r""),
    ("UserWarning", r"^Constant folding - Only steps=1 can be constant folded"),
    ("UserWarning", r"^Exporting aten::index operator of advanced indexing"),
)


@dataclass
class Step:
    """One step of the stage: its name, seconds and output size in bytes."""

    name: str
    seconds: float
    bytes: int | None = None


@dataclass
class Fp32Result:
    """What :func:`to_onnx` wrote and measured."""

    path: Path
    bytes: int
    steps: list[Step]
    parity: Parity | None
    exporter: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "bytes": self.bytes, "steps": [asdict(s) for s in self.steps],
            "parity": self.parity.to_dict() if self.parity else None, "exporter": self.exporter,
        }


def _is_known(caught: warnings.WarningMessage) -> bool:
    name = type(caught.message).__name__
    text = str(caught.message)
    return any(name == category and re.search(pattern, text) for category, pattern in _KNOWN_WARNINGS)


def _replay_unknown(caught: list[warnings.WarningMessage]) -> None:
    """Re-issue every warning that is not a known harmless one, so the caller's filters still apply."""
    for item in caught:
        if _is_known(item):
            logger.debug("exporter: %s: %s", type(item.message).__name__, str(item.message).splitlines()[0])
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)


def torch_to_onnx(
    module: torch.nn.Module,
    dst: Path,
    *,
    input_size: tuple[int, int],
    output_names: Sequence[str],
    dynamic_batch: bool = False,
    opset: int = OPSET,
) -> Path:
    """Trace ``module`` on a ``[1, 3, H, W]`` input into ONNX at ``dst`` (a dynamic batch when asked)."""
    torch = require("torch")
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    width, height = input_size
    dummy = torch.zeros(1, 3, height, width)
    axes = None
    if dynamic_batch:
        axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in output_names}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.onnx.export(module, (dummy,), str(dst), opset_version=opset, input_names=[INPUT_NAME],
                              output_names=list(output_names), dynamic_axes=axes, do_constant_folding=True,
                              dynamo=False)
        except Exception as err:  # the tracer raises RuntimeError, TypeError, torch.onnx errors...
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ExportError(f"torch.onnx.export failed: {first}") from err
    _replay_unknown(caught)
    return dst


def slim(src: Path, dst: Path) -> Path:
    """Constant-fold and fuse ``src`` with onnxslim into ``dst`` (its summary table is not printed)."""
    onnx = require("onnx")
    onnxslim = require("onnxslim")
    try:
        model = onnxslim.slim(str(src))
    except Exception as err:  # onnxslim raises whatever its passes raise
        raise ExportError(f"onnxslim failed on {src.name}: {err}") from err
    if model is None:
        raise ExportError(f"onnxslim returned no model for {src.name}")
    onnx.save(model, str(dst))
    return dst


def stamp(src: Path, dst: Path, card: ModelCard) -> Path:
    """Write ``card`` into a copy of ``src`` at ``dst``."""
    return write_card(src, dst, card)


def parity_images(folders: Sequence[Path], limit: int = PARITY_IMAGES) -> list[Path]:
    """Up to ``limit`` photos, taken in turn from each folder (sorted, recursive)."""
    per_folder = []
    for folder in folders:
        if not Path(folder).is_dir():
            raise ExportError(f"not a folder of photos: {folder}")
        per_folder.append(sorted(p for p in Path(folder).rglob("*")
                                 if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
    chosen: list[Path] = []
    for rank in range(max((len(files) for files in per_folder), default=0)):
        for files in per_folder:
            if rank < len(files) and len(chosen) < limit:
                chosen.append(files[rank])
    return chosen


def synthetic_frames() -> list[tuple[str, np.ndarray]]:
    """Two deterministic frames (gradients and noise) when no photos are given."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 640, dtype=np.float32)
    gradient = np.stack([np.tile(ramp, (480, 1)), np.tile(ramp[:480, None], (1, 640)),
                         np.full((480, 640), 128.0)], axis=2).astype(np.uint8)
    noise = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    return [("synthetic-gradient", gradient), ("synthetic-noise", noise)]


def _first_array(value: Any) -> np.ndarray:
    while isinstance(value, (list, tuple)):
        value = value[0]
    return value.detach().cpu().numpy()


def check_parity(module: torch.nn.Module, onnx_path: Path, card: ModelCard, images: Sequence[Path]) -> Parity:
    """Run torch and onnxruntime on the same preprocessed photos and compare the outputs.

    Photos go through ``edge.inference.preprocess`` with the card's settings, exactly as on the
    device. A dynamic-batch graph also runs all photos as one batch.

    Raises:
        ExportError: an output differs past its tolerance (the message names the worst one).
    """
    torch = require("torch")
    ort = require("onnxruntime")
    # Decoded as `wildedge detect` decodes (reduced JPEG decode when the input size allows it).
    cover = card.preprocess.resize in ("stretch", "centre_crop")
    frames = ([(p.name, read_image(p, needed=card.preprocess.input_size, cover=cover).image) for p in images]
              if images else synthetic_frames())
    tensors = [(name, preprocess(image, card.preprocess)[0]) for name, image in frames]
    with torch.inference_mode():
        expected = [_first_array(module(torch.from_numpy(tensor))) for _, tensor in tensors]
    # Not spinning: idle onnxruntime threads would otherwise compete with torch for the cores.
    session = ort.InferenceSession(str(onnx_path), sess_options=session_options(spin=False),
                                   providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    pairs = [(name, ref, session.run(None, {input_name: tensor})[0])
             for (name, tensor), ref in zip(tensors, expected)]
    batched = None
    if not isinstance(session.get_inputs()[0].shape[0], int) and len(tensors) > 1:
        stacked = np.concatenate([t for _, t in tensors])
        batched = session.run(None, {input_name: stacked})[0]
    parity = compare(pairs, card, batched=batched, synthetic=not images)
    if not parity.passed:
        raise ExportError(f"FP32 parity check failed for {onnx_path.name}: {parity.worst_message()}")
    return parity


def check_loads(path: Path, kind: str) -> None:
    """Load ``path`` with the runtime class the device uses; its warm-up checks outputs against the card."""
    from edge.inference.classifier import Classifier
    from edge.inference.detector import Detector

    cls: Callable[..., Any] = Detector if kind == "detect" else Classifier
    try:
        with cls(path, threads=1):
            pass
    except ModelError as err:
        raise ExportError(f"the exported model does not load in the runtime: {err}") from err


def _versions(loaded: LoadedModel, opset: int | None) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, Any] = {"opset": opset, "dynamo": False} if opset else {}
    for package in ("torch", "onnx", "onnxslim", "onnxruntime", loaded.framework):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def to_onnx(
    loaded: LoadedModel,
    dst: str | Path,
    *,
    images: Sequence[Path] = (),
    opset: int = OPSET,
) -> Fp32Result:
    """Export ``loaded`` to a stamped FP32 ONNX file at ``dst`` and check it; returns what was measured.

    A torch source is traced, slimmed, stamped, checked for parity against torch on ``images``
    (synthetic frames when empty) and loaded by the runtime. An ONNX source is stamped and loaded.

    Raises:
        ExportError: a step failed, parity is past tolerance, or the runtime rejects the result.
    """
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    steps: list[Step] = []
    parity = None

    def timed(name: str, func: Callable[[], Path]) -> Path:
        started = time.perf_counter()
        path = func()
        seconds = time.perf_counter() - started
        size = path.stat().st_size if path.is_file() else None
        steps.append(Step(name, round(seconds, 3), size))
        logger.info("%s: %.2f s%s", name, seconds, f", {size / 1e6:.2f} MB" if size else "")
        return path

    with tempfile.TemporaryDirectory(prefix="wildedge-export-") as tmp_dir:
        tmp = Path(tmp_dir)
        if loaded.module is None:
            if loaded.onnx_path is None:
                raise ValueError("a LoadedModel needs a module or an ONNX file")
            staged = tmp / "stamped.onnx"
            timed("stamp", lambda: stamp(loaded.onnx_path, staged, loaded.card))
        else:
            traced = timed("torch.onnx.export", lambda: torch_to_onnx(
                loaded.module, tmp / "traced.onnx", input_size=loaded.input_size,
                output_names=loaded.output_names, dynamic_batch=loaded.dynamic_batch, opset=opset))
            slimmed = timed("onnxslim", lambda: slim(traced, tmp / "slim.onnx"))
            staged = timed("stamp", lambda: stamp(slimmed, tmp / "stamped.onnx", loaded.card))
            started = time.perf_counter()
            parity = check_parity(loaded.module, staged, loaded.card, images)
            steps.append(Step("parity", round(time.perf_counter() - started, 3)))
            logger.info("parity: %s", parity.summary())
        timed("load check", lambda: (check_loads(staged, loaded.kind), staged)[1])
        partial = out.with_name(f".{out.name}.part")
        try:
            shutil.copyfile(staged, partial)
            os.replace(partial, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    size = out.stat().st_size
    logger.info("wrote %s (%.2f MB)", out, size / 1e6)
    versions = _versions(loaded, opset if loaded.module is not None else None)
    return Fp32Result(out, size, steps, parity, versions)

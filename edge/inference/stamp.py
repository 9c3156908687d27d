"""Stamping a model card into an ONNX file: the card of a preset, checked against the graph.

Used by ``wildedge model stamp`` and by ``wildedge model pull`` (a published model is stamped once
downloaded), so it lives in the library, not in the command line.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from edge.errors import ModelError
from edge.inference.card import ModelCard, format_errors, sha256_file, write_card
from edge.inference.presets import build_card
from edge.inference.session import session_options


def graph_input_size(model: Path) -> tuple[int, int] | None:
    """(width, height) of a fixed-size NCHW/NHWC image input, else None."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(model), sess_options=session_options(threads=1),
                                       providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises untyped errors for unreadable graphs
        raise ModelError(f"onnxruntime cannot load {model}: {err}") from err
    shape = session.get_inputs()[0].shape
    if len(shape) != 4:
        return None
    if shape[1] == 3 and isinstance(shape[2], int) and isinstance(shape[3], int):
        return shape[3], shape[2]
    if shape[3] == 3 and isinstance(shape[1], int) and isinstance(shape[2], int):
        return shape[2], shape[1]
    return None


def stamp_file(
    src: Path,
    dst: Path,
    *,
    preset: str,
    labels: list[str],
    input_size: tuple[int, int] | None = None,
    name: str = "",
    url: str | None = None,
    preprocess_overrides: dict | None = None,
    threshold_overrides: dict | None = None,
    check_graph: bool = True,
    categories: dict | None = None,
) -> ModelCard:
    """Build the card of ``preset`` for ``src`` and write it into ``dst``; returns the card.

    ``check_graph=False`` skips loading the graph when ``input_size`` is given (a known file).
    ``categories``: the card's ``categories`` field (``{"scheme": ..., "map": {...}}``), e.g. to stamp a
    COCO detector as MegaDetector-compatible.
    """
    graph_size = graph_input_size(src) if input_size is None or check_graph else None
    size = input_size or graph_size
    if size is None:
        raise ModelError(f"{src} has a dynamic input size: pass --input-size WIDTHxHEIGHT")
    try:
        card = build_card(
            preset, labels=labels, input_size=size, name=name or src.stem,
            preprocess_overrides=preprocess_overrides, threshold_overrides=threshold_overrides,
        )
        card = ModelCard.model_validate(
            {**card.model_dump(), "source": {"file": src.name, "sha256": sha256_file(src), "url": url},
             **({"categories": categories} if categories is not None else {})}
        )
    except ValidationError as err:
        raise ModelError(f"invalid card: {format_errors(err)}") from err
    if graph_size is not None and tuple(size) != tuple(graph_size):
        raise ModelError(
            f"--input-size {size[0]}x{size[1]} disagrees with the graph's fixed input {graph_size[0]}x{graph_size[1]}"
        )
    write_card(src, dst, card)
    return card

"""The model card: everything the runtime needs, stored in the ONNX file's metadata.

The card lives under one key (``wildedge.card``) as versioned JSON. When a file has no card the
runtime falls back to Ultralytics' own metadata (``names``, ``imgsz``, ``stride``, ``task``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge import __version__
from edge.errors import CardMissingError, ModelError
from edge.inference.onnxmeta import read_metadata, write_metadata

logger = logging.getLogger(__name__)

CARD_KEY = "wildedge.card"
CARD_VERSION = 1

ResizeMode = Literal["letterbox_topleft", "letterbox_centre", "stretch", "centre_crop"]
Interpolation = Literal["linear", "area", "nearest", "cubic"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Preprocess(_Strict):
    """How a BGR uint8 photo becomes the model's input tensor."""

    input_size: tuple[int, int] = Field(description="model input (width, height) in pixels")
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    colour: Literal["RGB", "BGR"] = "RGB"
    scale: float = Field(1 / 255, gt=0, description="pixel (0..255) multiplier applied before mean/std")
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: ResizeMode = "letterbox_centre"
    pad_value: float = Field(114.0, ge=0, le=255, description="letterbox fill, in 0..255 pixel units")
    interpolation: Interpolation = "linear"
    size_rounding: Literal["round", "floor"] = Field(
        "round", description="letterbox: resized side = round(side * r) (Ultralytics) or floor (YOLOX, NanoDet)"
    )
    crop_ratio: float = Field(0.875, gt=0, le=1, description="centre_crop: crop side / resized short side")

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 8:
            raise ValueError("input_size must be at least 8x8 pixels")
        return value

    @field_validator("std")
    @classmethod
    def _nonzero_std(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v <= 0 for v in value):
            raise ValueError("std values must be > 0")
        return value


class Decoder(_Strict):
    """Which decoder turns the raw outputs into boxes, and its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class Thresholds(_Strict):
    """Recommended thresholds (the CLI and config may override them)."""

    conf: float = Field(0.25, ge=0, le=1)
    iou: float = Field(0.45, ge=0, le=1)
    class_agnostic: bool = False
    max_detections: int = Field(300, ge=1)


class CategoryScheme(_Strict):
    """The category scheme results are written in by default (``wildedge detect --categories``).

    ``map`` names, for each detector label kept, its MegaDetector class; labels it leaves out are
    dropped. Without ``map``, COCO names map by themselves (animals, person, road vehicles).
    """

    scheme: Literal["native", "megadetector"] = "megadetector"
    map: dict[str, Literal["animal", "person", "vehicle"]] | None = None


class Source(_Strict):
    """Where the weights came from."""

    file: str | None = None
    sha256: str | None = None
    url: str | None = None


class Exporter(_Strict):
    """What wrote the card."""

    name: str = "wildedge"
    version: str = __version__


class ModelCard(_Strict):
    """The card stored in an ONNX file's ``metadata_props[CARD_KEY]``."""

    card_version: int = CARD_VERSION
    name: str = ""
    task: Literal["detect", "classify"]
    preprocess: Preprocess
    decoder: Decoder
    labels: list[str]
    thresholds: Thresholds = Thresholds()
    categories: CategoryScheme | None = None
    source: Source = Source()
    exporter: Exporter = Exporter()
    quantization: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ModelCard:
        if self.card_version > CARD_VERSION:
            raise ValueError(
                f"card_version {self.card_version} is newer than this wildedge understands ({CARD_VERSION}): "
                "upgrade wildedge"
            )
        if not self.labels:
            raise ValueError("labels must not be empty")
        if self.categories is not None and self.categories.map is not None:
            unknown = sorted(set(self.categories.map) - set(self.labels))
            if unknown:
                raise ValueError(f"categories.map names labels the model lacks: {', '.join(unknown)}")
        if self.task == "detect" and self.preprocess.resize == "centre_crop":
            raise ValueError("preprocess.resize 'centre_crop' is for classifiers; a detector must see the whole frame")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            return cls.model_validate_json(text)
        except ValidationError as err:
            raise ModelError(f"invalid model card: {format_errors(err)}") from err


def format_errors(err: ValidationError) -> str:
    """Pydantic errors as ``key.path: message; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<card>'}: {e['msg']}" for e in err.errors())


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_from_ultralytics(meta: dict[str, str]) -> ModelCard:
    """Build a card from the metadata Ultralytics writes into its ONNX exports."""
    try:
        names = ast.literal_eval(meta["names"])
        imgsz = ast.literal_eval(meta.get("imgsz", "[640, 640]"))
    except (ValueError, SyntaxError) as err:
        raise ModelError(f"unreadable Ultralytics metadata: {err}") from err
    if isinstance(names, dict):
        labels = [str(names[k]) for k in sorted(names)]
    else:
        labels = [str(n) for n in names]
    task = meta.get("task", "detect")
    if isinstance(imgsz, int):
        imgsz = [imgsz, imgsz]
    height, width = int(imgsz[0]), int(imgsz[1])
    if task == "classify":
        return ModelCard(
            name=meta.get("description", "ultralytics classifier"),
            task="classify",
            preprocess=Preprocess(input_size=(width, height), resize="centre_crop", crop_ratio=1.0),
            decoder=Decoder(name="softmax", params={"already_softmax": True}),
            labels=labels,
            exporter=Exporter(name="ultralytics", version=meta.get("version", "")),
        )
    if task != "detect":
        raise ModelError(f"Ultralytics task {task!r} is not supported (detect and classify are)")
    is_rtdetr = "rtdetr" in meta.get("description", "").lower() or "RT-DETR" in meta.get("description", "")
    is_e2e = meta.get("end2end", "False") == "True"
    if is_rtdetr:
        decoder, resize = Decoder(name="rtdetr"), "stretch"
    elif is_e2e:
        decoder, resize = Decoder(name="e2e"), "letterbox_centre"
    else:
        decoder, resize = Decoder(name="ultralytics"), "letterbox_centre"
    return ModelCard(
        name=meta.get("description", "ultralytics detector"),
        task="detect",
        preprocess=Preprocess(input_size=(width, height), resize=resize),
        decoder=decoder,
        labels=labels,
        exporter=Exporter(name="ultralytics", version=meta.get("version", "")),
    )


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """Read the card of an ONNX file, falling back to Ultralytics metadata.

    Raises:
        ModelError: the file is missing or unreadable, or the card is invalid.
        CardMissingError: the file carries neither a card nor Ultralytics metadata.
    """
    meta = read_metadata(path)
    if CARD_KEY in meta:
        return ModelCard.from_json(meta[CARD_KEY])
    if "names" in meta:
        logger.info("%s has no wildedge card; using its Ultralytics metadata", path)
        return card_from_ultralytics(meta)
    raise CardMissingError(
        f"{path} has no wildedge model card and no Ultralytics metadata; add one with "
        "'wildedge model stamp IN.onnx -o OUT.onnx --preset FAMILY --labels LABELS.txt'"
    )


def write_card(src: str | os.PathLike[str], dst: str | os.PathLike[str], card: ModelCard) -> Path:
    """Write ``card`` into a copy of ``src`` at ``dst`` (atomic); returns ``dst``."""
    return write_metadata(src, dst, {CARD_KEY: card.to_json()})


def card_summary(card: ModelCard) -> dict[str, Any]:
    """A JSON-ready dict of the card (for ``model show --json``)."""
    return json.loads(card.to_json())

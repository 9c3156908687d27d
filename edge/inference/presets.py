"""Presets: the standard preprocessing, decoder and thresholds of each model family.

``wildedge model stamp --preset FAMILY`` builds a card from one of these; every field can then be
overridden. The values follow each family's own demo/inference code.
"""

from __future__ import annotations

from typing import Any

from edge.inference.card import Decoder, ModelCard, Preprocess, Thresholds

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# name -> (task, preprocess fields, decoder params, thresholds fields, one-line description)
PRESETS: dict[str, dict[str, Any]] = {
    "ultralytics": {
        "about": "Ultralytics YOLOv8/v9/v11 anchor-free, output [1,4+nc,N]",
        "task": "detect",
        "preprocess": {"colour": "RGB", "scale": 1 / 255, "resize": "letterbox_centre", "pad_value": 114},
        "decoder": {"name": "ultralytics"},
        "thresholds": {"conf": 0.25, "iou": 0.45},
    },
    "yolov5": {
        "about": "YOLOv5 anchor-based incl. MegaDetector v5, output [1,N,5+nc], conf = obj*cls",
        "task": "detect",
        "preprocess": {"colour": "RGB", "scale": 1 / 255, "resize": "letterbox_centre", "pad_value": 114},
        "decoder": {"name": "yolov5"},
        "thresholds": {"conf": 0.2, "iou": 0.45},
    },
    "e2e": {
        "about": "end-to-end, output [1,K,6] xyxy,score,class (YOLOv10, exports with NMS)",
        "task": "detect",
        "preprocess": {"colour": "RGB", "scale": 1 / 255, "resize": "letterbox_centre", "pad_value": 114},
        "decoder": {"name": "e2e"},
        "thresholds": {"conf": 0.25, "iou": 0.45},
    },
    "rtdetr": {
        "about": "RT-DETR, output [1,K,4+nc] normalised cxcywh, plain resize",
        "task": "detect",
        "preprocess": {"colour": "RGB", "scale": 1 / 255, "resize": "stretch"},
        "decoder": {"name": "rtdetr"},
        "thresholds": {"conf": 0.25, "iou": 0.45},
    },
    "yolox": {
        "about": "YOLOX (Megvii), output [1,N,5+nc] grid-relative, BGR 0..255, top-left letterbox",
        "task": "detect",
        "preprocess": {
            "colour": "BGR",
            "scale": 1.0,
            "resize": "letterbox_topleft",
            "pad_value": 114,
            "size_rounding": "floor",
        },
        "decoder": {"name": "yolox", "params": {"strides": [8, 16, 32]}},
        "thresholds": {"conf": 0.3, "iou": 0.45, "class_agnostic": True},
    },
    "nanodet": {
        "about": "NanoDet (GFL head), six outputs cls_pred_stride_S / dis_pred_stride_S",
        "task": "detect",
        "preprocess": {
            "colour": "BGR",
            "scale": 1.0,
            "mean": (103.53, 116.28, 123.675),
            "std": (57.375, 57.12, 58.395),
            "resize": "letterbox_centre",
            "pad_value": 0,
            "interpolation": "area",
            "size_rounding": "floor",
        },
        "decoder": {"name": "nanodet", "params": {"strides": [8, 16, 32], "reg_max": 7}},
        "thresholds": {"conf": 0.35, "iou": 0.6, "class_agnostic": True},
    },
    "fastestdet": {
        "about": "FastestDet, single stride-16 grid [1,5+nc,H,W], BGR, plain resize",
        "task": "detect",
        "preprocess": {"colour": "BGR", "scale": 1 / 255, "resize": "stretch", "interpolation": "area"},
        "decoder": {"name": "fastestdet"},
        "thresholds": {"conf": 0.65, "iou": 0.45},
    },
    "imagenet": {
        "about": "ImageNet-style classifier: RGB, short side to 256, centre crop 224, ImageNet mean/std",
        "task": "classify",
        "preprocess": {
            "colour": "RGB",
            "scale": 1 / 255,
            "mean": _IMAGENET_MEAN,
            "std": _IMAGENET_STD,
            "resize": "centre_crop",
            "crop_ratio": 0.875,
            # INTER_AREA is the closest OpenCV match to the antialiased resize of PIL/torchvision.
            "interpolation": "area",
        },
        "decoder": {"name": "softmax"},
        "thresholds": {"conf": 0.0},
    },
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def build_card(
    preset: str,
    *,
    labels: list[str],
    input_size: tuple[int, int],
    name: str = "",
    preprocess_overrides: dict[str, Any] | None = None,
    threshold_overrides: dict[str, Any] | None = None,
) -> ModelCard:
    """Return the card of ``preset`` for a model with ``input_size`` (width, height) and ``labels``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(preset_names())}")
    spec = PRESETS[preset]
    pre = {**spec["preprocess"], "input_size": input_size, **(preprocess_overrides or {})}
    thr = {**spec["thresholds"], **(threshold_overrides or {})}
    return ModelCard(
        name=name or preset,
        task=spec["task"],
        preprocess=Preprocess(**pre),
        decoder=Decoder(**spec["decoder"]),
        labels=labels,
        thresholds=Thresholds(**thr),
    )

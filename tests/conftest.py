"""Shared fixtures: the real assets in ../shared/assets (skipped cleanly when absent) and stamped models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ASSETS = Path(os.environ.get("WILDEDGE_ASSETS", REPO.parent / "shared" / "assets"))

# name -> (asset file, preset, labels file, input size)
DETECTORS = {
    "yolox": ("yolox_nano/yolox_nano.onnx", "yolox", "yolox_nano/coco_classes.txt"),
    "nanodet": ("nanodet_m/nanodet_m_320.onnx", "nanodet", "nanodet_m/coco_classes.txt"),
    "fastestdet": ("fastestdet/FastestDet.onnx", "fastestdet", "fastestdet/coco.names"),
}


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs the shared test assets ({path} is absent; set WILDEDGE_ASSETS or place ../shared/assets)")
    return path


@pytest.fixture(scope="session")
def assets() -> Path:
    """The shared assets folder; skips the test when it is absent (a user's fresh clone)."""
    return _require(ASSETS)


@pytest.fixture(scope="session")
def stamped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three real detectors, stamped with their presets: name -> stamped ONNX path."""
    from edge.cli.model_cmd import stamp_file
    from edge.inference.labels import read_labels

    _require(ASSETS)
    out_dir = tmp_path_factory.mktemp("stamped")
    models = {}
    for name, (model, preset, labels) in DETECTORS.items():
        dst = out_dir / f"{name}.onnx"
        stamp_file(_require(ASSETS / model), dst, preset=preset, labels=read_labels(ASSETS / labels))
        models[name] = dst
    return models


@pytest.fixture(scope="session")
def classifier_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MobileNetV2-int8 (ImageNet) stamped with the imagenet preset."""
    from edge.cli.model_cmd import stamp_file
    from edge.inference.labels import read_labels

    src = _require(ASSETS / "mobilenetv2_int8" / "mobilenetv2-12-int8.onnx")
    dst = tmp_path_factory.mktemp("stamped_cls") / "mobilenetv2_int8.onnx"
    stamp_file(src, dst, preset="imagenet", labels=read_labels(ASSETS / "mobilenetv2_int8" / "synset.txt"),
               input_size=(224, 224))
    return dst

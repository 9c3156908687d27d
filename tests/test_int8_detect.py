"""INT8 exports of the acceptance architectures load and run through ``wildedge detect``.

yolov8n, yolo11n and yolov10n (untrained, lively, 320 px) and the resnet18, mobilenet_v3_small
and efficientnet_b0 classifiers are quantized by the export stage (no search: random weights need
not quantize well, which is not what this checks) and then used by the device runtime exactly as a
user would: through the CLI, with the MegaDetector output validated.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.inference.card import read_card
from edge.outputs.megadetector import validate_megadetector

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
runner = CliRunner()


@pytest.fixture(scope="module")
def calib(tmp_path_factory, assets: Path) -> Path:
    """32 VOC photos: the export splits them 16 calibrate / 16 held out."""
    folder = tmp_path_factory.mktemp("calib")
    for src in sorted((assets / "voc2007_labeled" / "images").glob("*.jpg"))[:32]:
        shutil.copy(src, folder / src.name)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory, assets: Path) -> Path:
    """Two COCO animal photos and two camera-trap photos."""
    folder = tmp_path_factory.mktemp("photos")
    for src in [*sorted((assets / "coco_val2017_animal_samples").glob("*.jpg"))[:2],
                *sorted((assets / "camera_traps_lila" / "images").iterdir())[:2]]:
        shutil.copy(src, folder / src.name)
    return folder


def _quantize(fp32: Path, out: Path, calib: Path) -> dict:
    from export.quantize import quantize_model

    report = quantize_model(fp32, out, calib_dir=calib, search=False, latency_runs=3)
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    card = read_card(out)
    assert card.quantization is not None and card.quantization["types"] in ("u8s8", "u8u8")
    assert out.stat().st_size < 0.4 * fp32.stat().st_size
    latency = report["latency"]
    assert latency["fp32_ms"] > 0 and latency["int8_ms"] > 0 and latency["recommend"] in ("int8", "fp32")
    return report


def _detect(photos: Path, out: Path, *args: object) -> dict:
    result = runner.invoke(app, ["detect", str(photos), "-o", str(out), "-q", *map(str, args)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert validate_megadetector(doc) == [] and len(doc["images"]) == 4
    assert all("failure" not in image for image in doc["images"])
    return doc


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolov8n", "yolo11n", "yolov10n"])
def test_int8_ultralytics_detector_runs_through_detect(exported_detectors, calib, photos, tmp_path, name):
    fp32 = exported_detectors[name].path
    int8 = tmp_path / f"{name}.int8.onnx"
    report = _quantize(fp32, int8, calib)
    # The decode tail (DFL, box arithmetic, final concat) stayed in float.
    assert report["quantization"]["float_nodes"]["tail"]
    fp32_doc = _detect(photos, tmp_path / "fp32.json", "-m", fp32, "--conf", "0.3")
    int8_doc = _detect(photos, tmp_path / "int8.json", "-m", int8, "--conf", "0.3")
    count = [sum(len(img["detections"]) for img in doc["images"]) for doc in (fp32_doc, int8_doc)]
    assert count[0] > 0 and count[1] > 0, count


@pytest.mark.slow
def test_int8_classifiers_run_through_detect(exported_classifiers, exported_detectors, calib, photos, tmp_path):
    detector = exported_detectors["yolov8n"].path
    every_class = ",".join(read_card(detector).labels)
    for arch, fp32 in exported_classifiers.items():
        int8 = tmp_path / f"{arch}.int8.onnx"
        report = _quantize(fp32.path, int8, calib)
        assert report["final"]["metric"] == "top1"
        doc = _detect(photos, tmp_path / f"{arch}.json", "-m", detector, "-c", int8, "--conf", "0.3",
                      "--classify-classes", every_class)
        classified = [d for img in doc["images"] for d in img["detections"] if d.get("classifications")]
        assert classified, arch
        assert doc["classification_categories"]["0"] == "red fox"

"""``wildedge export detector|classifier`` end to end, and their models through ``wildedge detect``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import EXPORT_IMGSZ, lively_state_dict, lively_yolo
from typer.testing import CliRunner

from edge.cli import app
from edge.inference.card import read_card
from edge.inference.classifier import Classifier
from edge.inference.detector import Detector
from edge.outputs.megadetector import validate_megadetector

torch = pytest.importorskip("torch")
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def photos(tmp_path: Path, assets: Path) -> Path:
    """Two COCO animal photos and two LILA camera-trap photos."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for src in sorted((assets / "coco_val2017_animal_samples").glob("*.jpg"))[:2]:
        shutil.copy(src, folder / src.name)
    for src in sorted((assets / "camera_traps_lila" / "images").iterdir())[:2]:
        shutil.copy(src, folder / src.name)
    return folder


def _detect(photos: Path, out: Path, *extra: str) -> dict:
    result = _invoke("detect", photos, "-o", out, "-q", *extra)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert validate_megadetector(doc) == [] and len(doc["images"]) == 4
    return doc


def test_export_detector_from_a_checkpoint_then_detect(ultralytics_offline, photos, tmp_path):
    pt = lively_yolo("yolov8n.yaml", tmp_path / "trap-v8.pt", sorted(photos.iterdir()))
    out = tmp_path / "models" / "trap-v8.onnx"
    result = _invoke("export", "detector", pt, "-o", out, "--check-images", photos)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("loaded ultralytics yolov8n (detect, decoder ultralytics, 80 labels, 320x320)")
    assert any(line.startswith(f"fp32: {out} (") and "onnxslim" in line for line in lines)
    assert any(line.startswith("parity vs torch on 4 photos: boxes max abs diff") for line in lines)
    report = json.loads((tmp_path / "models" / "trap-v8.onnx.report.json").read_text())
    assert report["fp32"]["parity"]["passed"] and len(report["fp32"]["parity"]["images"]) == 4
    assert report["model"]["file"] == str(pt) and report["card"]["source"]["file"] == "trap-v8.pt"
    assert report["fp32"]["exporter"]["ultralytics"] and report["fp32"]["exporter"]["dynamo"] is False
    with Detector(out) as det:
        assert det.input_size == (EXPORT_IMGSZ, EXPORT_IMGSZ)
    doc = _detect(photos, tmp_path / "results.json", "-m", out, "--conf", "0.5")
    assert sum(len(img["detections"]) for img in doc["images"]) > 0


def test_export_yolov10_yaml_then_detect(ultralytics_offline, photos, tmp_path):
    out = tmp_path / "v10.onnx"
    result = _invoke("export", "detector", "yolov10n.yaml", "-o", out, "--imgsz", EXPORT_IMGSZ,
                     "--check-images", photos)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("loaded ultralytics yolov10n (detect, decoder e2e, 80 labels, 320x320)")
    assert "note: untrained COCO architecture: labels are the COCO-80 names" in result.output
    _detect(photos, tmp_path / "v10.json", "-m", out)


def test_export_classifier_json_then_detect_with_it(exported_detectors, photos, tmp_path, class_labels):
    weights = lively_state_dict("mobilenet_v3_small", 5, tmp_path / "species.pth", wrap=True)
    out = tmp_path / "species.onnx"
    result = _invoke("export", "classifier", weights, "--arch", "mobilenet_v3_small",
                     "--labels", class_labels, "-o", out, "--check-images", photos, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report == json.loads((tmp_path / "species.onnx.report.json").read_text())
    assert report["model"]["framework"] == "torchvision" and report["card"]["task"] == "classify"
    parts = {p["part"]: p for p in report["fp32"]["parity"]["parts"]}
    assert parts["logits"]["passed"] and parts["logits"]["max_abs"] < 1e-3
    with Classifier(out) as cls:
        assert cls.labels == ["red fox", "roe deer", "badger", "wild boar", "hedgehog"]
    detector = exported_detectors["yolov8n"].path
    every_class = ",".join(read_card(detector).labels)
    doc = _detect(photos, tmp_path / "classified.json", "-m", detector, "-c", out, "--conf", "0.5",
                  "--classify-classes", every_class)
    classified = [d for img in doc["images"] for d in img["detections"] if d.get("classifications")]
    assert classified and doc["classification_categories"]["0"] == "red fox"


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory) -> Path:
    """A resnet18 state dict for the five species."""
    return lively_state_dict("resnet18", 5, tmp_path_factory.mktemp("weights") / "r.pth")


def test_export_classifier_mean_std_and_imgsz(tmp_path, class_labels, resnet18_weights):
    weights = resnet18_weights
    out = tmp_path / "r.onnx"
    result = _invoke("export", "classifier", weights, "--arch", "resnet18", "--labels", class_labels,
                     "-o", out, "--imgsz", "160", "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2")
    assert result.exit_code == 0, result.output
    assert "parity vs torch on synthetic frames (pass --check-images DIR for photos)" in result.output
    pre = read_card(out).preprocess
    assert pre.input_size == (160, 160) and pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.2, 0.2, 0.2)


@pytest.mark.parametrize(("args", "message"), [
    (["classifier", "{weights}", "--arch", "resnet81", "--labels", "{labels}"],
     "error: unknown torchvision architecture 'resnet81'; close names: resnet18"),
    (["classifier", "{weights}", "--arch", "resnet34", "--labels", "{labels}"],
     "error: the checkpoint does not match torchvision resnet34 with 5 classes"),
    (["classifier", "{weights}", "--arch", "resnet18", "--labels", "{bad_labels}"],
     "error: labels file {bad_labels} is empty or has a blank label"),
    (["classifier", "{weights}", "--arch", "resnet18", "--labels", "{labels}", "--mean", "0.5,0.5"],
     "error: --mean expects three comma-separated numbers, got '0.5,0.5'"),
    (["classifier", "{weights}", "--arch", "resnet18", "--labels", "{labels}", "--int8"],
     "error: --int8 needs --calib DIR (representative photos)"),
    (["classifier", "{weights}", "--arch", "resnet18", "--labels", "{labels}", "--calib", "{tmp}"],
     "error: --calib, --gt-labels, --budget and --target-latency are INT8 options: add --int8"),
    (["detector", "mdv6-yolov9-c"], "error: mdv6-yolov9-c has no pinned sha256"),
    (["detector", "no-such-model"], "error: no-such-model not found: not a file, an MLflow URI"),
])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, class_labels, resnet18_weights, args, message):
    weights = resnet18_weights
    bad_labels = tmp_path / "bad.txt"
    bad_labels.write_text("fox\n\n\ndeer\n")
    values = {"weights": weights, "labels": class_labels, "bad_labels": bad_labels, "tmp": tmp_path}
    out = tmp_path / "out.onnx"
    result = _invoke("export", *[a.format(**values) for a in args], "-o", out)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message.format(**values)) and len(result.stderr.splitlines()) == 1
    assert not out.exists()


def test_missing_export_extra_is_one_line(monkeypatch, tmp_path, class_labels):
    import export.deps

    real = export.deps.importlib.import_module

    def without_torch(name, *args):
        if name.split(".")[0] in ("torch", "torchvision", "onnx", "onnxslim"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(export.deps.importlib, "import_module", without_torch)
    weights = tmp_path / "r.pth"
    weights.write_bytes(b"x")
    result = _invoke("export", "classifier", weights, "--arch", "resnet18", "--labels", class_labels,
                     "-o", tmp_path / "out.onnx")
    assert result.exit_code == 2
    assert result.stderr == "error: torchvision is not installed: pip install 'wildedge[export]'\n"


def test_int8_goes_through_export_quantize(tmp_path, class_labels, assets):
    quantize = pytest.importorskip("export.quantize")
    if not hasattr(quantize, "quantize_model"):
        pytest.skip("export.quantize.quantize_model is not there yet")
    calib = tmp_path / "calib"
    calib.mkdir()
    for src in sorted((assets / "voc2007_labeled" / "images").glob("*.jpg"))[:32]:
        shutil.copy(src, calib / src.name)
    weights = lively_state_dict("mobilenet_v3_small", 5, tmp_path / "m.pth")
    out = tmp_path / "m.onnx"
    # A wide budget: random weights need not quantize well, and the search for float fallbacks is slow.
    result = _invoke("export", "classifier", weights, "--arch", "mobilenet_v3_small",
                     "--labels", class_labels, "-o", out, "--int8", "--calib", calib, "--budget", "100")
    assert result.exit_code == 0, result.output
    assert any(line.startswith(f"int8: {out} (") for line in result.output.splitlines())
    report = json.loads((tmp_path / "m.onnx.report.json").read_text())
    assert isinstance(report["int8"], dict) and report["fp32"]["path"] == str(tmp_path / "m.fp32.onnx")
    fp32 = tmp_path / "m.fp32.onnx"
    assert fp32.is_file() and out.stat().st_size < fp32.stat().st_size
    assert read_card(out).quantization is not None
    with Classifier(out) as cls:
        assert len(cls.labels) == 5


def test_int8_over_budget_exits_1_and_passes_the_options_on(tmp_path, class_labels, photos, monkeypatch):
    quantize = pytest.importorskip("export.quantize")
    seen = {}

    def fake_quantize_model(src, dst, **options):
        seen.update(options, src=src)
        shutil.copyfile(src, dst)
        return {"quantization": {"drop": 3.5, "within_budget": False,
                                 "budget": {"metric": "agreement", "max_drop": 1.0}}}

    monkeypatch.setattr(quantize, "quantize_model", fake_quantize_model, raising=False)
    weights = lively_state_dict("mobilenet_v3_small", 5, tmp_path / "m.pth")
    coco = tmp_path / "calib.json"
    coco.write_text("{}")
    out = tmp_path / "m.onnx"
    result = _invoke("export", "classifier", weights, "--arch", "mobilenet_v3_small",
                     "--labels", class_labels, "-o", out, "--int8", "--calib", photos,
                     "--gt-labels", coco, "--budget", "1", "--method", "entropy", "--types", "u8u8",
                     "--target-latency", "25", "--target", "pi4")
    assert result.exit_code == 1, result.output
    assert "drop 3.5 agreement points (budget 1.0), OVER BUDGET" in result.stdout
    assert result.stderr.startswith("error: the INT8 model is outside the accuracy budget")
    assert seen == {"src": tmp_path / "m.fp32.onnx", "calib_dir": photos, "labels": coco, "budget": 1.0,
                    "method": "entropy", "types": "u8u8", "target_latency_ms": 25.0, "target": "pi4"}
    assert json.loads((tmp_path / "m.onnx.report.json").read_text())["int8"]["quantization"]["drop"] == 3.5

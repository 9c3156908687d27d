"""Wrong files, wrong cards and wrong arguments fail at load with a message that says what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.errors import CardMissingError, ModelError
from edge.inference.card import read_card
from edge.inference.detector import Detector
from edge.inference.labels import read_labels
from edge.inference.stamp import stamp_file

pytestmark = pytest.mark.assets


@pytest.fixture(scope="module")
def coco(assets) -> list[str]:
    return read_labels(assets / "yolox_nano" / "coco_classes.txt")


@pytest.fixture(scope="module")
def yolox_src(assets) -> Path:
    return assets / "yolox_nano" / "yolox_nano.onnx"


# --- Detector -----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        Detector(tmp_path / "nope.onnx")


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_text("this is a text file\n")
    with pytest.raises(ModelError):
        Detector(path)


def test_unstamped_file(yolox_src):
    with pytest.raises(CardMissingError, match="wildedge model stamp") as info:
        Detector(yolox_src)
    assert str(yolox_src) in str(info.value)


def test_card_input_size_disagrees_with_graph(yolox_src, coco, tmp_path):
    dst = tmp_path / "yolox_320.onnx"
    with pytest.raises(ModelError, match=r"--input-size 320x320 disagrees with the graph's fixed input 416x416"):
        stamp_file(yolox_src, dst, preset="yolox", labels=coco, input_size=(320, 320))
    assert not dst.exists()
    # A card written without the check (e.g. by another tool) is still caught at load.
    stamp_file(yolox_src, dst, preset="yolox", labels=coco, input_size=(320, 320), check_graph=False)
    with pytest.raises(ModelError, match=r"card says input size 320x320 but the graph takes 416x416") as info:
        Detector(dst)
    assert "--input-size 416x416" in str(info.value)


def test_card_layout_disagrees_with_graph(yolox_src, coco, tmp_path):
    dst = tmp_path / "yolox_nhwc.onnx"
    stamp_file(yolox_src, dst, preset="yolox", labels=coco, input_size=(416, 416),
               preprocess_overrides={"layout": "NHWC"}, check_graph=False)
    with pytest.raises(ModelError, match=r"416 channels for layout NHWC"):
        Detector(dst)


@pytest.mark.parametrize(
    ("model", "preset", "message"),
    [
        ("yolox_nano/yolox_nano.onnx", "fastestdet", r"fastestdet decoder expects .*\[1, 3549, 85\]"),
        ("fastestdet/FastestDet.onnx", "yolox", r"yolox decoder expects .*\[1, 85, 22, 22\]"),
        ("nanodet_m/nanodet_m_320.onnx", "yolox", r"yolox decoder: the model outputs 75 classes"),
        ("yolox_nano/yolox_nano.onnx", "nanodet", r"nanodet decoder expects outputs"),
        ("yolox_nano/yolox_nano.onnx", "ultralytics", r"ultralytics decoder: the model outputs 3545 classes"),
    ],
)
def test_wrong_decoder_fails_at_load(assets, coco, tmp_path, model, preset, message):
    dst = tmp_path / "wrong.onnx"
    stamp_file(assets / model, dst, preset=preset, labels=coco)
    with pytest.raises(ModelError, match=message):
        Detector(dst)
    Detector(dst, warmup=False).close()  # without the warm-up the mistake would wait for the first photo


def test_label_count_disagrees_with_graph(yolox_src, tmp_path):
    dst = tmp_path / "three.onnx"
    stamp_file(yolox_src, dst, preset="yolox", labels=["deer", "boar", "fox"])
    with pytest.raises(ModelError, match="outputs 80 classes but the card has 3 labels"):
        Detector(dst)


@pytest.mark.parametrize(
    "kwargs", [{"conf": 1.5}, {"conf": -0.1}, {"iou": 1.01}, {"iou": -1}, {"conf": float("nan")},
               {"max_detections": 0}, {"max_detections": -1}, {"threads": 0}]
)
def test_bad_arguments_raise_value_error_before_loading(tmp_path, kwargs):
    # A caller mistake is reported as such even when the file is missing too.
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Detector(tmp_path / "nope.onnx", **kwargs)


def test_zero_threads(stamped):
    with pytest.raises(ValueError, match="threads must be >= 1"):
        Detector(stamped["fastestdet"], threads=0)


def test_classifier_loaded_as_detector(classifier_model):
    with pytest.raises(ModelError, match="is a classify model, not a detector"):
        Detector(classifier_model)


def test_bad_images_to_detect(stamped):
    with Detector(stamped["fastestdet"]) as detector:
        with pytest.raises(TypeError):
            detector.detect(None)
        with pytest.raises(ValueError, match="HxWx3 uint8"):
            detector.detect(np.zeros((100, 100), np.uint8))
        with pytest.raises(ValueError, match="HxWx3 uint8"):
            detector.detect(np.zeros((100, 100, 3), np.float32))


# --- wildedge model show / stamp ----------------------------------------------------------


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_show_unstamped_file_hints_at_stamp(yolox_src):
    result = _invoke("model", "show", yolox_src)
    assert result.exit_code != 0
    assert "wildedge model stamp" in result.output
    assert "Traceback" not in result.output


def test_show_missing_file(tmp_path):
    result = _invoke("model", "show", tmp_path / "nope.onnx")
    assert result.exit_code != 0
    assert "not found" in result.output


def test_show_stamped(stamped):
    result = _invoke("model", "show", stamped["yolox"])
    assert result.exit_code == 0, result.output
    assert "416x416 NCHW BGR" in result.output
    assert "letterbox_topleft" in result.output and "class-agnostic" in result.output
    result = _invoke("model", "show", "--json", stamped["yolox"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads(read_card(stamped["yolox"]).to_json())


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "labels.txt"
    path.write_text("\n".join(f"class{i}" for i in range(80)) + "\n")
    return path


@pytest.fixture(scope="module")
def small_model(assets, tmp_path_factory) -> Path:
    """FastestDet (the smallest detector), copied so every stamp reads a private file."""
    path = tmp_path_factory.mktemp("src") / "fastestdet.onnx"
    shutil.copyfile(assets / "fastestdet" / "FastestDet.onnx", path)
    return path


def test_stamp_rejects_input_size_that_disagrees_with_the_graph(small_model, labels_file, tmp_path):
    dst = tmp_path / "out.onnx"
    result = _stamp(small_model, dst, labels_file, "--input-size", "320x256")
    assert result.exit_code == 2
    assert "disagrees with the graph's fixed input 352x352" in result.output
    assert not dst.exists()


def _stamp(src: Path, dst: Path, labels: Path, *extra: str, preset: str = "yolox"):
    return _invoke("model", "stamp", src, "-o", dst, "--preset", preset, "--labels", labels, *extra)


def test_stamp_with_preset_defaults(small_model, labels_file, tmp_path):
    dst = tmp_path / "out.onnx"
    result = _stamp(small_model, dst, labels_file, preset="fastestdet")
    assert result.exit_code == 0, result.output
    assert "stamped" in result.output and "352x352" in result.output and "80 labels" in result.output
    card = read_card(dst)
    assert card.preprocess.input_size == (352, 352)
    assert card.labels[79] == "class79"
    assert card.source.file == "fastestdet.onnx" and len(card.source.sha256) == 64
    with Detector(dst) as detector:
        assert detector.detect(np.zeros((200, 300, 3), np.uint8)) == []


@pytest.mark.parametrize(
    ("flags", "check"),
    [
        (["--colour", "rgb"], lambda c: c.preprocess.colour == "RGB"),
        (["--scale", "0.5"], lambda c: c.preprocess.scale == 0.5),
        (["--mean", "1,2.5,3"], lambda c: c.preprocess.mean == (1.0, 2.5, 3.0)),
        (["--std", "58,57,59.5"], lambda c: c.preprocess.std == (58.0, 57.0, 59.5)),
        (["--resize", "stretch"], lambda c: c.preprocess.resize == "stretch"),
        (["--pad-value", "0"], lambda c: c.preprocess.pad_value == 0),
        (["--conf", "0.55"], lambda c: c.thresholds.conf == 0.55),
        (["--iou", "0.3"], lambda c: c.thresholds.iou == 0.3),
        (["--name", "squirrel-v2"], lambda c: c.name == "squirrel-v2"),
    ],
)
def test_stamp_overrides_change_the_card(small_model, labels_file, tmp_path, flags, check):
    dst = tmp_path / "out.onnx"
    result = _stamp(small_model, dst, labels_file, *flags)
    assert result.exit_code == 0, result.output
    card = read_card(dst)
    assert check(card), card
    # Nothing else moves: the yolox preset's other choices are untouched.
    baseline = _stamp(small_model, tmp_path / "base.onnx", labels_file)
    assert baseline.exit_code == 0
    assert not check(read_card(tmp_path / "base.onnx"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--colour", "GRB"], "--colour must be RGB or BGR"),
        (["--mean", "1,2"], "--mean expects three comma-separated numbers"),
        (["--mean", "a,b,c"], "--mean expects three comma-separated numbers"),
        (["--std", "1,2,3,4"], "--std expects three comma-separated numbers"),
        (["--std", "1,0,1"], "std values must be > 0"),
        (["--input-size", "big"], "expected WIDTHxHEIGHT"),
        (["--input-size", "4x4"], "at least 8x8"),
        (["--resize", "squash"], "resize"),
        (["--resize", "centre_crop"], "centre_crop"),
        (["--scale", "0"], "scale"),
        (["--conf", "1.5"], "--conf"),
        (["--pad-value", "300"], "--pad-value"),  # the option, not the card key
        (["--preset", "yolov99"], "unknown preset 'yolov99'"),
    ],
)
def test_stamp_rejects_bad_values(small_model, labels_file, tmp_path, flags, message):
    dst = tmp_path / "out.onnx"
    result = _stamp(small_model, dst, labels_file, *flags)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not dst.exists()


def test_stamp_missing_labels_or_model(small_model, labels_file, tmp_path):
    result = _stamp(small_model, tmp_path / "out.onnx", tmp_path / "nope.txt")
    assert result.exit_code != 0 and "labels file not found" in result.output
    result = _stamp(tmp_path / "nope.onnx", tmp_path / "out.onnx", labels_file)
    assert result.exit_code != 0 and "nope.onnx" in result.output
    assert not (tmp_path / "out.onnx").exists()


def test_stamp_dynamic_input_needs_input_size(labels_file, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["out"])], "dyn",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, "height", "width"])],
    )
    src = tmp_path / "dynamic.onnx"
    src.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                      ir_version=8).SerializeToString())
    onnx.checker.check_model(str(src))
    result = _stamp(src, tmp_path / "out.onnx", labels_file)
    assert result.exit_code != 0 and "--input-size" in result.output
    result = _stamp(src, tmp_path / "out.onnx", labels_file, "--input-size", "640x480")
    assert result.exit_code == 0, result.output
    assert read_card(tmp_path / "out.onnx").preprocess.input_size == (640, 480)


@pytest.mark.assets
def test_stamp_a_coco_detector_as_megadetector_compatible_and_detect_writes_md_classes(assets, tmp_path):
    src = assets / "fastestdet" / "FastestDet.onnx"
    labels = assets / "fastestdet" / "coco.names"
    dst = tmp_path / "md.onnx"
    result = _stamp(src, dst, labels, "--categories", "megadetector", preset="fastestdet")
    assert result.exit_code == 0, result.output
    assert read_card(dst).categories.scheme == "megadetector"
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted((assets / "coco_val2017_animal_samples").glob("*.jpg"))[:4]:
        shutil.copy(path, photos)
    out = tmp_path / "md.json"
    detected = _invoke("detect", photos, "-m", dst, "-o", out, "--conf", "0.3")
    assert detected.exit_code == 0, detected.output
    doc = json.loads(out.read_text())
    assert doc["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    # A map for labels that are not COCO names; a bad class in it is one line.
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"cow": "animal", "car": "car"}))
    bad = _stamp(src, tmp_path / "bad.onnx", labels, "--category-map", mapping, preset="fastestdet")
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "car" in bad.output, bad.output
    assert not (tmp_path / "bad.onnx").exists()
    refused = _stamp(src, tmp_path / "bad.onnx", labels, "--categories", "md", preset="fastestdet")
    assert refused.exit_code == 2 and "--categories must be native or megadetector" in refused.output

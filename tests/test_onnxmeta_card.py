"""ONNX metadata_props read/write without the onnx package, and the model card stored in it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge.errors import CardMissingError, ModelError
from edge.inference.card import (
    CARD_KEY,
    CARD_VERSION,
    ModelCard,
    card_from_ultralytics,
    read_card,
    write_card,
)
from edge.inference.onnxmeta import read_metadata, write_metadata
from edge.inference.presets import PRESETS, build_card


@pytest.fixture(scope="module")
def onnx():
    return pytest.importorskip("onnx")


def _tiny_model(onnx, path: Path, *, metadata: dict[str, str] | None = None) -> Path:
    """A two-node graph with an initializer (y = relu(x + bias)), written by the onnx package itself."""
    from onnx import TensorProto, helper, numpy_helper

    bias = numpy_helper.from_array(np.arange(3, dtype=np.float32).reshape(1, 3, 1, 1) - 1, "bias")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 16])],
        initializer=[bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8,
                              producer_name="wildedge-tests")
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())
    return path


def _ultralytics_model(onnx, path: Path, meta: dict[str, str], *, boxes: np.ndarray | None = None) -> Path:
    """An 'Ultralytics export': images [1,3,640,640] in, constant [1, 4+nc, N] out, Ultralytics' metadata."""
    from onnx import TensorProto, helper, numpy_helper

    out = boxes if boxes is not None else np.zeros((1, 6, 4), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["output0"], value=numpy_helper.from_array(out, "c"))],
        "ultra",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out.shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())
    return path


def _without_metadata(onnx, path: Path) -> bytes:
    model = onnx.load(str(path))
    del model.metadata_props[:]
    return model.SerializeToString()


def _run(path: Path, feed: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: feed})[0]


ULTRALYTICS_META = {
    "description": "Ultralytics YOLOv8n model trained on camera-trap data",
    "author": "Ultralytics",
    "version": "8.1.0",
    "task": "detect",
    "stride": "32",
    "batch": "1",
    "imgsz": "[640, 640]",
    "names": "{0: 'animal', 1: 'person'}",
}


# --- metadata round trip -----------------------------------------------------------------


def test_set_replace_delete_on_built_model(onnx, tmp_path):
    src = _tiny_model(onnx, tmp_path / "tiny.onnx", metadata={"keep": "me"})
    original = onnx.load(str(src))
    assert read_metadata(src) == {"keep": "me"}

    a = write_metadata(src, tmp_path / "a.onnx", {"alpha": "1", "beta": "two"})
    assert a == tmp_path / "a.onnx"
    assert read_metadata(a) == {"keep": "me", "alpha": "1", "beta": "two"}

    b = write_metadata(a, tmp_path / "b.onnx", {"alpha": "replaced", "keep": None, "absent": None})
    assert read_metadata(b) == {"alpha": "replaced", "beta": "two"}

    for path in (a, b):
        loaded = onnx.load(str(path))
        onnx.checker.check_model(loaded, full_check=True)
        assert {p.key: p.value for p in loaded.metadata_props} == read_metadata(path)
        assert loaded.graph == original.graph
        assert loaded.producer_name == "wildedge-tests" and loaded.ir_version == 8
        assert list(loaded.opset_import) == list(original.opset_import)

    x = np.random.default_rng(0).normal(size=(1, 3, 16, 16)).astype(np.float32)
    expected = np.maximum(x + (np.arange(3, dtype=np.float32) - 1).reshape(1, 3, 1, 1), 0)
    np.testing.assert_array_equal(_run(b, x), expected)
    assert read_metadata(src) == {"keep": "me"}, "the source file must not change"


def test_long_and_unicode_values_round_trip(onnx, tmp_path):
    src = _tiny_model(onnx, tmp_path / "tiny.onnx")
    # Over 2**14 bytes: the entry's length needs a 3-byte varint.
    long_value = json.dumps({"labels": [f"species number {i}" for i in range(5000)]})
    values = {"wildedge.card": long_value, "note": "Grünspecht, écureuil, 松鼠", "empty": ""}
    dst = write_metadata(src, tmp_path / "out.onnx", values)
    assert read_metadata(dst) == values
    loaded = onnx.load(str(dst))
    assert {p.key: p.value for p in loaded.metadata_props} == values
    onnx.checker.check_model(loaded)


def test_real_model_round_trip_keeps_graph_bytes(onnx, assets, tmp_path):
    src = assets / "yolox_nano" / "yolox_nano.onnx"
    original = src.read_bytes()
    assert read_metadata(src) == {}
    stamped = write_metadata(src, tmp_path / "stamped.onnx", {"k1": "v1", "k2": "v2"})
    data = stamped.read_bytes()
    # Appending metadata must leave every byte of the original file in place.
    assert data.startswith(original) and len(data) > len(original)
    assert read_metadata(stamped) == {"k1": "v1", "k2": "v2"}

    cleared = write_metadata(stamped, tmp_path / "cleared.onnx", {"k1": None, "k2": None})
    assert cleared.read_bytes() == original

    model = onnx.load(str(stamped))
    onnx.checker.check_model(model)
    assert _without_metadata(onnx, stamped) == _without_metadata(onnx, src)
    feed = np.full((1, 3, 416, 416), 114, np.float32)
    np.testing.assert_array_equal(_run(stamped, feed), _run(src, feed))


def test_write_in_place_replaces_atomically(onnx, tmp_path):
    path = _tiny_model(onnx, tmp_path / "m.onnx", metadata={"a": "1"})
    write_metadata(path, path, {"a": "2", "b": "3"})
    assert read_metadata(path) == {"a": "2", "b": "3"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"], "no temporary file left behind"


def test_written_file_keeps_source_permissions(onnx, tmp_path):
    src = _tiny_model(onnx, tmp_path / "m.onnx")
    os.chmod(src, 0o644)
    dst = write_metadata(src, tmp_path / "sub" / "out.onnx", {"a": "1"})
    # A model stamped by one user must stay readable by the service that runs it.
    assert stat.S_IMODE(dst.stat().st_mode) == 0o644


def test_missing_empty_and_foreign_files_raise_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        read_metadata(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="not found"):
        write_metadata(tmp_path / "nope.onnx", tmp_path / "out.onnx", {"a": "1"})
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        read_metadata(empty)
    text = tmp_path / "labels.onnx"
    text.write_text("person\nbicycle\ncar\n")
    with pytest.raises(ModelError, match="not an ONNX file"):
        read_metadata(text)
    with pytest.raises(ModelError, match="not an ONNX file"):
        write_metadata(text, tmp_path / "out.onnx", {"a": "1"})
    with pytest.raises(ModelError, match="cannot read"):
        read_metadata(tmp_path)  # a directory
    for path in (tmp_path / "nope.onnx", empty, text):
        with pytest.raises(ModelError):
            read_card(path)
    assert not (tmp_path / "out.onnx").exists()


def test_photo_and_truncated_model_raise_model_error(assets, tmp_path):
    with pytest.raises(ModelError, match="not an ONNX file"):
        read_metadata(assets / "coco_val2017_animal_samples" / "000000000285.jpg")
    half = tmp_path / "half.onnx"
    data = (assets / "fastestdet" / "FastestDet.onnx").read_bytes()
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        read_metadata(half)


# --- the card ----------------------------------------------------------------------------


def _card(preset: str = "yolox", **overrides) -> ModelCard:
    return build_card(preset, labels=["cat", "dog"], input_size=(416, 416), **overrides)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_card_json_round_trip(preset):
    card = build_card(preset, labels=["a", "b", "c"], input_size=(320, 256), name=f"{preset}-model")
    text = card.to_json()
    again = ModelCard.from_json(text)
    assert again == card
    assert again.to_json() == text
    assert json.loads(text)["card_version"] == CARD_VERSION
    assert again.preprocess.input_size == (320, 256)
    assert again.decoder.name == PRESETS[preset]["decoder"]["name"]


def test_write_and_read_card_on_real_model(onnx, assets, tmp_path):
    src = assets / "nanodet_m" / "nanodet_m_320.onnx"
    card = build_card("nanodet", labels=["cat", "dog"], input_size=(320, 320), name="nd")
    dst = write_card(src, tmp_path / "nd.onnx", card)
    assert read_card(dst) == card
    assert set(read_metadata(dst)) == {CARD_KEY}
    assert _without_metadata(onnx, dst) == _without_metadata(onnx, src)
    # Re-stamping replaces the card rather than adding a second one.
    card2 = build_card("nanodet", labels=["x"], input_size=(320, 320), name="nd2")
    write_card(dst, dst, card2)
    assert read_card(dst) == card2
    assert [p.key for p in onnx.load(str(dst)).metadata_props] == [CARD_KEY]


def _mutated(mutate) -> str:
    data = json.loads(_card().to_json())
    mutate(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(colour="RGB"), r"colour: Extra inputs are not permitted"),
        (lambda d: d["preprocess"].update(mean_rgb=[0, 0, 0]), r"preprocess\.mean_rgb: Extra inputs"),
        (lambda d: d["thresholds"].update(nms="fast"), r"thresholds\.nms: Extra inputs"),
        (lambda d: d.update(labels=[]), r"labels must not be empty"),
        (lambda d: d["preprocess"].update(std=[1.0, 0.0, 1.0]), r"preprocess\.std: .*std values must be > 0"),
        (lambda d: d["preprocess"].update(resize="centre_crop"), r"centre_crop.*detector"),
        (lambda d: d.update(card_version=CARD_VERSION + 1), r"newer than this wildedge understands.*upgrade"),
        (lambda d: d["preprocess"].update(input_size=[4, 4]), r"at least 8x8"),
        (lambda d: d["thresholds"].update(conf=1.5), r"thresholds\.conf"),
        (lambda d: d["preprocess"].update(scale=0), r"preprocess\.scale"),
        (lambda d: d.pop("task"), r"task: Field required"),
        (lambda d: d.update(task="segment"), r"task"),
    ],
)
def test_card_validation_rejects_with_a_clear_message(mutate, message):
    with pytest.raises(ModelError, match=message) as info:
        ModelCard.from_json(_mutated(mutate))
    assert str(info.value).startswith("invalid model card: ")


def test_centre_crop_is_fine_for_a_classifier():
    card = build_card("imagenet", labels=["a"], input_size=(224, 224))
    assert card.task == "classify" and card.preprocess.resize == "centre_crop"
    assert ModelCard.from_json(card.to_json()) == card


def test_card_that_is_not_json_raises_model_error(onnx, tmp_path):
    src = _tiny_model(onnx, tmp_path / "m.onnx")
    bad = write_metadata(src, tmp_path / "bad.onnx", {CARD_KEY: "{not json"})
    with pytest.raises(ModelError, match="invalid model card"):
        read_card(bad)


# --- Ultralytics fallback and the missing card -------------------------------------------


def test_ultralytics_metadata_gives_a_card(onnx, tmp_path):
    path = _ultralytics_model(onnx, tmp_path / "yolov8n.onnx", ULTRALYTICS_META)
    card = read_card(path)
    assert card.task == "detect"
    assert card.labels == ["animal", "person"]
    assert card.preprocess.input_size == (640, 640)
    assert card.preprocess.resize == "letterbox_centre"
    assert card.preprocess.colour == "RGB" and card.preprocess.scale == pytest.approx(1 / 255)
    assert card.decoder.name == "ultralytics"
    assert card.exporter.name == "ultralytics" and card.exporter.version == "8.1.0"
    assert card.name == ULTRALYTICS_META["description"]


def test_ultralytics_card_drives_a_detector(onnx, tmp_path):
    from edge.inference.detector import Detector

    out = np.zeros((1, 6, 4), np.float32)
    out[0, :, 1] = [320, 200, 100, 40, 0.1, 0.9]  # cx, cy, w, h, animal, person
    path = _ultralytics_model(onnx, tmp_path / "yolov8n.onnx", ULTRALYTICS_META, boxes=out)
    with Detector(path) as detector:
        found = detector.detect(np.zeros((1280, 1280, 3), np.uint8))
    assert len(found) == 1
    assert found[0].label == "person" and found[0].class_id == 1
    assert found[0].score == pytest.approx(0.9)
    assert found[0].box == pytest.approx((540, 360, 740, 440))  # model input is half the photo's size


@pytest.mark.parametrize(
    ("changes", "expect"),
    [
        ({"imgsz": "[480, 640]"}, {"input_size": (640, 480)}),  # Ultralytics writes [height, width]
        ({"imgsz": "320"}, {"input_size": (320, 320)}),
        ({"names": "['deer', 'boar', 'fox']"}, {"labels": ["deer", "boar", "fox"]}),
        ({"names": "{1: 'b', 0: 'a', 2: 'c'}"}, {"labels": ["a", "b", "c"]}),
        ({"description": "Ultralytics RT-DETR-l model"}, {"decoder": "rtdetr", "resize": "stretch"}),
        ({"end2end": "True"}, {"decoder": "e2e"}),
        ({"task": "classify", "imgsz": "[224, 224]"}, {"task": "classify", "resize": "centre_crop",
                                                        "decoder": "softmax"}),
    ],
)
def test_ultralytics_metadata_variants(changes, expect):
    card = card_from_ultralytics({**ULTRALYTICS_META, **changes})
    got = {
        "input_size": card.preprocess.input_size,
        "labels": card.labels,
        "decoder": card.decoder.name,
        "resize": card.preprocess.resize,
        "task": card.task,
    }
    assert {k: got[k] for k in expect} == expect


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "segment"}, "segment"),
        ({"names": "{0: 'animal'"}, "unreadable Ultralytics metadata"),
        ({"imgsz": "[640, 640"}, "unreadable Ultralytics metadata"),
    ],
)
def test_bad_ultralytics_metadata_raises_model_error(changes, message):
    with pytest.raises(ModelError, match=message):
        card_from_ultralytics({**ULTRALYTICS_META, **changes})


def test_a_wildedge_card_wins_over_ultralytics_metadata(onnx, tmp_path):
    src = _ultralytics_model(onnx, tmp_path / "u.onnx", ULTRALYTICS_META)
    card = build_card("ultralytics", labels=["only"], input_size=(640, 640), name="ours")
    dst = write_card(src, tmp_path / "stamped.onnx", card)
    assert read_card(dst) == card
    assert read_metadata(dst)["names"] == ULTRALYTICS_META["names"], "other keys are kept"


def test_no_card_and_no_ultralytics_metadata(onnx, assets, tmp_path):
    tiny = _tiny_model(onnx, tmp_path / "m.onnx", metadata={"author": "someone"})
    for path in (tiny, assets / "fastestdet" / "FastestDet.onnx"):
        with pytest.raises(CardMissingError, match="wildedge model stamp") as info:
            read_card(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, ModelError)

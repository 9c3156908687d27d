"""The FP32 stage: torch.onnx.export, onnxslim, card, parity with torch on real photos, runtime load."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
from conftest import EXPORT_IMGSZ, lively_yolo

from edge.errors import ExportError
from edge.inference.card import read_card, sha256_file
from edge.inference.classifier import Classifier
from edge.inference.detector import Detector
from edge.inference.onnxmeta import read_metadata

torch = pytest.importorskip("torch")


def _output_shape(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_outputs()[0].shape


# -- detectors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "decoder", "shape"), [
    ("yolov8n", "ultralytics", [1, 84, 2100]),
    ("yolo11n", "ultralytics", [1, 84, 2100]),
    ("yolov10n", "e2e", [1, 300, 6]),
])
def test_ultralytics_detectors_export_with_parity(exported_detectors, parity_photos, name, decoder, shape):
    result = exported_detectors[name]
    card = read_card(result.path)
    assert card.task == "detect" and card.decoder.name == decoder
    assert card.preprocess.input_size == (EXPORT_IMGSZ, EXPORT_IMGSZ)
    assert len(card.labels) == 80 and card.labels[0] == "person"  # stock COCO yaml: COCO-80 names
    assert card.exporter.name == "wildedge-export" and len(card.source.sha256) == 64
    assert _output_shape(result.path) == shape
    assert ort.InferenceSession(str(result.path)).get_inputs()[0].shape == [1, 3, EXPORT_IMGSZ, EXPORT_IMGSZ]
    parity = result.parity
    assert parity.passed and parity.synthetic == (not parity_photos)
    assert {p.part for p in parity.parts} == {"boxes", "scores"}
    boxes = next(p for p in parity.parts if p.part == "boxes")
    assert boxes.tolerance == pytest.approx(0.05 + 1e-3 * EXPORT_IMGSZ)
    if parity_photos:  # the tight bounds hold on real photos; synthetic frames only pass the tolerance
        assert boxes.max_abs < 0.05 and boxes.mean_abs < 1e-3
        if decoder == "e2e":  # rows of the top-K were matched and compared, not skipped as ties
            assert int(parity.notes[0].split()[0]) > 100
    steps = ["torch.onnx.export", "onnxslim", "stamp", "parity", "load check"]
    assert [s.name for s in result.steps] == steps
    assert result.exporter["opset"] == 17 and result.exporter["dynamo"] is False
    with Detector(result.path) as det:  # warm-up decodes a blank frame: shapes match the card
        assert det.card.decoder.name == decoder


def test_exported_detector_finds_boxes_on_a_photo(exported_detectors, assets):
    from edge.imaging import read_image

    photo = read_image(assets / "coco_val2017_animal_samples" / "000000000285.jpg").image
    with Detector(exported_detectors["yolov8n"].path, conf=0.5) as det:
        found = det.detect(photo)
    # Random but lively weights: boxes exist and are mapped back to the photo's pixels.
    assert found and all(d.label in det.labels for d in found)
    assert all(-1000 < v < 2000 for d in found for v in d.box)


def test_tiny_rtdetr_exports_for_the_rtdetr_decoder(ultralytics_offline, parity_photos, tmp_path):
    from export.sources import open_source
    from export.to_onnx import to_onnx

    yaml = tmp_path / "tiny-rtdetr.yaml"
    yaml.write_text(
        "nc: 3\nbackbone:\n"
        + "".join(f"  - [-1, 1, Conv, [{c}, 3, 2]]\n" for c in (16, 32, 32, 64, 64))
        + "head:\n  - [[2, 3, 4], 1, RTDETRDecoder, [nc, 64, 50, 4, 4, 2, 128]]\n"
    )
    labels = ["animal", "person", "vehicle"]
    checkpoint = lively_yolo(yaml, tmp_path / "tiny-rtdetr.pt", parity_photos, rtdetr=True)
    with open_source(str(checkpoint), kind="detect", labels=labels) as loaded:
        result = to_onnx(loaded, tmp_path / "rtdetr.onnx", images=parity_photos)
    card = read_card(result.path)
    assert card.decoder.name == "rtdetr" and card.preprocess.resize == "stretch" and card.labels == labels
    assert _output_shape(result.path) == [1, 50, 7]
    assert result.parity.passed and result.parity.parts[0].unit == "of side"
    with Detector(result.path):
        pass


# -- classifiers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "efficientnet_b0"])
def test_torchvision_classifiers_export_with_parity(exported_classifiers, class_labels, arch):
    result = exported_classifiers[arch]
    card = read_card(result.path)
    assert card.task == "classify" and card.decoder.name == "softmax"
    assert card.labels == class_labels.read_text().split("\n")[:-1]
    pre = card.preprocess
    assert pre.input_size == (224, 224) and pre.resize == "centre_crop"
    assert pre.crop_ratio == pytest.approx(0.875)
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406))
    assert pre.std == pytest.approx((0.229, 0.224, 0.225))
    logits = next(p for p in result.parity.parts if p.part == "logits")
    # Real photos: within 1e-3; the synthetic frames used without the assets are harsher inputs.
    assert result.parity.passed and logits.max_abs < (1e-2 if result.parity.synthetic else 1e-3)
    # Outputs vary with the photo (the check compared something), and the graph keeps a dynamic batch
    # that agrees with one-by-one runs.
    assert logits.max_rel < 1e-3 and result.parity.batch_max_abs is not None
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert not isinstance(session.get_inputs()[0].shape[0], int)
    with Classifier(result.path, top_k=3) as cls:
        rng = np.random.default_rng(1)
        scores = cls.classify_batch([rng.integers(0, 256, (300, 400, 3), dtype=np.uint8) for _ in range(2)])
    assert len(scores) == 2 and all(len(s) == 3 for s in scores)
    assert scores[0] != scores[1]


def test_parity_catches_a_graph_that_differs_from_the_model(exported_classifiers, parity_photos, tmp_path):
    from export.sources import open_source
    from export.to_onnx import check_parity

    result = exported_classifiers["mobilenet_v3_small"]
    card = read_card(result.path)
    weights = tmp_path / "m.pth"
    import conftest

    conftest.lively_state_dict("mobilenet_v3_small", len(card.labels), weights)
    with open_source(str(weights), kind="classify", arch="mobilenet_v3_small", labels=card.labels) as loaded:
        check_parity(loaded.module, result.path, card, parity_photos)  # the same weights: passes
        other = copy.deepcopy(loaded.module)
        with torch.no_grad():
            other.classifier[-1].weight *= 1.01  # every logit 1 % larger
        with pytest.raises(ExportError, match=r"FP32 parity check failed .*logits differ by up to"):
            check_parity(other, result.path, card, parity_photos)
        # A preprocessing mismatch (BGR instead of RGB) is caught as well.
        bgr = card.model_copy(update={"preprocess": card.preprocess.model_copy(update={"colour": "BGR"})})
        with pytest.raises(ExportError, match="parity check failed"):
            check_parity(_SwapChannels(loaded.module), result.path, bgr, parity_photos)


class _SwapChannels(torch.nn.Module):
    """The model fed BGR by mistake: what an export with the wrong colour order would compute."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.flip(1))


def test_exporter_warnings_other_than_the_known_ones_reach_the_caller(tmp_path):
    from export.to_onnx import torch_to_onnx

    class Noisy(torch.nn.Module):
        def forward(self, x):
            warnings.warn("something new", UserWarning, stacklevel=1)
            return x.mean(dim=(2, 3))

    with pytest.warns(UserWarning, match="something new"):
        torch_to_onnx(Noisy(), tmp_path / "noisy.onnx", input_size=(32, 32), output_names=["out"])
    with pytest.raises(ValueError, match="opset must be >= 17"):
        torch_to_onnx(Noisy(), tmp_path / "old.onnx", input_size=(32, 32), output_names=["out"], opset=13)


def test_a_failing_step_leaves_no_output(exported_classifiers, tmp_path, monkeypatch):
    from export import to_onnx as stage
    from export.sources import open_source

    card = read_card(exported_classifiers["resnet18"].path)
    weights = tmp_path / "r.pth"
    import conftest

    conftest.lively_state_dict("resnet18", len(card.labels), weights)

    def broken(*args, **kwargs):
        raise ExportError("onnxslim failed on traced.onnx: boom")

    monkeypatch.setattr(stage, "slim", broken)
    out = tmp_path / "out" / "resnet18.onnx"
    with (open_source(str(weights), kind="classify", arch="resnet18", labels=card.labels) as loaded,
          pytest.raises(ExportError, match="boom")):
        stage.to_onnx(loaded, out)
    assert not out.exists() and not list(out.parent.glob(".*part"))


# -- ONNX sources ---------------------------------------------------------------------------------
def test_onnx_source_keeps_its_card_and_is_only_restamped(exported_classifiers, tmp_path):
    from export.sources import open_source
    from export.to_onnx import to_onnx

    src = exported_classifiers["mobilenet_v3_small"].path
    labels = [f"class {i}" for i in range(5)]
    with open_source(str(src), kind="classify", labels=labels) as loaded:
        assert loaded.module is None and loaded.framework == "onnx"
        result = to_onnx(loaded, tmp_path / "relabelled.onnx")
    card = read_card(result.path)
    assert card.labels == labels and card.preprocess == read_card(src).preprocess
    assert result.parity is None and [s.name for s in result.steps] == ["stamp", "load check"]
    assert card.source.sha256 == read_card(src).source.sha256  # the original checkpoint stays the source
    meta = read_metadata(result.path)
    assert json.loads(meta["wildedge.card"])["labels"] == labels
    assert sha256_file(result.path) != sha256_file(src)


# -- the comparison itself ------------------------------------------------------------------------
def _card(preset: str, side: int = 640, labels: int = 3):
    from edge.inference.presets import build_card

    return build_card(preset, labels=[f"c{i}" for i in range(labels)], input_size=(side, side))


def test_compare_bounds_the_largest_and_the_mean_difference():
    from export.parity import compare

    rng = np.random.default_rng(0)
    out = np.concatenate([rng.uniform(0, 640, (1, 4, 500)), rng.uniform(0, 1, (1, 3, 500))], axis=1)
    card = _card("ultralytics")
    noise = out + rng.normal(0, 1e-4, out.shape)
    assert compare([("a.jpg", out, noise)], card).passed
    local = out.copy()
    local[0, 0, 7] += 2.0  # one box edge 2 px off: a local error
    parity = compare([("a.jpg", out, noise), ("b.jpg", out, local)], card)
    assert not parity.passed and parity.parts[0].worst_image == "b.jpg"
    assert parity.worst_message().startswith("boxes differ by up to 2 px (tolerance 0.69) on b.jpg")
    systematic = out.copy()
    systematic[0, :4] += 0.1  # every box 0.1 px off: below the largest-difference bound, not the mean one
    parity = compare([("c.jpg", out, systematic)], card)
    assert not parity.passed and "0.1 px on average" in parity.worst_message()
    scores = out.copy()
    scores[0, 4:] = 1 / (1 + np.exp(-scores[0, 4:]))  # a sigmoid too many
    assert "scores differ by up to" in compare([("d.jpg", out, scores)], card).worst_message()
    assert compare([("e.jpg", out, out[:, :, :400])], card).parts[0].part == "shape"


def test_compare_matches_topk_rows_order_free():
    from export.parity import compare

    rng = np.random.default_rng(1)
    boxes = rng.uniform(0, 600, (1, 300, 4))
    rows = np.concatenate([boxes, np.linspace(0.9, 0.3, 300)[None, :, None],
                           rng.integers(0, 3, (1, 300, 1)).astype(float)], axis=2)
    swapped = rows.copy()
    swapped[0, [10, 11]] = swapped[0, [11, 10]]  # near-equal scores ordered the other way
    parity = compare([("a.jpg", rows, swapped)], _card("e2e"))
    assert parity.passed and parity.notes[0].startswith("297 rows")
    wrong_class = rows.copy()
    wrong_class[0, 5, 5] = (wrong_class[0, 5, 5] + 1) % 3
    assert not compare([("a.jpg", rows, wrong_class)], _card("e2e")).passed
    queries = np.concatenate([rng.uniform(0, 1, (1, 50, 4)), rng.uniform(0, 1, (1, 50, 3))], axis=2)
    permuted = queries[:, rng.permutation(50)]
    assert compare([("a.jpg", queries, permuted)], _card("rtdetr")).passed
    assert not compare([("a.jpg", queries, queries * 1.01)], _card("rtdetr")).passed

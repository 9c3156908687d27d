"""export.prepare / graph / calibration / quantize / sensitivity on the real detectors and a float classifier."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edge.cli import app
from edge.errors import ExportError, MissingExtraError
from edge.imaging import read_image
from edge.inference.card import CARD_KEY, read_card
from edge.inference.detector import Detector
from edge.inference.onnxmeta import read_metadata
from export.calibration import (
    MIN_IMAGES,
    RECOMMENDED_IMAGES,
    ImageReader,
    check_count,
    list_images,
    load_tensor,
    split_images,
)
from export.graph import COMPUTE_OPS, Graph, load_graph
from export.prepare import pre_process, prepare, upgrade_opset
from export.quantize import quantize_file, quantize_model

VOC = "voc2007_labeled"
COCO_JSON = "voc2007_labeled/labels_coco_json/instances_default.json"


@pytest.fixture(scope="module")
def prepared(stamped: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three real detectors, prepared for quantization."""
    out = tmp_path_factory.mktemp("prepared")
    return {name: prepare(path, out / f"{name}.onnx") for name, path in stamped.items()}


def _photos(assets: Path, count: int, dst: Path) -> Path:
    """A folder with the first ``count`` VOC photos."""
    dst.mkdir(parents=True, exist_ok=True)
    for photo in list_images(assets / VOC / "images")[:count]:
        shutil.copy(photo, dst / photo.name)
    return dst


# -- prepare ---------------------------------------------------------------------------------------
def test_prepare_upgrades_opset_strips_initializer_inputs_and_keeps_the_card(stamped, prepared):
    source, result = onnx.load(str(stamped["nanodet"])), onnx.load(str(prepared["nanodet"]))
    weights = {i.name for i in source.graph.initializer}
    assert [o.version for o in source.opset_import if o.domain in ("", "ai.onnx")] == [11]
    assert sum(i.name in weights for i in source.graph.input) == 185
    assert [o.version for o in result.opset_import if o.domain in ("", "ai.onnx")][0] >= 13
    assert [i.name for i in result.graph.input] == [i.name for i in source.graph.input if i.name not in weights]
    meta = read_metadata(prepared["nanodet"])
    assert meta[CARD_KEY] == read_metadata(stamped["nanodet"])[CARD_KEY]
    assert "onnx.quant.pre_process" in meta  # quantize_static checks this stamp
    names = [n.name for n in result.graph.node]
    assert all(names) and len(set(names)) == len(names)


@pytest.mark.slow
def test_quantized_nanodet_runs_only_with_initializer_inputs_stripped(stamped, prepared, assets, tmp_path):
    photos = list_images(assets / VOC / "images")[:MIN_IMAGES]
    image = read_image(photos[0]).image
    card = read_card(stamped["nanodet"])
    graph = load_graph(prepared["nanodet"])
    reader = ImageReader(photos, card, graph.model.graph.input[0].name)
    int8 = quantize_file(prepared["nanodet"], tmp_path / "int8.onnx", reader, exclude=graph.float_tail())
    assert read_card(int8) == card
    with Detector(int8, conf=0.35) as detector:
        found = detector.detect(image)
    with Detector(stamped["nanodet"], conf=0.35) as detector:
        expected = detector.detect(image)
    assert expected and {d.label for d in found} & {d.label for d in expected}

    # Without stripping (opset upgrade and pre-processing only), the same quantization breaks at run time.
    unstripped = pre_process(upgrade_opset(stamped["nanodet"], tmp_path / "up.onnx"), tmp_path / "pp.onnx")
    graph = load_graph(unstripped)
    reader = ImageReader(photos, card, graph.model.graph.input[0].name)
    broken = quantize_file(unstripped, tmp_path / "broken.onnx", reader, exclude=graph.float_tail())
    with pytest.raises(Exception, match="out of data bounds"):
        Detector(broken)


# -- the float tail ---------------------------------------------------------------------------------
EXPECTED_TAILS = {
    "fastestdet": {"Concat": 1, "Softmax": 1, "Sigmoid": 1},
    "nanodet": {"Transpose": 6, "Reshape": 6, "Split": 3, "Sigmoid": 3},
    "yolox": {"Sigmoid": 6, "Concat": 4, "Reshape": 3, "Transpose": 1},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_TAILS))
def test_float_tail_is_exactly_what_follows_the_last_convs(prepared, name):
    graph = load_graph(prepared[name])
    tail = graph.float_tail()
    nodes = {n.name: n for n in graph.nodes}
    assert Counter(nodes[t].op_type for t in tail) == EXPECTED_TAILS[name]
    assert not any(nodes[t].op_type in COMPUTE_OPS for t in tail)
    # Every output comes out of the tail, and the tail reads only its own tensors, the last convs'
    # outputs and constants: the walk stopped exactly at the convs.
    assert {graph.producer[o].name for o in graph.outputs} <= set(tail)
    for t in tail:
        for tensor in nodes[t].input:
            producer = graph.producer.get(tensor)
            assert producer is None or producer.name in tail or producer.op_type == "Conv", (t, tensor)
    # and every conv feeding the tail is a real head conv: nothing between it and the outputs is learned
    feeding = {graph.producer[i].name for t in tail for i in nodes[t].input
               if i in graph.producer and graph.producer[i].name not in tail}
    assert feeding and all(nodes[f].op_type == "Conv" for f in feeding)


def _tiny(nodes, inits, outputs):
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return Graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


def test_float_tail_goes_through_a_dfl_integral_conv_and_stops_at_a_classifier_gemm():
    rng = np.random.default_rng(0)
    inits = {"w1": rng.normal(size=(64, 3, 1, 1)).astype(np.float32),
             "w2": rng.normal(size=(80, 3, 1, 1)).astype(np.float32),
             "dfl": np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1),
             "s1": np.array([1, 4, 16, 64], dtype=np.int64), "s2": np.array([1, 16, 4, 64], dtype=np.int64),
             "s3": np.array([1, 4, 64], dtype=np.int64)}
    dfl = _tiny([
        helper.make_node("Conv", ["x", "w1"], ["box"], name="box_conv"),
        helper.make_node("Reshape", ["box", "s1"], ["r1"], name="r1"),
        helper.make_node("Transpose", ["r1"], ["t1"], perm=[0, 2, 1, 3], name="t1"),
        helper.make_node("Softmax", ["t1"], ["sm"], axis=1, name="softmax"),
        helper.make_node("Conv", ["sm", "dfl"], ["dist"], name="dfl_conv"),
        helper.make_node("Reshape", ["dist", "s3"], ["boxes"], name="r2"),
        helper.make_node("Conv", ["x", "w2"], ["cls"], name="cls_conv"),
        helper.make_node("Sigmoid", ["cls"], ["scores"], name="sigmoid"),
    ], inits, ["boxes", "scores"])
    assert dfl.float_tail() == ["r1", "t1", "softmax", "dfl_conv", "r2", "sigmoid"]

    classifier = _tiny([
        helper.make_node("Conv", ["x", "w1"], ["f"], name="conv"),
        helper.make_node("GlobalAveragePool", ["f"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1, name="fc"),
    ], {"w1": inits["w1"], "fc": rng.normal(size=(10, 64)).astype(np.float32)}, ["logits"])
    assert classifier.float_tail() == []


@pytest.mark.slow
def test_ultralytics_tails_keep_the_dfl_and_box_decode_in_float_and_quantize(exported_detectors, assets, tmp_path):
    """yolov8n, yolo11n, yolov10n (untrained, exported by export.to_onnx): the DFL softmax and its fixed
    0..15 conv, the box decode and the class sigmoid stay float; every learned conv is quantized."""
    for name, result in exported_detectors.items():
        graph = load_graph(prepare(result.path, tmp_path / f"{name}.prep.onnx"))
        nodes = {n.name: n for n in graph.nodes}
        tail = graph.float_tail()
        kinds = Counter(nodes[t].op_type for t in tail)
        assert kinds["Softmax"] == kinds["Sigmoid"] == 1 and kinds["Conv"] == 1, (name, kinds)
        assert [t for t in tail if nodes[t].op_type == "Conv"][0].endswith("dfl/conv/Conv")
        assert {"Sub", "Add", "Mul", "Concat"} <= set(kinds)  # dist2bbox and the final concat
        assert sum(n.op_type == "Conv" for n in graph.nodes) - 1 > 50  # the rest stays INT8
        if name == "yolov10n":
            assert {"TopK", "GatherElements"} <= set(kinds)  # the end-to-end selection too
    photos = list_images(assets / VOC / "images")[:MIN_IMAGES]
    prepared = tmp_path / "yolov8n.prep.onnx"
    graph = load_graph(prepared)
    reader = ImageReader(photos, read_card(prepared), graph.model.graph.input[0].name)
    int8 = quantize_file(prepared, tmp_path / "yolov8n.int8.onnx", reader, exclude=graph.float_tail())
    with Detector(int8, conf=0.001) as detector:
        assert detector.detect(read_image(photos[0]).image) is not None


# -- calibration ------------------------------------------------------------------------------------
def test_calibration_counts_refuse_few_images_and_warn_below_the_recommendation(caplog):
    with pytest.raises(ExportError, match="no images"):
        check_count(0)
    with pytest.raises(ExportError, match=f"at least {MIN_IMAGES}"):
        check_count(MIN_IMAGES - 1)
    with caplog.at_level(logging.WARNING, logger="export.calibration"):
        check_count(MIN_IMAGES)
    assert f"{RECOMMENDED_IMAGES} or more are recommended" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="export.calibration"):
        check_count(RECOMMENDED_IMAGES)
    assert caplog.text == ""


def test_quantize_model_refuses_a_folder_of_too_few_photos(stamped, assets, tmp_path):
    folder = _photos(assets, 20, tmp_path / "few")  # split 50/50: 10 to calibrate
    with pytest.raises(ExportError, match=f"at least {MIN_IMAGES}"):
        quantize_model(stamped["fastestdet"], tmp_path / "out.onnx", calib_dir=folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no images"):
        quantize_model(stamped["fastestdet"], tmp_path / "out.onnx", calib_dir=tmp_path / "empty")
    assert not (tmp_path / "out.onnx").exists()


def test_split_is_deterministic_disjoint_and_order_free(assets):
    root = assets / VOC / "images"
    photos = list_images(root)
    calib, held = split_images(photos, root=root)
    assert (calib, held) == split_images(list(reversed(photos)), root=root)
    assert len(calib) == len(held) == 30 and not set(calib) & set(held)
    assert sorted(calib + held) == photos
    # not the first half of the folder: a camera's folder is in time order
    assert calib != photos[:30]


@pytest.mark.parametrize("name", ["yolox", "fastestdet"])
def test_reader_gives_the_tensors_the_device_runs(stamped, assets, tmp_path, name):
    photos = list_images(assets / VOC / "images")[:3]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    reader = ImageReader([photos[0], bad, *photos[1:]], read_card(stamped[name]), "images")
    got = [item["images"] for item in reader]
    assert len(got) == 3 and reader.failed == [str(bad)]
    assert [item["images"].shape for item in reader.rewind()] == [g.shape for g in got]
    from edge.batch.runner import BatchRunner
    from edge.batch.sources import Item

    with Detector(stamped[name]) as detector:
        runner = BatchRunner(detector)
        for photo, tensor in zip(photos, got):
            # the runner's own worker-thread step: reduced decode, then the card's preprocessing
            loaded = runner._load(Item(photo, photo.name, False))
            np.testing.assert_array_equal(loaded.tensor, tensor)
            np.testing.assert_array_equal(load_tensor(photo, detector.card), tensor)


# -- quantize_model on FastestDet (fast) --------------------------------------------------------------
@pytest.fixture(scope="module")
def fastestdet_int8(stamped, assets, tmp_path_factory):
    """Plain INT8 (decode tail in float, no search), judged against a loose budget of 10 points."""
    out = tmp_path_factory.mktemp("fastestdet_int8") / "fastestdet.int8.onnx"
    report = quantize_model(stamped["fastestdet"], out, calib_dir=assets / VOC / "images",
                            labels=assets / COCO_JSON, class_map="voc2coco", search=False, budget=10.0,
                            latency_runs=0)
    return out, report


@pytest.mark.slow
def test_fastestdet_int8_is_judged_by_the_bound_of_its_drop(fastestdet_int8):
    out, report = fastestdet_int8
    final = report["final"]
    assert final["metric"] == "map50"
    assert final["fp32"] > 40  # a working detector, scored on the held-out half
    # Judged by the bound, not the drop: several runs, 90 % either way over bootstrap resamples.
    assert set(final["drops"]) == {"kernels", "qdq", "jitter1", "jitter2", "jitter3", "jitter4"}
    assert final["drops"]["kernels"] == pytest.approx(final["drop"], abs=1e-3)
    low, high = final["interval"]
    assert low < final["drop"] < high and final["bound"] == pytest.approx(max(high, -low), abs=1e-3)
    assert final["margin"] == pytest.approx(final["bound"] - abs(final["drop"]), abs=1e-3)
    assert abs(final["drop"]) < 3.0 < final["bound"] <= 10.0  # the point drop says "fine"; the bound does not
    assert report["quantization"]["within_budget"] is True and report["quantization"]["recommendation"]["use"] == "int8"
    assert len(report["held_out_files"]) == 30 and not set(report["held_out_files"]) & set(report["calibration_files"])


@pytest.mark.slow
def test_thirty_photos_cannot_certify_one_point_for_fastestdet(stamped, assets, tmp_path):
    """Issue 14: a drop within 1.0 on the held-out photos is not a drop within 1.0 on other photos or on
    a device that rounds differently. With the default budget the search must keep in float what the
    bound asks for, and then says FP32 (FastestDet's INT8 lost 4 to 8 points on the other half)."""
    out = tmp_path / "fastestdet.int8.onnx"
    calib, held = split_images(list_images(assets / VOC / "images"), root=assets / VOC / "images")
    for folder, photos in (("calib", calib), ("val", held[:12])):  # 12 held-out photos and one jitter
        (tmp_path / folder).mkdir()                                  # run keep the search to a minute
        for photo in photos:
            shutil.copy(photo, tmp_path / folder / photo.name)
    val = tmp_path / "val"
    report = quantize_model(stamped["fastestdet"], out, calib_dir=tmp_path / "calib", val_dir=val,
                            labels=assets / COCO_JSON, class_map="voc2coco", latency_runs=0, jitter_runs=1)
    q, steps = report["quantization"], report["search"]["steps"]
    assert q["within_budget"] is True and q["drop_bound"] <= 1.0 and -1.0 <= q["drop_interval"][0]
    # Candidates whose measured drop alone fits the budget were refused on their bound ...
    assert any(abs(step["drop"]) <= 1.0 < step["bound"] for step in steps), steps
    # ... so most convolutions end in float, and the report recommends the FP32 file.
    assert q["convolutions"]["int8_share"] < 0.5 and q["recommendation"]["use"] == "fp32"


@pytest.mark.slow
def test_the_int8_card_carries_the_quantization_summary(fastestdet_int8, stamped):
    out, report = fastestdet_int8
    fp32, int8 = read_card(stamped["fastestdet"]), read_card(out)
    assert (int8.labels, int8.preprocess, int8.decoder, int8.thresholds) == (
        fp32.labels, fp32.preprocess, fp32.decoder, fp32.thresholds)
    q = int8.quantization
    assert q["method"] == "minmax" and q["per_channel"] is True and q["format"] == "QDQ"
    assert q["calibration_images"] == 30 and q["held_out_images"] == 30
    floats = q["float_nodes"]
    assert floats["tail"] == ["Softmax_262", "Sigmoid_254", "Concat_264"]
    assert floats["count"] == len(floats["tail"]) + len(floats["searched"])
    assert q["budget"] == {"metric": "map50", "max_drop": 10.0}
    assert q["drop"] == pytest.approx(q["fp32"] - q["int8"], abs=1e-2)
    assert q["drop_bound"] <= 10.0 and (q["confidence"], q["bootstrap_samples"]) == (0.9, 200)
    assert q["drop_interval"][0] <= q["drop"] <= q["drop_interval"][1]
    assert q["margin"] == pytest.approx(q["drop_bound"] - abs(q["drop"]), abs=1e-2)
    assert q["size_bytes"]["int8"] == out.stat().st_size < q["size_bytes"]["fp32"]
    assert q["onnxruntime"] and q["seconds"] > 0
    model = onnx.load(str(out))
    assert sum(n.op_type == "DequantizeLinear" for n in model.graph.node) > 50  # really INT8


@pytest.mark.slow
def test_the_bound_pairs_every_arithmetic_with_fp32_on_the_same_resamples(fastestdet_int8, stamped, assets):
    from export.evaluate import VOC_TO_COCO
    from export.measure import load_labels
    from export.objective import Objective

    out, report = fastestdet_int8
    held = [Path(f) for f in report["held_out_files"]]
    gt = load_labels(assets / COCO_JSON, assets / VOC / "images")
    objective = Objective(stamped["fastestdet"], held, assets / VOC / "images", gt=gt, class_map=VOC_TO_COCO)
    itself = objective(stamped["fastestdet"])  # FP32 against itself: every resample's drop is 0
    assert itself.drop == 0 and itself.bound == pytest.approx(0, abs=1e-9)
    score = objective(out)
    assert score.to_dict() == report["final"]
    drops = list(score.drops.values())
    assert len(set(drops)) > 2  # real, different runs, not one run repeated
    low, high = score.interval
    assert low < min(drops) <= max(drops) < high  # the spread over photos widens both ends
    assert score.bound == max(high, -low) > max(abs(d) for d in drops)
    point = Objective(stamped["fastestdet"], held, assets / VOC / "images", gt=gt, class_map=VOC_TO_COCO,
                      confidence=None)(out)
    assert point.interval is None and point.bound == pytest.approx(max(abs(d) for d in drops))
    # A gain counts like a loss: an equivalence test, not a one-sided one.
    from export.objective import Score

    assert Score("map50", 70.0, 73.0, {"kernels": -3.0, "qdq": -1.0}).bound == pytest.approx(3.0)
    assert Score("map50", 70.0, 70.5, {}, (-2.5, 1.5), 0.9).bound == pytest.approx(2.5)
    with pytest.raises(ValueError, match="confidence must be within"):
        Objective(stamped["fastestdet"], held[:2], assets / VOC / "images", confidence=1.0)
    with pytest.raises(ValueError, match="arithmetics must include 'kernels'"):
        Objective(stamped["fastestdet"], held[:2], assets / VOC / "images", arithmetics=("qdq",))


# -- the mixed-precision search on YOLOX-Nano ------------------------------------------------------------
@pytest.mark.slow
def test_sensitivity_ranks_yolox_early_layers_first_and_keeping_them_float_recovers(stamped, prepared, assets,
                                                                                    tmp_path):
    """The full search is in benchmarks/quantize_detectors.py; CI checks its two halves at small cost."""
    from export.measure import detect_files, detection_agreement
    from export.sensitivity import rank_units

    card = read_card(stamped["yolox"])
    calib, held = split_images(list_images(assets / VOC / "images"), root=assets / VOC / "images")
    graph = load_graph(prepared["yolox"])
    tail = graph.float_tail()
    reader = ImageReader(calib[:MIN_IMAGES], card, "images")
    cache = tmp_path / "calibration.json"
    plain = quantize_file(prepared["yolox"], tmp_path / "plain.onnx", reader, exclude=tail, cache=cache)
    ranking = rank_units(prepared["yolox"], plain, [load_tensor(calib[0], card)], graph, skip=set(tail))
    # YOLOX-Nano's damage is in its stem: the most harmful units sit in the first dozen nodes.
    assert all(graph.index[u.nodes[0]] < 12 for u in ranking[:3]), [u.to_dict() for u in ranking[:5]]
    kept = [n for u in ranking[:8] for n in u.nodes]
    mixed = quantize_file(prepared["yolox"], tmp_path / "mixed.onnx", None, exclude=[*tail, *kept], cache=cache)
    photos = held[:12]
    reference = detect_files(stamped["yolox"], photos, assets / VOC / "images")
    plain_ag = detection_agreement(reference, detect_files(plain, photos, assets / VOC / "images"), card.thresholds.conf)
    mixed_ag = detection_agreement(reference, detect_files(mixed, photos, assets / VOC / "images"), card.thresholds.conf)
    assert plain_ag.fraction < 0.7 and mixed_ag.fraction >= max(0.85, plain_ag.fraction + 0.25), (plain_ag, mixed_ag)


def test_search_stops_at_the_smallest_prefix_within_budget():
    from export.objective import Score
    from export.sensitivity import Unit, search

    units = [Unit(f"t{i}", "activation", (f"n{i}",), float(i)) for i in range(20)]
    calls = []

    def quantize(nodes, tag):
        calls.append(len(nodes))
        return Path(str(len(nodes)))

    def objective(path):  # the drop falls below 1.0 once 5 units are float
        k = int(path.name)
        return Score("map50", 80.0, 80.0 - (0.5 if k >= 5 else 10.0))

    result = search(units, quantize=quantize, objective=objective, budget=1.0, max_seconds=60)
    assert result.reached and result.stopped == "budget"
    assert [u.name for u in result.units] == ["t0", "t1", "t2", "t3", "t4"]
    assert calls == [1, 2, 4, 8, 6, 5]  # doubling, then bisection back to 5

    never = search(units, quantize=quantize, objective=lambda p: Score("map50", 80.0, 70.0 + int(p.name) / 10),
                   budget=1.0, max_seconds=60)
    assert not never.reached and never.stopped == "exhausted"
    assert len(never.units) == 20 and never.score.drop == pytest.approx(8.0)


# -- a float classifier ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def float_classifier(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from edge.inference.stamp import stamp_file

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10).eval()
    folder = tmp_path_factory.mktemp("classifier")
    raw = folder / "raw.onnx"
    with warnings.catch_warnings():
        # The TorchScript exporter announces its own deprecation; nothing else may warn.
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=r"(You are using the legacy TorchScript|The feature will be removed)")
        torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(raw), opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamo=False)
    dst = folder / "mobilenet_v3_small.onnx"
    stamp_file(raw, dst, preset="imagenet", labels=[f"class{i}" for i in range(10)])
    return dst


@pytest.mark.slow
def test_a_classifier_quantizes_and_is_judged_by_top1_agreement(float_classifier, assets, tmp_path):
    from edge.inference.classifier import Classifier

    out = tmp_path / "cls.int8.onnx"
    report = quantize_model(float_classifier, out, calib_dir=assets / VOC / "images", budget=100.0)
    assert report["final"]["metric"] == "top1" and report["search"] is None
    assert report["quantization"]["float_nodes"]["tail"] == []  # the graph ends in the classifier's Gemm
    with Classifier(out) as classifier:
        assert len(classifier.classify(read_image(list_images(assets / VOC / "images")[0]).image)) == 5


# -- the command ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_quantize_writes_the_model_and_its_report(stamped, assets, tmp_path):
    out = tmp_path / "fd.int8.onnx"
    result = CliRunner().invoke(app, [
        "export", "quantize", str(stamped["fastestdet"]), "-o", str(out), "--calib", str(assets / VOC / "images"),
        "--gt-labels", str(assets / COCO_JSON), "--class-map", "voc2coco", "--no-search", "--budget", "50", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["output"] == str(out) and out.is_file()
    assert json.loads((tmp_path / "fd.int8.onnx.report.json").read_text())["final"] == report["final"]
    assert report["search"] is None and report["quantization"]["within_budget"] is True
    # FastestDet with only its decode tail in float: every convolution runs in INT8, ship INT8.
    convs = report["quantization"]["convolutions"]
    assert convs["total"] > 10 and convs["float"] == 0 and convs["int8_share"] == 1.0
    assert report["quantization"]["recommendation"]["use"] == "int8"

    strict = CliRunner().invoke(app, [
        "export", "quantize", str(stamped["fastestdet"]), "-o", str(tmp_path / "strict.onnx"),
        "--calib", str(assets / VOC / "images"), "--no-search", "--budget", "0"])
    assert strict.exit_code in (0, 1), strict.output
    assert "kept in float: 3 decode-tail nodes" in strict.stdout and "kB" in strict.stdout
    assert "model-only latency on this machine (" in strict.stdout and "INT8/FP32 x" in strict.stdout
    if strict.exit_code == 1:
        assert "exceeds the budget" in strict.stderr and "the drop's bound" in strict.stderr
        assert "recommendation: FP32: the INT8 file misses the accuracy budget" in strict.stdout
    else:
        assert "recommendation: INT8: within the budget with" in strict.stdout


def test_cli_quantize_reports_errors_in_one_line(stamped, assets, tmp_path, monkeypatch):
    runner = CliRunner()
    few = _photos(assets, 8, tmp_path / "few")
    result = runner.invoke(app, ["export", "quantize", str(stamped["fastestdet"]), "-o", str(tmp_path / "o.onnx"),
                                 "--calib", str(few)])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "at least 16" in result.stderr
    result = runner.invoke(app, ["export", "quantize", str(stamped["fastestdet"]), "-o", str(tmp_path / "o.onnx"),
                                 "--calib", str(few), "--method", "median"])
    assert result.exit_code == 2 and "--method must be one of minmax, percentile, entropy" in result.stderr
    result = runner.invoke(app, ["export", "quantize", str(stamped["fastestdet"]), "-o", str(tmp_path / "o.onnx"),
                                 "--calib", str(few), "--types", "s4s4"])
    assert result.exit_code == 2 and "--types must be one of auto, u8s8, u8u8, s8s8" in result.stderr

    import export.quantize

    def missing(*args, **kwargs):
        raise MissingExtraError("onnx is not installed: pip install 'wildedge[export]'")

    monkeypatch.setattr(export.quantize, "quantize_model", missing)
    result = runner.invoke(app, ["export", "quantize", str(stamped["fastestdet"]), "-o", str(tmp_path / "o.onnx"),
                                 "--calib", str(few)])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: onnx is not installed: pip install 'wildedge[export]'"


# -- --target: integer types for the device, and what the host's measurement means for it --------------
NO_VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f\n"
VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n"


@pytest.mark.parametrize("target", ["pi4", "pi5", "zero2w", "arm64"])
@pytest.mark.parametrize(("arch", "cpuinfo"), [("x86_64", NO_VNNI), ("x86_64", VNNI), ("aarch64", "")])
def test_an_arm_target_gets_u8s8_whatever_the_host(target, arch, cpuinfo):
    from export.quantize import resolve_types

    types, reason = resolve_types("auto", target=target, cpuinfo=cpuinfo, arch=arch)
    assert types == "u8s8" and target in reason
    assert resolve_types("u8u8", target=target, cpuinfo=cpuinfo, arch=arch) == ("u8u8", "chosen")


def test_host_target_keeps_the_host_choice_and_bad_targets_are_refused():
    from export.quantize import resolve_types

    assert resolve_types("auto", target="host", cpuinfo=NO_VNNI, arch="x86_64")[0] == "u8u8"
    assert resolve_types("auto", target="host", cpuinfo=VNNI, arch="x86_64")[0] == "u8s8"
    with pytest.raises(ValueError, match="target must be one of host, pi4, pi5, zero2w, arm64"):
        resolve_types("auto", target="pi3")


def test_the_report_says_what_the_host_measurement_means_for_the_target():
    from export.quantize import measured_on

    no_vnni = measured_on("u8s8", "pi4", cpuinfo=NO_VNNI, arch="x86_64")
    assert "without VNNI" in no_vnni and "session.x64quantprecision" in no_vnni and "exact, as on the pi4" in no_vnni
    assert "bootstrap" in no_vnni and "not measured on it" in no_vnni
    exact_x86 = measured_on("u8s8", "pi4", cpuinfo=VNNI, arch="x86_64")
    assert "with VNNI" in exact_x86 and "exact" in exact_x86 and "not measured on it" in exact_x86
    assert "x64quantprecision" not in measured_on("u8u8", "pi4", cpuinfo=NO_VNNI, arch="x86_64")
    assert "same onnxruntime kernels" in measured_on("u8s8", "pi5", arch="aarch64")
    assert "the target itself" in measured_on("u8u8", "host", cpuinfo=NO_VNNI, arch="x86_64")


@pytest.mark.parametrize("command", [["quantize"], ["verify"], ["detector"], ["classifier"]])
def test_cli_help_lists_the_targets(command):
    from export.quantize import TARGETS

    result = CliRunner().invoke(app, ["export", *command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "--target" in text
    assert "host (this machine), pi4, pi5, zero2w (64-bit OS) or arm64" in text
    assert list(TARGETS) == ["host", "pi4", "pi5", "zero2w", "arm64"]


@pytest.mark.slow
def test_cli_quantize_for_pi4_on_an_x86_without_vnni_is_u8s8_and_says_so(stamped, assets, tmp_path, monkeypatch):
    import export.quantize

    # This machine may have VNNI: the probe stands in for a workstation without it.
    monkeypatch.setattr(export.quantize, "host_cpu", lambda **_: ("x86_64", False))
    out = tmp_path / "fd.pi4.onnx"
    result = CliRunner().invoke(app, [
        "export", "quantize", str(stamped["fastestdet"]), "-o", str(out), "--calib", str(assets / VOC / "images"),
        "--gt-labels", str(assets / COCO_JSON), "--class-map", "voc2coco", "--no-search", "--budget", "50",
        "--target", "pi4"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "target pi4, Raspberry Pi 4 (Cortex-A72, arm64): u8s8" in result.stdout
    assert "accuracy measured on this x86 host without VNNI, its u8s8 products made exact" in result.stdout
    summary = json.loads((tmp_path / "fd.pi4.onnx.report.json").read_text())["quantization"]
    assert (summary["target"], summary["types"]) == ("pi4", "u8s8")
    assert "session.x64quantprecision" in summary["measured_on"]
    assert read_card(out).quantization["target"] == "pi4"  # the file says what it was built for
    model = onnx.load(str(out))
    weights = {i.name: i.data_type for i in model.graph.initializer}
    conv_weights = [weights[n.input[0]] for n in model.graph.node
                    if n.op_type == "DequantizeLinear" and weights.get(n.input[0]) in (TensorProto.INT8,
                                                                                       TensorProto.UINT8)]
    assert TensorProto.INT8 in conv_weights  # s8 weights: u8s8, not u8u8

    few = _photos(assets, 4, tmp_path / "few")
    checked = CliRunner().invoke(app, ["export", "verify", str(stamped["fastestdet"]), str(out), "--images", str(few),
                                       "--runs", "2", "--target", "pi4", "--json"])
    assert checked.exit_code == 0, checked.output
    data = json.loads(checked.stdout)
    assert data["target"] == "pi4" and "x64quantprecision" in data["measured_on"]
    bad = CliRunner().invoke(app, ["export", "verify", str(stamped["fastestdet"]), str(out), "--images", str(few),
                                   "--target", "pi3"])
    assert bad.exit_code == 2 and "--target must be one of host, pi4, pi5, zero2w, arm64" in bad.stderr


def test_export_refuses_a_target_without_int8_or_an_unknown_one(tmp_path):
    from export.cmd_export import export_model

    with pytest.raises(ValueError, match="--target is an INT8 option: add --int8"):
        export_model("detect", "model.onnx", tmp_path / "o.onnx", target="pi4")
    with pytest.raises(ValueError, match="--target must be one of host, pi4, pi5, zero2w, arm64"):
        export_model("detect", "model.onnx", tmp_path / "o.onnx", int8=True, calib=tmp_path, target="pi3")


def test_a_model_that_needs_most_convolutions_in_float_is_recommended_as_fp32():
    """Issue 14, item 4: within the budget but with under half the convolutions in INT8 -> FP32."""
    from onnx import TensorProto, helper

    from export.graph import Graph
    from export.quantize import conv_share, recommendation

    nodes = [helper.make_node("Conv", [f"x{i}", "w"], [f"x{i + 1}"], name=f"conv{i}") for i in range(4)]
    nodes.append(helper.make_node("Relu", ["x4"], ["y"], name="relu"))
    graph = Graph(helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])])))
    three = conv_share(graph, ["conv0", "conv1", "conv2", "relu"])
    assert three == {"total": 4, "float": 3, "int8": 1, "int8_share": 0.25}
    advice = recommendation(within=True, convs=three)
    assert advice["use"] == "fp32" and "3 of 4 convolutions kept in float (25% in INT8" in advice["why"]
    two = conv_share(graph, ["conv0", "conv1"])
    assert recommendation(within=True, convs=two)["use"] == "int8"  # half in INT8 is enough
    assert recommendation(within=False, convs=two)["use"] == "fp32"

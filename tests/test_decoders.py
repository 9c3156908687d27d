"""Each decoder on raw outputs built by hand with the family's inverse encoding, and NMS."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.errors import ModelError
from edge.inference.decoders import DECODERS, DecodeContext, RawDetections, get_decoder
from edge.inference.nms import nms
from edge.inference.presets import PRESETS


def _ctx(width: int, height: int, nc: int, conf: float = 0.25, **params) -> DecodeContext:
    return DecodeContext((width, height), nc, conf, params)


def _sorted(raw: RawDetections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(-raw.scores, kind="stable")
    return raw.boxes[order], raw.scores[order], raw.class_ids[order]


def _check(raw: RawDetections, boxes, scores, classes, *, atol: float = 1e-3) -> None:
    """``raw`` holds exactly these detections (any order); ``boxes`` xyxy."""
    assert len(raw) == len(scores)
    assert raw.boxes.dtype == np.float32 and raw.scores.dtype == np.float32
    assert raw.boxes.shape == (len(scores), 4)
    got_boxes, got_scores, got_classes = _sorted(raw)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    np.testing.assert_allclose(got_boxes, np.asarray(boxes, np.float64)[order], atol=atol)
    np.testing.assert_allclose(got_scores, np.asarray(scores, np.float64)[order], rtol=1e-5)
    np.testing.assert_array_equal(got_classes, np.asarray(classes)[order])


def _xyxy(cx, cy, w, h):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_registry_has_every_family():
    assert set(DECODERS) == {"ultralytics", "yolov5", "e2e", "rtdetr", "yolox", "nanodet", "fastestdet"}
    for spec in PRESETS.values():
        if spec["task"] == "detect":
            assert get_decoder(spec["decoder"]["name"]) is DECODERS[spec["decoder"]["name"]]
    with pytest.raises(ValueError, match="unknown decoder 'yolov99'.*fastestdet"):
        get_decoder("yolov99")


# --- ultralytics [1, 4+nc, N] --------------------------------------------------------------


def test_ultralytics():
    nc, n = 3, 20
    out = np.zeros((1, 4 + nc, n), np.float32)
    out[0, 4:, :] = 0.01
    objects = [((100, 80, 40, 20), 2, 0.9), ((300, 200, 60, 100), 0, 0.5), ((10, 5, 8, 6), 1, 0.25)]
    for column, ((cx, cy, w, h), cls, score) in zip((3, 11, 19), objects):
        out[0, :4, column] = (cx, cy, w, h)
        out[0, 4 + cls, column] = score
        out[0, 4 + (cls + 1) % nc, column] = score / 2  # a weaker second class
    out[0, :4, 7] = (50, 50, 10, 10)
    out[0, 4:, 7] = 0.2  # below conf
    raw = get_decoder("ultralytics")({"output0": out}, _ctx(640, 480, nc))
    assert not raw.nms_done
    _check(raw, [_xyxy(*b) for b, _, _ in objects], [s for _, _, s in objects], [c for _, c, _ in objects])


def test_ultralytics_nothing_above_conf():
    out = np.full((1, 6, 10), 0.1, np.float32)
    raw = get_decoder("ultralytics")({"o": out}, _ctx(64, 64, 2))
    assert len(raw) == 0 and raw.boxes.shape == (0, 4)


# --- yolov5 [1, N, 5+nc], conf = obj * cls -------------------------------------------------


def test_yolov5():
    nc = 2
    out = np.zeros((1, 12, 5 + nc), np.float32)
    rows = {
        2: ((200, 150, 50, 80), 0.9, (0.1, 0.8)),  # 0.72 class 1
        5: ((40, 30, 20, 20), 0.5, (0.6, 0.4)),  # 0.30 class 0
        8: ((10, 10, 4, 4), 0.9, (0.2, 0.2)),  # 0.18: high objectness alone is not enough
        9: ((10, 10, 4, 4), 0.2, (1.0, 1.0)),  # 0.20: a sure class with low objectness is not either
    }
    for row, (box, obj, cls) in rows.items():
        out[0, row, :4] = box
        out[0, row, 4] = obj
        out[0, row, 5:] = cls
    raw = get_decoder("yolov5")({"output": out}, _ctx(640, 640, nc))
    _check(raw, [_xyxy(200, 150, 50, 80), _xyxy(40, 30, 20, 20)], [0.72, 0.30], [1, 0])


# --- e2e [1, K, 6] ------------------------------------------------------------------------


def test_e2e():
    out = np.zeros((1, 300, 6), np.float32)  # padded with zero rows, as YOLOv10 exports are
    out[0, 0] = (10, 20, 110, 220, 0.95, 4)
    out[0, 1] = (12, 22, 108, 218, 0.90, 4)  # overlapping: NMS already happened inside the model
    out[0, 2] = (300, 300, 320, 340, 0.30, 0)
    out[0, 3] = (1, 1, 2, 2, 0.2, 1)
    raw = get_decoder("e2e")({"output0": out}, _ctx(640, 640, 5))
    assert raw.nms_done
    _check(raw, [(10, 20, 110, 220), (12, 22, 108, 218), (300, 300, 320, 340)], [0.95, 0.90, 0.30], [4, 4, 0])
    kept = nms(raw, iou=0.45, conf=0.25)
    assert len(kept) == 3, "a model with NMS inside is not suppressed again"


def test_e2e_class_outside_labels():
    out = np.zeros((1, 4, 6), np.float32)
    out[0, 0] = (0, 0, 10, 10, 0.9, 7)
    with pytest.raises(ModelError, match="class id 7 is outside the card's 5 labels"):
        get_decoder("e2e")({"output0": out}, _ctx(64, 64, 5))


# --- rtdetr [1, K, 4+nc], normalised cxcywh ---------------------------------------------------


def test_rtdetr():
    nc, width, height = 3, 640, 480
    out = np.zeros((1, 30, 4 + nc), np.float32)
    objects = [((320, 240, 64, 48), 1, 0.8), ((100, 400, 20, 60), 2, 0.4)]
    for row, ((cx, cy, w, h), cls, score) in zip((4, 17), objects):
        out[0, row, :4] = (cx / width, cy / height, w / width, h / height)
        out[0, row, 4 + cls] = score
    out[0, 20, :4] = (0.5, 0.5, 0.1, 0.1)
    out[0, 20, 4:] = 0.2
    raw = get_decoder("rtdetr")({"pred": out}, _ctx(width, height, nc))
    assert raw.nms_done
    _check(raw, [_xyxy(*b) for b, _, _ in objects], [0.8, 0.4], [1, 2])


# --- yolox [1, N, 5+nc] on a per-level grid -------------------------------------------------


def _yolox_rows(width: int, height: int, strides=(8, 16, 32)) -> list[tuple[int, int, int]]:
    """(stride, gx, gy) of every row, in the order YOLOX's demo_postprocess builds its grid."""
    rows = []
    for s in strides:
        rows += [(s, gx, gy) for gy in range(height // s) for gx in range(width // s)]
    return rows


def _yolox_encode(out, rows, stride, cx, cy, w, h, obj, cls, score):
    gx, gy = int(cx // stride), int(cy // stride)
    row = rows.index((stride, gx, gy))
    out[0, row, :4] = (cx / stride - gx, cy / stride - gy, math.log(w / stride), math.log(h / stride))
    out[0, row, 4] = obj
    out[0, row, 5 + cls] = score


@pytest.mark.parametrize("size", [(416, 416), (96, 64), (64, 160)])
def test_yolox(size):
    width, height = size
    rows = _yolox_rows(width, height)
    nc = 4
    out = np.zeros((1, len(rows), 5 + nc), np.float32)
    objects = [
        (8, width - 13.0, height - 5.0, 20.0, 12.0, 0.9, 3, 0.9),  # bottom-right cell of stride 8
        (16, 30.0, height / 2, 40.0, 33.0, 0.8, 1, 0.5),
        (32, width / 2 + 3, 40.0, 90.0, 70.0, 0.6, 0, 1.0),
    ]
    for obj in objects:
        _yolox_encode(out, rows, *obj)
    _yolox_encode(out, rows, 8, 20.0, 20.0, 10.0, 10.0, 0.9, 2, 0.2)  # obj*cls 0.18 < conf
    raw = get_decoder("yolox")({"output": out}, _ctx(width, height, nc, conf=0.3, strides=[8, 16, 32]))
    _check(raw, [_xyxy(cx, cy, w, h) for _, cx, cy, w, h, *_ in objects], [0.81, 0.4, 0.6], [3, 1, 0])


def test_yolox_wrong_input_size():
    out = np.zeros((1, 3549, 85), np.float32)
    with pytest.raises(ModelError, match=r"3549 predictions.*320x320 input give 2100.*input size"):
        get_decoder("yolox")({"output": out}, _ctx(320, 320, 80))


# --- nanodet: six named outputs ----------------------------------------------------------------


def _dist_logits(distance_bins: float, bins: int = 8) -> np.ndarray:
    """Logits whose softmax expectation over 0..bins-1 is ``distance_bins``."""
    low = int(math.floor(distance_bins))
    frac = distance_bins - low
    logits = np.full(bins, -1e4, np.float32)
    if frac == 0:
        logits[low] = 0.0
    else:
        logits[low], logits[low + 1] = math.log(1 - frac), math.log(frac)
    return logits


def _nanodet_outputs(width, height, nc, objects, strides=(8, 16, 32), reg_max=7):
    """Outputs named like the NanoDet export; objects are (stride, gx, gy, (l, t, r, b) px, cls, score)."""
    outputs = {}
    for s in strides:
        gw, gh = -(-width // s), -(-height // s)
        outputs[f"cls_pred_stride_{s}"] = np.full((1, gw * gh, nc), 0.01, np.float32)
        dis = np.tile(_dist_logits(1.0, reg_max + 1), (1, gw * gh, 4))
        outputs[f"dis_pred_stride_{s}"] = dis.astype(np.float32)
    boxes = []
    for s, gx, gy, ltrb, cls, score in objects:
        gw = -(-width // s)
        anchor = gy * gw + gx
        outputs[f"cls_pred_stride_{s}"][0, anchor, cls] = score
        logits = [_dist_logits(d / s, reg_max + 1) for d in ltrb]
        outputs[f"dis_pred_stride_{s}"][0, anchor] = np.concatenate(logits)
        cx, cy = gx * s + 0.5 * (s - 1), gy * s + 0.5 * (s - 1)
        l, t, r, b = ltrb
        boxes.append([max(cx - l, 0), max(cy - t, 0), min(cx + r, width), min(cy + b, height)])
    # The graph's own order: all cls first, then all dis.
    order = [f"cls_pred_stride_{s}" for s in strides] + [f"dis_pred_stride_{s}" for s in strides]
    return {k: outputs[k] for k in order}, boxes


NANODET_OBJECTS = [
    (8, 3, 2, (10.0, 4.0, 20.5, 8.0), 5, 0.9),
    (16, 1, 1, (30.0, 12.0, 17.6, 40.0), 0, 0.6),
    (32, 1, 0, (50.0, 8.0, 100.0, 64.0), 2, 0.4),  # runs off the right and bottom edges: clipped
]


@pytest.mark.parametrize("size", [(320, 320), (96, 64), (100, 70)])
def test_nanodet(size):
    width, height = size
    outputs, boxes = _nanodet_outputs(width, height, 6, NANODET_OBJECTS)
    raw = get_decoder("nanodet")(outputs, _ctx(width, height, 6, conf=0.35, strides=[8, 16, 32], reg_max=7))
    _check(raw, boxes, [0.9, 0.6, 0.4], [5, 0, 2])
    assert (raw.boxes >= 0).all() and (raw.boxes[:, 2] <= width).all() and (raw.boxes[:, 3] <= height).all()


def test_nanodet_pairs_by_shape_when_names_differ():
    outputs, boxes = _nanodet_outputs(96, 64, 6, NANODET_OBJECTS)
    renamed = {f"output_{i}": array for i, array in enumerate(outputs.values())}
    shuffled = {f"output_{i}": renamed[f"output_{i}"] for i in (4, 0, 5, 2, 3, 1)}
    raw = get_decoder("nanodet")(shuffled, _ctx(96, 64, 6, conf=0.35))
    _check(raw, boxes, [0.9, 0.6, 0.4], [5, 0, 2])


def test_nanodet_custom_output_names():
    outputs, boxes = _nanodet_outputs(96, 64, 6, NANODET_OBJECTS)
    named = {k.replace("cls_pred_stride_", "scores_").replace("dis_pred_stride_", "boxes_"): v
             for k, v in outputs.items()}
    ctx = _ctx(96, 64, 6, conf=0.35, cls_name="scores_{stride}", dis_name="boxes_{stride}")
    _check(get_decoder("nanodet")(named, ctx), boxes, [0.9, 0.6, 0.4], [5, 0, 2])


def test_nanodet_errors():
    decode = get_decoder("nanodet")
    outputs, _ = _nanodet_outputs(96, 64, 6, NANODET_OBJECTS)
    with pytest.raises(ModelError, match="6 classes but the card has 80 labels"):
        decode(outputs, _ctx(96, 64, 80))
    renamed = {f"o{i}": a for i, a in enumerate(outputs.values())}
    with pytest.raises(ModelError, match=r"cls_pred_stride_8.*dis_pred_stride_8.*\[1,N,80\]"):
        decode(renamed, _ctx(96, 64, 80))
    with pytest.raises(ModelError, match=r"nanodet decoder expects outputs"):
        decode({"output": np.zeros((1, 100, 85), np.float32)}, _ctx(96, 64, 80))
    with pytest.raises(ModelError, match=r"stride 8 has 96 anchors, a 320x320 input gives 1600"):
        decode(outputs, _ctx(320, 320, 6))


@pytest.mark.parametrize("reg_max", [3, 5, 9, 15])
def test_nanodet_reg_max_disagreeing_with_the_graph(reg_max):
    # The graph has 4 x 8 bins (reg_max 7); a card saying otherwise must fail clearly, not reshape garbage.
    outputs, _ = _nanodet_outputs(96, 64, 6, NANODET_OBJECTS)
    with pytest.raises(ModelError, match="reg_max"):
        get_decoder("nanodet")(outputs, _ctx(96, 64, 6, conf=0.35, reg_max=reg_max))


# --- fastestdet [1, 5+nc, H, W] -------------------------------------------------------------


def _fastestdet_encode(out, width, height, cx, cy, w, h, obj, cls, prob):
    grid_h, grid_w = out.shape[2:]
    fx, fy = cx / width * grid_w, cy / height * grid_h
    gx, gy = int(fx), int(fy)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    out[0, :5, gy, gx] = (obj, math.atanh(fx - gx), math.atanh(fy - gy), logit(w / width), logit(h / height))
    out[0, 5 + cls, gy, gx] = prob


@pytest.mark.parametrize(("size", "grid"), [((352, 352), (22, 22)), ((96, 64), (4, 6))])
def test_fastestdet(size, grid):
    width, height = size
    nc = 3
    out = np.zeros((1, 5 + nc, *grid), np.float32)
    objects = [
        (width * 0.71, height * 0.33, width * 0.2, height * 0.5, 0.9, 2, 0.8),
        (width * 0.1, height * 0.9, width * 0.05, height * 0.1, 0.7, 0, 0.95),
        (width * 0.5, height * 0.5, width * 0.9, height * 0.9, 0.8, 1, 0.3),
    ]
    for obj in objects:
        _fastestdet_encode(out, width, height, *obj)
    _fastestdet_encode(out, width, height, width * 0.3, height * 0.6, 10, 10, 0.2, 1, 1.0)  # 0.38 < conf
    raw = get_decoder("fastestdet")({"758": out}, _ctx(width, height, nc, conf=0.5))
    want = [(obj**0.6 * p**0.4, c, _xyxy(cx, cy, w, h)) for cx, cy, w, h, obj, c, p in objects]
    want = [x for x in want if x[0] >= 0.5]
    assert len(want) == 3
    _check(raw, [b for _, _, b in want], [s for s, _, _ in want], [c for _, c, _ in want], atol=1e-2)


def test_fastestdet_obj_exponent_param():
    out = np.zeros((1, 6, 2, 2), np.float32)
    _fastestdet_encode(out, 64, 64, 20, 20, 10, 10, 0.5, 0, 0.9)
    raw = get_decoder("fastestdet")({"o": out}, _ctx(64, 64, 1, conf=0.1, obj_exponent=1.0))
    assert raw.scores == pytest.approx([0.5])


# --- mismatches raise ModelError with a helpful message ----------------------------------


@pytest.mark.parametrize(
    ("decoder", "shape", "message"),
    [
        ("ultralytics", (1, 84, 8400, 1), r"ultralytics decoder expects an output of layout \[1, 4\+nc, N\]"),
        ("ultralytics", (2, 84, 8400), r"batch 1, got shape \[2, 84, 8400\]"),
        ("yolov5", (1, 85, 20, 20), r"yolov5 decoder expects .*\[1, N, 5\+nc\]"),
        ("e2e", (1, 300), r"e2e decoder expects .*\[1, K, 6\]"),
        ("e2e", (1, 300, 7), r"e2e decoder expects \[1, K, 6\] rows, got shape \[1, 300, 7\]"),
        ("rtdetr", (1, 300), r"rtdetr decoder expects"),
        ("yolox", (1, 85, 22, 22), r"yolox decoder expects .*is the card's decoder right"),
        ("fastestdet", (1, 3549, 85), r"fastestdet decoder expects .*\[1, 5\+nc, H, W\]"),
    ],
)
def test_shape_mismatch(decoder, shape, message):
    with pytest.raises(ModelError, match=message):
        get_decoder(decoder)({"out": np.zeros(shape, np.float32)}, _ctx(352, 352, 80))


@pytest.mark.parametrize(
    ("decoder", "shape", "found"),
    [
        ("ultralytics", (1, 4 + 79, 100), 79),
        ("yolov5", (1, 100, 5 + 81), 81),
        ("rtdetr", (1, 300, 4 + 1), 1),
        ("yolox", (1, 2100, 5 + 20), 20),
        ("fastestdet", (1, 5 + 90, 22, 22), 90),
    ],
)
def test_class_count_mismatch(decoder, shape, found):
    with pytest.raises(ModelError, match=f"model outputs {found} classes but the card has 80 labels"):
        get_decoder(decoder)({"out": np.zeros(shape, np.float32)}, _ctx(320, 320, 80))


def test_no_outputs():
    for name in ("ultralytics", "yolov5", "e2e", "rtdetr", "yolox", "fastestdet"):
        with pytest.raises(ModelError, match="no outputs"):
            get_decoder(name)({}, _ctx(320, 320, 80))


# --- NMS ----------------------------------------------------------------------------------


def _raw(boxes, scores, classes, nms_done=False) -> RawDetections:
    return RawDetections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                         np.array(classes, np.int32), nms_done)


def test_nms_class_aware_keeps_other_classes():
    raw = _raw([(0, 0, 100, 100), (5, 5, 100, 100), (2, 0, 100, 100)], [0.9, 0.8, 0.7], [0, 1, 0])
    kept = nms(raw, iou=0.5, conf=0.25)
    _check(kept, [(0, 0, 100, 100), (5, 5, 100, 100)], [0.9, 0.8], [0, 1])
    assert kept.nms_done


def test_nms_class_agnostic_drops_other_classes():
    raw = _raw([(0, 0, 100, 100), (5, 5, 100, 100), (200, 200, 250, 250)], [0.9, 0.8, 0.7], [0, 1, 1])
    kept = nms(raw, iou=0.5, conf=0.25, class_agnostic=True)
    _check(kept, [(0, 0, 100, 100), (200, 200, 250, 250)], [0.9, 0.7], [0, 1])


def test_nms_iou_threshold_is_respected():
    # IoU of these two is 50 / 150 = 1/3.
    raw = _raw([(0, 0, 100, 100), (50, 0, 150, 100)], [0.9, 0.8], [0, 0])
    assert len(nms(raw, iou=0.4, conf=0.1)) == 2
    assert len(nms(raw, iou=0.3, conf=0.1)) == 1


def test_nms_max_detections_cuts_after_nms():
    # Cutting to 2 before NMS would keep A and its duplicate, then NMS would leave only A.
    a, dup, b, c = (0, 0, 50, 50), (1, 1, 50, 50), (100, 100, 150, 150), (200, 0, 250, 50)
    raw = _raw([dup, c, a, b], [0.85, 0.7, 0.9, 0.8], [0, 0, 0, 0])
    for agnostic in (False, True):
        kept = nms(raw, iou=0.5, conf=0.1, class_agnostic=agnostic, max_detections=2)
        np.testing.assert_allclose(kept.boxes, [a, b])
        np.testing.assert_allclose(kept.scores, [0.9, 0.8])


def test_nms_results_sorted_by_score():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1000, (60, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 20, (60, 2))], axis=1)  # small, mostly disjoint
    scores = rng.uniform(0.3, 1.0, 60)
    raw = _raw(boxes, scores, rng.integers(0, 3, 60))
    for agnostic in (False, True):
        kept = nms(raw, iou=0.5, conf=0.25, class_agnostic=agnostic)
        assert len(kept) >= 50
        assert (np.diff(kept.scores) <= 0).all()


def test_nms_conf_is_inclusive_like_the_decoders():
    raw = _raw([(0, 0, 10, 10), (50, 50, 60, 60), (80, 80, 90, 90)], [0.5, 0.25, 0.2499], [0, 1, 1])
    for agnostic in (False, True):
        kept = nms(raw, iou=0.5, conf=0.25, class_agnostic=agnostic)
        np.testing.assert_allclose(kept.scores, [0.5, 0.25])
    kept = nms(_raw(raw.boxes, raw.scores, raw.class_ids, nms_done=True), iou=0.5, conf=0.25)
    np.testing.assert_allclose(kept.scores, [0.5, 0.25])


def test_nms_class_aware_with_boxes_outside_the_frame():
    # Boxes partly left of / above the input (negative coordinates) are normal decoder output.
    # Two classes must never suppress each other, wherever their boxes lie.
    raw = _raw([(50, 50, 100, 100), (-51, -51, -1, -1), (-400, -300, 10, 5)], [0.9, 0.8, 0.7], [0, 1, 2])
    kept = nms(raw, iou=0.45, conf=0.25)
    _check(kept, raw.boxes, [0.9, 0.8, 0.7], [0, 1, 2])


def test_nms_done_only_filters_sorts_and_cuts():
    raw = _raw([(0, 0, 10, 10), (0, 0, 10, 10), (0, 0, 10, 10)], [0.3, 0.9, 0.1], [0, 0, 0], nms_done=True)
    kept = nms(raw, iou=0.5, conf=0.2, max_detections=5)
    np.testing.assert_allclose(kept.scores, [0.9, 0.3])
    assert len(nms(raw, iou=0.5, conf=0.2, max_detections=1)) == 1


def test_nms_empty():
    assert len(nms(RawDetections.empty(), iou=0.5, conf=0.25)) == 0
    kept = nms(_raw([(0, 0, 1, 1)], [0.1], [0]), iou=0.5, conf=0.25)
    assert len(kept) == 0 and kept.boxes.shape == (0, 4)

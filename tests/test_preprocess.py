"""Preprocessing against a plain-numpy reference: geometry, colour order, mean/std, layout, mapping back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.inference.card import Preprocess
from edge.inference.exact_resize import resize_area
from edge.inference.preprocess import Transform, preprocess, resize_for_model, to_tensor
from edge.inference.presets import PRESETS

# Bit-exact resampling (issue 14): "linear" is INTER_LINEAR_EXACT, "area" the integer resize_area
# (tests/test_exact_resize.py holds it to cv2.INTER_AREA within 1).
INTERP = {"linear": cv2.INTER_LINEAR_EXACT, "nearest": cv2.INTER_NEAREST, "cubic": cv2.INTER_CUBIC}


def _resample(image: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    if interpolation == "area":
        return resize_area(image, *size)
    return cv2.resize(image, size, interpolation=INTERP[interpolation])


def reference(image: np.ndarray, spec: Preprocess, resample=_resample) -> np.ndarray:
    """What each family's demo code does, written out step by step (cv2.resize only for resampling)."""
    height, width = image.shape[:2]
    tw, th = spec.input_size
    interp = spec.interpolation
    if spec.resize == "stretch":
        canvas = resample(image, (tw, th), interp)
    elif spec.resize == "centre_crop":
        # Resize so the image covers (tw, th) / crop_ratio, then cut the centre.
        r = max(tw / width, th / height) / spec.crop_ratio
        nw, nh = round(width * r), round(height * r)
        resized = resample(image, (nw, nh), interp)
        top, left = (nh - th) // 2, (nw - tw) // 2
        canvas = resized[top : top + th, left : left + tw]
    else:
        r = min(tw / width, th / height)
        if spec.size_rounding == "floor":
            nw, nh = int(width * r), int(height * r)
        else:
            nw, nh = round(width * r), round(height * r)
        resized = resample(image, (nw, nh), interp)
        canvas = np.full((th, tw, 3), spec.pad_value, np.uint8)
        top, left = (0, 0) if spec.resize == "letterbox_topleft" else ((th - nh) // 2, (tw - nw) // 2)
        canvas[top : top + nh, left : left + nw] = resized
    pixels = canvas.astype(np.float64)
    if spec.colour == "RGB":
        pixels = pixels[:, :, ::-1]
    pixels = (pixels * spec.scale - np.array(spec.mean)) / np.array(spec.std)
    if spec.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return pixels[None].astype(np.float32)


def _spec(preset: str, size=(416, 416), **changes) -> Preprocess:
    return Preprocess(**{**PRESETS[preset]["preprocess"], "input_size": size, **changes})


@pytest.fixture(scope="module")
def bear(assets) -> np.ndarray:
    image = cv2.imread(str(assets / "coco_val2017_animal_samples" / "000000000285.jpg"))
    assert image is not None and image.shape == (640, 586, 3)
    return image


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == np.float32 and got.shape == want.shape
    tol = 1e-5 * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=tol)


PRESET_SPECS = [
    ("yolox", (416, 416)),
    ("nanodet", (320, 320)),
    ("fastestdet", (352, 352)),
    ("ultralytics", (640, 480)),
    ("rtdetr", (640, 640)),
    ("imagenet", (224, 224)),
]


@pytest.mark.parametrize(("preset", "size"), PRESET_SPECS)
def test_presets_on_a_real_photo(bear, preset, size):
    spec = _spec(preset, size)
    tensor, _ = preprocess(bear, spec)
    assert tensor.shape == (1, 3, size[1], size[0])
    _close(tensor, reference(bear, spec))


@pytest.mark.parametrize("resize", ["letterbox_topleft", "letterbox_centre", "stretch", "centre_crop"])
@pytest.mark.parametrize("shape", [(97, 211), (211, 97), (64, 64), (480, 640), (33, 1000)])
@pytest.mark.parametrize("size", [(96, 64), (64, 96), (80, 80)])
def test_resize_modes_on_synthetic_images(resize, shape, size):
    image = _noise(*shape, seed=shape[0])
    spec = Preprocess(input_size=size, resize=resize, pad_value=7, interpolation="nearest", scale=1.0)
    canvas, transform = resize_for_model(image, spec)
    assert canvas.shape == (size[1], size[0], 3) and canvas.dtype == np.uint8
    assert (transform.src_width, transform.src_height) == (shape[1], shape[0])
    _close(to_tensor(canvas, spec), reference(image, spec))


@pytest.mark.parametrize("colour", ["RGB", "BGR"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_colour_mean_std_and_layout(colour, layout):
    image = _noise(50, 70, seed=3)
    # Distinct per-channel mean and std catch a swap applied before or after normalisation.
    spec = Preprocess(input_size=(70, 50), resize="stretch", colour=colour, layout=layout,
                      scale=1 / 255, mean=(0.1, 0.5, 0.9), std=(0.2, 0.4, 0.8))
    tensor, _ = preprocess(image, spec)
    assert tensor.shape == ((1, 3, 50, 70) if layout == "NCHW" else (1, 50, 70, 3))
    _close(tensor, reference(image, spec))
    # Spell out one pixel too, independent of the reference helper.
    b, _g, r = image[10, 20].astype(np.float64)
    first = (r if colour == "RGB" else b) / 255
    got = tensor[0, 0, 10, 20] if layout == "NCHW" else tensor[0, 10, 20, 0]
    assert got == pytest.approx((first - 0.1) / 0.2, abs=1e-5)
    last = (b if colour == "RGB" else r) / 255
    got = tensor[0, 2, 10, 20] if layout == "NCHW" else tensor[0, 10, 20, 2]
    assert got == pytest.approx((last - 0.9) / 0.8, abs=1e-5)


def test_nhwc_is_nchw_transposed(bear):
    nchw, _ = preprocess(bear, _spec("nanodet", (320, 320)))
    nhwc, _ = preprocess(bear, _spec("nanodet", (320, 320), layout="NHWC"))
    np.testing.assert_array_equal(nhwc, nchw.transpose(0, 2, 3, 1))


def test_letterbox_geometry_by_hand():
    image = np.full((480, 640, 3), 200, np.uint8)  # 640 wide, 480 high
    spec = Preprocess(input_size=(416, 416), resize="letterbox_centre", pad_value=114, scale=1.0)
    canvas, t = resize_for_model(image, spec)
    # r = 0.65: 416 x 312, 52 rows of padding above and below.
    assert (canvas[:52] == 114).all() and (canvas[-52:] == 114).all()
    assert (canvas[52:364] == 200).all()
    assert (t.sx, t.sy, t.ox, t.oy) == pytest.approx((0.65, 0.65, 0, 52))
    canvas, t = resize_for_model(image, spec.model_copy(update={"resize": "letterbox_topleft"}))
    assert (canvas[:312] == 200).all() and (canvas[312:] == 114).all()
    assert (t.ox, t.oy) == (0, 0)


def test_size_rounding_floor_vs_round():
    # 500x335 to 416: r = 0.832, 335 * r = 278.72 -> floor 278 (YOLOX, NanoDet), round 279 (Ultralytics).
    image = np.full((335, 500, 3), 255, np.uint8)
    for rounding, rows in (("floor", 278), ("round", 279)):
        spec = Preprocess(input_size=(416, 416), resize="letterbox_topleft", pad_value=0,
                          size_rounding=rounding, interpolation="nearest")
        canvas, t = resize_for_model(image, spec)
        assert int((canvas[:, 0, 0] == 255).sum()) == rows, rounding
        assert (canvas[:, :, 0] == 255).all(axis=0).sum() == 0  # no column fully image: padding below
        assert int((canvas[0, :, 0] == 255).sum()) == 416
        # The map back uses the true ratio, not rows / height.
        assert t.sy == pytest.approx(416 / 500)
        _close(to_tensor(canvas, spec), reference(image, spec))


def _draw_box(image: np.ndarray, box: tuple[int, int, int, int]) -> None:
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = (0, 0, 255)


def _find_box(canvas: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero((canvas[:, :, 2] > 128) & (canvas[:, :, 0] < 128))
    return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)


@pytest.mark.parametrize(
    ("resize", "size"),
    [("letterbox_centre", (320, 320)), ("letterbox_topleft", (416, 416)), ("stretch", (352, 352)),
     ("letterbox_centre", (640, 384)), ("centre_crop", (224, 224)), ("stretch", (200, 500))],
)
@pytest.mark.parametrize("shape", [(600, 900), (900, 600)])
def test_to_source_maps_a_drawn_box_back(resize, size, shape):
    image = np.zeros((*shape, 3), np.uint8)
    height, width = shape
    box = (width // 3, height // 3, width // 3 + 150, height // 3 + 120)
    _draw_box(image, box)
    spec = Preprocess(input_size=size, resize=resize, pad_value=114, interpolation="nearest")
    canvas, transform = resize_for_model(image, spec)
    back = transform.to_source(_find_box(canvas))[0]
    # One model-input pixel of quantisation is 1 / scale source pixels.
    tolerance = 1.01 / min(transform.sx, transform.sy)
    assert back == pytest.approx(np.array(box, np.float32), abs=tolerance)


def test_to_source_on_known_transform():
    t = Transform(sx=0.5, sy=0.25, ox=10, oy=20, src_width=100, src_height=100)
    boxes = np.array([[10, 20, 60, 45], [0, 0, 10, 20]], np.float32)
    np.testing.assert_allclose(t.to_source(boxes), [[0, 0, 100, 100], [-20, -80, 0, 0]])
    assert t.to_source(np.zeros((0, 4), np.float32)).shape == (0, 4)


def test_same_size_image_is_copied_not_resized():
    image = _noise(64, 96)
    spec = Preprocess(input_size=(96, 64), resize="letterbox_centre", scale=1.0)
    canvas, t = resize_for_model(image, spec)
    np.testing.assert_array_equal(canvas, image)
    assert (t.sx, t.ox, t.oy) == (1.0, 0.0, 0.0)


def test_non_contiguous_input_views():
    image = _noise(120, 90)
    spec = _spec("nanodet", (64, 64))
    for view in (image[:, ::-1], image[::2], image[..., ::-1]):
        tensor, _ = preprocess(view, spec)
        _close(tensor, reference(np.ascontiguousarray(view), spec))


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        (None, TypeError, "numpy array"),
        ([[[0, 0, 0]]], TypeError, "numpy array"),
        (np.zeros((48, 64), np.uint8), ValueError, "HxWx3 uint8"),
        (np.zeros((48, 64, 4), np.uint8), ValueError, "HxWx3 uint8"),
        (np.zeros((48, 64, 1), np.uint8), ValueError, "HxWx3 uint8"),
        (np.zeros((48, 64, 3), np.float32), ValueError, "float32"),
        (np.zeros((48, 64, 3), np.uint16), ValueError, "uint16"),
        (np.zeros((0, 64, 3), np.uint8), ValueError, "empty"),
        (np.zeros((48, 0, 3), np.uint8), ValueError, "empty"),
    ],
)
def test_bad_images_are_rejected(image, error, message):
    for resize in ("letterbox_centre", "stretch", "centre_crop"):
        with pytest.raises(error, match=message):
            preprocess(image, Preprocess(input_size=(32, 32), resize=resize))



def _inter_area(image: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize(("preset", "size"),
                         [("nanodet", (320, 320)), ("fastestdet", (352, 352)), ("imagenet", (224, 224))])
def test_area_presets_stay_within_one_level_of_inter_area(bear, preset, size):
    spec = _spec(preset, size)
    tensor, _ = preprocess(bear, spec)
    want = reference(bear, spec, resample=_inter_area)
    one_level = spec.scale / min(spec.std)
    assert np.abs(tensor - want).max() <= one_level * (1 + 1e-4)

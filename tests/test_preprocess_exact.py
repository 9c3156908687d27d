"""Preprocessing gives the same pixels on every CPU (issue 14): tensors of real photos pinned by hash.

The hashes in ``tests/golden/preprocess_sha256.json`` were taken on an x86-64 workstation; every
resize the presets use is bit-exact (``INTER_LINEAR_EXACT``; ``area`` is the integer
``edge.inference.exact_resize.resize_area``, since ``INTER_AREA`` came out off by one on arm64 in
the FastestDet and ImageNet cases), so an arm64 device computes the same bytes
(``scripts/arm64_check.sh`` checks it under qemu: 16/16). A mismatch means the pixels the model sees changed: a new OpenCV or
libjpeg-turbo, or a change to preprocessing. Check the accuracy (``benchmarks/accuracy.py``), then
regenerate with ``.venv/bin/python tests/test_preprocess_exact.py > tests/golden/preprocess_sha256.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from edge.imaging import read_image
from edge.inference.card import Preprocess
from edge.inference.preprocess import preprocess, resize_for_model
from edge.inference.presets import PRESETS

GOLDEN = Path(__file__).parent / "golden" / "preprocess_sha256.json"
# A 2048x1536 camera-trap photo (read reduced, as `wildedge detect` does) and a 500x335 VOC photo
# (read whole; FastestDet's 352x352 stretch enlarges its height).
PHOTOS = {
    "lila": "camera_traps_lila/images/ena24_7904.jpg",
    "voc": "voc2007_labeled/images/2007_000042.jpg",
}
SIZES = {"yolox": (416, 416), "nanodet": (320, 320), "fastestdet": (352, 352), "imagenet": (224, 224)}


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _spec(preset: str) -> Preprocess:
    return Preprocess(**{**PRESETS[preset]["preprocess"], "input_size": SIZES.get(preset, (640, 640))})


def digests(assets: Path) -> dict[str, dict[str, str | int]]:
    """Case name -> hashes of the decoded photo, the resized canvas and the float32 tensor."""
    out: dict[str, dict[str, str | int]] = {}
    for preset in sorted(PRESETS):
        spec = _spec(preset)
        for key, photo in PHOTOS.items():
            decoded = read_image(assets / photo, needed=spec.input_size,
                                 cover=spec.resize in ("stretch", "centre_crop"))
            canvas, _ = resize_for_model(decoded.image, spec)
            tensor, _ = preprocess(decoded.image, spec)
            assert tensor.dtype == np.float32
            out[f"{preset} {key}"] = {
                "reduced_by": round(decoded.full_width / decoded.image.shape[1]),
                "decoded": _sha(decoded.image),
                "canvas": _sha(canvas),
                "tensor": _sha(tensor),
            }
    return out


def test_preprocessed_tensors_match_the_pinned_hashes(assets):
    pinned = json.loads(GOLDEN.read_text(encoding="utf-8"))
    got = digests(assets)
    assert sorted(got) == sorted(pinned["cases"])
    changed = {case: [part for part in ("decoded", "canvas", "tensor") if got[case][part] != want[part]]
               for case, want in pinned["cases"].items()}
    changed = {case: parts for case, parts in changed.items() if parts}
    assert not changed, (
        f"preprocessed pixels changed (pinned with OpenCV {pinned['opencv']}, now {cv2.__version__}): {changed}; "
        "see this module's docstring")
    assert all(got[case]["reduced_by"] == want["reduced_by"] for case, want in pinned["cases"].items())


def test_the_reduced_decode_path_is_pinned_too(assets):
    pinned = json.loads(GOLDEN.read_text(encoding="utf-8"))["cases"]
    assert {case["reduced_by"] for case in pinned.values()} >= {1, 2, 4}


def _photos(assets: Path) -> list[Path]:
    found = sorted((assets / "voc2007_labeled" / "images").glob("*.jpg"))
    found += sorted((assets / "camera_traps_lila" / "images").glob("*.jpg"))
    return found + sorted((assets / "coco_val2017_animal_samples").glob("*.jpg"))


def test_linear_exact_is_within_one_of_inter_linear(assets):
    """The switch to INTER_LINEAR_EXACT moves no value by more than 1 (10.9 % of them by 1 on these photos)."""
    total = differing = 0
    for photo in _photos(assets):
        image = cv2.imread(str(photo))
        height, width = image.shape[:2]
        for side in (320, 416, 640):  # the letterbox sizes of the presets that use "linear"
            ratio = min(side / width, side / height)
            size = (int(width * ratio), int(height * ratio))
            old = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR).astype(np.int16)
            new = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR_EXACT).astype(np.int16)
            diff = np.abs(old - new)
            assert diff.max() <= 1, f"{photo.name} at {size}: off by {diff.max()}"
            total += diff.size
            differing += int(np.count_nonzero(diff))
    fraction = differing / total
    assert 0.0 < fraction < 0.2, f"{fraction:.1%} of values differ"


def test_no_preset_uses_a_resize_without_an_exact_path():
    for name, preset in PRESETS.items():
        assert preset["preprocess"].get("interpolation", "linear") in ("linear", "area"), name


if __name__ == "__main__":
    root = Path(os.environ.get("WILDEDGE_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))
    payload = {"about": "sha256 of preprocessed real photos; see tests/test_preprocess_exact.py",
               "opencv": cv2.__version__, "cases": digests(root)}
    json.dump(payload, sys.stdout, indent=1)
    sys.stdout.write("\n")

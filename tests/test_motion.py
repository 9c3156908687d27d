"""Motion detection on real camera-trap photos: noise, objects, light changes, uint8 wrap; the trigger."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest

from edge.capture.fake import FakeCamera
from edge.clock import FakeClock
from edge.triggers import ActiveWindows, MotionDetector, MotionTrigger

PREVIEW_WIDTH = 640  # a typical low-resolution stream; still wider than the detector's working width


@pytest.fixture(scope="module")
def photos(assets: Path) -> list[np.ndarray]:
    """The LILA camera-trap photos as BGR previews, PREVIEW_WIDTH wide."""
    paths = sorted((assets / "camera_traps_lila" / "images").glob("*"))
    images = [cv2.imread(str(p)) for p in paths]
    images = [img for img in images if img is not None]
    assert len(images) >= 4
    return [cv2.resize(img, (PREVIEW_WIDTH, round(img.shape[0] * PREVIEW_WIDTH / img.shape[1])),
                       interpolation=cv2.INTER_AREA) for img in images]


def noisy(image: np.ndarray, rng: np.random.Generator, sigma: float = 3.0) -> np.ndarray:
    """Sensor-like noise: Gaussian per pixel, clipped to uint8."""
    return np.clip(image.astype(np.float32) + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.uint8)


def paste(image: np.ndarray, patch_from: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``image`` with the region ``box`` (x1, y1, x2, y2) replaced by another photo, resized to fit."""
    x1, y1, x2, y2 = box
    out = image.copy()
    out[y1:y2, x1:x2] = cv2.resize(patch_from, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)
    return out


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def union(boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    xs1, ys1, xs2, ys2 = zip(*boxes, strict=True)
    return min(xs1), min(ys1), max(xs2), max(ys2)


def near(boxes: list[tuple[int, int, int, int]], box: tuple[int, int, int, int], shape: tuple[int, ...],
         min_iou: float = 0.5) -> bool:
    """Whether the boxes cover ``box`` well and none lies away from it (a margin of 5 % of the frame)."""
    mx, my = shape[1] // 20, shape[0] // 20
    inside = all(box[0] - mx <= b[0] and box[1] - my <= b[1] and b[2] <= box[2] + mx and b[3] <= box[3] + my
                 for b in boxes)
    return bool(boxes) and inside and iou(union(boxes), box) > min_iou


def settled(detector: MotionDetector, image: np.ndarray, rng: np.random.Generator, frames: int = 5) -> list:
    return [detector.update(noisy(image, rng)) for _ in range(frames)]


def test_static_scene_with_sensor_noise_is_not_motion(photos):
    rng = np.random.default_rng(1)
    for image in photos:
        detector = MotionDetector()
        results = settled(detector, image, rng, frames=8)
        assert results[0].motion is False and results[0].area == 0.0  # the first frame only initialises
        assert not any(r.motion or r.recalibrated for r in results)


def test_an_object_moving_in_is_found_where_it_is(photos):
    rng = np.random.default_rng(2)
    for index, image in enumerate(photos):
        h, w = image.shape[:2]
        box = (w // 2, h // 3, w // 2 + w // 5, h // 3 + h // 4)  # 5 % of the frame
        detector = MotionDetector()
        settled(detector, image, rng)
        result = detector.update(noisy(paste(image, photos[(index + 3) % len(photos)], box), rng))
        assert result.motion and not result.recalibrated
        assert near(result.boxes, box, image.shape)
        assert 0.01 < result.area < 0.15


def test_boxes_are_in_the_input_pixels_at_full_resolution(assets):
    paths = sorted((assets / "camera_traps_lila" / "images").glob("*"))
    image, other = cv2.imread(str(paths[0])), cv2.imread(str(paths[3]))
    h, w = image.shape[:2]
    assert w >= 4 * 320  # a full-resolution photo, well above the detector's working width
    box = (w // 8, h // 2, w // 8 + w // 6, h // 2 + h // 5)
    detector = MotionDetector()
    detector.update(image)
    result = detector.update(paste(image, other, box))
    assert result.motion and near(result.boxes, box, image.shape)


def test_whole_frame_light_change_recalibrates_instead_of_firing(photos):
    rng = np.random.default_rng(3)
    # A switch to IR: the image goes grey and brighter. Bright photos would clip at 255; keep darker ones.
    darker = [img for img in photos if cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).mean() < 150]
    assert len(darker) >= 3
    for image in darker:
        detector = MotionDetector()
        settled(detector, image, rng)
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.int16) + 60
        ir = cv2.cvtColor(np.clip(grey, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        switched = detector.update(noisy(ir, rng))
        assert switched.recalibrated and not switched.motion and switched.area > 0.6
        after = settled(detector, ir, rng, frames=3)  # the new scene is the background now
        assert not any(r.motion or r.recalibrated for r in after)


def test_a_change_smaller_than_min_area_is_ignored(photos):
    rng = np.random.default_rng(4)
    image = photos[0]
    h, w = image.shape[:2]
    box = (w // 3, h // 3, w // 3 + w // 25, h // 3 + h // 25)  # about 0.16 % of the frame
    changed = paste(image, photos[5], box)
    sensitive, strict = MotionDetector(min_area=0.0002), MotionDetector(min_area=0.01)
    settled(sensitive, image, rng)
    settled(strict, image, rng)
    frame = noisy(changed, rng)
    seen = sensitive.update(frame)
    # the change is real (its box, grown by blur and dilation, is around the patch)...
    assert seen.motion and near(seen.boxes, box, frame.shape, min_iou=0.3)
    assert strict.update(frame).motion is False  # ...but smaller than min_area


def test_darker_dark_scene_does_not_wrap_around(photos):
    night = (photos[0].astype(np.float32) * 0.15).astype(np.uint8)  # a dark frame, values ~0-40
    h, w = night.shape[:2]
    darker = night.copy()
    region = (slice(h // 4, h // 4 + h // 2), slice(w // 4, w // 4 + w // 3))  # 17 % of the frame
    darker[region] = np.clip(darker[region].astype(np.int16) - 8, 0, 255).astype(np.uint8)
    old, new = (cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in (night, darker))
    wrapped = (new - old) > 25  # uint8 arithmetic: -8 becomes 248
    assert wrapped.mean() > 0.1  # so a detector that diffs uint8 would see motion here
    detector = MotionDetector()
    detector.update(night)
    result = detector.update(darker)
    assert not result.motion and not result.recalibrated and result.area == 0.0


def test_grey_and_bgr_frames_agree_and_bad_input_is_refused(photos):
    image = photos[1]
    moved = paste(image, photos[2], (100, 100, 250, 220))
    from_bgr, from_grey = MotionDetector(), MotionDetector()
    from_bgr.update(image)
    from_grey.update(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    a = from_bgr.update(moved)
    b = from_grey.update(cv2.cvtColor(moved, cv2.COLOR_BGR2GRAY))
    assert a.motion and b.motion and a.boxes == b.boxes
    with pytest.raises(ValueError):
        MotionDetector().update(np.zeros((0, 10), np.uint8))
    with pytest.raises(ValueError):
        MotionDetector().update(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError):
        MotionDetector(blur=4)
    with pytest.raises(ValueError):
        MotionDetector(min_area=0.7, max_area=0.6)


# -- the trigger --------------------------------------------------------------------------------------
def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def test_motion_trigger_fires_then_keeps_quiet_for_the_cooldown(photos):
    scene = _grey(photos[0])
    h, w = scene.shape
    boxes = [(w // 2, h // 3, w // 2 + w // 5, h // 3 + h // 4),
             (w // 10, h // 2, w // 10 + w // 5, h // 2 + h // 4),
             (w // 3, h // 10, w // 3 + w // 5, h // 10 + h // 4)]
    moved = [_grey(paste(photos[0], photos[4 + i], box)) for i, box in enumerate(boxes)]
    previews = [scene, scene, moved[0], moved[1], moved[2]]
    clock = FakeClock(datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc))
    trigger = MotionTrigger(MotionDetector(), fps=2.0, cooldown=timedelta(seconds=10), burst=2)
    fires = []
    with FakeCamera([], clock=clock, previews=previews) as camera:
        for step in [0.5, 0.5, 0.5, 12.0, 0.5]:  # the last frame comes after the cooldown
            now = clock.now()
            assert trigger.due(now) <= now
            fires.append(trigger.check(now, camera))
            assert trigger.due(now) == now + timedelta(seconds=0.5)
            clock.advance(step)
    assert [f.reason if f else None for f in fires] == [None, None, "motion", None, "motion"]
    # the second object came within the cooldown
    assert trigger.suppressed == 1 and trigger.fired == 2 and trigger.polls == 5
    for fire, box in ((fires[2], boxes[0]), (fires[4], boxes[2])):
        assert fire.burst == 2 and fire.detail["area"] > 0.01
        assert near([tuple(b) for b in fire.detail["boxes"]], box, scene.shape)


def test_motion_trigger_without_preview_logs_once(caplog):
    clock = FakeClock(datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc))
    trigger = MotionTrigger(MotionDetector(), fps=2.0)
    with FakeCamera([], clock=clock, previews=None, name="nolores") as camera, \
            caplog.at_level("WARNING", logger="edge.triggers.motion"):
        results = []
        for _ in range(5):
            results.append(trigger.check(clock.now(), camera))
            clock.advance(0.5)
    assert results == [None] * 5 and trigger.polls == 5
    warnings = [r for r in caplog.records if "no preview" in r.getMessage()]
    assert len(warnings) == 1 and "nolores" in warnings[0].getMessage()


def test_motion_trigger_sleeps_outside_its_window(photos):
    ams = ZoneInfo("Europe/Amsterdam")
    windows = ActiveWindows(["20:00..06:00"], tz=ams)
    trigger = MotionTrigger(MotionDetector(), fps=2.0, windows=windows)
    clock = FakeClock(datetime(2024, 6, 1, 12, 0, tzinfo=ams))
    with FakeCamera([], clock=clock, previews=[_grey(photos[0])], loop=True) as camera:
        assert trigger.due(clock.now()) == datetime(2024, 6, 1, 20, 0, tzinfo=ams)
        assert trigger.check(clock.now(), camera) is None
        assert camera.previews_given == 0  # no preview is even taken outside the window
        night = datetime(2024, 6, 1, 21, 0, tzinfo=ams)
        assert trigger.due(night) == night
        assert trigger.check(night, camera) is None and camera.previews_given == 1

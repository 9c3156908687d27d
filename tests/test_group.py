"""Per-frame detections to events: burst summaries, sticky-card arrivals, the privacy policy."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.group import (
    FrameDetections,
    NewObjectFilter,
    PrivacyPolicy,
    normalise_box,
    summarise_burst,
)
from edge.group.sticky import greedy_match, iou_matrix
from edge.inference.detector import Detection

LILA = "camera_traps_lila/images"
CARD_PHOTO = f"{LILA}/ena24_7904.jpg"


def det(box, score=0.9, class_id=0, label="animal", classifications=None) -> Detection:
    return Detection(tuple(float(v) for v in box), score, class_id, label, list(classifications or []))


def frame(uid, detections, width=1000, height=800, new=None) -> FrameDetections:
    return FrameDetections(uid, list(detections), width, height, new)


# -- burst summary ------------------------------------------------------------------------------------------


def test_no_detection_gives_no_event():
    assert summarise_burst([]) is None
    assert summarise_burst([frame("a", []), frame("b", [])]) is None


def test_count_is_the_most_seen_in_one_frame_not_the_sum():
    deer = dict(class_id=1, label="deer")
    frames = [
        frame("f1", [det((0, 0, 10, 10), 0.5, **deer), det((20, 0, 30, 10), 0.6, **deer)]),
        frame("f2", [det((0, 0, 10, 10), 0.7, **deer), det((20, 0, 30, 10), 0.4, **deer),
                     det((40, 0, 50, 10), 0.3, **deer)]),
        frame("f3", [det((0, 0, 10, 10), 0.55, **deer),
                     det((60, 60, 70, 70), 0.8, class_id=2, label="bird")]),
        frame("f4", []),
    ]
    summary = summarise_burst(frames)
    deer_summary, bird = summary.class_by_label("deer"), summary.class_by_label("bird")
    assert (deer_summary.count, deer_summary.best_score, deer_summary.best_frame_uid) == (3, 0.7, "f2")
    assert (bird.count, bird.best_score, bird.best_frame_uid) == (1, 0.8, "f3")
    assert [c.label for c in summary.classes] == ["bird", "deer"]  # best score first
    assert (summary.frames, summary.frames_with_detections) == (4, 3)
    assert deer_summary.new is None  # the frames carry no sticky-card flags


def test_best_is_the_highest_scoring_detection_with_a_normalised_box():
    frames = [
        frame("f1", [det((0, 0, 10, 10), 0.5)], width=200, height=100),
        frame("f2", [det((0, 0, 10, 10), 0.6), det((50, 25, 150, 120), 0.95, 3, "fox")],
              width=200, height=100),
        frame("f3", [det((0, 0, 10, 10), 0.95)], width=200, height=100),  # a tie: the earlier frame keeps it
    ]
    best = summarise_burst(frames).best
    assert (best.frame_uid, best.index, best.class_id, best.label, best.score) == ("f2", 1, 3, "fox", 0.95)
    assert best.box == pytest.approx((0.25, 0.25, 0.75, 1.0))  # clipped to the frame


def test_majority_vote_counts_each_top1_label_once():
    labels = ["red fox", "roe deer", "badger"]
    frames = [
        frame("f1", [det((0, 0, 9, 9), classifications=[(1, 0.6), (0, 0.3)]),
                     det((20, 0, 29, 9), classifications=[(0, 0.9)])]),
        frame("f2", [det((0, 0, 9, 9), classifications=[(1, 0.8)]), det((40, 0, 49, 9))]),  # unclassified
        frame("f3", [det((0, 0, 9, 9), classifications=[(2, 0.99)])]),
    ]
    vote = summarise_burst(frames, classifier_labels=labels).classification
    assert (vote.class_id, vote.label, vote.votes, vote.voters) == (1, "roe deer", 2, 4)
    assert vote.mean_prob == pytest.approx(0.7)
    assert [(v.label, v.votes) for v in vote.tally] == [("roe deer", 2), ("badger", 1), ("red fox", 1)]


@pytest.mark.parametrize(
    ("a_probs", "b_probs", "winner"),
    [
        ([0.5, 0.5], [0.75, 0.125], "a"),  # equal votes: the higher summed probability wins
        ([0.5, 0.5], [0.75, 0.25], "b"),  # equal votes and sums: the higher single best probability wins
        ([0.5, 0.5], [0.5, 0.5], "a"),  # all equal: the lower class id, never dict order
    ],
)
def test_vote_ties(a_probs, b_probs, winner):
    a = [det((0, 0, 9, 9), classifications=[(0, p)]) for p in a_probs]
    b = [det((0, 0, 9, 9), classifications=[(1, p)]) for p in b_probs]
    vote = summarise_burst([frame("f1", b + a)], classifier_labels=["a", "b"]).classification
    assert vote.label == winner
    assert vote.votes == 2 and vote.voters == 4


def test_vote_without_labels_or_classifications():
    classified = [frame("f1", [det((0, 0, 9, 9), classifications=[(7, 0.4)])])]
    vote = summarise_burst(classified).classification
    assert (vote.class_id, vote.label) == (7, None)
    assert summarise_burst([frame("f1", [det((0, 0, 9, 9))])]).classification is None


def test_summary_is_json_serialisable_and_round_trips():
    frames = [frame("f1", [det((10, 20, 30, 40), 0.8, classifications=[(0, 0.7)])], new=[True])]
    as_dict = summarise_burst(frames, classifier_labels=["hedgehog"]).to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["best"]["box"] == pytest.approx([0.01, 0.025, 0.03, 0.05])
    assert as_dict["classification"]["label"] == "hedgehog"
    assert as_dict["classes"][0]["new"] == 1


def test_sticky_flags_give_arrivals_per_class():
    boxes = [det((i * 20, 0, i * 20 + 10, 10)) for i in range(5)]
    frames = [frame("f1", boxes, new=[True, False, False, True, False]),
              frame("f2", boxes, new=[False, False, False, False, True])]
    summary = summarise_burst(frames)
    assert (summary.classes[0].count, summary.classes[0].new) == (5, 2)


def test_frame_detections_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        FrameDetections("f", [], 0, 10)
    with pytest.raises(ValueError, match="new flags"):
        FrameDetections("f", [det((0, 0, 1, 1))], 10, 10, [True, False])


# -- sticky card --------------------------------------------------------------------------------------------


def test_iou_matrix_and_greedy_matching():
    a = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [200, 200, 210, 210]], float)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == pytest.approx(1.0) and iou[0, 1] == pytest.approx(50 / 150)
    assert (iou[1] == 0).all()
    # One-to-one: the best pair is taken first, the second candidate for row 0 stays unmatched.
    assert greedy_match(iou, 0.3) == [(0, 0)]
    assert greedy_match(np.array([[0.5, 0.9], [0.4, 0.6]]), 0.3) == [(0, 1), (1, 0)]
    assert greedy_match(np.zeros((0, 3)), 0.3) == []


class Card:
    """A simulated sticky card: insects at fixed places, reported with a few pixels of jitter."""

    def __init__(self, width=1600, height=1200, seed=0):
        self.width, self.height = width, height
        self.rng = np.random.default_rng(seed)
        self.insects: dict[str, tuple[float, float, int]] = {}  # name -> centre x, centre y, class id

    def add(self, name, x, y, class_id=0):
        self.insects[name] = (x, y, class_id)

    def detections(self, hidden=(), size=30, jitter=3.0, dx=0.0, dy=0.0):
        names = [n for n in self.insects if n not in hidden]
        self.rng.shuffle(names)  # detectors report in score order, not in arrival order
        out = []
        for name in names:
            x, y, class_id = self.insects[name]
            jx, jy, js = self.rng.uniform(-jitter, jitter, 3)
            half = size / 2 + js
            cx, cy = x + dx + jx, y + dy + jy
            out.append((name, det((cx - half, cy - half, cx + half, cy + half), class_id=class_id)))
        return out


def _update(filt, card, named, **kw):
    flags = filt.update([d for _, d in named], width=card.width, height=card.height, **kw)
    return {name for (name, _), new in zip(named, flags) if new}


def test_sticky_card_counts_arrivals_not_the_running_total():
    card = Card()
    for i in range(8):
        card.add(f"i{i}", 150 + 180 * i, 300 + 60 * (i % 3), class_id=i % 2)
    filt = NewObjectFilter()
    arrivals = [_update(filt, card, card.detections())]
    arrivals.append(_update(filt, card, card.detections()))
    card.add("late1", 400, 900)
    card.add("late2", 1200, 950, class_id=1)
    arrivals.append(_update(filt, card, card.detections()))  # frame 3: two arrive
    del card.insects["i0"]
    arrivals.append(_update(filt, card, card.detections()))  # frame 4: one falls off
    assert (filt.last_missing, filt.last_gone) == (1, 0)  # still remembered for one frame
    arrivals.append(_update(filt, card, card.detections(hidden={"i3"})))  # frame 5: i3 occluded
    assert (filt.last_missing, filt.last_gone) == (1, 1)  # i0 forgotten now, i3 remembered
    arrivals.append(_update(filt, card, card.detections()))  # frame 6: i3 back in place
    assert arrivals == [{f"i{i}" for i in range(8)}, set(), {"late1", "late2"}, set(), set(), set()]
    assert sum(len(a) for a in arrivals) == 10
    assert filt.tracked == 9 and filt.last_missing == 0


def test_without_memory_an_occluded_insect_counts_again():
    card = Card()
    card.add("a", 200, 200)
    card.add("b", 600, 200)
    filt = NewObjectFilter(memory=0)
    _update(filt, card, card.detections())
    assert _update(filt, card, card.detections(hidden={"a"})) == set()
    assert filt.last_gone == 1
    assert _update(filt, card, card.detections()) == {"a"}


def test_class_aware_matching_and_resolution_change():
    card = Card()
    card.add("a", 200, 200, class_id=0)
    aware, blind = NewObjectFilter(), NewObjectFilter(class_aware=False)
    first = card.detections(jitter=0)
    for filt in (aware, blind):
        _update(filt, card, first)
    relabelled = [(n, det(d.box, class_id=5)) for n, d in first]
    assert _update(aware, card, relabelled) == {"a"}
    assert _update(blind, card, relabelled) == set()
    # The same card at twice the resolution: the boxes are compared as fractions of the frame.
    big = [det(tuple(v * 2 for v in d.box), class_id=5) for _, d in relabelled]
    assert aware.update(big, width=card.width * 2, height=card.height * 2) == [False]


def test_reset_restores_state_after_a_restart():
    card = Card(seed=3)
    for i in range(5):
        card.add(f"i{i}", 200 + 250 * i, 500)
    before = NewObjectFilter()
    for _ in range(3):
        last = [d for _, d in card.detections()]
        before.update(last, width=card.width, height=card.height)
    card.add("late", 800, 1000)
    next_frame = card.detections()

    # The daemon restores the last frame's detections from its store, as normalised boxes.
    restarted = NewObjectFilter()
    restarted.reset([(normalise_box(d.box, card.width, card.height), d.class_id) for d in last])
    assert restarted.tracked == 5
    assert _update(restarted, card, next_frame) == {"late"}
    assert _update(before, card, next_frame) == {"late"}

    cold = NewObjectFilter()
    assert len(_update(cold, card, next_frame)) == 6  # without reset every stuck insect would count again
    cold.reset([])
    assert cold.tracked == 0


def _shifted(image: np.ndarray, dx: int, dy: int, how: str) -> np.ndarray:
    if how == "roll":
        return np.roll(image, (dy, dx), axis=(0, 1))
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("how", ["roll", "warp"])
@pytest.mark.parametrize(("dx", "dy"), [(15, 0), (15, -15), (-12, 15)])
def test_card_shift_is_estimated_from_the_frames(assets, how, dx, dy):
    photo = cv2.imread(str(assets / CARD_PHOTO))
    card = Card(photo.shape[1], photo.shape[0], seed=1)
    for i in range(12):
        card.add(f"i{i}", 150 + 150 * i, 250 + 90 * (i % 4))
    first = card.detections(size=24, jitter=1)
    moved_photo = _shifted(photo, dx, dy, how)
    moved = card.detections(size=24, jitter=1, dx=dx, dy=dy)

    blind = NewObjectFilter()
    _update(blind, card, first)
    assert len(_update(blind, card, moved)) >= 10  # small boxes moved 15 px no longer overlap enough

    aligned = NewObjectFilter()
    assert _update(aligned, card, first, image=photo) == {f"i{i}" for i in range(12)}
    assert aligned.last_shift is None  # nothing to compare the first frame with
    assert _update(aligned, card, moved, image=cv2.cvtColor(moved_photo, cv2.COLOR_BGR2GRAY)) == set()
    sx, sy = aligned.last_shift
    assert sx * card.width == pytest.approx(dx, abs=1.5)
    assert sy * card.height == pytest.approx(dy, abs=1.5)


def test_reset_with_the_last_image_allows_a_shift_estimate(assets):
    photo = cv2.imread(str(assets / CARD_PHOTO))
    card = Card(photo.shape[1], photo.shape[0], seed=2)
    for i in range(6):
        card.add(f"i{i}", 300 + 250 * i, 700)
    first = [d for _, d in card.detections(size=24, jitter=0)]
    filt = NewObjectFilter()
    filt.reset([(normalise_box(d.box, card.width, card.height), d.class_id) for d in first], image=photo)
    moved = card.detections(size=24, jitter=0, dx=15, dy=15)
    assert _update(filt, card, moved, image=_shifted(photo, 15, 15, "warp")) == set()


def test_sticky_filter_rejects_bad_options():
    for kwargs in ({"iou": 0.0}, {"iou": 1.5}, {"memory": -1}, {"max_shift": 2.0}, {"align_width": 4}):
        with pytest.raises(ValueError):
            NewObjectFilter(**kwargs)
    with pytest.raises(ValueError, match="positive"):
        NewObjectFilter().update([], width=0, height=10)
    with pytest.raises(ValueError, match="shape"):
        NewObjectFilter().update([], width=10, height=10, image=np.zeros((2, 10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="x1, y1, x2, y2"):
        NewObjectFilter().reset([((0.1, 0.1, 0.2), 0)])


# -- privacy ------------------------------------------------------------------------------------------------


def _sharpness(region: np.ndarray) -> float:
    """Detail at the scale of a face: the Laplacian's variance with the region's long side at 200 px.

    Measured relative to the region, so a 12 MP box and a small one compare alike.
    """
    h, w = region.shape[:2]
    scale = 200 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    region = cv2.resize(region, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)
    grey = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY) if region.ndim == 3 else region
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _photos(assets: Path) -> list[Path]:
    return sorted((assets / "coco_val2017_animal_samples").glob("*.jpg"))[:3] + sorted(
        (assets / LILA).glob("*.jpg"))[:2]


@pytest.mark.parametrize("scale", [1.0, 5.0])  # 5x: about a 12 MP frame
def test_blur_makes_the_person_box_unrecognisable_and_leaves_the_rest(assets, scale):
    policy = PrivacyPolicy(mode="blur")
    for path in _photos(assets)[:3] if scale > 1 else _photos(assets):
        image = cv2.imread(str(path))
        if scale > 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        original = image.copy()
        h, w = image.shape[:2]
        box = (0.3 * w, 0.25 * h, 0.6 * w, 0.75 * h)
        outcome = policy.apply(image, [det(box, label="person"), det((0, 0, 0.1 * w, 0.1 * h), label="bear")])
        assert outcome.person and outcome.blurred == 1
        assert np.array_equal(image, original)  # the input is untouched
        out = outcome.image
        assert out.shape == image.shape and not np.shares_memory(out, image)
        x1, y1, x2, y2 = (int(v) for v in box)
        assert _sharpness(out[y1:y2, x1:x2]) < 0.05 * _sharpness(image[y1:y2, x1:x2]), path.name
        # The box grows by 10 % on each side; everything beyond that is the original, bit for bit.
        gx, gy = int(0.1 * (x2 - x1)) + 2, int(0.1 * (y2 - y1)) + 2
        outside = np.ones((h, w), bool)
        outside[y1 - gy:y2 + gy, x1 - gx:x2 + gx] = False
        assert np.array_equal(out[outside], image[outside])
        ring = out[y1 - gy + 4:y1, x1:x2], image[y1 - gy + 4:y1, x1:x2]  # inside the growth margin
        assert not np.array_equal(*ring)


def test_blurred_person_is_no_longer_detected(stamped, assets):
    from edge.inference.detector import Detector

    policy = PrivacyPolicy(mode="blur")
    photos = ["2007_000027.jpg", "2007_000323.jpg", "2007_001526.jpg"]  # one, two and five people
    with Detector(stamped["yolox"]) as detector:
        for name in photos:
            image = cv2.imread(str(assets / "voc2007_labeled" / "images" / name))
            people = [d for d in detector.detect(image) if d.label == "person"]
            assert people, name
            outcome = policy.apply(image, people)
            assert outcome.blurred == len(people)
            assert [d for d in detector.detect(outcome.image) if d.label == "person" and d.score > 0.3] == []


def test_drop_and_keep(assets):
    image = cv2.imread(str(assets / CARD_PHOTO))
    original = image.copy()
    person = [det((100, 100, 400, 700), label="person")]
    dropped = PrivacyPolicy().apply(image, person)
    assert (dropped.image, dropped.person, dropped.blurred) == (None, True, 0)
    kept = PrivacyPolicy(mode="keep").apply(image, person)
    assert kept.person and kept.image is image and kept.blurred == 0
    assert np.array_equal(image, original)
    animals = [det((100, 100, 400, 700), label="animal")]
    for mode in ("drop", "blur", "keep"):
        plain = PrivacyPolicy(mode=mode).apply(image, animals)
        assert plain.image is image and not plain.person


def test_person_labels_are_case_insensitive_and_configurable():
    image = np.full((60, 80), 128, np.uint8)
    image[::2] = 0  # stripes: something to blur
    assert PrivacyPolicy().apply(image, [det((10, 10, 40, 40), label="PERSON")]).image is None
    assert PrivacyPolicy().apply(image, [det((10, 10, 40, 40), label=" Human")]).image is None
    hiker = PrivacyPolicy(mode="blur", labels=["Hiker"])
    assert hiker.apply(image, [det((10, 10, 40, 40), label="person")]).person is False
    blurred = hiker.apply(image, [det((10, 10, 40, 40), label="hiker")])
    assert blurred.blurred == 1 and blurred.image.shape == image.shape
    assert _sharpness(blurred.image[12:38, 12:38]) < 0.05 * _sharpness(image[12:38, 12:38])


def test_min_score_and_crops():
    policy = PrivacyPolicy(min_score=0.5)
    image = np.zeros((50, 50, 3), np.uint8)
    weak = det((5, 5, 20, 20), score=0.3, label="Person")
    assert policy.apply(image, [weak]).person is False
    assert policy.apply(image, [det((5, 5, 20, 20), score=0.6, label="person")]).image is None
    # No person crop is published, whatever its score.
    assert policy.crop_allowed(weak) is False
    assert policy.crop_allowed(det((5, 5, 20, 20), label="fox")) is True


def test_privacy_rejects_bad_options():
    with pytest.raises(ValueError, match="mode"):
        PrivacyPolicy(mode="hide")
    with pytest.raises(TypeError):
        PrivacyPolicy(labels="person")
    with pytest.raises(ValueError):
        PrivacyPolicy(min_score=1.5)
    with pytest.raises(ValueError, match="shape"):
        PrivacyPolicy().apply(np.zeros(10, np.uint8), [])

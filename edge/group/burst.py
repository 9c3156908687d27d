"""One trigger's burst of frames summarised as one event: classes, counts, species vote, best detection.

Rules (also in docs/events.md):

- ``count`` of a detector class is the largest number of that class seen in any single frame of
  the burst, never the sum: the same animal appears in every frame of a burst.
- ``best_score`` / ``best_frame_uid`` of a class: its highest detector score and the frame it was in.
- ``new`` of a class (sticky-card mode only, when frames carry ``new`` flags): the largest number of
  new objects of that class in any single frame; None when the frames carry no flags.
- ``classification``: a majority vote over every classified detection of the burst; each detection's
  top-1 label is one vote. Ties go to the higher summed probability, then to the higher single best
  probability, then to the lower class id (so the result never depends on dict order).
- ``best``: the single highest-scoring detection of the burst; on equal scores the earlier frame,
  then the lower index, wins.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from edge.inference.detector import Detection

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


@dataclass(slots=True)
class FrameDetections:
    """The detections of one frame of a burst; ``new`` (optional) marks sticky-card arrivals per detection."""

    uid: str
    detections: list[Detection]
    width: int
    height: int
    new: list[bool] | None = None

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"frame {self.uid}: width and height must be positive, "
                             f"got {self.width}x{self.height}")
        if self.new is not None and len(self.new) != len(self.detections):
            raise ValueError(f"frame {self.uid}: {len(self.new)} new flags "
                             f"for {len(self.detections)} detections")


@dataclass(slots=True)
class ClassSummary:
    """One detector class over the burst."""

    class_id: int
    label: str
    count: int
    best_score: float
    best_frame_uid: str
    new: int | None = None


@dataclass(slots=True)
class Vote:
    """One classifier label's tally: votes (top-1 counts), summed and best top-1 probability."""

    class_id: int
    label: str | None
    votes: int
    prob_sum: float
    best_prob: float


@dataclass(slots=True)
class Classification:
    """The burst's majority-vote classification; ``tally`` lists every candidate, winner first."""

    class_id: int
    label: str | None
    votes: int
    voters: int
    mean_prob: float
    tally: list[Vote] = field(default_factory=list)


@dataclass(slots=True)
class BestDetection:
    """The burst's highest-scoring detection; ``box`` is xyxy as fractions of its frame's size."""

    frame_uid: str
    index: int
    class_id: int
    label: str
    score: float
    box: Box


@dataclass(slots=True)
class EventSummary:
    """What one trigger's burst saw; ``to_dict()`` is JSON-serialisable."""

    frames: int
    frames_with_detections: int
    classes: list[ClassSummary]
    best: BestDetection
    classification: Classification | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["best"]["box"] = list(self.best.box)  # as JSON reads it back, so a round trip compares equal
        return out

    def class_by_label(self, label: str) -> ClassSummary | None:
        return next((c for c in self.classes if c.label == label), None)


def normalise_box(box: Sequence[float], width: int, height: int) -> Box:
    """``box`` (xyxy pixels) as fractions of the frame size, clipped to [0, 1]."""
    x1, y1, x2, y2 = box
    return (
        min(1.0, max(0.0, float(x1) / width)),
        min(1.0, max(0.0, float(y1) / height)),
        min(1.0, max(0.0, float(x2) / width)),
        min(1.0, max(0.0, float(y2) / height)),
    )


def _class_summaries(frames: Sequence[FrameDetections]) -> list[ClassSummary]:
    tracks_new = any(f.new is not None for f in frames)
    by_class: dict[int, ClassSummary] = {}
    for frame in frames:
        counts: dict[int, int] = {}
        arrivals: dict[int, int] = {}
        for i, det in enumerate(frame.detections):
            counts[det.class_id] = counts.get(det.class_id, 0) + 1
            if frame.new is not None and frame.new[i]:
                arrivals[det.class_id] = arrivals.get(det.class_id, 0) + 1
            summary = by_class.get(det.class_id)
            if summary is None:
                by_class[det.class_id] = ClassSummary(det.class_id, det.label, 0, float(det.score), frame.uid,
                                                      0 if tracks_new else None)
            elif det.score > summary.best_score:
                summary.best_score, summary.best_frame_uid = float(det.score), frame.uid
        for class_id, n in counts.items():
            summary = by_class[class_id]
            summary.count = max(summary.count, n)
            if summary.new is not None:
                summary.new = max(summary.new, arrivals.get(class_id, 0))
    return sorted(by_class.values(), key=lambda c: (-c.best_score, c.class_id))


def _vote(frames: Sequence[FrameDetections], labels: Sequence[str] | None) -> Classification | None:
    tally: dict[int, Vote] = {}
    for frame in frames:
        for det in frame.detections:
            if not det.classifications:
                continue
            class_id, prob = det.classifications[0]
            class_id, prob = int(class_id), float(prob)
            vote = tally.get(class_id)
            if vote is None:
                label = labels[class_id] if labels is not None and 0 <= class_id < len(labels) else None
                tally[class_id] = Vote(class_id, label, 1, prob, prob)
            else:
                vote.votes += 1
                vote.prob_sum += prob
                vote.best_prob = max(vote.best_prob, prob)
    if not tally:
        return None
    ranked = sorted(tally.values(), key=lambda v: (-v.votes, -v.prob_sum, -v.best_prob, v.class_id))
    winner = ranked[0]
    return Classification(winner.class_id, winner.label, winner.votes, sum(v.votes for v in ranked),
                          winner.prob_sum / winner.votes, ranked)


def _best(frames: Sequence[FrameDetections]) -> BestDetection | None:
    best: BestDetection | None = None
    for frame in frames:
        for i, det in enumerate(frame.detections):
            if best is None or det.score > best.score:  # strict: the earlier detection keeps a tie
                best = BestDetection(frame.uid, i, det.class_id, det.label, float(det.score),
                                     normalise_box(det.box, frame.width, frame.height))
    return best


def summarise_burst(
    frames: Sequence[FrameDetections], *, classifier_labels: Sequence[str] | None = None
) -> EventSummary | None:
    """Summarise one trigger's burst; None when no frame has a detection.

    Args:
        frames: the burst's frames in capture order.
        classifier_labels: the classifier's labels, to name the vote's winner (ids only when None).
    """
    best = _best(frames)
    if best is None:
        return None
    return EventSummary(
        frames=len(frames),
        frames_with_detections=sum(1 for f in frames if f.detections),
        classes=_class_summaries(frames),
        best=best,
        classification=_vote(frames, classifier_labels),
    )

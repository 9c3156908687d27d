"""Event-level export records: what a device's store and the collector's database both produce.

The writers of :mod:`edge.outputs.event_writers` and :mod:`edge.outputs.camtrapdp` read only these
records, so ``wildedge results`` on a device and ``wildedge collect export`` on the server write
the same files from the same events. Values carry the wire format's precision (scores, boxes and
probabilities in thousandths, times in whole seconds): a device quantises with :func:`permille`
exactly as its encoder does, so both sides agree to the last digit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

#: Box layout: x1, y1, x2, y2 as fractions (0..1) of the frame size.
Box = tuple[float, float, float, float]
#: Clock states of an event's time (the collector's ``clock`` column).
CLOCKS = ("synced", "corrected", "unsynced", "camera")


def permille(value: float) -> float:
    """``value`` (0..1) rounded to thousandths half up, as the wire encoder rounds it."""
    return math.floor(float(value) * 1000 + 0.5) / 1000


def whole_seconds(when: datetime) -> datetime:
    """An aware datetime floored to the second, in UTC (the wire's time precision)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is needed, got naive {when!r}")
    return when.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model as exports name it: its name, labels (class id = index), threshold, input size if known."""

    name: str
    labels: tuple[str, ...]
    conf: float
    input_size: tuple[int, int] | None = None

    def label(self, class_id: int) -> str:
        """The label of ``class_id``, or ``class <id>`` when the model does not name it."""
        if 0 <= class_id < len(self.labels) and self.labels[class_id].strip():
            return self.labels[class_id]
        return f"class {class_id}"


@dataclass(frozen=True, slots=True)
class Models:
    """The detector (and optional classifier) that produced an event."""

    detector: ModelRef
    classifier: ModelRef | None = None


@dataclass(frozen=True, slots=True)
class Classification:
    """A classifier's top class for one detection."""

    class_id: int
    label: str
    prob: float


@dataclass(frozen=True, slots=True)
class EventDetection:
    """One detection of an event's best frame; ``box`` is xyxy fractions, ``score`` 0..1."""

    class_id: int
    label: str
    score: float
    box: Box
    classification: Classification | None = None


@dataclass(frozen=True, slots=True)
class Vote:
    """The burst's classifier vote: winning class, its votes, and how many detections voted."""

    class_id: int
    label: str
    votes: int
    voters: int


@dataclass(frozen=True, slots=True)
class Event:
    """One event as exported; ``image`` is relative (None: no image kept), sizes None when unknown."""

    device: str
    uid: str
    time: datetime  # best known, aware UTC, whole seconds
    clock: str
    trigger: str
    image: str | None
    width: int | None
    height: int | None
    detections: tuple[EventDetection, ...]
    counts: dict[int, int]  # detector class id -> burst count
    vote: Vote | None
    models: Models

    @property
    def file(self) -> str | None:
        """``<device>/<image>``: the image's path in every export, None without an image."""
        return None if self.image is None else f"{self.device}/{self.image}"


@dataclass(frozen=True, slots=True)
class Deployment:
    """One device over the exported period: where it stood and how long it watched.

    ``effort`` maps a trigger name to {frames, empty, events, failed}.
    """

    device: str
    start: datetime | None
    end: datetime | None
    latitude: float | None = None
    longitude: float | None = None
    effort: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventExport:
    """What one export holds: events (in time order) and one deployment per device."""

    events: list[Event]
    deployments: dict[str, Deployment]
    source: str = "wildedge"  # who made it: "wildedge results (device X)" or "wildedge collect export"


class Categories:
    """Stable category ids for the union of several models' labels, matched by name.

    Models are walked in order of name, then their labels in class order, so the ids depend only
    on which models the export holds; with one model, a label's id is ``class_id + offset``.
    """

    def __init__(self, models: Iterable[ModelRef], *, offset: int) -> None:
        self.ids: dict[str, int] = {}
        self._offset = offset
        for model in sorted(set(models), key=lambda m: (m.name, m.labels, m.conf)):
            for class_id in range(len(model.labels)):
                self.add(model.label(class_id))

    def add(self, label: str) -> int:
        """The id of ``label``, adding it after the others when new."""
        if label not in self.ids:
            self.ids[label] = len(self.ids) + self._offset
        return self.ids[label]

    def as_dict(self) -> dict[str, str]:
        """``{"id": name}`` in id order, as MegaDetector files write categories."""
        return {str(i): name for name, i in sorted(self.ids.items(), key=lambda kv: kv[1])}


def detector_categories(events: Sequence[Event]) -> Categories:
    """Detection categories (ids from 1) over the detectors of ``events``."""
    return Categories((e.models.detector for e in events), offset=1)


def classifier_categories(events: Sequence[Event]) -> Categories | None:
    """Classification categories (ids from 0) over the classifiers of ``events``, None without any."""
    models = [e.models.classifier for e in events if e.models.classifier is not None]
    classified = any(d.classification is not None for e in events for d in e.detections)
    if not models and not classified:
        return None
    return Categories(models, offset=0)


def in_period(when: datetime, since: datetime | None, until: datetime | None) -> bool:
    """``since <= when < until`` (open ends when None)."""
    return (since is None or when >= since) and (until is None or when < until)


def parse_when(text: str, *, option: str, end_of_day: bool = False) -> datetime:
    """``YYYY-MM-DD`` or an ISO date-time as aware UTC (naive: UTC); a bare date with ``end_of_day``
    means the start of the next day, so ``--until 2026-05-31`` includes 31 May.

    Raises:
        ValueError: ``text`` is neither (the message names ``option``).
    """
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{option}: {text!r} is not a date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM[:SS][+HH:MM])"
                         ) from None
    if len(text.strip()) == 10 and end_of_day:
        when += timedelta(days=1)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)

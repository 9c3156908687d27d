"""The MQTT wire format v1: the compact JSON messages a device sends, and the topics they go to.

This module is the contract between devices and servers: ``docs/wire-format.md`` describes every
key, ``edge/data/wire-format-v1.schema.json`` is its JSON Schema. Functions are pure: records in,
bytes out (``encode_*``). Reading them back is :mod:`edge.payload_decode`; commands sent to a
device are :mod:`edge.commands`.

Bad input raises ``ValueError``. Decoders ignore keys they do not know: v1 may grow optional keys,
never change one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.store.records import DetectionRecord, EventRecord, FrameRecord

logger = logging.getLogger(__name__)

VERSION = 1
#: Trigger reason -> one-letter code (``g`` of an event, keys of an effort's ``f``).
TRIGGER_CODES: dict[str, str] = {"timelapse": "t", "motion": "m", "external": "x", "gpio": "x",
                                 "command": "c", "once": "o", "file": "f"}
TRIGGER_NAMES: dict[str, str] = {"t": "timelapse", "m": "motion", "x": "external", "c": "command",
                                 "o": "once", "f": "file"}
CAMERA_CODES: dict[str, str] = {"ok": "o", "failed": "f", "closed": "c"}
STATES = ("online", "offline", "stopped")

# The rule of [device] id in edge/config/models.py, repeated so that a server needs no pydantic.
_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_STORE_PATH = re.compile(r"([0-9]{4}/[0-9]{2}/[0-9]{2})/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.jpg")
_ID = re.compile(r"[A-Za-z0-9_-]{22}")
_HEX8 = re.compile(r"[0-9a-f]{8}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CODE = re.compile(r"[a-z]")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_T = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime holds
_MIB = 1 << 20
_MAX_PATH = 1024
_CAMERA_ERROR_CHARS = 200


def dumps(obj: Any) -> bytes:
    """The one encoding of every message: compact UTF-8 JSON, no NaN."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _bad(what: str, value: Any) -> ValueError:
    text = repr(value)
    return ValueError(f"{what}: {text if len(text) <= 80 else text[:77] + '...'}")


def _int(value: Any, what: str, lo: int | None = 0, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (lo is not None and value < lo) \
            or (hi is not None and value > hi):
        bounds = f" >= {lo}" if hi is None else f" within {lo}..{hi}"
        raise _bad(f"{what} must be an integer{bounds if lo is not None else ''}", value)
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(f"{what} must be a finite number", value)
    return value


# -- ids, times, topics ------------------------------------------------------------------------------

def encode_id(uid: str) -> str:
    """A UUID string as 22 characters of unpadded base64url (its 16 bytes)."""
    if not isinstance(uid, str) or not _UUID.fullmatch(uid):
        raise _bad("not a hyphenated UUID", uid)
    return base64.urlsafe_b64encode(uuid.UUID(uid).bytes).rstrip(b"=").decode("ascii")


def decode_id(text: str) -> str:
    """Inverse of :func:`encode_id`: the lowercase hyphenated UUID; only canonical text is accepted."""
    if not isinstance(text, str) or not _ID.fullmatch(text):
        raise _bad("not a 22-character base64url id", text)
    raw = base64.urlsafe_b64decode(text + "==")
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        raise _bad("non-canonical id (its last character carries stray bits)", text)
    return str(uuid.UUID(bytes=raw))


def boot_tag(boot_id: str) -> str:
    """``b``: the first 8 hex digits of the boot id; a boot id without them is hashed instead."""
    if not isinstance(boot_id, str) or not boot_id:
        raise _bad("boot id must be a non-empty string", boot_id)
    head = boot_id.replace("-", "")[:8].lower()
    if _HEX8.fullmatch(head):
        return head
    return hashlib.sha256(boot_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def trigger_code(reason: str) -> str:
    """The one-letter code of a trigger reason."""
    if reason not in TRIGGER_CODES:
        raise _bad(f"unknown trigger (known: {', '.join(TRIGGER_CODES)})", reason)
    return TRIGGER_CODES[reason]


def model_id(det_sha256: str, cls_sha256: str | None) -> str:
    """``mv``: 8 hex digits of sha256(detector sha256 [+ "+" + classifier sha256])."""
    hashes = [det_sha256] if cls_sha256 is None else [det_sha256, cls_sha256]
    for sha in hashes:
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise _bad("a sha256 is 64 lowercase hex digits", sha)
    return hashlib.sha256("+".join(hashes).encode("ascii")).hexdigest()[:8]


def _seconds(when: datetime | float) -> int:
    """Unix seconds (floor) of an aware datetime or of a Unix time."""
    if isinstance(when, datetime):
        if when.tzinfo is None or when.utcoffset() is None:
            raise _bad("a timezone-aware datetime is needed", when)
        value = (when - _EPOCH) // timedelta(seconds=1)
    else:
        value = math.floor(_number(when, "a time (aware datetime or Unix seconds)"))
    if not 0 <= value <= _MAX_T:
        raise _bad("time outside 1970..9999", when)
    return value


def _utc(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


def _head(device: str) -> dict[str, Any]:
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise _bad("device id must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
                   device)
    return {"v": VERSION, "d": device}


def _clock(out: dict[str, Any], synced: Any, boot_id: Any, monotonic: Any, *, always: bool = False) -> None:
    """``s``, then ``b`` and ``m`` when the clock is not synchronised (or ``always``)."""
    if not isinstance(synced, bool):
        raise _bad("clock_synced must be a bool", synced)
    out["s"] = int(synced)
    if always or not synced:
        out["b"] = boot_tag(boot_id)
        if not 0 <= _number(monotonic, "monotonic") < 2**53:
            raise _bad("monotonic must be seconds since boot", monotonic)
        out["m"] = math.floor(monotonic)


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one device, ``<prefix>/<device>/<kind>``; see docs/wire-format.md."""

    prefix: str
    device: str
    event: str
    effort: str
    status: str
    health: str
    model: str
    cmd_filter: str
    cmd_result: str

    def crop(self, event_id: str) -> str:
        """Where the JPEG crop of an event goes: ``.../crop/<22-char event id>`` (its ``e``)."""
        return f"{self.prefix}/{self.device}/crop/{encode_id(event_id)}"


def topics(prefix: str, device: str) -> Topics:
    """The topics of ``device`` under ``prefix`` (non-empty levels, no wildcards)."""
    if not isinstance(prefix, str) or not prefix or any(not level for level in prefix.split("/")) \
            or set(prefix) & {"+", "#", "\0"}:
        raise _bad("topic prefix must be non-empty levels separated by '/', without '+' or '#'", prefix)
    base = f"{prefix}/{_head(device)['d']}"
    return Topics(prefix, device, f"{base}/event", f"{base}/effort", f"{base}/status", f"{base}/health",
                  f"{base}/model", f"{base}/cmd/+", f"{base}/cmd/result")


# -- event -------------------------------------------------------------------------------------------

def _permille(value: Any, what: str) -> int:
    """A 0..1 fraction as an integer 0..1000, rounded half up (the same on every platform)."""
    scaled = math.floor(_number(value, what) * 1000 + 0.5)
    if not 0 <= scaled <= 1000:
        raise _bad(f"{what} must be within 0..1", value)
    return scaled


def _detection(det: DetectionRecord) -> list[int]:
    box = tuple(det.box)
    if len(box) != 4 or box[0] > box[2] or box[1] > box[3]:
        raise _bad("box must be x1, y1, x2, y2 with x1 <= x2 and y1 <= y2", det.box)
    row = [_int(det.class_id, "class id"), _permille(det.score, "score"), *(_permille(v, "box") for v in box)]
    if det.classification is not None:
        cls_id, _label, prob = det.classification
        row += [_int(cls_id, "classifier class id"), _permille(prob, "classification prob")]
    return row


def _image(image: str, t: int) -> tuple[str, str]:
    """``j`` (22-char id) for an image-store path dated like ``t``; otherwise ``i``, the path as is."""
    if not isinstance(image, str) or not image or len(image) > _MAX_PATH or not image.isprintable():
        raise _bad(f"image must be a printable path of 1..{_MAX_PATH} characters", image)
    match = _STORE_PATH.fullmatch(image)
    if match and match.group(1) == f"{_utc(t):%Y/%m/%d}":
        return "j", encode_id(match.group(2))
    return "i", image


def _recounts(summary: Mapping[str, Any], rows: list[list[int]]) -> list[list[int]]:
    """``n``: [class, burst count] of each class whose burst count is not its number in ``x``."""
    classes = summary.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, Mapping) for c in classes):
        raise _bad("summary['classes'] must be a list of objects", classes)
    counts: dict[int, int] = {}
    for entry in classes:
        class_id = _int(entry.get("class_id"), "summary class id")
        if class_id in counts:
            raise _bad("summary lists a class twice", class_id)
        counts[class_id] = _int(entry.get("count"), "summary class count", 1)
    in_x = {c: sum(1 for row in rows if row[0] == c) for c in {row[0] for row in rows}}
    if set(in_x) - set(counts):
        # A record bug, but the event is still worth delivering: x then counts those classes.
        logger.warning("event summary lacks best-frame classes %s", sorted(set(in_x) - set(counts)))
    return [[c, n] for c, n in sorted(counts.items()) if n != in_x.get(c, 0)]


def _vote(summary: Mapping[str, Any], rows: list[list[int]]) -> list[int] | None:
    """``w``: [class, votes, voters] of the burst, unless it is the one classification ``x`` carries."""
    vote, classified = summary.get("classification"), [row[6] for row in rows if len(row) > 6]
    if vote is None:
        if classified:
            logger.warning("event summary has no vote but best-frame detections are classified")
        return None
    if not isinstance(vote, Mapping):
        raise _bad("summary['classification'] must be an object", vote)
    votes = _int(vote.get("votes"), "votes", 1)
    row = [_int(vote.get("class_id"), "vote class id"), votes, _int(vote.get("voters"), "voters", votes)]
    return None if row[1:] == [1, 1] and classified == [row[0]] else row


def camera_clock(frame: FrameRecord) -> bool:
    """Whether ``frame``'s time is the camera's own clock, not the device's: a file a folder camera read.

    Its time is the photo's EXIF time (else the file's modification time), set by whatever camera
    took it, possibly years ago; the device clock's state and boot say nothing about it.
    """
    return frame.source is not None


def encode_event(event: EventRecord, best_frame: FrameRecord, *, device: str, model_id: str,
                 image: str | None, sticky: bool = False, camera_clock: bool = False) -> bytes:
    """The event message of ``event``.

    Args:
        event: the stored event; ``summary`` is ``EventSummary.to_dict()``.
        best_frame: the frame ``event.best_frame_uid`` names; its detections become ``x``.
        device: the device id.
        model_id: ``mv``, the id of the retained model message (:func:`model_id`).
        image: the image path relative to the image store (a folder camera: to its folder); None: none.
        sticky: sticky-card mode: detections not flagged ``new`` are left out of ``x``.
        camera_clock: ``event.captured_at`` is the camera's own time (a folder camera's photo: its EXIF
            time, else its file time), not the device clock's: the message says so with ``"c":1``, and
            carries ``"s":1`` without ``b``/``m``, so that no server "corrects" it from the device's boot.

    Raises:
        ValueError: the records disagree, or hold values v1 cannot carry.
    """
    if best_frame.uid != event.best_frame_uid:
        raise _bad(f"best_frame is not the event's best frame {event.best_frame_uid!r}", best_frame.uid)
    if not isinstance(model_id, str) or not _HEX8.fullmatch(model_id):
        raise _bad("model id must be 8 lowercase hex digits", model_id)
    if not isinstance(event.summary, Mapping):
        raise _bad("event summary must be an object", event.summary)
    out = _head(device)
    out["e"], out["t"] = encode_id(event.uid), _seconds(event.captured_at)
    if not isinstance(camera_clock, bool):
        raise _bad("camera_clock must be a bool", camera_clock)
    if camera_clock:
        # Not the device clock: nothing for a server to correct, whatever the device clock's state.
        out["s"], out["c"] = 1, 1
    else:
        _clock(out, event.clock_synced, event.boot_id, event.monotonic)
    out["g"] = trigger_code(event.trigger)
    if image is not None:
        key, value = _image(image, out["t"])
        out[key] = value
    rows = [_detection(d) for d in best_frame.detections if d.new or not sticky]
    recounts, vote = _recounts(event.summary, rows), _vote(event.summary, rows)
    for key, value in (("x", rows), ("n", recounts), ("w", vote)):
        if value:
            out[key] = value
    out["mv"] = model_id
    return dumps(out)


# -- effort, status, model ---------------------------------------------------------------------------

def encode_effort(*, device: str, uid: str, start: datetime, end: datetime, clock_synced: bool, boot_id: str,
                  monotonic: float, counts: Mapping[str, Sequence[int]]) -> bytes:
    """The sampling-effort message of ``[start, end)``; ``monotonic`` is read at ``end``.

    It always carries ``b`` and ``m``, so that a server has a clock reference from every boot even
    when health messages are turned off.

    ``counts`` maps a trigger code or reason to (frames, empty, events, failed); reasons that share
    a code (external, gpio) are added up.

    Raises:
        ValueError: ``end`` is not after ``start``, a count is negative, or empty + failed > frames.
    """
    out = _head(device)
    out["e"], out["t0"], out["t1"] = encode_id(uid), _seconds(start), _seconds(end)
    if out["t1"] <= out["t0"]:
        raise _bad(f"the effort period must end after its start {start!r}", end)
    _clock(out, clock_synced, boot_id, monotonic, always=True)
    table: dict[str, list[int]] = {}
    for key, value in counts.items():
        code = key if key in TRIGGER_NAMES else trigger_code(key)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 4:
            raise _bad(f"effort counts of {key!r} must be (frames, empty, events, failed)", value)
        row = [_int(v, f"effort count of {key!r}") for v in value]
        if row[1] + row[3] > row[0]:
            raise _bad(f"effort counts of {key!r}: empty + failed exceed frames", value)
        table[code] = [a + b for a, b in zip(table[code], row)] if code in table else row
    out["f"] = dict(sorted(table.items()))
    return dumps(out)


def encode_status(*, device: str, state: str, at: datetime | float | None = None,
                  clock_synced: bool | None = None, location: tuple[float, float] | None = None) -> bytes:
    """The retained status message; the Last Will (``offline``) is made without ``at``.

    ``location`` (latitude, longitude in decimal degrees) is sent as ``la``/``lo`` in micro-degrees,
    only when the device is told to (``[mqtt] send_location``): a trap's position can be sensitive.
    """
    if state not in STATES:
        raise _bad(f"status must be one of {', '.join(STATES)}", state)
    out = _head(device)
    out["st"] = state
    if at is not None:
        out["t"] = _seconds(at)
    if clock_synced is not None:
        if at is None or not isinstance(clock_synced, bool):
            raise _bad("clock_synced must be a bool and comes with a time", clock_synced)
        out["s"] = int(clock_synced)
    if location is not None:
        out["la"], out["lo"] = _microdegrees(location)
    return dumps(out)


def _microdegrees(location: Any) -> tuple[int, int]:
    """(latitude, longitude) in decimal degrees as integer micro-degrees (about 0.1 m), rounded half up."""
    if isinstance(location, (str, bytes)) or not isinstance(location, Sequence) or len(location) != 2:
        raise _bad("location must be (latitude, longitude)", location)
    out = []
    for value, what, limit in ((location[0], "latitude", 90), (location[1], "longitude", 180)):
        degrees = _number(value, what)
        if not -limit <= degrees <= limit:
            raise _bad(f"{what} must be within -{limit}..{limit}", value)
        out.append(math.floor(degrees * 1_000_000 + 0.5))
    return out[0], out[1]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model as the model message names it: file name, sha256, labels, thresholds (iou: detectors)."""

    name: str
    sha256: str
    labels: Sequence[str]
    conf: float
    iou: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or not self.name.isprintable():
            raise _bad("model name must be a non-empty printable string", self.name)
        model_id(self.sha256, None)  # checks the hash
        if isinstance(self.labels, str) or not all(isinstance(label, str) for label in self.labels):
            raise _bad("labels must be a list of strings", self.labels)
        object.__setattr__(self, "labels", tuple(self.labels))
        for what, value in (("conf", self.conf), ("iou", self.iou)):
            if value is not None and not 0 <= _number(value, what) <= 1:
                raise _bad(f"{what} must be within 0..1", value)

    def wire(self) -> dict[str, Any]:
        out = {"n": self.name, "sha": self.sha256, "l": list(self.labels), "conf": float(self.conf)}
        return out if self.iou is None else {**out, "iou": float(self.iou)}


def encode_model(*, device: str, detector: ModelInfo, classifier: ModelInfo | None, at: datetime | float,
                 clock_synced: bool) -> bytes:
    """The retained model message: what an event's ``mv`` means (names, hashes, labels, thresholds)."""
    if not isinstance(clock_synced, bool):
        raise _bad("clock_synced must be a bool", clock_synced)
    out = {**_head(device), "t": _seconds(at), "s": int(clock_synced),
           "mv": model_id(detector.sha256, classifier.sha256 if classifier is not None else None),
           "det": detector.wire()}
    if classifier is not None:
        out["cls"] = classifier.wire()
    return dumps(out)


# -- health ------------------------------------------------------------------------------------------

#: (wire key, snapshot field path, factor: wire = round(value * factor), decoded name, minimum)
_HEALTH: tuple[tuple[str, str, float, str, int | None], ...] = (
    ("up", "uptime_s", 1, "uptime_s", 0),
    ("tc", "cpu_temp_c", 10, "cpu_temp_c", None),
    ("th", "throttled.raw", 1, "throttled", 0),
    ("ld", "load_avg.0", 100, "load_1m", 0),
    ("pc", "process_cpu", 100, "process_cpu", 0),
    ("ma", "mem_available_bytes", 1 / _MIB, "mem_available_mib", 0),
    ("mt", "mem_total_bytes", 1 / _MIB, "mem_total_mib", 0),
    ("rs", "rss_bytes", 1 / _MIB, "rss_mib", 0),
    ("rp", "peak_rss_bytes", 1 / _MIB, "peak_rss_mib", 0),
    ("df", "disk_free_bytes", 1 / _MIB, "disk_free_mib", 0),
    ("dt", "disk_total_bytes", 1 / _MIB, "disk_total_mib", 0),
    ("q", "queue_depth", 1, "queue_depth", 0),
    ("qb", "queue_bytes", 1, "queue_bytes", 0),
    ("im", "inference_ms", 1, "inference_ms", 0),
    ("cf", "camera.failures", 1, "camera_failures", 0),
    ("cr", "camera.reopened", 1, "camera_reopened", 0),
    ("fr", "counts.frames", 1, "frames", 0),
    ("ev", "counts.events", 1, "events", 0),
    ("fl", "counts.failures", 1, "failures", 0),
    ("tg", "counts.triggers", 1, "triggers", 0),
    ("ur", "counts.unrecorded", 1, "unrecorded", 0),
)


def _field(snapshot: Mapping[str, Any], path: str) -> Any:
    value: Any = snapshot
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit():
            value = value[int(part)] if int(part) < len(value) else None
        elif value is not None:
            raise _bad(f"health field {path}: unexpected container", value)
    return value


def encode_health(snapshot: Mapping[str, Any], *, device: str) -> bytes:
    """The health message of a ``collect_health`` snapshot with the daemon's extras.

    Fields that are None (unreadable here) are left out. ``at``, ``clock_synchronised``,
    ``boot_id`` and ``monotonic_s`` are required: health always carries ``b`` and ``m``.

    Raises:
        ValueError: a required field is missing, or a field has the wrong type.
    """
    at = snapshot.get("at")
    out = {**_head(device), "t": _seconds(datetime.fromisoformat(at) if isinstance(at, str) else at)}
    _clock(out, snapshot.get("clock_synchronised"), snapshot.get("boot_id"), snapshot.get("monotonic_s"),
           always=True)
    for key, path, factor, _name, lo in _HEALTH:
        if (value := _field(snapshot, path)) is not None:
            out[key] = _int(math.floor(_number(value, path) * factor + 0.5), f"health field {path}", lo)
    state, error, low = _field(snapshot, "camera.state"), _field(snapshot, "camera.last_error"), \
        snapshot.get("disk_low")
    if state is not None:
        if state not in CAMERA_CODES:
            raise _bad("unknown camera state", state)
        out["cam"] = CAMERA_CODES[state]
    if error is not None:
        out["ce"] = str(error)[:_CAMERA_ERROR_CHARS]
    if low is not None:
        if not isinstance(low, bool):
            raise _bad("disk_low must be a bool", low)
        out["dl"] = int(low)
    if (full := snapshot.get("disk_full")) is not None:
        if not isinstance(full, bool):
            raise _bad("disk_full must be a bool", full)
        out["dx"] = int(full)
    return dumps(out)

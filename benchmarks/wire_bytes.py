"""Bytes on the wire per event: wildedge wire format v1 against a Frigate-style verbose event (not a test).

For 1 and 5 detections (each with a species classification) it prints the size of the v1 event
message and of the messages Frigate would publish on ``frigate/events`` for the same content: one
``{"type": "new", "before": {...}, "after": {...}}`` per tracked object, with Frigate's keys and
``json.dumps`` defaults (pixel boxes on a 1920x1080 frame, the species as ``sub_label``).

For 0 detections there is no event: an empty frame is counted in the hourly effort message, so its
cost is that message's size shared by the empty frames of the hour. Frigate publishes nothing for
an empty frame, so a server cannot tell "no animal" from "camera off" (no ratio is printed).
Sizes are plain UTF-8 JSON payloads, without MQTT headers or compression.

usage:
  .venv/bin/python benchmarks/wire_bytes.py
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

from edge import payload as wire
from edge.store.images import image_relpath
from edge.store.records import DetectionRecord, EventRecord, FrameRecord

DEVICE = "trap-01"
WIDTH, HEIGHT = 1920, 1080
AT = datetime(2026, 6, 1, 3, 14, 15, 926000, tzinfo=timezone.utc)
MV = wire.model_id(hashlib.sha256(b"detector").hexdigest(), hashlib.sha256(b"classifier").hexdigest())
SPECIES = ["red fox", "roe deer", "red deer", "wild boar", "badger", "chamois"]
#: (score, box as fractions, classifier class, probability): a herd moving left to right.
HERD = [
    (0.9411, (0.0521, 0.4113, 0.2388, 0.7342), 5, 0.9712), (0.9127, (0.2609, 0.3801, 0.4472, 0.6916), 5, 0.9388),
    (0.8836, (0.4701, 0.4457, 0.6204, 0.7125), 5, 0.8841), (0.7315, (0.6452, 0.4012, 0.8125, 0.6688), 5, 0.7904),
    (0.5208, (0.8311, 0.4526, 0.9473, 0.6020), 5, 0.6127),
]
#: One hour of a timelapse every 5 minutes plus motion triggers: (frames, empty, events, failed).
EFFORT_HOUR = {"timelapse": (12, 11, 1, 0), "motion": (9, 4, 2, 0)}


def _uid(n: int) -> str:
    ms = (AT - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)
    rand = int.from_bytes(hashlib.sha256(b"%d" % n).digest()[:10], "big")
    value = ms << 80 | 7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def wildedge_event(count: int) -> bytes:
    """The v1 event of a one-frame motion burst with ``count`` classified detections."""
    dets = [DetectionRecord(0, "animal", s, box, (c, SPECIES[c], p)) for s, box, c, p in HERD[:count]]
    frame_uid = _uid(1)
    image = image_relpath(AT, frame_uid)
    frame = FrameRecord(frame_uid, AT, 5432.1, "5f1c9a3e-8d2b-4c7a-9e1f-0a2b3c4d5e6f", True, "motion", _uid(2), 0,
                        WIDTH, HEIGHT, 83.0, image_path=image, detections=dets)
    summary = {"frames": 1, "classes": [{"class_id": 0, "count": count}],
               "classification": {"class_id": 5, "votes": count, "voters": count}}
    event = EventRecord(_uid(3), frame.burst_id, AT, 5432.1, frame.boot_id, True, "motion", image, frame_uid, summary)
    return wire.encode_event(event, frame, device=DEVICE, model_id=MV, image=image)


def _frigate_object(index: int, score: float, box: tuple[float, ...], species: str, prob: float,
                    *, later: float) -> dict:
    t0 = AT.timestamp()
    x1, y1, x2, y2 = (round(v * (WIDTH if i % 2 == 0 else HEIGHT)) for i, v in enumerate(box))
    area = (x2 - x1) * (y2 - y1)
    side = max(x2 - x1, y2 - y1, 320)
    region = [max(0, x1 - 40), max(0, y1 - 40), max(0, x1 - 40) + side, max(0, y1 - 40) + side]
    return {
        "id": f"{t0:.6f}-{hashlib.sha256(b'%d' % index).hexdigest()[:6]}", "camera": DEVICE,
        "frame_time": round(t0 + later, 6), "snapshot": {"frame_time": round(t0 + later, 6), "box": [x1, y1, x2, y2], "area": area,
                                               "region": region, "score": score, "attributes": []},
        "label": "animal", "sub_label": [species, prob], "top_score": score, "false_positive": False,
        "start_time": t0, "end_time": None, "score": score, "box": [x1, y1, x2, y2], "area": area,
        "ratio": round((x2 - x1) / (y2 - y1), 6), "region": region, "current_zones": [], "entered_zones": [],
        "thumbnail": None, "has_snapshot": True, "has_clip": False, "stationary": False, "motionless_count": 0,
        "position_changes": 0, "attributes": {}, "current_attributes": [],
    }


def frigate_events(count: int) -> list[bytes]:
    """One ``frigate/events`` "new" message per detected object, as Frigate's ``json.dumps`` writes it."""
    out = []
    for i, (score, box, cls, prob) in enumerate(HERD[:count]):
        before = _frigate_object(i, round(score - 0.0137, 6), box, SPECIES[cls], prob, later=0.0)
        after = _frigate_object(i, score, box, SPECIES[cls], prob, later=0.2)
        out.append(json.dumps({"type": "new", "before": before, "after": after}).encode())
    return out


def effort_share() -> tuple[int, int, float]:
    """(effort message bytes, empty frames in its hour, bytes per empty frame)."""
    data = wire.encode_effort(device=DEVICE, uid=_uid(4), start=AT - timedelta(hours=1), end=AT, clock_synced=True,
                              boot_id="5f1c9a3e-8d2b-4c7a-9e1f-0a2b3c4d5e6f", monotonic=5432.1, counts=EFFORT_HOUR)
    empty = sum(row[1] for row in EFFORT_HOUR.values())
    return len(data), empty, len(data) / empty


def main() -> None:
    size, empty, share = effort_share()
    print(f"{'detections':>10}  {'wildedge v1':>12}  {'Frigate-style':>14}  {'ratio':>6}")
    print(f"{0:>10}  {share:>10.1f} B  {'0 B (none)':>14}  {'n/a':>6}   "
          f"effort message {size} B / {empty} empty frames in the hour")
    ours = {}
    for count in (1, 5):
        ours[count] = len(wildedge_event(count))
        theirs = frigate_events(count)
        total = sum(len(m) for m in theirs)
        print(f"{count:>10}  {ours[count]:>10} B  {total:>12} B  {total / ours[count]:>5.1f}x   "
              f"({len(theirs)} Frigate message{'s' if len(theirs) > 1 else ''})")
    print(f"each further detection: {(ours[5] - ours[1]) / 4:.1f} B in v1")
    print(f"1-detection v1 event:   {wildedge_event(1).decode()}")


if __name__ == "__main__":
    main()

"""Reading wire format v1 messages back (the collector's side, and the contract tests).

Each ``decode_*`` checks the version and the keys it needs, ignores keys it does not know (v1 may
grow optional keys) and returns a plain dict with readable keys; bad input raises ``ValueError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from edge.payload import (
    _CODE,
    _HEALTH,
    _HEX8,
    _MAX_T,
    CAMERA_CODES,
    STATES,
    TRIGGER_NAMES,
    VERSION,
    ModelInfo,
    _bad,
    _head,
    _int,
    _utc,
    decode_id,
    model_id,
)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load(data: bytes | str) -> dict[str, Any]:
    """The message object, checked for ``v`` (this version) and ``d``."""
    try:
        msg = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"not a JSON message: {err}") from err
    if not isinstance(msg, dict):
        raise _bad("a message is a JSON object", msg)
    _int(msg.get("v"), f"'v' (this is version {VERSION})", VERSION, VERSION)
    _head(msg.get("d"))
    return msg


def _get(msg: Mapping[str, Any], key: str, kind: type | tuple[type, ...], *, required: bool = True,
         lo: int | None = 0, hi: int | None = None) -> Any:
    value = msg.get(key)
    if value is None:
        if required:
            raise ValueError(f"missing key {key!r}")
        return None
    if kind is int:
        return _int(value, repr(key), lo, hi)
    if not isinstance(value, kind):
        raise _bad(f"bad value of {key!r}", value)
    return value


def _sync(msg: Mapping[str, Any], *, always: bool = False) -> dict[str, Any]:
    synced = _get(msg, "s", int, hi=1) == 1
    boot = _get(msg, "b", str, required=always or not synced)
    if boot is not None and not _HEX8.fullmatch(boot):
        raise _bad("bad value of 'b'", boot)
    return {"clock_synced": synced, "boot": boot, "monotonic": _get(msg, "m", int, required=always or not synced)}


def _time(msg: Mapping[str, Any], key: str = "t", *, required: bool = True) -> datetime | None:
    t = _get(msg, key, int, required=required, hi=_MAX_T)
    return None if t is None else _utc(t)


def _row(row: Any) -> dict[str, Any]:
    if not isinstance(row, list) or len(row) not in (6, 8):
        raise _bad("a detection is [class, score, x1, y1, x2, y2(, cls, prob)]", row)
    row = [_int(v, "detection value", 0, 1000 if i not in (0, 6) else None) for i, v in enumerate(row)]
    if row[2] > row[4] or row[3] > row[5]:
        raise _bad("box with x1 > x2 or y1 > y2", row)
    return {"class_id": row[0], "score": row[1] / 1000, "box": tuple(v / 1000 for v in row[2:6]),
            "classification": {"class_id": row[6], "prob": row[7] / 1000} if len(row) == 8 else None}


def decode_event(data: bytes | str) -> dict[str, Any]:
    """An event message expanded: id, time, clock (``camera_clock``: ``t`` is the camera's own time, not
    to be corrected), trigger name, image, detections, counts, vote, model.

    Raises:
        ValueError: the message is not a valid v1 event.
    """
    msg = _load(data)
    out: dict[str, Any] = {"device": msg["d"], "id": decode_id(_get(msg, "e", str)), "time": _time(msg),
                           **_sync(msg)}
    # "c":1: t is the camera's own clock (a folder camera's photo), never to be corrected; s is then 1.
    out["camera_clock"] = _get(msg, "c", int, required=False, lo=1, hi=1) == 1
    if out["camera_clock"] and not out["clock_synced"]:
        raise ValueError("'c' (camera clock) comes with 's' 1")
    code = _get(msg, "g", str)
    if not _CODE.fullmatch(code):
        raise _bad("bad trigger code", code)
    out["trigger"] = TRIGGER_NAMES.get(code, code)  # a code from a newer device is kept as it is
    ref = _get(msg, "j", str, required=False)
    out["image"] = f"{out['time']:%Y/%m/%d}/{decode_id(ref)}.jpg" if ref else _get(msg, "i", str, required=False)
    out["detections"] = detections = [_row(row) for row in _get(msg, "x", list, required=False) or []]
    counts = {c: sum(1 for d in detections if d["class_id"] == c) for c in {d["class_id"] for d in detections}}
    for pair in _get(msg, "n", list, required=False) or []:
        if not isinstance(pair, list) or len(pair) != 2:
            raise _bad("an entry of 'n' is [class, count]", pair)
        counts[_int(pair[0], "class in 'n'")] = _int(pair[1], "count in 'n'", 1)
    out["counts"] = dict(sorted(counts.items()))
    vote = _get(msg, "w", list, required=False)
    classified = [d["classification"]["class_id"] for d in detections if d["classification"]]
    if vote is None and len(classified) == 1:
        vote = [classified[0], 1, 1]
    if vote is not None:
        if len(vote) != 3:
            raise _bad("'w' is [class, votes, voters]", vote)
        values = [_int(v, "'w' value", 0 if i == 0 else 1) for i, v in enumerate(vote)]
        if values[1] > values[2]:
            raise _bad("'w' has more votes than voters", vote)
        vote = dict(zip(("class_id", "votes", "voters"), values))
    out["vote"], out["model_id"] = vote, _get(msg, "mv", str)
    if not _HEX8.fullmatch(out["model_id"]):
        raise _bad("bad value of 'mv'", out["model_id"])
    return out


def decode_effort(data: bytes | str) -> dict[str, Any]:
    """An effort message: id, start, end, clock, and per trigger name {frames, empty, events, failed}."""
    msg = _load(data)
    out: dict[str, Any] = {"device": msg["d"], "id": decode_id(_get(msg, "e", str)),
                           "start": _time(msg, "t0"), "end": _time(msg, "t1"), **_sync(msg, always=True),
                           "counts": {}}
    for code, row in _get(msg, "f", dict).items():
        if not _CODE.fullmatch(code) or not isinstance(row, list) or len(row) != 4:
            raise _bad(f"effort counts of {code!r} must be [frames, empty, events, failed]", row)
        out["counts"][TRIGGER_NAMES.get(code, code)] = dict(
            zip(("frames", "empty", "events", "failed"), (_int(v, "effort count") for v in row)))
    return out


def decode_status(data: bytes | str) -> dict[str, Any]:
    """A status message: device, state, time and clock_synced (None in the Last Will), location or None."""
    msg = _load(data)
    state, synced = _get(msg, "st", str), _get(msg, "s", int, hi=1, required=False)
    if state not in STATES:
        raise _bad("bad status", state)
    lat, lon = _get(msg, "la", int, required=False, lo=-90_000_000, hi=90_000_000), \
        _get(msg, "lo", int, required=False, lo=-180_000_000, hi=180_000_000)
    if (lat is None) != (lon is None):
        raise ValueError("'la' and 'lo' come together")
    return {"device": msg["d"], "state": state, "time": _time(msg, required=False),
            "clock_synced": None if synced is None else synced == 1,
            "location": None if lat is None else (lat / 1_000_000, lon / 1_000_000)}


def decode_health(data: bytes | str) -> dict[str, Any]:
    """A health message with readable names and units (°C, fractions, MiB); absent fields stay absent."""
    msg = _load(data)
    out: dict[str, Any] = {"device": msg["d"], "time": _time(msg), **_sync(msg, always=True)}
    for key, _path, factor, name, lo in _HEALTH:
        if (value := _get(msg, key, int, required=False, lo=lo)) is not None:
            out[name] = value / factor if factor > 1 else value
    if (state := _get(msg, "cam", str, required=False)) is not None:
        out["camera_state"] = {code: name for name, code in CAMERA_CODES.items()}.get(state, state)
    if (error := _get(msg, "ce", str, required=False)) is not None:
        out["camera_error"] = error
    if (low := _get(msg, "dl", int, required=False, hi=1)) is not None:
        out["disk_low"] = low == 1
    if (full := _get(msg, "dx", int, required=False, hi=1)) is not None:
        out["disk_full"] = full == 1
    return out


def decode_model(data: bytes | str) -> dict[str, Any]:
    """A model message: time, clock, model id, detector and classifier as :class:`ModelInfo`."""
    msg = _load(data)
    out: dict[str, Any] = {"device": msg["d"], "time": _time(msg), "clock_synced": _get(msg, "s", int, hi=1) == 1,
                           "model_id": _get(msg, "mv", str)}
    for key, name in (("det", "detector"), ("cls", "classifier")):
        part = _get(msg, key, dict, required=key == "det")
        out[name] = None if part is None else ModelInfo(
            _get(part, "n", str), _get(part, "sha", str), _get(part, "l", list),
            _get(part, "conf", (int, float)), _get(part, "iou", (int, float), required=False))
    cls = out["classifier"]
    if out["model_id"] != model_id(out["detector"].sha256, cls.sha256 if cls is not None else None):
        raise _bad("'mv' does not match the model hashes", out["model_id"])
    return out



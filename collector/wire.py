"""Reading one MQTT message as the collector receives it: topic, size, JSON Schema, wire decoder.

Pure functions, no database: :func:`parse` returns a :class:`Parsed` message or raises
:class:`Rejected` with a short reason code (counted per reason) and a one-line detail. Both the
wire format's own decoder (:mod:`edge.payload_decode`) and its JSON Schema must accept a
message; the schema is the contract other implementations are held to, the decoder adds the
rules a schema cannot say (canonical ids, ``mv`` matching the hashes, x1 <= x2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from edge import payload_decode
from edge.imaging import jpeg_info
from edge.payload import decode_id

#: Topic kinds the collector stores (``<prefix>/<device>/<kind>``; crops have one more level).
KINDS = ("event", "effort", "status", "health", "model")
DECODERS = {"event": payload_decode.decode_event, "effort": payload_decode.decode_effort,
            "status": payload_decode.decode_status, "health": payload_decode.decode_health,
            "model": payload_decode.decode_model}
#: Largest integer a column holds on both dialects (PostgreSQL INTEGER).
INT_MAX = 2**31 - 1
#: The range of a PostgreSQL BIGINT and of a SQLite INTEGER.
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
_TOPIC_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class Rejected(Exception):
    """A message the collector refuses; ``reason`` is a short code, ``detail`` one line."""

    def __init__(self, reason: str, detail: str, *, device: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.device = device


@dataclass(frozen=True, slots=True)
class Parsed:
    """A valid message: its kind, device, the decoded fields and (events) the raw detection rows."""

    kind: str
    device: str
    data: dict[str, Any]
    raw: dict[str, Any]


@cache
def _validators() -> dict[str, Callable[[Any], tuple[str, str] | None]]:
    """Per message kind: a function returning the first schema problem as (path, message), or None.

    jsonschema-rs (compiled) checks a message in a few microseconds; the pure-Python jsonschema
    takes about a millisecond for a five-detection event, which would make the schema the
    collector's bottleneck (measured with benchmarks/collector.py). Both implement draft 2020-12;
    the Python one is the fallback where no jsonschema-rs wheel exists.
    """
    text = resources.files("edge").joinpath("data/wire-format-v1.schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    # Each kind's definition as the root (its problems then have exact paths), the $defs beside it.
    roots = {kind: {"$schema": schema["$schema"], "$defs": schema["$defs"], **schema["$defs"][kind]} for kind in KINDS}
    try:
        import jsonschema_rs
    except ImportError:
        import jsonschema

        def python(validator: Any) -> Callable[[Any], tuple[str, str] | None]:
            def first(raw: Any) -> tuple[str, str] | None:
                error = min(validator.iter_errors(raw), key=lambda e: list(e.absolute_path), default=None)
                return None if error is None else ("/".join(map(str, error.absolute_path)), error.message)
            return first

        return {kind: python(jsonschema.Draft202012Validator(root)) for kind, root in roots.items()}

    def compiled(validator: Any) -> Callable[[Any], tuple[str, str] | None]:
        def first(raw: Any) -> tuple[str, str] | None:
            if validator.is_valid(raw):
                return None
            error = min(validator.iter_errors(raw), key=lambda e: list(e.instance_path))
            return "/".join(map(str, error.instance_path)), error.message
        return first

    return {kind: compiled(jsonschema_rs.Draft202012Validator(root)) for kind, root in roots.items()}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def split_topic(topic: str, prefix: str) -> tuple[str, str, str | None]:
    """``(device, kind, crop id or None)`` of a topic under ``prefix``.

    Raises:
        Rejected: the topic is not one of the device topics the collector stores.
    """
    head = prefix + "/"
    if not topic.startswith(head):
        raise Rejected("bad_topic", f"not under the prefix {prefix!r}")
    levels = topic[len(head):].split("/")
    device = levels[0]
    if not _TOPIC_DEVICE.fullmatch(device):
        raise Rejected("bad_topic", "the device level is not a valid device id")
    if len(levels) == 2 and levels[1] in KINDS:
        return device, levels[1], None
    if len(levels) == 3 and levels[1] == "crop":
        return device, "crop", levels[2]
    raise Rejected("bad_topic", "not a device topic the collector stores", device=device)


def parse(topic: str, payload: bytes, *, prefix: str, max_payload: int,
          allow: frozenset[str] | None = None) -> Parsed:
    """Check one message and decode it.

    Raises:
        Rejected: too large, not from an allowed device, not valid (reason codes: ``too_large``,
            ``bad_topic``, ``not_allowed``, ``bad_json``, ``bad_version``, ``invalid``,
            ``device_mismatch``, ``bad_crop``).
    """
    device, kind, crop_id = split_topic(topic, prefix)
    if allow is not None and device not in allow:
        raise Rejected("not_allowed", f"device {device!r} is not in the allow-list", device=device)
    if len(payload) > max_payload:
        raise Rejected("too_large", f"{len(payload)} bytes, over the limit of {max_payload}", device=device)
    if kind == "crop":
        return _crop(device, crop_id or "", payload)
    try:
        raw = json.loads(payload, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise Rejected("bad_json", f"not JSON: {err}", device=device) from None
    if not isinstance(raw, dict):
        raise Rejected("bad_json", "a message is a JSON object", device=device)
    if raw.get("v") != 1:
        raise Rejected("bad_version", f"schema version {str(raw.get('v'))[:20]!r}; this collector reads 1",
                       device=device)
    problem = _validators()[kind](raw)
    if problem is not None:
        where, message = problem
        raise Rejected("invalid", f"{kind} fails the schema at {where or '<root>'}: {message[:160]}", device=device)
    try:
        data = DECODERS[kind](payload)
    except ValueError as err:
        raise Rejected("invalid", f"{kind}: {err}", device=device) from None
    if data["device"] != device:
        raise Rejected("device_mismatch", f"topic names {device!r}, the message {data['device']!r}", device=device)
    _check_range(kind, raw, device)
    return Parsed(kind, device, data, raw)


def _check_range(kind: str, raw: dict[str, Any], device: str) -> None:
    """Values the schema allows but a column cannot hold, or would hold differently on each dialect.

    Anywhere in the message: integers beyond 64 bits (PostgreSQL refuses them, Python's sqlite3 raises
    OverflowError, which would fail the whole batch), text with NUL (PostgreSQL refuses it) or lone
    surrogates (neither driver can encode them). Class ids, counts and temperatures go into 32-bit columns.
    """
    stack: list[Any] = [raw]
    while stack:  # iterative: a message may nest as deep as json.loads allows
        value = stack.pop()
        if isinstance(value, dict):
            stack += value.keys()
            stack += value.values()
        elif isinstance(value, list):
            stack += value
        elif isinstance(value, int) and not isinstance(value, bool) and not BIGINT_MIN <= value <= BIGINT_MAX:
            raise Rejected("invalid", f"{kind}: an integer is beyond 64 bits", device=device)
        elif isinstance(value, str) and not _storable(value):
            raise Rejected("invalid", f"{kind}: text with a NUL character or a lone surrogate", device=device)
    values: list[int] = []
    if kind == "event":
        for row in raw.get("x") or []:
            values += [row[0]] + ([row[6]] if len(row) == 8 else [])
        values += [v for pair in raw.get("n") or [] for v in pair] + list(raw.get("w") or [])
    elif kind == "health" and raw.get("tc") is not None:
        values.append(abs(raw["tc"]))
    if any(v > INT_MAX for v in values):
        raise Rejected("invalid", f"{kind}: a class id, count or temperature is beyond {INT_MAX}", device=device)


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _crop(device: str, ref: str, payload: bytes) -> Parsed:
    try:
        event_id = decode_id(ref)
    except ValueError as err:
        raise Rejected("bad_topic", f"crop topic: {err}", device=device) from None
    info = jpeg_info(payload) if payload[:2] == b"\xff\xd8" else None
    if info is None:
        raise Rejected("bad_crop", "a crop must be a JPEG image", device=device)
    return Parsed("crop", device, {"event_id": event_id, "jpeg": payload}, {})

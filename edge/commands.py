"""Commands a server sends to a device over MQTT (wire format v1), and the result the device answers.

A command arrives on ``<prefix>/<device>/cmd/<name>`` with a JSON object as payload: an optional
``id`` (the correlation string of MQTT 3.1.1 clients; MQTT 5 correlation data is the transport's
business) and the command's arguments. :func:`parse_command` checks syntax only and never executes
anything; the daemon validates values (``set`` against the config schema) and acts.

With a command key, every command carries ``ts`` (Unix seconds) and ``sig``: the hex HMAC-SHA256
of :func:`canonical_command` (see :func:`sign_command`); :func:`parse_command` refuses anything
else with ``bad_signature``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.errors import WildedgeError
from edge.payload import _bad, _head, dumps

logger = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 4096
MAX_CORRELATION_CHARS = 64
MAX_SET_VALUES = 20
#: CommandError codes; a daemon may answer with its own codes too (the result's ``code``).
ERROR_CODES = ("bad_json", "unknown_command", "bad_args", "too_large", "bad_signature", "replayed")
#: How far a signed command's ``ts`` may be from a synchronised device clock (replay protection).
MAX_CLOCK_SKEW_S = 300
#: Arguments every command may carry besides its own: the correlation id and the signature's two.
_COMMON_ARGS = frozenset({"id", "sig", "ts"})
_SIG = re.compile(r"[0-9a-fA-F]{64}")
_MAX_TS = 2**53 - 1  # exact in every JSON implementation
_SET_KEY = re.compile(r"[a-z_]+(\.[a-z_]+)+")
_RESULT_CODE = re.compile(r"[a-z_]{1,32}")


class CommandError(WildedgeError):
    """A command that cannot be accepted; ``code`` is one of :data:`ERROR_CODES`.

    ``correlation`` is the command's ``id`` when it could be read, so the error reply can carry it.
    """

    def __init__(self, code: str, message: str, correlation: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.correlation = correlation


@dataclass(frozen=True, slots=True)
class Command:
    """A syntactically valid command: its name, correlation id (or None) and arguments."""

    name: str
    correlation: str | None
    args: dict[str, Any] = field(default_factory=dict)


def _shown(value: Any) -> str:
    # ascii(): echoed user text can hold lone surrogates, which UTF-8 (the reply) cannot carry.
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _no_args(args: dict[str, Any]) -> str | None:
    return None


def _capture_args(args: dict[str, Any]) -> str | None:
    burst = args.get("burst")
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 100):
        return f"burst must be an integer within 1..100, got {_shown(burst)}"
    return None


def _set_args(args: dict[str, Any]) -> str | None:
    values = args.get("values")
    if not isinstance(values, dict) or not 1 <= len(values) <= MAX_SET_VALUES:
        return f"values must be an object of 1..{MAX_SET_VALUES} \"section.key\": value entries"
    for key, value in values.items():
        if not _SET_KEY.fullmatch(key):
            return f"bad key {_shown(key)}: a dotted path of lowercase names, such as \"detector.conf\""
        if value is None:
            return f"{key}: null is not a config value"
    return None


def _signature_args(body: dict[str, Any]) -> str | None:
    """The shape of ``sig`` and ``ts`` when a device without a command key receives them (ignored then)."""
    sig, ts = body.get("sig"), body.get("ts")
    if sig is not None and (not isinstance(sig, str) or not _SIG.fullmatch(sig)):
        return "sig must be 64 hex digits (HMAC-SHA256)"
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= _MAX_TS):
        return "ts must be an integer, Unix seconds"
    return None


#: Command name -> (allowed arguments, required arguments, checker returning an error or None).
COMMANDS: dict[str, tuple[frozenset[str], frozenset[str], Callable[[dict[str, Any]], str | None]]] = {
    "capture": (frozenset({"burst"}), frozenset(), _capture_args),
    "ping": (frozenset(), frozenset(), _no_args),
    "status": (frozenset(), frozenset(), _no_args),
    "set": (frozenset({"values"}), frozenset({"values"}), _set_args),
}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _body(payload: bytes) -> dict[str, Any]:
    if not payload.strip():
        return {}
    try:
        body = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CommandError("bad_json", f"payload is not UTF-8 JSON: {_shown(str(err))}") from err
    if not isinstance(body, dict):
        raise CommandError("bad_json", f"payload must be a JSON object, got {type(body).__name__}")
    return body


def _correlation(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= MAX_CORRELATION_CHARS
                              or not value.isprintable()):
        return None
    return value


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_sorted(v) for v in value]
    return value


def canonical_command(name: str, payload: Mapping[str, Any]) -> bytes:
    """The bytes a command's signature covers: ``name``, a newline, and ``payload`` without ``sig``
    as compact UTF-8 JSON (:func:`edge.payload.dumps`) with every object's keys sorted.

    Raises:
        ValueError: the payload holds something JSON cannot carry (NaN, a lone surrogate).
    """
    body = _sorted({key: value for key, value in payload.items() if key != "sig"})
    return name.encode("utf-8") + b"\n" + dumps(body)


def sign_command(name: str, payload: Mapping[str, Any], key: bytes, *, ts: int) -> dict[str, Any]:
    """``payload`` with ``ts`` and its ``sig`` added, ready to publish on ``cmd/<name>``.

    Args:
        name: the command (the topic's last level).
        payload: the command's arguments and optional ``id`` (a ``sig`` in it is replaced).
        key: the device's command key (the bytes of its key file, as :func:`edge.mqtt.connect.read_command_key`
            reads them).
        ts: now, in whole Unix seconds.

    Raises:
        TypeError: ``key`` is not non-empty bytes or ``ts`` not an int.
        ValueError: ``ts`` out of range, or the payload cannot be encoded as JSON.
    """
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise TypeError("key must be non-empty bytes")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise TypeError(f"ts must be an int (Unix seconds), got {type(ts).__name__}")
    if not 0 <= ts <= _MAX_TS:
        raise _bad("ts must be within 0..2**53-1", ts)
    signed = {**{k: v for k, v in payload.items() if k != "sig"}, "ts": ts}
    signed["sig"] = hmac.new(bytes(key), canonical_command(name, signed), hashlib.sha256).hexdigest()
    return signed


def _check_signature(name: str, body: dict[str, Any], key: bytes, now: float | None) -> str | None:
    """Why ``body`` is not a correctly signed, fresh command ``name``, or None when it is."""
    sig, ts = body.get("sig"), body.get("ts")
    if sig is None:
        return "unsigned command: this device needs \"ts\" and \"sig\" (HMAC-SHA256, docs/wire-format.md)"
    if not isinstance(sig, str) or not _SIG.fullmatch(sig):
        return "sig must be 64 hex digits (HMAC-SHA256)"
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= _MAX_TS:
        return "a signed command needs \"ts\": an integer, Unix seconds"
    try:
        expected = hmac.new(key, canonical_command(name, body), hashlib.sha256).hexdigest()
    except ValueError:  # a lone surrogate cannot be encoded as UTF-8, so it cannot have been signed
        return "the payload has no canonical form (a lone surrogate?)"
    if not hmac.compare_digest(expected, sig.lower()):
        return "signature does not match (wrong key, or not computed over the canonical form)"
    if now is not None and abs(now - ts) > MAX_CLOCK_SKEW_S:
        return (f"ts is {ts - now:+.0f} s from the device clock (at most +-{MAX_CLOCK_SKEW_S} s): a stale or "
                "replayed command, or a wrong server clock")
    return None


def parse_command(name: str, payload: bytes, *, key: bytes | None = None, now: float | None = None) -> Command:
    """The command ``name`` (the topic's last level) with ``payload`` (a JSON object, or empty).

    Args:
        name: the command.
        payload: its JSON payload.
        key: the command key; when given, the command must be signed (see :func:`sign_command`).
        now: the device's Unix time when its clock is synchronised (``ts`` must be within
            :data:`MAX_CLOCK_SKEW_S` of it); None when it is not (``ts`` is then not compared).

    Raises:
        CommandError: ``too_large`` (over 4096 bytes), ``bad_json``, ``bad_signature``,
            ``unknown_command`` or ``bad_args``.
        TypeError: ``name`` is not a string or ``payload`` not bytes (a caller mistake).
    """
    if not isinstance(name, str) or not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_command takes a str name and bytes payload, got {type(name).__name__}, "
                        f"{type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError("too_large", f"payload of {len(payload)} bytes exceeds {MAX_COMMAND_BYTES}")
    body = _body(payload)
    correlation = _correlation(body.get("id"))
    if "id" in body and correlation is None:
        raise CommandError("bad_args", f"id must be 1..{MAX_CORRELATION_CHARS} printable characters")
    if key is not None:
        problem = _check_signature(name, body, bytes(key), now)
        if problem is not None:
            raise CommandError("bad_signature", problem, correlation)
    if name not in COMMANDS:
        raise CommandError("unknown_command", f"unknown command {_shown(name)} (known: {', '.join(COMMANDS)})",
                           correlation)
    allowed, required, check = COMMANDS[name]
    args = {k: value for k, value in body.items() if k not in _COMMON_ARGS}
    unknown, missing = sorted(set(args) - allowed), sorted(required - set(args))
    problem = (f"unknown argument {_shown(unknown[0])} for {name}" if unknown
               else f"missing argument {missing[0]!r} for {name}" if missing
               else _signature_args(body) or check(args))
    if problem is not None:
        raise CommandError("bad_args", problem, correlation)
    return Command(name, correlation, args)


def _without_nulls(value: Any, where: str) -> Any:
    """``value`` with None-valued keys left out (v1 carries no nulls); a None in a list is an error."""
    if isinstance(value, Mapping):
        return {str(k): _without_nulls(v, f"{where}.{k}") for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        if any(v is None for v in value):
            raise _bad(f"{where}: a list cannot hold null", value)
        return [_without_nulls(v, where) for v in value]
    return value


def encode_result(*, device: str, correlation: str | None, ok: bool, result: Mapping[str, Any] | None = None,
                  error: str | None = None, code: str | None = None) -> bytes:
    """The reply to a command, for ``<prefix>/<device>/cmd/result``.

    Args:
        device: the device id.
        correlation: the command's ``id``; None when it had none.
        ok: whether the command was accepted.
        result: what an accepted command returns (an object; None-valued keys are left out).
        error: why a refused command was refused (required when ``ok`` is False).
        code: a refused command's error code (``[a-z_]{1,32}``, e.g. a :class:`CommandError` code).

    Raises:
        ValueError: ``result`` with a refusal, ``error``/``code`` with success, or a malformed value.
    """
    out = _head(device)
    if correlation is not None:
        if _correlation(correlation) is None:
            raise _bad(f"correlation must be 1..{MAX_CORRELATION_CHARS} printable characters", correlation)
        out["id"] = correlation
    if not isinstance(ok, bool):
        raise _bad("ok must be a bool", ok)
    out["ok"] = ok
    if ok:
        if error is not None or code is not None:
            raise ValueError("an accepted command's result has no error or code")
        if result is not None:
            if not isinstance(result, Mapping):
                raise _bad("result must be an object", result)
            out["r"] = _without_nulls(result, "result")
        return dumps(out)
    if result is not None:
        raise ValueError("a refused command's result has an error, not a result")
    if not isinstance(error, str) or not error:
        raise _bad("a refused command needs an error text", error)
    out["err"] = error
    if code is not None:
        if not isinstance(code, str) or not _RESULT_CODE.fullmatch(code):
            raise _bad("code must be 1..32 lowercase letters or '_'", code)
        out["code"] = code
    return dumps(out)

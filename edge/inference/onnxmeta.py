"""Read and write an ONNX file's ``metadata_props`` without the ``onnx`` package.

The device install has onnxruntime but not ``onnx``; ``wildedge model pull`` and ``model stamp`` must
still write a card there. ``metadata_props`` is field 14 of ``ModelProto``; protobuf allows top-level
fields in any order, so we walk only the top level (tag, length, skip) and rewrite field 14, leaving
every other byte of the graph untouched. Files over 2 GB (external data) are out of scope.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from edge.errors import ModelError

_METADATA_FIELD = 14
_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5


def _read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ModelError("not an ONNX file: truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ModelError("not an ONNX file: malformed protobuf varint")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(buf: bytes | memoryview) -> list[tuple[int, int, int, int]]:
    """Top-level fields as (field number, start, value start, end)."""
    fields = []
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ModelError("not an ONNX file: field number 0")
        if wire == _WIRE_VARINT:
            _, pos = _read_varint(buf, pos)
            vstart = start
        elif wire == _WIRE_I64:
            vstart, pos = pos, pos + 8
        elif wire == _WIRE_I32:
            vstart, pos = pos, pos + 4
        elif wire == _WIRE_LEN:
            length, vstart = _read_varint(buf, pos)
            pos = vstart + length
        else:
            raise ModelError(f"not an ONNX file: unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ModelError("not an ONNX file: truncated protobuf field")
        fields.append((number, start, vstart, pos))
    return fields


def _parse_entry(buf: bytes | memoryview) -> tuple[str, str]:
    key = value = ""
    for number, _, vstart, end in _fields(buf):
        text = bytes(buf[vstart:end]).decode("utf-8", errors="replace")
        if number == 1:
            key = text
        elif number == 2:
            value = text
    return key, value


def _entry(key: str, value: str) -> bytes:
    k, v = key.encode(), value.encode()
    body = b"\x0a" + _varint(len(k)) + k + b"\x12" + _varint(len(v)) + v
    return _varint((_METADATA_FIELD << 3) | _WIRE_LEN) + _varint(len(body)) + body


def _load(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise ModelError(f"model file not found: {path}") from err
    except OSError as err:
        raise ModelError(f"cannot read model file {path}: {err.strerror}") from err
    if not data:
        raise ModelError(f"model file is empty: {path}")
    return data


def _model_fields(path: Path, view: memoryview) -> list[tuple[int, int, int, int]]:
    """``_fields`` of a whole model file; a parse error names the file (``-m`` and ``-c`` both take one)."""
    try:
        return _fields(view)
    except ModelError as err:
        detail = str(err).removeprefix("not an ONNX file: ")
        raise ModelError(f"not an ONNX file: {path} ({detail}); check the path, or export the model to "
                         "ONNX first") from None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return the ``metadata_props`` of an ONNX file as a dict."""
    data = _load(Path(path))
    view = memoryview(data)
    props: dict[str, str] = {}
    for number, _, vstart, end in _model_fields(Path(path), view):
        if number == _METADATA_FIELD:
            key, value = _parse_entry(view[vstart:end])
            props[key] = value
    return props


def write_metadata(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], updates: dict[str, str | None]
) -> Path:
    """Copy ``src`` to ``dst`` with ``metadata_props`` keys set (or removed where the value is None).

    The write is atomic: a temporary file beside ``dst`` is renamed over it.
    """
    data = _load(Path(src))
    view = memoryview(data)
    out = bytearray()
    for number, start, vstart, end in _model_fields(Path(src), view):
        if number == _METADATA_FIELD:
            key, _ = _parse_entry(view[vstart:end])
            if key in updates:
                continue
        out += view[start:end]
    for key, value in updates.items():
        if value is not None:
            out += _entry(key, value)
    dst_path = Path(dst)
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".onnx.tmp", dir=dst_path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            # mkstemp creates 0600; keep the source's mode so a service user can still read the model.
            os.fchmod(fh.fileno(), stat.S_IMODE(os.stat(src).st_mode))
            fh.write(out)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dst_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dst_path

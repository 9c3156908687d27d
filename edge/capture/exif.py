"""When a photo was taken, from its EXIF block (DateTimeOriginal, falling back to DateTime).

Hand-written on purpose: OpenCV decodes EXIF orientation but exposes no tags, and Pillow is not a
base dependency of the device runtime. Only the few tags needed for a timestamp are read: IFD0
DateTime (0x0132) and the Exif IFD (pointer 0x8769) with DateTimeOriginal (0x9003),
SubSecTimeOriginal (0x9291) and the EXIF 2.31 offsets OffsetTimeOriginal (0x9011) / OffsetTime
(0x9010). Camera files are junk often enough (truncated copies, firmware bugs), so every reader here
returns None instead of raising. A time outside 1970..9999 UTC (a camera clock reset to 1970 in a
zone east of UTC, year 0001) cannot be sent on the wire and is not trusted: :func:`capture_time`
falls back to the file's time, then the wall clock's, and says which it used.
"""

from __future__ import annotations

import logging
import re
import struct
from datetime import datetime, timedelta, timezone, tzinfo

logger = logging.getLogger(__name__)

_DATETIME = 0x0132
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_OFFSET_TIME = 0x9010
_OFFSET_TIME_ORIGINAL = 0x9011
_SUBSEC_ORIGINAL = 0x9291
_ASCII = 2
_LONG = 4
_IFD = 13
# No real IFD holds this many entries; a larger count means the offset points into image data.
_MAX_ENTRIES = 512

# What the wire format can carry (edge/payload.py): Unix seconds 0 .. 9999-12-31T23:59:59Z.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)

_DATE_RE = re.compile(r"(\d{4})[:/-](\d{2})[:/-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET_RE = re.compile(r"([+-])(\d{2}):(\d{2})")


def _tiff_block(data: bytes) -> bytes | None:
    """The TIFF structure inside a JPEG's APP1 'Exif' segment, or ``data`` itself for a TIFF file."""
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return data
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan: no metadata after this
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            return None
        if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            return data[pos + 10:pos + 2 + length]
        pos += 2 + length
    return None


def _read_ifd(tiff: bytes, offset: int, order: str) -> dict[int, tuple[int, int, int]]:
    """Entries of the IFD at ``offset``: tag -> (type, count, position of the value)."""
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    if count > _MAX_ENTRIES:
        return {}
    entries = {}
    for i in range(count):
        start = offset + 2 + 12 * i
        tag, kind, n = struct.unpack_from(order + "HHI", tiff, start)
        size = n * {1: 1, 2: 1, 3: 2, 4: 4, 7: 1, 13: 4}.get(kind, 8)
        # Values of four bytes or fewer sit in the entry itself; larger ones are at an offset.
        (pointer,) = struct.unpack_from(order + "I", tiff, start + 8)
        entries[tag] = (kind, n, start + 8 if size <= 4 else pointer)
    return entries


def _ascii(tiff: bytes, entry: tuple[int, int, int] | None) -> str | None:
    if entry is None or entry[0] != _ASCII:
        return None
    _, count, pos = entry
    if pos + count > len(tiff):
        return None
    return tiff[pos:pos + count].split(b"\x00", 1)[0].decode("ascii", "replace").strip()


def _parse_time(text: str | None, subsec: str | None, offset: str | None) -> datetime | None:
    if not text:
        return None
    match = _DATE_RE.match(text)
    if match is None:
        return None
    try:
        when = datetime(*(int(g) for g in match.groups()))
    except ValueError:  # "0000:00:00 00:00:00" is what cameras write when their clock was never set
        return None
    if subsec and subsec.isdigit():
        when = when.replace(microsecond=int(subsec[:6].ljust(6, "0")))
    zone = _OFFSET_RE.fullmatch(offset or "")
    if zone is not None:
        sign = -1 if zone.group(1) == "-" else 1
        delta = timedelta(hours=int(zone.group(2)), minutes=int(zone.group(3)))
        if delta < timedelta(hours=24):
            when = when.replace(tzinfo=timezone(sign * delta))
    return when


def read_exif_datetime(data: bytes) -> datetime | None:
    """When the photo in ``data`` (JPEG or TIFF bytes) was taken, as the camera wrote it.

    Naive (camera-local time) unless the file carries an EXIF offset tag, then timezone-aware.
    None when there is no usable timestamp; never raises on malformed input.
    """
    try:
        tiff = _tiff_block(data)
        if tiff is None or len(tiff) < 8:
            return None
        order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
        if order is None:
            return None
        (ifd0,) = struct.unpack_from(order + "I", tiff, 4)
        main = _read_ifd(tiff, ifd0, order)
        exif: dict[int, tuple[int, int, int]] = {}
        pointer = main.get(_EXIF_IFD)
        if pointer is not None and pointer[0] in (_LONG, _IFD):
            (exif_offset,) = struct.unpack_from(order + "I", tiff, pointer[2])
            if exif_offset != ifd0:  # a pointer back to IFD0 would read the same tags again
                exif = _read_ifd(tiff, exif_offset, order)
        original = _parse_time(_ascii(tiff, exif.get(_DATETIME_ORIGINAL)), _ascii(tiff, exif.get(_SUBSEC_ORIGINAL)),
                               _ascii(tiff, exif.get(_OFFSET_TIME_ORIGINAL)))
        if original is not None:
            return original
        return _parse_time(_ascii(tiff, main.get(_DATETIME)), None, _ascii(tiff, exif.get(_OFFSET_TIME)))
    except (struct.error, IndexError, ValueError, OverflowError) as err:
        logger.debug("unreadable EXIF block: %s", err)
        return None


def exif_time_utc(data: bytes, *, tz: tzinfo | None = None) -> datetime | None:
    """The EXIF capture time of ``data`` in UTC; a camera-local time is read in ``tz`` (None: the
    system's local zone, which is the device's)."""
    when = read_exif_datetime(data)
    if when is None:
        return None
    try:
        if when.tzinfo is None:
            # astimezone() on a naive datetime reads it as system local time.
            when = when.replace(tzinfo=tz) if tz is not None else when.astimezone()
        return when.astimezone(timezone.utc)
    except (OverflowError, ValueError, OSError):  # year 1 or 9999 shifted out of range
        return None


def encodable(when: datetime) -> bool:
    """Whether ``when`` is an aware time within 1970..9999 UTC, the range the wire format carries."""
    return when.tzinfo is not None and when.utcoffset() is not None and EARLIEST <= when <= LATEST


def capture_time(data: bytes, *, mtime: float, now: datetime, tz: tzinfo | None = None,
                 name: str = "photo") -> tuple[datetime, str]:
    """When the photo was taken (UTC) and where that came from: ``exif``, ``file`` or ``clock``.

    The EXIF time when there is one within 1970..9999 UTC, else the file's modification time
    ``mtime`` (Unix seconds) when it is in that range, else ``now`` (the wall clock).
    """
    exif = exif_time_utc(data, tz=tz)
    if exif is not None and encodable(exif):
        return exif, "exif"
    if exif is not None:
        logger.warning("%s: EXIF time %s is outside 1970..9999 UTC, not trusted", name, exif.isoformat())
    try:
        when = datetime.fromtimestamp(mtime, tz=timezone.utc)
    except (OverflowError, ValueError, OSError):
        when = None
    if when is not None and encodable(when):
        return when, "file"
    logger.warning("%s: neither its EXIF nor its file time is usable: the wall clock's time is recorded", name)
    return now, "clock"

"""Keep a long-running process's resident memory down on glibc (Raspberry Pi OS, Debian).

Two knobs the C library has and Python does not expose:

* ``mallopt(M_ARENA_MAX, n)``: glibc gives each thread that allocates its own malloc arena (up to
  8 per core); onnxruntime's pool, the control socket and the camera grabber each get one, and
  freed memory in them is rarely returned. Two arenas are plenty for one main loop.
* ``malloc_trim(0)``: hands freed heap pages back to the kernel. A timelapse frame and its
  inference buffers are tens of MB that are freed after each shot; without a trim the process
  keeps them resident through the idle time in between.

Both are no-ops (returning False) where the C library lacks them (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8  # from glibc's malloc.h


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def limit_arenas(count: int = 2) -> bool:
    """Cap the number of malloc arenas (call early, before threads start); True when applied."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    ok = bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(count)))
    logger.debug("malloc arenas capped at %d: %s", count, ok)
    return ok


def trim() -> bool:
    """Return freed heap memory to the kernel; True when some was released."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    return bool(libc.malloc_trim(ctypes.c_size_t(0)))

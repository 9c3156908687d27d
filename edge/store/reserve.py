"""The disk reserve: a file of preallocated blocks the daemon gives back when the disk is full.

SQLite needs free blocks even to delete (the WAL records every change before the main file
does), so on a card filled to the last byte the retention that would free space cannot run, and a
daemon that exits on "database or disk is full" never comes back. The store therefore holds
``storage.reserve`` bytes in ``<state_dir>/reserve``: when a write fails for lack of space (or the
disk is found full at start), the file is removed, which gives SQLite room to record results and
retention room to delete images; once there is room again (twice the reserve free) it is taken
back. This is the "ballast file" that databases and log daemons use; ``fallocate`` makes the
blocks real (a sparse file would reserve nothing).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.store.images import FILE_MODE

logger = logging.getLogger(__name__)

RESERVE_NAME = "reserve"
_CHUNK = 1 << 20


def is_disk_full(err: BaseException) -> bool:
    """Whether an error (or its cause) says the disk or quota is full: ENOSPC, EDQUOT, SQLITE_FULL."""
    seen = 0
    while err is not None and seen < 5:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        code = getattr(err, "sqlite_errorcode", None)
        if code is not None and code & 0xFF == 13:  # SQLITE_FULL, with or without an extended code
            return True
        if "database or disk is full" in str(err):
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


class DiskReserve:
    """``size`` bytes held in one file under ``folder`` (0 turns the reserve off).

    Args:
        folder: the state directory (the reserve must be on the store's filesystem).
        size: bytes to hold.
        disk_usage: ``shutil.disk_usage`` or a stand-in.
    """

    def __init__(self, folder: Path, *, size: int, disk_usage: Callable[[Any], Any] = shutil.disk_usage) -> None:
        if size < 0:
            raise ValueError(f"the reserve size must be >= 0, got {size}")
        self.path = Path(folder) / RESERVE_NAME
        self.size = size
        self.disk_usage = disk_usage
        self.released = 0  # times given back since start
        self._short = False  # found without room to take the reserve

    @property
    def held(self) -> bool:
        """Whether the reserve file is there at its full size."""
        try:
            return self.size > 0 and self.path.stat().st_blocks * 512 >= self.size
        except OSError:
            return False

    def free(self) -> int:
        """Free bytes on the reserve's filesystem."""
        return int(self.disk_usage(self.path.parent).free)

    def release(self, why: str) -> bool:
        """Give the reserve back to the filesystem; whether there was one to give."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as err:
            logger.error("cannot release the disk reserve %s: %s", self.path, err.strerror or err)
            return False
        self.released += 1
        logger.warning("disk full (%s): released the %d-byte disk reserve so that results are still recorded and "
                       "retention can free space", why, self.size)
        return True

    def release_if_full(self) -> bool:
        """At start: release the reserve when less than its size is free (so the store can open and
        retention can run on a card filled by anything, this daemon or another program)."""
        if self.size and self.path.exists() and self.free() < self.size:
            return self.release("less than the reserve free at start")
        return False

    def ensure(self) -> bool:
        """Take the reserve (back) when twice its size is free; whether it is held afterwards.

        Never raises: a reserve that cannot be written is tried again at the next call.
        """
        if not self.size:
            return False
        if self.held:
            return True
        try:
            if self.free() < 2 * self.size:
                if not self._short:
                    logger.warning("less than twice the %d-byte disk reserve is free: the reserve is not held and "
                                   "images are not saved until there is room", self.size)
                self._short = True
                return False
        except OSError:
            return False
        tmp = self.path.with_name(f".{RESERVE_NAME}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                _allocate(fd, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            logger.warning("disk reserve %s not taken: %s", self.path, err.strerror or err)
            return False
        if self.released or self._short:
            logger.info("disk space is back: the %d-byte disk reserve is held again", self.size)
        self._short = False
        return True


def _allocate(fd: int, size: int) -> None:
    """Give ``fd`` ``size`` bytes of real blocks: posix_fallocate, or zeros where it is unsupported."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    block = bytes(_CHUNK)
    written = 0
    while written < size:
        written += os.write(fd, block[: min(_CHUNK, size - written)])

"""Logging set-up for the entry points: plain lines on a terminal, priority-prefixed lines for journald.

Under systemd, stderr is a stream into journald, which stamps every line with its own time and
reads a leading ``<N>`` as the syslog priority (sd-daemon(3)); our own timestamps would only be
noise. systemd announces the stream in ``$JOURNAL_STREAM`` as ``device:inode`` (systemd.exec(5)),
which is compared with stderr itself so that a child whose stderr was redirected elsewhere does
not inherit the journald format.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

logger = logging.getLogger(__name__)

PLAIN_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
PLAIN_DATEFMT = "%Y-%m-%d %H:%M:%S"
JOURNAL_FORMAT = "%(name)s: %(message)s"


def syslog_priority(levelno: int) -> int:
    """The syslog priority journald shows for a logging level (error 3, warning 4, info 6, debug 7)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """Prefixes every line of a record with ``<N>``, so traceback lines keep the record's priority."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        # journald splits on newlines and would file unprefixed traceback lines as info.
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


def stream_is_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journald stream named by ``$JOURNAL_STREAM``."""
    env = os.environ if environ is None else environ
    raw = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = raw.partition(":")
    if not sep:
        return False
    try:
        expected = (int(dev), int(ino))
        stat = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        # AttributeError/io.UnsupportedOperation (an OSError): a StringIO or a closed stream.
        return False
    return (stat.st_dev, stat.st_ino) == expected


def level_for(verbosity: int) -> int:
    """The root logging level for a ``-v`` count (negative: quieter)."""
    if verbosity < 0:
        return logging.WARNING
    if verbosity == 0:
        return logging.INFO
    return logging.DEBUG


def configure_logging(
    *,
    verbosity: int = 0,
    journald: bool | None = None,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Install one handler on the root logger; calling again replaces it (tests, re-exec).

    Args:
        verbosity: 0 logs info and up, 1 or more debug, negative only warnings and errors.
        journald: force the journald format on or off; None detects it from ``$JOURNAL_STREAM``.
        stream: where lines go; default ``sys.stderr`` at call time.
        environ: the environment to read; default ``os.environ``.

    Returns:
        The installed handler.
    """
    target = sys.stderr if stream is None else stream
    if journald is None:
        journald = stream_is_journal(target, environ)
    handler = logging.StreamHandler(target)
    handler.set_name("wildedge")
    if journald:
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT, PLAIN_DATEFMT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "wildedge"]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level_for(verbosity))
    logger.debug("logging configured (journald=%s, level=%s)", journald, logging.getLevelName(root.level))
    return handler



def event_line(event: Any, frames: Sequence[Any] = ()) -> str:
    """The one INFO line the daemon logs per event, e.g. ``event 01J...: 1 zebra (0.91) in IMG_0001.JPG``.

    ``event`` is an :class:`~edge.store.records.EventRecord` and ``frames`` its burst's processed
    frames: every class with its count and best score, then the classifier's verdict when there is
    one, and where it came from (a folder camera's file, else the trigger). Frames without
    detections make no event, so an empty night logs nothing.
    """
    summary = event.summary or {}
    classes = sorted(summary.get("classes") or [], key=lambda c: -float(c.get("best_score", 0.0)))
    seen = ", ".join(f"{c.get('count', 0)} {c.get('label', '?')} ({float(c.get('best_score', 0.0)):.2f})"
                     for c in classes) or "nothing"
    verdict = summary.get("classification") or {}
    if verdict.get("label"):
        seen += f"; classified {verdict['label']} ({float(verdict.get('mean_prob', 0.0)):.2f})"
    source = next((f.record.source for f in frames if f.record.uid == event.best_frame_uid and f.record.source),
                  None)
    where = f" in {os.path.basename(source)}" if source else f" ({event.trigger} trigger)" if event.trigger else ""
    return f"event {event.uid}: {seen}{where}"

"""The checkpoint of a batch run: one JSON line per finished file, so ``--resume`` redoes nothing.

The first line records the run's settings; resuming with other settings is refused, since the
merged output would mix two different runs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from edge.batch.results import FileResult
from edge.errors import WildedgeError

logger = logging.getLogger(__name__)

_FSYNC_EVERY_S = 5.0


def checkpoint_path(output: Path) -> Path:
    return output.with_name(output.name + ".checkpoint.jsonl")


class CheckpointError(WildedgeError):
    """A checkpoint exists that cannot be used as asked."""


class OutputPathError(WildedgeError):
    """The results file cannot be written where ``-o`` points; the message says why and what to do."""


def check_output(output: Path, *, example: str = "results.json") -> None:
    """Refuse a results path that could not be written, before any model is loaded or file processed.

    Nothing is created: the nearest existing folder on the way is probed with a temporary file
    (``os.access`` says yes to root even on a read-only mount).

    Raises:
        OutputPathError: ``output`` names no file (``-o ""``), is a folder, lies under a file, or its
            folder (or the nearest existing one above it) is not writable.
    """
    if not output.name or output.name == "..":
        raise OutputPathError(f"-o {str(output)!r} names no file; give a file name, e.g. -o {example}")
    if output.is_dir():
        raise OutputPathError(f"-o {output} is a folder; give a file inside it, e.g. -o {output / example}")
    ckpt = checkpoint_path(output)
    if ckpt.is_dir():
        raise OutputPathError(f"-o {output}: {ckpt} is a folder, not a checkpoint; remove it or choose another name")
    folder = output.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputPathError(f"-o {output}: {folder} is a file, not a folder; choose another path")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".wildedge-probe-"):
            pass
    except OSError as err:
        raise OutputPathError(
            f"-o {output}: cannot write in {folder} ({err.strerror or err}); choose a writable folder") from None


#: The command-line option behind each checkpoint setting (a setting not listed is ``--<key>``).
SETTING_OPTIONS = {
    "detector": "-m/--model (another detector file)", "classifier": "-c/--classifier (another classifier file)",
    "classify": "--classify-classes", "full_frame": "--full-frame/--no-full-frame",
    "reduced": "--reduced/--full-decode", "base": "the input paths (another common folder)",
}


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 24 else text[:21] + "..."


def differences(old: Any, new: dict[str, Any]) -> str:
    """The options whose values differ between two runs' settings, e.g. ``--conf (0.25 then, 0.3 now)``."""
    if not isinstance(old, dict):
        return "unreadable settings in the checkpoint"
    parts = []
    for key in sorted(set(old) | set(new), key=lambda k: list(new).index(k) if k in new else len(new)):
        if old.get(key) == new.get(key):
            continue
        option = SETTING_OPTIONS.get(key, f"--{key.replace('_', '-')}")
        if key in ("detector", "classifier", "base"):
            parts.append(option)
        else:
            parts.append(f"{option} ({_shown(old.get(key))} then, {_shown(new.get(key))} now)")
    return ", ".join(parts)


def load(path: Path, settings: dict[str, Any]) -> dict[str, FileResult]:
    """Results already in the checkpoint at ``path``; a torn last line (power cut) is ignored.

    Raises:
        CheckpointError: the checkpoint was written with different settings or is unreadable.
    """
    results: dict[str, FileResult] = {}
    with path.open(encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    try:
        header = json.loads(lines[0])
    except (json.JSONDecodeError, IndexError) as err:
        raise CheckpointError(f"{path} is not a wildedge checkpoint; delete it to start over") from err
    if header.get("settings") != settings:
        changed = differences(header.get("settings"), settings)
        raise CheckpointError(
            f"{path} was written by a run with other settings: {changed}; rerun with the same options "
            "to continue it, or delete it to start over"
        )
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            result = FileResult.from_dict(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            if number == len(lines) or (number == len(lines) - 1 and not lines[-1]):
                logger.warning("%s: ignoring a torn last line (interrupted write)", path)
                continue
            raise CheckpointError(f"{path}:{number}: unreadable checkpoint line; delete the file to start over")
        results[result.file] = result
    return results


class CheckpointWriter:
    """Appends results to the checkpoint; flushed every line, fsynced every few seconds and on close."""

    def __init__(self, path: Path, settings: dict[str, Any], *, append: bool) -> None:
        self.path = path
        exists = append and path.exists()
        if exists:
            self._repair_tail()
        self._fh: TextIO = path.open("a" if exists else "w", encoding="utf-8")
        if not exists:
            self._fh.write(json.dumps({"wildedge_checkpoint": 1, "settings": settings}) + "\n")
        self._synced = time.monotonic()

    def _repair_tail(self) -> None:
        # A torn last line must not glue itself to the next appended record.
        with self.path.open("rb+") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")

    def add(self, result: FileResult) -> None:
        self._fh.write(json.dumps(result.to_dict(), separators=(",", ":")) + "\n")
        self._fh.flush()
        if time.monotonic() - self._synced > _FSYNC_EVERY_S:
            os.fsync(self._fh.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

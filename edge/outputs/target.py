"""Checking where an export is to be written, before any work is done (``results`` and ``collect export``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from edge.outputs.camtrapdp import PACKAGE_FILES

_SUFFIX = {"megadetector": ".json", "coco": ".json", "csv": ".csv"}


def output_problem(fmt: str, output: Path, keep: Sequence[Path] = ()) -> str | None:
    """Why ``output`` cannot take an export in ``fmt`` (None if it can), checked before any work.

    A camtrapdp export replaces its whole folder, so a folder holding anything but a previous
    package is refused; ``keep`` (the database being read) is never overwritten.
    """
    parent = output.parent
    if parent.exists() and not parent.is_dir():
        return f"-o {output}: {parent} is a file, not a folder; choose another path"
    if not parent.is_dir():
        return f"-o {output}: the folder {parent} does not exist; create it first or choose another path"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"-o {output}: the folder {parent} is not writable; choose another path"
    for path in keep:
        if output.exists() and path.exists() and os.path.samefile(output, path):
            return f"-o {output} is the database being exported; choose another file name"
    if fmt == "camtrapdp":
        if output.exists() and not output.is_dir():
            return f"-o {output} is a file; a Camtrap DP package is a folder: give a new folder name"
        others = sorted(p.name for p in output.iterdir() if p.name not in PACKAGE_FILES) if output.is_dir() else []
        if others:
            listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            return (f"-o {output}: the folder holds files that are not part of a Camtrap DP package ({listed}), "
                    "and an export replaces the whole folder; give a new or empty folder")
    elif output.is_dir():
        return f"-o {output} is a folder; give a file name, e.g. {output / ('export' + _SUFFIX.get(fmt, ''))}"
    return None

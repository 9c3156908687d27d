"""Which files a batch run processes: files and folders (recursive), photos and videos.

Unlike the daemon's folder camera (which never reads a link leading out of its folder: anyone may drop
files there), ``wildedge detect`` follows symlinks to files and to folders: the user chose what to
point it at on their own machine, and a folder of links to photos elsewhere is a common way to pick a
subset. A folder reached twice (a link loop, two links to one folder) is walked once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edge.imaging import IMAGE_SUFFIXES, VIDEO_SUFFIXES

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Item:
    """One file to process; ``name`` is its path relative to the run's base folder, forward slashes."""

    path: Path
    name: str
    is_video: bool


def _walk(folder: Path) -> tuple[list[Path], int]:
    found, skipped = [], 0
    visited: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:  # a link loop or a second link to the same folder
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in sorted(files):
            if file.startswith("."):
                continue
            suffix = Path(file).suffix.lower()
            if suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES:
                found.append(Path(root) / file)
            else:
                skipped += 1
    return found, skipped


def collect(paths: list[Path]) -> tuple[list[Item], Path]:
    """Expand ``paths`` into items (sorted, de-duplicated) and the base folder names are relative to.

    Folders are searched recursively for photo and video suffixes (hidden entries skipped, symlinks
    followed, each real folder walked once); a file
    named explicitly is always processed, whatever its suffix, so a bad one is reported, not ignored.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    files: list[Path] = []
    roots: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if path.is_dir():
            found, skipped = _walk(path)
            if skipped:
                logger.info("%s: skipped %d files that are neither photos nor videos", raw, skipped)
            files.extend(found)
            roots.append(path)
        elif path.exists():
            files.append(path)
            roots.append(path.parent)
        else:
            raise FileNotFoundError(f"no such file or folder: {raw}")
    base = Path(os.path.commonpath(roots)) if roots else Path.cwd()
    seen: set[Path] = set()
    items = []
    for file in files:
        if file in seen:
            continue
        seen.add(file)
        name = file.relative_to(base).as_posix()
        items.append(Item(file, name, file.suffix.lower() in VIDEO_SUFFIXES))
    return items, base

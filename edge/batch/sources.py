"""Which files a batch run processes: files and folders (recursive), photos and videos.

Unlike the daemon's folder camera (which never reads a link leading out of its folder: anyone may drop
files there), ``wildedge detect`` follows symlinks to files and to folders: the user chose what to
point it at on their own machine, and a folder of links to photos elsewhere is a common way to pick a
subset. A folder reached twice (a link loop, two links to one folder) is walked once.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
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


#: Photo formats a camera may write that wildedge cannot decode, and what to do about them.
UNREADABLE_PHOTOS = {
    ".heic": "HEIC", ".heif": "HEIC", ".avif": "AVIF",
    ".dng": "raw", ".cr2": "raw", ".cr3": "raw", ".nef": "raw", ".arw": "raw", ".orf": "raw", ".rw2": "raw",
}
CONVERT_HINT = ("convert them to JPEG first (e.g. 'heif-convert IN.heic OUT.jpg' for HEIC, or your raw "
                 "converter), or set the camera to save JPEG")


def _walk(folder: Path) -> tuple[list[Path], Counter[str]]:
    found: list[Path] = []
    skipped: Counter[str] = Counter()
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
                skipped[suffix] += 1
    return found, skipped


def skipped_photos(skipped: Counter[str]) -> str | None:
    """``"4 .heic files (HEIC)"``-style text for photos in formats wildedge cannot read, or None."""
    seen = sorted((suffix, count) for suffix, count in skipped.items() if suffix in UNREADABLE_PHOTOS)
    if not seen:
        return None
    kinds = sorted({UNREADABLE_PHOTOS[suffix] for suffix, _ in seen})
    files = ", ".join(f"{count} {suffix} file{'s' if count > 1 else ''}" for suffix, count in seen)
    return f"{files} ({' and '.join(kinds)}, which wildedge cannot read)"


def unreadable_photos(folder: Path, *, recursive: bool = True) -> str | None:
    """``"skipped 3 .heic files (HEIC, ...); convert them ..."`` for photos in ``folder`` that wildedge
    cannot read (``wildedge check`` on a folder camera), or None when there are none."""
    if recursive:
        skipped = _walk(folder)[1] if folder.is_dir() else Counter()
    else:
        skipped = Counter(p.suffix.lower() for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    unreadable = skipped_photos(skipped)
    return f"skipped {unreadable}; {CONVERT_HINT}" if unreadable else None


def nothing_found(paths: list[Path]) -> str:
    """The one-line error for paths holding no photo or video: what was seen and skipped, and what to do."""
    skipped: Counter[str] = Counter()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            skipped += _walk(path)[1]
    where = ", ".join(str(p) for p in paths)
    unreadable = skipped_photos(skipped)
    if unreadable:
        return f"no photos or videos wildedge can read in {where}: skipped {unreadable}; {CONVERT_HINT}"
    other = sum(skipped.values())
    extra = f" (skipped {other} other file{'s' if other != 1 else ''})" if other else ""
    suffixes = " ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
    return f"no photos or videos found in {where}{extra}; wildedge reads {suffixes}"


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
    warnings: list[str] = []  # said only when something is left to process (else the caller's error says it)
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if path.is_dir():
            found, skipped = _walk(path)
            unreadable = skipped_photos(skipped)
            if unreadable:
                warnings.append(f"{raw}: skipped {unreadable}; {CONVERT_HINT}")
            elif skipped:
                logger.info("%s: skipped %d files that are neither photos nor videos", raw, sum(skipped.values()))
            files.extend(found)
            roots.append(path)
        elif path.exists():
            files.append(path)
            roots.append(path.parent)
        else:
            raise FileNotFoundError(f"no such file or folder: {raw}")
    for warning in warnings if files else ():
        logger.warning("%s", warning)
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

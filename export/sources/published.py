"""Published checkpoints by name: a small pinned table, fetched into the cache only when asked.

The download and its sha256 check are ``edge.models.pull``'s; a checkpoint already in the cache with
the pinned sha256 is used without any network access.
"""

from __future__ import annotations

import logging
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.errors import ExportError, RegistryError
from edge.inference.card import sha256_file
from edge.models.pull import DEFAULT_TIMEOUT, ProgressCallback, cache_root, download_verified

logger = logging.getLogger(__name__)


class Checkpoint(BaseModel):
    """One published checkpoint: where it is, its pinned sha256 (empty: unknown) and how to load it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^(https?|file)://")
    sha256: str = Field(pattern=r"^([0-9a-f]{64})?$",
                        description="lowercase hex; empty when none can be pinned")
    framework: Literal["ultralytics", "torchvision", "timm"]
    file: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="file name in the cache")
    arch: str | None = None
    labels: str | None = None
    licence: str = ""
    description: str = ""


def packaged_table() -> Path:
    return Path(str(resources.files("export").joinpath("data", "published.toml")))


def load_table(path: str | os.PathLike[str] | None = None) -> dict[str, Checkpoint]:
    """The published checkpoints of ``path`` (default: the packaged table).

    Raises:
        ExportError: the table is unreadable or an entry is invalid (``FILE: models.NAME.KEY: msg``).
    """
    file = Path(path) if path is not None else packaged_table()
    try:
        with open(file, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ExportError(f"cannot read the published checkpoint table {file}: {err}") from err
    entries, errors = {}, []
    for name, table in (data.get("models") or {}).items():
        try:
            entries[name] = Checkpoint.model_validate(table)
        except ValidationError as err:
            errors += [f"{file}: models.{name}.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                       for e in err.errors()]
    if errors:
        raise ExportError("invalid published checkpoint table:\n" + "\n".join(errors))
    return entries


def fetch(
    name: str,
    *,
    table: dict[str, Checkpoint] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: ProgressCallback | None = None,
) -> tuple[Path, Checkpoint]:
    """The verified checkpoint file of published ``name`` (downloaded once into the cache) and its entry.

    Raises:
        ExportError: unknown name, no pinned sha256, download failure or sha256 mismatch.
    """
    entries = load_table() if table is None else table
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise ExportError(f"unknown published checkpoint {name!r}; known: {known}")
    entry = entries[name]
    if not entry.sha256:
        raise ExportError(
            f"{name} has no pinned sha256 (its publisher lists none), so wildedge will not download and load "
            f"it: download {entry.url} yourself, check it, and pass the file's path instead of {name}"
        )
    dst = cache_root(cache_dir) / "checkpoints" / name / entry.file
    if dst.is_file() and sha256_file(dst) == entry.sha256:
        logger.info("%s is already cached: %s", name, dst)
        return dst, entry
    hint = f"Offline? Download {entry.url} elsewhere and pass the file's path instead of {name}"
    try:
        download_verified(entry.url, entry.sha256, dst, name=name, hint=hint, timeout=timeout,
                          progress=progress)
    except RegistryError as err:
        raise ExportError(str(err)) from err
    return dst, entry

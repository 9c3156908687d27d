"""The registry of published models: the shipped ``edge/data/models.toml`` plus an optional user file.

A user file (``$WILDEDGE_MODELS``, else ``<XDG config home>/wildedge/models.toml``) has the same
schema. A ``[models.NAME]`` table there adds a model, or, for a shipped NAME, overrides only the keys
it sets (point ``url`` at a mirror and keep the pinned ``sha256``). Both files are read at call time.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge.errors import RegistryError
from edge.inference.labels import read_labels
from edge.inference.presets import PRESETS, preset_names

DEFAULT_MODEL = "yolox-nano"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_URL_SCHEMES = ("http://", "https://", "file://")
LabelsKind = Literal["builtin", "url", "path"]


def labels_kind(value: str) -> LabelsKind:
    """Whether a ``labels`` value is a builtin set name (``coco80``), a URL or a path."""
    if value.startswith(_URL_SCHEMES):
        return "url"
    if "/" in value or "\\" in value or "." in value or value.startswith("~"):
        return "path"
    return "builtin"


def _data_file(filename: str) -> Path | None:
    ref = resources.files("edge").joinpath("data", filename)
    return Path(str(ref)) if ref.is_file() else None


def builtin_labels_path(name: str) -> Path:
    """The packaged file of builtin label set ``name`` (e.g. ``coco80``).

    Raises:
        RegistryError: no such builtin label set.
    """
    path = _data_file(f"{name}.txt")
    if path is None:
        raise RegistryError(f"unknown builtin label set {name!r} (use a path or URL for your own labels)")
    return path


def builtin_labels(name: str) -> list[str]:
    """The class names of builtin label set ``name``."""
    return read_labels(builtin_labels_path(name))


class ModelEntry(BaseModel):
    """One published model: where to get it, how to check it, and how to stamp it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="pinned download URL (http, https or file)")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the downloaded file, lowercase hex")
    preset: str = Field(description="model family preset used to stamp the card")
    labels: str = Field(min_length=1, description="builtin label set name, path or URL")
    input_size: tuple[int, int] | None = Field(None, description="(width, height); default: the graph's")
    licence: str = ""
    description: str = ""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(_URL_SCHEMES):
            raise ValueError(f"must start with one of {', '.join(_URL_SCHEMES)}")
        return value

    @field_validator("preset")
    @classmethod
    def _check_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; choose one of: {', '.join(preset_names())}")
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: str) -> str:
        if labels_kind(value) == "builtin" and _data_file(f"{value}.txt") is None:
            raise ValueError(f"unknown builtin label set {value!r} (use a path or URL for your own labels)")
        return value

    @field_validator("input_size")
    @classmethod
    def _check_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 8:
            raise ValueError("input_size must be at least [8, 8]")
        return value


def user_registry_path() -> Path:
    """``$WILDEDGE_MODELS`` if set, else ``<XDG config home>/wildedge/models.toml``."""
    explicit = os.environ.get("WILDEDGE_MODELS")
    if explicit:
        return Path(explicit).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(config_home) if os.path.isabs(config_home) else Path.home() / ".config"
    return base / "wildedge" / "models.toml"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise RegistryError(f"{path}: invalid TOML: {err}") from err
    except OSError as err:
        raise RegistryError(f"{path}: cannot read model registry: {err.strerror}") from err


def _parse(
    path: Path, data: dict[str, Any], base: Mapping[str, ModelEntry]
) -> dict[str, ModelEntry]:
    """Validate the ``[models.NAME]`` tables of ``data`` merged over ``base``; every error, one per line."""
    errors = [f"{path}: {k}: unknown top-level key (expected [models.NAME])" for k in data if k != "models"]
    tables = data.get("models", {})
    if not isinstance(tables, dict):
        errors.append(f"{path}: models: expected a table of [models.NAME] tables")
        tables = {}
    entries: dict[str, ModelEntry] = {}
    for name, table in tables.items():
        if not _NAME.match(name):
            errors.append(f"{path}: models.{name}: invalid name (letters, digits, '.', '_', '-')")
            continue
        if not isinstance(table, dict):
            errors.append(f"{path}: models.{name}: expected a table")
            continue
        raw = dict(table)
        labels = raw.get("labels")
        if isinstance(labels, str) and labels_kind(labels) == "path":
            # A relative labels path means "beside this registry file", not "wherever wildedge runs".
            raw["labels"] = str((path.parent / Path(labels).expanduser()).resolve())
        if name in base:
            raw = {**base[name].model_dump(exclude_none=True), **raw}
        try:
            entries[name] = ModelEntry.model_validate(raw)
        except ValidationError as err:
            for e in err.errors():
                loc = ".".join(str(p) for p in (name, *e["loc"]))
                errors.append(f"{path}: models.{loc}: {e['msg']}")
    if errors:
        raise RegistryError("invalid model registry:\n" + "\n".join(errors))
    return entries


def builtin_registry() -> dict[str, ModelEntry]:
    """The models shipped with wildedge."""
    path = _data_file("models.toml")
    if path is None:
        raise RegistryError("the packaged registry edge/data/models.toml is missing: reinstall wildedge")
    return _parse(path, _read_toml(path), {})


def load_registry(*, user_file: Path | None = None) -> dict[str, ModelEntry]:
    """The shipped registry with the user file (``user_registry_path()`` by default) applied on top.

    Raises:
        RegistryError: a registry file is unreadable or has invalid entries (``FILE: models.NAME.KEY: msg``).
    """
    entries = builtin_registry()
    explicit = user_file is not None or bool(os.environ.get("WILDEDGE_MODELS"))
    path = user_file if user_file is not None else user_registry_path()
    if not path.is_file():
        if explicit:
            raise RegistryError(f"model registry file not found: {path}")
        return entries
    entries.update(_parse(path, _read_toml(path), entries))
    return entries


def get_entry(name: str, registry: Mapping[str, ModelEntry]) -> ModelEntry:
    """The entry called ``name``; raises RegistryError naming the known models otherwise."""
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry)) or "none"
        raise RegistryError(f"unknown model {name!r}; published models: {known}") from None

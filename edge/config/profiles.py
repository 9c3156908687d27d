"""Device profiles: a board and camera's recommended settings, named by ``[device] profile`` in a config.

A profile is ``firmware_configs/profiles/<name>.toml``: a ``[profile]`` table (the hardware, and the advice
that is no config key: config.txt fragments, recommended model, its input size, INT8 types) and partial
config sections (``[camera]``, ``[detector]``). :func:`apply_profile` fills the keys a config leaves out
from them; the config's own values (and ``--set`` overrides) always win, and the profile's ``[camera]``
applies only to a camera of the same ``type``. Profiles are found in the installed data folder
(``<prefix>/share/wildedge/firmware_configs/profiles``) or, in a checkout, ``firmware_configs/profiles``.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import sysconfig
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The config sections a profile may fill in.
SECTIONS = ("camera", "detector")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_META_KEYS = {"board": str, "sensor": str, "description": str, "firmware": list, "model": str,
              "input_size": list, "int8_types": str}
#: How /proc/device-tree/model starts on each board a profile can name (the boards its config.txt filter
#: ``[pi02]``, ``[pi4]`` or ``[pi5]`` selects).
BOARD_MODELS = {
    "pi02w": ("Raspberry Pi Zero 2 W",),
    "pi4": ("Raspberry Pi 4 Model B", "Raspberry Pi 400", "Raspberry Pi Compute Module 4"),
    "pi5": ("Raspberry Pi 5", "Raspberry Pi Compute Module 5"),
}


class ProfileError(ValueError):
    """A profile that cannot be found or read; the message is one line, without the key path."""


@dataclass(frozen=True)
class Profile:
    """One device profile: its advice and the partial config sections it fills in."""

    name: str
    board: str
    sensor: str
    description: str
    firmware: tuple[str, ...]
    model: str
    input_size: tuple[int, int]
    int8_types: str
    sections: Mapping[str, Mapping[str, Any]] = field(repr=False)
    path: Path

    def summary(self) -> str:
        """One line for ``wildedge check``: the hardware, the firmware fragments, the model advice."""
        width, height = self.input_size
        return (f"{self.name}: {self.description}; config.txt: {' + '.join(self.firmware)}; "
                f"model {self.model} ({width}x{height}), INT8 {self.int8_types}")


def profile_dirs() -> list[Path]:
    """Where profiles are looked for, first match wins: the installed data folders, then the checkout's."""
    dirs = []
    for scheme in (sysconfig.get_default_scheme(), f"{os.name}_user"):
        try:
            data = sysconfig.get_path("data", scheme)
        except KeyError:  # no such install scheme on this platform
            continue
        dirs.append(Path(data) / "share" / "wildedge" / "firmware_configs" / "profiles")
    dirs.append(Path(__file__).resolve().parents[2] / "firmware_configs" / "profiles")
    unique: list[Path] = []
    for path in dirs:
        if path not in unique:
            unique.append(path)
    return unique


def list_profiles(dirs: Sequence[Path] | None = None) -> list[str]:
    """The names of every profile found, sorted."""
    names = {path.stem for folder in (profile_dirs() if dirs is None else dirs) if folder.is_dir()
             for path in folder.glob("*.toml")}
    return sorted(name for name in names if _NAME.fullmatch(name))


def load_profile(name: str, dirs: Sequence[Path] | None = None) -> Profile:
    """Read and check profile ``name``.

    Raises:
        ProfileError: no such profile (with a "did you mean"), or the file is not a valid profile.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ProfileError(f"invalid profile name {name!r}: lower-case letters, digits, '-' and '_'")
    folders = profile_dirs() if dirs is None else list(dirs)
    path = next((folder / f"{name}.toml" for folder in folders if (folder / f"{name}.toml").is_file()), None)
    if path is None:
        known = list_profiles(folders)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known) or 'none installed'}"
        raise ProfileError(f"unknown profile {name!r} ({hint})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ProfileError(f"profile {name!r} ({path}) cannot be read: {err}") from err
    return _parse(name, path, data)


def _parse(name: str, path: Path, data: dict[str, Any]) -> Profile:
    where = f"profile {name!r} ({path})"
    extra = sorted(set(data) - {"profile", *SECTIONS})
    if extra:
        raise ProfileError(f"{where}: only [profile] and [{'], ['.join(SECTIONS)}] are allowed (got {extra})")
    meta = data.get("profile")
    if not isinstance(meta, dict):
        raise ProfileError(f"{where}: missing the [profile] table")
    for key, kind in _META_KEYS.items():
        if not isinstance(meta.get(key), kind):
            raise ProfileError(f"{where}: profile.{key} missing or not a {kind.__name__}")
    unknown = sorted(set(meta) - set(_META_KEYS))
    if unknown:
        raise ProfileError(f"{where}: unknown profile keys {unknown}")
    size = meta["input_size"]
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ProfileError(f"{where}: profile.input_size must be [width, height] (got {size!r})")
    sections = {key: data[key] for key in SECTIONS if key in data}
    for key, table in sections.items():
        if not isinstance(table, dict):
            raise ProfileError(f"{where}: [{key}] must be a table")
    return Profile(name=name, board=meta["board"], sensor=meta["sensor"], description=meta["description"],
                   firmware=tuple(meta["firmware"]), model=meta["model"], input_size=(size[0], size[1]),
                   int8_types=meta["int8_types"], sections=sections, path=path)


def merge_profile(data: Mapping[str, Any], profile: Profile) -> dict[str, Any]:
    """A copy of config table ``data`` with the keys it leaves out filled in from ``profile``."""
    merged = copy.deepcopy(dict(data))
    for key, table in profile.sections.items():
        mine = merged.get(key)
        if mine is None:
            merged[key] = copy.deepcopy(dict(table))
        elif isinstance(mine, dict):
            if key == "camera" and mine.get("type", table.get("type")) != table.get("type"):
                continue  # another kind of camera: the profile's sizes do not apply to it
            merged[key] = {**copy.deepcopy(dict(table)), **mine}
    return merged


def apply_profile(data: Mapping[str, Any], dirs: Sequence[Path] | None = None) -> dict[str, Any]:
    """``data`` with the profile named by ``device.profile`` merged under it (a copy; unchanged without one).

    Raises:
        ProfileError: the name is not a string, or the profile cannot be found or read.
    """
    device = data.get("device")
    name = device.get("profile") if isinstance(device, Mapping) else None
    if name is None:
        return copy.deepcopy(dict(data))
    if not isinstance(name, str):
        raise ProfileError(f"must be a profile name in quotes, e.g. \"pi4-imx708\" (got {name!r})")
    return merge_profile(data, load_profile(name, dirs))


def board_problem(profile: Profile, model_file: Path = Path("/proc/device-tree/model")) -> str | None:
    """Why this machine does not look like the profile's board, or None (also when it cannot tell)."""
    try:
        model = model_file.read_bytes().rstrip(b"\0").decode("ascii", "replace").strip()
    except OSError:
        return None
    expected = BOARD_MODELS.get(profile.board)
    if not expected or model.startswith(expected):
        return None
    return f"profile {profile.name!r} is for a {expected[0]}, but this is a {model}"


__all__ = ["BOARD_MODELS", "SECTIONS", "Profile", "ProfileError", "apply_profile", "board_problem",
           "list_profiles", "load_profile", "merge_profile", "profile_dirs"]

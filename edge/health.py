"""Device health snapshots: temperature, throttling, load, memory, disk, uptime, process CPU.

Every reader takes a ``root`` (the file-system root, ``/`` on a device, a fake tree in tests) and
returns None instead of raising when its file is missing or unreadable: the same code runs on a
Raspberry Pi, in a container without ``/sys/class/thermal`` and on a laptop. Nothing here shells
out (no ``vcgencmd``): a health snapshot must stay cheap enough to take every few minutes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from edge.clock import Clock, SystemClock

logger = logging.getLogger(__name__)

ROOT = Path("/")

#: Thermal zone types that measure the CPU (Raspberry Pi, older Pi kernels, Intel), best first.
CPU_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "x86_pkg_temp")

#: Bits of the Raspberry Pi firmware's get_throttled word (the Pi documentation's table).
THROTTLE_BITS = {
    "under_voltage": 0,
    "freq_capped": 1,
    "throttled": 2,
    "soft_temp_limit": 3,
    "under_voltage_occurred": 16,
    "freq_capped_occurred": 17,
    "throttled_occurred": 18,
    "soft_temp_limit_occurred": 19,
}

_ZONE_NUMBER = re.compile(r"(\d+)$")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def _zone_key(path: Path) -> int:
    # thermal_zone10 sorts after thermal_zone2.
    match = _ZONE_NUMBER.search(path.name)
    return int(match.group(1)) if match else 0


def read_cpu_temperature(root: Path = ROOT) -> float | None:
    """CPU temperature in degrees Celsius from the kernel's thermal zones; None without one."""
    zones = sorted((root / "sys/class/thermal").glob("thermal_zone*"), key=_zone_key)
    readings: list[tuple[str, float]] = []
    for zone in zones:
        raw = _read_text(zone / "temp")
        if raw is None:
            continue  # some zones answer EINVAL/ENODATA while their sensor sleeps
        try:
            millidegrees = int(raw.strip())
        except ValueError:
            continue
        kind = (_read_text(zone / "type") or "").strip()
        readings.append((kind, millidegrees / 1000.0))
    for wanted in CPU_ZONE_TYPES:
        for kind, celsius in readings:
            if kind == wanted:
                return celsius
    return readings[0][1] if readings else None


def read_throttled(root: Path = ROOT) -> dict[str, object] | None:
    """Raspberry Pi under-voltage/throttling flags from the firmware driver; None elsewhere."""
    raw = _read_text(root / "sys/devices/platform/soc/soc:firmware/get_throttled")
    if raw is None:
        return None
    try:
        # The driver prints the word as bare hex ("50005"); accept a "0x" prefix too.
        word = int(raw.strip(), 16)
    except ValueError:
        return None
    return decode_throttled(word)


def decode_throttled(word: int) -> dict[str, object]:
    """The firmware's get_throttled word as ``{"raw": word, flag: bool, ...}`` (:data:`THROTTLE_BITS`)."""
    flags: dict[str, object] = {"raw": word}
    flags.update({name: bool(word >> bit & 1) for name, bit in THROTTLE_BITS.items()})
    return flags


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo``-style text to {field: bytes} (the kernel writes kB, meaning KiB)."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            continue
        fields[name.strip()] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
    return fields


def read_memory(root: Path = ROOT) -> dict[str, int | None] | None:
    """System memory total and available in bytes from ``/proc/meminfo``; None without it."""
    text = _read_text(root / "proc/meminfo")
    if text is None:
        return None
    fields = parse_meminfo(text)
    # MemAvailable is missing before Linux 3.14; None says "unknown" rather than guessing.
    return {"total_bytes": fields.get("MemTotal"), "available_bytes": fields.get("MemAvailable")}


def read_process_memory(root: Path = ROOT, *, pid: int | str = "self") -> dict[str, int | None] | None:
    """This process's resident memory now (VmRSS) and at its peak (VmHWM), in bytes."""
    text = _read_text(root / "proc" / str(pid) / "status")
    if text is None:
        return None
    fields = parse_meminfo(text)
    return {"rss_bytes": fields.get("VmRSS"), "peak_rss_bytes": fields.get("VmHWM")}


def read_uptime(root: Path = ROOT) -> float | None:
    """Seconds since boot from ``/proc/uptime``."""
    text = _read_text(root / "proc/uptime")
    if text is None:
        return None
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


def read_load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def read_disk(path: Path) -> dict[str, int] | None:
    """Total and free bytes of the file system holding ``path``."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return {"total_bytes": usage.total, "free_bytes": usage.free}


class CpuMeter:
    """This process's CPU use between two samples, as a fraction of one core (2.0 = two busy cores)."""

    def __init__(
        self,
        *,
        process_time: Callable[[], float] = time.process_time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._process_time = process_time
        self._monotonic = monotonic
        self._cpu = process_time()
        self._wall = monotonic()

    def reset(self) -> None:
        """Start a new measuring period now."""
        self._cpu = self._process_time()
        self._wall = self._monotonic()

    def sample(self) -> float | None:
        """CPU fraction since the last sample (or creation); starts a new period. None if no time passed."""
        cpu, wall = self._process_time(), self._monotonic()
        used, elapsed = cpu - self._cpu, wall - self._wall
        self._cpu, self._wall = cpu, wall
        if elapsed <= 0:
            return None
        return max(0.0, used / elapsed)


def collect_health(
    *,
    state_dir: Path,
    extra: Mapping[str, object] | None = None,
    clock: Clock | None = None,
    cpu: CpuMeter | None = None,
    root: Path = ROOT,
) -> dict[str, object]:
    """A JSON-serialisable health snapshot; fields that cannot be read on this machine are None.

    Args:
        state_dir: the daemon's state directory; its file system's space is reported.
        extra: daemon values to include (queue depth, inference time, camera and clock state).
        clock: the time source for ``at``; default the system clock.
        cpu: a meter whose sample since the previous snapshot becomes ``process_cpu``.
        root: the file-system root the readers look under (tests pass a fake tree).

    Raises:
        ValueError: an ``extra`` key collides with a built-in field, or a value is not JSON-serialisable.
    """
    clock = clock if clock is not None else SystemClock()
    memory = read_memory(root) or {}
    process = read_process_memory(root) or {}
    disk = read_disk(state_dir) or {}
    snapshot: dict[str, object] = {
        "at": clock.now().isoformat(),
        "cpu_temp_c": read_cpu_temperature(root),
        "throttled": read_throttled(root),
        "load_avg": read_load_average(),
        "mem_total_bytes": memory.get("total_bytes"),
        "mem_available_bytes": memory.get("available_bytes"),
        "rss_bytes": process.get("rss_bytes"),
        "peak_rss_bytes": process.get("peak_rss_bytes"),
        "disk_total_bytes": disk.get("total_bytes"),
        "disk_free_bytes": disk.get("free_bytes"),
        "uptime_s": read_uptime(root),
        "process_cpu": cpu.sample() if cpu is not None else None,
    }
    if extra:
        clash = sorted(set(extra) & set(snapshot))
        if clash:
            raise ValueError(f"extra health fields collide with built-in ones: {', '.join(clash)}")
        snapshot.update(extra)
        try:
            json.dumps(snapshot, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"extra health fields must be JSON-serialisable: {err}") from err
    return snapshot

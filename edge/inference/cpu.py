"""What this CPU's integer kernels do: the architecture, and whether an x86 has VNNI.

It matters for INT8 files: onnxruntime's u8 x s8 kernels compute exactly on ARM64 and on x86 with
VNNI, but on an x86 without VNNI they add pairs of products in saturating 16-bit lanes
(``vpmaddubsw``), see :mod:`export.quantize`.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

X86 = ("x86_64", "amd64", "i686", "x86")
_VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "avx_vnni_int8"}  # /proc/cpuinfo names
_VNNI_NUMPY = ("AVX512VNNI", "AVX_VNNI", "AVXVNNI")  # numpy's CPUID names


def _numpy_features() -> dict[str, bool] | None:
    """numpy's own CPUID reading (what the process really runs on, also under an emulator whose
    /proc/cpuinfo is the host's), or None when this numpy does not expose it."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__  # numpy >= 2
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__  # numpy 1.x
        except ImportError:
            return None
    return dict(__cpu_features__)


def host_cpu(*, cpuinfo: str | None = None, arch: str | None = None) -> tuple[str, bool]:
    """(architecture, has VNNI) of this machine; ``cpuinfo`` and ``arch`` stand in for it in tests."""
    arch = (arch or platform.machine()).lower()
    if arch not in X86:
        return arch, False
    if cpuinfo is None:
        features = _numpy_features()
        if features is not None:
            return arch, any(features.get(name, False) for name in _VNNI_NUMPY)
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    return arch, bool(flags & _VNNI_FLAGS)


@functools.cache
def u8s8_saturates() -> bool:
    """True on an x86 CPU without VNNI, where onnxruntime's u8 x s8 products can saturate."""
    arch, vnni = host_cpu()
    return arch in X86 and not vnni

"""Is INT8 worth it here? Latency of both models measured on this machine, and advice.

INT8 is not always faster: on tiny models with depthwise convolutions the QuantizeLinear /
DequantizeLinear pairs around every float island can cost more than the int8 arithmetic saves,
and the balance differs between the x86 workstation that exports and the ARM device that runs the
model. So the export measures rather than assumes, says on which machine it measured, and with a
latency target suggests the model (or the input size) that meets it.
"""

from __future__ import annotations

import logging
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

#: INT8 must be at least this much faster to be called faster (timing noise on a shared machine).
FASTER = 0.95
#: Input sizes are suggested in multiples of the largest YOLO stride.
STRIDE = 32


def machine() -> str:
    """The CPU this runs on, as people name it (for the report: latency depends on it)."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                # x86: "model name"; ARM: "Model" (e.g. Raspberry Pi 5 Model B) or "Hardware".
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    model = value.strip()
                    break
    except OSError:
        pass
    return f"{model or platform.processor() or 'unknown CPU'} ({platform.machine()}, {os.cpu_count()} cores)"


@dataclass(slots=True)
class LatencyAdvice:
    """Model-only latency of FP32 and INT8 on this machine, and which to deploy."""

    fp32_ms: float
    int8_ms: float
    threads: int | None
    machine: str
    input_size: tuple[int, int] | None = None
    target_ms: float | None = None
    recommend: str = "int8"  # "int8" | "fp32"
    suggested_imgsz: int | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.int8_ms / self.fp32_ms if self.fp32_ms > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"fp32_ms": round(self.fp32_ms, 3), "int8_ms": round(self.int8_ms, 3),
                "int8_over_fp32": round(self.ratio, 3), "threads": self.threads, "machine": self.machine,
                "target_ms": self.target_ms, "recommend": self.recommend,
                "suggested_imgsz": self.suggested_imgsz, "advice": list(self.lines)}


def advise(fp32_ms: float, int8_ms: float, *, target_ms: float | None = None,
           input_size: tuple[int, int] | None = None, threads: int | None = None,
           where: str | None = None) -> LatencyAdvice:
    """Advice from two measured latencies (pure: the measuring is :func:`measure`)."""
    if target_ms is not None and target_ms <= 0:
        raise ValueError(f"the latency target must be > 0 ms, got {target_ms}")
    advice = LatencyAdvice(fp32_ms, int8_ms, threads, where or machine(), input_size, target_ms)
    ratio = advice.ratio
    lines = advice.lines
    lines.append(f"model-only latency on this machine ({advice.machine}, {threads or 'default'} threads): "
                 f"FP32 {fp32_ms:.1f} ms, INT8 {int8_ms:.1f} ms (INT8/FP32 x{ratio:.2f})")
    int8_faster = ratio < FASTER
    if not int8_faster:
        lines.append("INT8 is not faster than FP32 here: the quantize/dequantize steps around float layers "
                     "can cost more than int8 arithmetic saves on small or depthwise models. Keep INT8 for its "
                     "size, or deploy the FP32 model for speed.")
    advice.recommend = "int8" if int8_faster else "fp32"
    if target_ms is not None:
        meets = [name for name, ms in (("int8", int8_ms), ("fp32", fp32_ms)) if ms <= target_ms]
        if meets:
            # Both meet it: INT8 is smaller and within the accuracy budget; otherwise the one that does.
            advice.recommend = "int8" if "int8" in meets else "fp32"
            lines.append(f"target {target_ms:g} ms: met by {' and '.join(m.upper() for m in meets)}; "
                         f"deploy {advice.recommend.upper()}.")
        else:
            best = min(fp32_ms, int8_ms)
            advice.recommend = "int8" if int8_ms <= fp32_ms else "fp32"
            text = f"target {target_ms:g} ms: neither model meets it (best {best:.1f} ms)."
            if input_size is not None:
                # Convolution cost grows with the pixel count, so the side scales with the square root.
                side = max(input_size) * math.sqrt(target_ms / best)
                advice.suggested_imgsz = max(STRIDE, int(side // STRIDE) * STRIDE)
                text += (f" Try a smaller input: export again with 'wildedge export detector (or classifier) "
                         f"--imgsz {advice.suggested_imgsz}' (latency grows with the pixel count).")
            lines.append(text)
    lines.append("These are this machine's numbers; on the device (e.g. a Raspberry Pi's ARM cores) the ratio "
                 "can differ: measure there with 'wildedge export verify FP32.onnx INT8.onnx --images DIR'.")
    return advice


def measure(fp32: Path, int8: Path, photos: Sequence[Path], *, target_ms: float | None = None,
            threads: int | None = None, runs: int = 20) -> LatencyAdvice:
    """Time both models on one real photo (alternating runs, median) and advise."""
    from edge.inference.card import read_card
    from export.measure import paired_latency, sample_tensor

    card = read_card(fp32)
    fp32_ms, int8_ms = paired_latency([fp32, int8], sample_tensor(photos, card), threads=threads, runs=runs)
    advice = advise(fp32_ms, int8_ms, target_ms=target_ms, input_size=card.preprocess.input_size, threads=threads)
    logger.info("latency FP32 %.1f ms, INT8 %.1f ms (x%.2f); recommend %s", fp32_ms, int8_ms, advice.ratio,
                advice.recommend)
    return advice

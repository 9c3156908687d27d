"""export.guidance: which model to deploy, from latencies measured on this machine."""

from __future__ import annotations

import math

import pytest

from export.guidance import advise, machine


def test_faster_int8_is_recommended_and_the_machine_is_named():
    advice = advise(40.0, 24.0, input_size=(640, 640), threads=1, where="Test CPU (x86_64, 2 cores)")
    assert advice.recommend == "int8" and advice.ratio == pytest.approx(0.6)
    assert advice.lines[0] == ("model-only latency on this machine (Test CPU (x86_64, 2 cores), 1 threads): "
                               "FP32 40.0 ms, INT8 24.0 ms (INT8/FP32 x0.60)")
    assert "measure there with 'wildedge export verify" in advice.lines[-1]
    assert not any("not faster" in line for line in advice.lines)


def test_slower_int8_says_so_and_recommends_fp32_for_speed():
    advice = advise(0.9, 1.7, where="cpu")
    assert advice.recommend == "fp32"
    assert any(line.startswith("INT8 is not faster than FP32 here") for line in advice.lines)
    assert advice.to_dict()["int8_over_fp32"] == pytest.approx(1.889, abs=1e-3)


def test_a_target_met_by_both_prefers_the_smaller_int8():
    advice = advise(30.0, 31.0, target_ms=50, where="cpu")
    assert advice.recommend == "int8"
    assert "target 50 ms: met by INT8 and FP32; deploy INT8." in advice.lines


def test_a_target_met_only_by_fp32_recommends_fp32():
    advice = advise(30.0, 45.0, target_ms=40, where="cpu")
    assert advice.recommend == "fp32" and "target 40 ms: met by FP32; deploy FP32." in advice.lines


def test_a_target_missed_by_both_suggests_a_smaller_input_on_the_stride():
    advice = advise(100.0, 60.0, target_ms=15, input_size=(640, 640), where="cpu")
    # 640 * sqrt(15 / 60) = 320: latency grows with the pixel count.
    assert advice.suggested_imgsz == 320 and advice.recommend == "int8"
    # quantize and verify have no --imgsz: the advice names the command that has it.
    assert any("export again with 'wildedge export detector (or classifier) --imgsz 320'" in line
               for line in advice.lines)
    tiny = advise(100.0, 90.0, target_ms=0.1, input_size=(320, 320), where="cpu")
    assert tiny.suggested_imgsz == 32


def test_bad_targets_are_refused():
    with pytest.raises(ValueError, match="latency target must be > 0"):
        advise(1.0, 1.0, target_ms=0, where="cpu")


def test_machine_names_the_architecture_and_cores():
    text = machine()
    assert "cores)" in text and not math.isnan(len(text))


@pytest.mark.parametrize(("arch", "flags", "expected"), [
    ("aarch64", "", "u8s8"),
    ("x86_64", "flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni", "u8s8"),
    ("x86_64", "flags\t\t: fpu sse2 avx2 fma avx_vnni", "u8s8"),
    ("x86_64", "flags\t\t: fpu sse2 avx2 fma", "u8u8"),
])
def test_auto_types_avoid_saturating_kernels(arch, flags, expected):
    from export.quantize import resolve_types

    types, reason = resolve_types("auto", cpuinfo=f"processor\t: 0\n{flags}\n", arch=arch)
    assert types == expected and reason
    assert resolve_types("s8s8", arch="x86_64", cpuinfo="") == ("s8s8", "chosen")
    with pytest.raises(ValueError, match="integer types must be one of auto, u8s8, u8u8, s8s8"):
        resolve_types("int4")

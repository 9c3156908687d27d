"""INT8 arithmetic on an x86 without VNNI (edge/inference/cpu.py, session options).

onnxruntime's u8 x s8 kernels saturate 16-bit sums there; wildedge sets
``session.x64quantprecision`` on such a CPU so a u8s8 file made for an ARM device computes exactly.
The real check runs the same INT8 file on this machine and under ``qemu-x86_64 -cpu Haswell`` (an
AVX2 CPU without VNNI, Debian's qemu-user-static), with and without the option.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edge.inference.cpu as cpu
import edge.inference.session as session

QEMU = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")


def test_vnni_is_read_from_cpuid_or_cpuinfo(monkeypatch):
    monkeypatch.setattr(cpu, "_numpy_features", lambda: {"AVX2": True, "AVX512VNNI": False})
    assert cpu.host_cpu(arch="x86_64") == ("x86_64", False)
    monkeypatch.setattr(cpu, "_numpy_features", lambda: {"AVX2": True, "AVX512VNNI": True})
    assert cpu.host_cpu(arch="x86_64") == ("x86_64", True)
    monkeypatch.setattr(cpu, "_numpy_features", lambda: None)  # an old numpy: /proc/cpuinfo's flags
    assert cpu.host_cpu(arch="x86_64", cpuinfo="flags\t: sse2 avx2 avx_vnni\n") == ("x86_64", True)
    assert cpu.host_cpu(arch="x86_64", cpuinfo="flags\t: sse2 avx2\n") == ("x86_64", False)
    assert cpu.host_cpu(arch="aarch64") == ("aarch64", False)


@pytest.mark.parametrize("saturates", [True, False])
def test_the_precise_mode_is_set_only_where_u8s8_saturates(monkeypatch, saturates):
    monkeypatch.setattr(session, "u8s8_saturates", lambda: saturates)
    options = session.session_options(threads=1)
    if saturates:
        assert options.get_session_config_entry("session.x64quantprecision") == "1"
    else:  # unset (onnxruntime raises when asked): nothing to slow a VNNI machine or an ARM device
        with pytest.raises(RuntimeError, match="does not have configuration"):
            options.get_session_config_entry("session.x64quantprecision")


SCRIPT = r"""
import json, sys
import numpy as np
import edge.inference.cpu as cpu
import edge.inference.session as session
from edge.inference.session import OnnxModel
from export.calibration import load_tensor
model_path, photo, precise = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
session.u8s8_saturates = lambda: precise and cpu.u8s8_saturates()
with OnnxModel(model_path, threads=1) as model:
    outputs = model.run(load_tensor(photo, model.card))
print(json.dumps({"vnni": cpu.host_cpu()[1], "outputs": {k: v.ravel().tolist() for k, v in outputs.items()}}))
"""


@pytest.mark.slow
@pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not installed (apt-get install qemu-user-static)")
def test_a_u8s8_file_is_exact_on_an_x86_without_vnni(stamped, assets, tmp_path):
    from edge.inference.card import read_card
    from export.calibration import ImageReader, list_images, split_images
    from export.graph import load_graph
    from export.prepare import prepare
    from export.quantize import quantize_file

    card_model = stamped["fastestdet"]
    images = assets / "voc2007_labeled" / "images"
    calib, held = split_images(list_images(images), root=images)
    prepared = prepare(card_model, tmp_path / "prepared.onnx")
    graph = load_graph(prepared)
    reader = ImageReader(calib[:16], read_card(card_model), graph.model.graph.input[0].name)
    int8 = quantize_file(prepared, tmp_path / "fd.u8s8.onnx", reader, exclude=graph.float_tail(), types="u8s8")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    root = Path(__file__).resolve().parents[1]

    def run(*prefix: str, precise: str) -> dict:
        done = subprocess.run([*prefix, sys.executable, str(script), str(int8), str(held[0]), precise],
                              capture_output=True, text=True, cwd=root, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    here = run(precise="1")
    haswell = [QEMU, "-cpu", "Haswell"]
    saturated, exact = run(*haswell, precise="0"), run(*haswell, precise="1")
    assert saturated["vnni"] is False and exact["vnni"] is False  # the emulated CPU has no VNNI
    for name, values in here["outputs"].items():
        reference = np.array(values)
        # Without the option the saturating kernels compute something else (FastestDet: off by 5.3) ...
        assert np.abs(np.array(saturated["outputs"][name]) - reference).max() > 0.1
        # ... with it, the products are exact: the same outputs as this machine's.
        np.testing.assert_allclose(np.array(exact["outputs"][name]), reference, atol=1e-5)

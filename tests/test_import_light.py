"""Importing the runtime pulls in no heavy or export-only package (the device install has none of them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# torch/ultralytics are export-time only; onnx too: onnxmeta exists so the device never needs it.
HEAVY = ("torch", "torchvision", "ultralytics", "onnx")

_PROBE = """
import json, sys
{extra}
import edge, edge.inference.detector, edge.cli
import edge.cli.model_cmd, edge.inference.card, edge.inference.presets, edge.inference.onnxmeta
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))
"""


def _imported(tmp_path: Path, extra: str = "") -> list[str]:
    """Heavy modules in ``sys.modules`` after importing the runtime in a fresh interpreter.

    Stub packages go first on the path, so an import is seen even where the real package is not
    installed (there, a guarded ``try: import torch`` would fail quietly and hide the mistake).
    """
    stubs = tmp_path / "stubs"
    for name in HEAVY:
        (stubs / name).mkdir(parents=True, exist_ok=True)
        (stubs / name / "__init__.py").write_text('"""stub"""\n__version__ = "0.0.0"\n')
    path = os.pathsep.join(filter(None, [str(stubs), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    probe = _PROBE.format(extra=extra, heavy=set(HEAVY))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_runtime_imports_no_torch_ultralytics_or_onnx(tmp_path):
    assert _imported(tmp_path) == []


def test_the_probe_sees_a_heavy_import(tmp_path):
    assert _imported(tmp_path, extra="import torch, ultralytics") == ["torch", "ultralytics"]

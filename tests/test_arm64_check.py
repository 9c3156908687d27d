"""scripts/arm64_check.sh: argument handling and refusals only.

The device check itself builds a Debian arm64 root and runs the models under qemu (minutes); it runs
here only when WILDEDGE_ARM64_ROOT names a root the script already built (docs/quantization.md, "On the
device's CPU (arm64 under qemu)").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "arm64_check.sh"
BASH = shutil.which("bash") or "/bin/bash"


def run(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = (),
        script: Path = SCRIPT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, BASH, str(script), *args], check=False, capture_output=True, text=True,
                          timeout=60, env=env if env is not None else os.environ.copy())


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("arm64_check: ") and "\n" not in message, proc.stderr
    return message


@pytest.fixture()
def inputs() -> tuple[Path, Path]:
    """A world-readable folder (the non-root test reads it as nobody) with photos, labels and a model."""
    base = Path(tempfile.mkdtemp(prefix="arm64-check-test-"))
    try:
        base.chmod(0o755)
        (base / "set" / "images").mkdir(parents=True)
        (base / "set" / "labels_coco_json").mkdir()
        (base / "set" / "labels_coco_json" / "instances.json").write_text("{}")
        (base / "model.onnx").write_bytes(b"not a model")
        for path in base.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield base / "set", base / "model.onnx"
    finally:
        shutil.rmtree(base)


def test_help() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    for option in ("--root", "--photos", "--labels", "--limit", "--cpu", "--out", "--no-install"):
        assert option in proc.stdout
    assert proc.stdout.startswith("usage: scripts/arm64_check.sh")


@pytest.mark.parametrize(("args", "expected"), [
    (("--bogus",), "unknown option --bogus"),
    (("--photos", "."), "no model given"),
    (("--root",), "--root needs a value"),
    (("x.onnx",), "--photos DIR is required"),
    (("--photos", "/nonexistent-dir", "x.onnx"), "not a folder"),
])
def test_bad_arguments(args: tuple[str, ...], expected: str) -> None:
    assert expected in one_line_error(run(*args))


def test_bad_values(inputs: tuple[Path, Path]) -> None:
    photos, model = inputs
    assert "model not found" in one_line_error(run("--photos", str(photos), str(model) + ".missing"))
    assert "--limit must be a positive integer" in one_line_error(
        run("--photos", str(photos), "--limit", "0", str(model)))
    assert "--threads must be a positive integer" in one_line_error(
        run("--photos", str(photos), "--threads", "two", str(model)))
    assert "no labels" in one_line_error(run("--photos", str(photos / "images"), str(model)))
    # two models with one file name would overwrite each other in the root
    other = photos.parent / "other"
    other.mkdir()
    shutil.copy(model, other / model.name)
    assert "two models named model.onnx" in one_line_error(
        run("--photos", str(photos), str(model), str(other / model.name)))


def test_refuses_without_root(inputs: tuple[Path, Path]) -> None:
    photos, model = inputs
    prefix: tuple[str, ...] = ()
    script = SCRIPT
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is absent: cannot drop privileges")
        prefix = (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups")
        # a copy nobody can read, wherever the checkout lives
        scripts = photos.parent / "scripts"
        scripts.mkdir(mode=0o755)
        script = scripts / SCRIPT.name
        shutil.copy(SCRIPT, script)
        script.chmod(0o755)
    message = one_line_error(run("--photos", str(photos), str(model), prefix=prefix, script=script))
    assert "must run as root" in message


def test_refuses_without_tools(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    photos, model = inputs
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = {"PATH": str(empty), "HOME": str(tmp_path)}
    message = one_line_error(run("--no-install", "--photos", str(photos), str(model), env=env))
    if os.geteuid() != 0:
        assert "must run as root" in message
        return
    assert "missing" in message and "debootstrap" in message
    assert "apt-get install qemu-user-static binfmt-support debootstrap" in message


@pytest.mark.slow
@pytest.mark.assets
def test_device_check_on_existing_root(stamped: dict[str, Path], assets: Path, tmp_path: Path) -> None:
    """FastestDet on 3 VOC photos, x86 vs arm64: with exact preprocessing the FP32 boxes agree."""
    root = os.environ.get("WILDEDGE_ARM64_ROOT")
    if not root or not (Path(root) / ".wildedge-arm64-root").is_file():
        pytest.skip("set WILDEDGE_ARM64_ROOT to a root built by scripts/arm64_check.sh to run the device check")
    if os.geteuid() != 0:
        pytest.skip("the device check needs root (chroot)")
    report = tmp_path / "report.json"
    proc = subprocess.run([BASH, str(SCRIPT), "--no-install", "--root", root, "--photos",
                           str(assets / "voc2007_labeled"), "--limit", "3", "--host-python", sys.executable,
                           "--out", str(report), str(stamped["fastestdet"])],
                          check=False, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    model = json.loads(report.read_text())["models"]["fastestdet.onnx"]
    assert model["map50_arm64"] == pytest.approx(model["map50_host"], abs=1e-9)
    assert model["box_agreement"]["exact_fraction"] == 1.0


def _helper():
    import importlib.util

    spec = importlib.util.spec_from_file_location("arm64_eval", REPO / "scripts" / "arm64_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_box_agreement_counts_host_detections_above_the_threshold() -> None:
    helper = _helper()
    host = [{"file": "a.jpg", "detections": [[[0, 0, 100, 100], 0.9, 0, "cat"], [[200, 200, 300, 300], 0.5, 1, "dog"],
                                             [[0, 0, 10, 10], 0.2, 0, "cat"]]}]
    arm = [{"file": "a.jpg", "detections": [[[0, 0, 100, 100], 0.9002, 0, "cat"],   # same box, score within 1e-3
                                            [[200, 200, 300, 297], 0.29, 1, "dog"],  # IoU 0.97, score moved
                                            [[0, 0, 10, 10], 0.2, 0, "cat"]]}]
    got = helper.box_agreement(host, arm)
    assert (got["host_detections"], got["matched"], got["exact"]) == (2, 2, 1)
    arm[0]["detections"][1][3] = "cat"  # a box of another class does not match
    assert helper.box_agreement(host, arm)["matched"] == 1


def test_pixel_check_names_the_cases_that_differ(tmp_path: Path) -> None:
    golden, pixels = tmp_path / "golden.json", tmp_path / "pixels.json"
    golden.write_text(json.dumps({"opencv": "5.1.0", "cases": {"a": {"decoded": "1", "tensor": "2"},
                                                               "b": {"decoded": "3", "tensor": "4"}}}))
    pixels.write_text(json.dumps({"opencv": "5.1.0", "cases": {"a": {"decoded": "1", "tensor": "2"},
                                                               "b": {"decoded": "3", "tensor": "5"}}}))
    got = _helper().pixel_check(golden, pixels)
    assert (got["cases"], got["equal"], got["differ"]) == (2, 1, {"b": "tensor"})


# -- wildedge export verify --emulate-root -----------------------------------------------------------------

def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    wildedge = str(Path(sys.executable).with_name("wildedge"))
    return subprocess.run([wildedge, "export", "verify", *args], capture_output=True, text=True, timeout=1800,
                          check=False)


@pytest.mark.assets
def test_verify_refuses_a_folder_that_is_no_arm64_root_in_one_line(stamped: dict[str, Path], assets: Path,
                                                                   tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sorted((assets / "voc2007_labeled" / "images").iterdir())[0], photos)
    model = str(stamped["fastestdet"])
    done = _verify(model, model, "--images", str(photos), "--runs", "1", "--emulate-root", str(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not an arm64 root with wildedge installed" in lines[0]
    assert "scripts/arm64_check.sh --root" in lines[0] and "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.assets
def test_verify_reports_the_emulated_device_next_to_the_host(stamped: dict[str, Path], assets: Path,
                                                             tmp_path: Path) -> None:
    """FP32 of FastestDet on 4 VOC photos: the emulated Pi 4 finds the same boxes, to the last digit."""
    root = os.environ.get("WILDEDGE_ARM64_ROOT")
    if not root or not (Path(root) / ".wildedge-arm64-root").is_file():
        pytest.skip("set WILDEDGE_ARM64_ROOT to a root built by scripts/arm64_check.sh (with this wildedge) to "
                    "run the emulated verify")
    if os.geteuid() != 0:
        pytest.skip("the emulated verify needs root (chroot)")
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted((assets / "voc2007_labeled" / "images").iterdir())[:4]:
        shutil.copy(path, photos)
    model = str(stamped["fastestdet"])
    done = _verify(model, model, "--images", str(photos), "--runs", "1", "--json", "--gt-labels",
                   str(assets / "voc2007_labeled" / "labels_coco_json" / "instances_default.json"),
                   "--class-map", "voc2coco", "--emulate-root", root)
    assert done.returncode == 0, done.stderr
    emulated = json.loads(done.stdout)["emulated"]
    assert emulated["machine"] == "aarch64 (qemu cortex-a72)"
    boxes = emulated["fp32"]["boxes_vs_host"]
    assert boxes["host_detections"] > 0 and boxes["exact"] == boxes["host_detections"]
    host = json.loads(done.stdout)["fp32"]["accuracy"]["map50"]
    assert emulated["fp32"]["accuracy"]["map50"] == pytest.approx(host, abs=1e-9)


@pytest.mark.assets
def test_quantize_refuses_a_folder_that_is_no_arm64_root_in_one_line(stamped: dict[str, Path], assets: Path,
                                                                     tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge.cli import app

    done = CliRunner().invoke(app, [
        "export", "quantize", str(stamped["fastestdet"]), "-o", str(tmp_path / "q.onnx"),
        "--calib", str(assets / "voc2007_labeled" / "images"), "--no-search", "--emulate-root", str(tmp_path)])
    assert done.exit_code == 2, done.output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not an arm64 root with wildedge installed" in lines[0]


@pytest.mark.slow
@pytest.mark.assets
def test_the_search_measures_on_the_emulated_device(stamped: dict[str, Path], assets: Path, tmp_path: Path) -> None:
    """--emulate-root: every candidate also runs on the emulated Pi 4, a third arithmetic in the bound.
    FastestDet's INT8 kernels agree on both CPUs (docs/quantization.md), so its device value equals
    the host kernels' to the last digit, while the QDQ graph in float differs."""
    root = os.environ.get("WILDEDGE_ARM64_ROOT")
    if not root or not (Path(root) / ".wildedge-arm64-root").is_file():
        pytest.skip("set WILDEDGE_ARM64_ROOT to a root built by scripts/arm64_check.sh (with this wildedge) to "
                    "run the emulated search")
    if os.geteuid() != 0:
        pytest.skip("the emulated search needs root (chroot)")
    from export.quantize import quantize_model

    voc = assets / "voc2007_labeled"
    report = quantize_model(stamped["fastestdet"], tmp_path / "fd.pi4.onnx", calib_dir=voc / "images",
                            labels=voc / "labels_coco_json" / "instances_default.json", class_map="voc2coco",
                            search=False, budget=50.0, target="pi4", emulate_root=Path(root), latency_runs=0)
    final, q = report["final"], report["quantization"]
    assert set(final["drops"]) == {"kernels", "qdq", "jitter1", "jitter2", "jitter3", "jitter4", "device"}
    assert final["drops"]["device"] == final["drops"]["kernels"] != final["drops"]["qdq"]
    assert "emulated device (arm64 under qemu, QEMU_CPU=cortex-a72)" in q["measured_on"]

"""``classifier.classes`` is checked against the detector's labels by one function (edge/config/preflight.py)
that ``wildedge check`` and ``wildedge run`` both go through, read as ``wildedge detect --classify-classes``
reads it: a word the detector lacks is one ``error:`` line naming the key and the valid labels, never a
traceback; ``animal`` means every COCO animal class of a COCO detector everywhere. Real detectors and
classifier from ../shared/assets (skipped when absent)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from daemon_helpers import WILDEDGE, folder_config

from edge.config import config_from_dict
from edge.config.preflight import preflight, resolve_classes
from edge.errors import ConfigError
from edge.inference.labels import COCO_ANIMALS

MD_LABELS = ["animal", "person", "vehicle"]
COCO = ["person", "bicycle", "car", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
        "giraffe"]


def test_resolve_classes_reads_words_like_detect_and_names_the_key_and_the_valid_labels() -> None:
    assert resolve_classes(["animal"], MD_LABELS, key="classifier.classes") == {0}  # MD's own label
    coco_animals = {i for i, name in enumerate(COCO) if name in COCO_ANIMALS}
    assert len(coco_animals) == 10 and resolve_classes(["animal"], COCO, key="k") == coco_animals
    assert resolve_classes(["person", "zebra"], COCO, key="k") == {0, 11}
    with pytest.raises(ConfigError) as err:
        resolve_classes(["wolf", "person", "animals"], COCO, key="classifier.classes", model="coco.onnx")
    text = str(err.value)
    assert "\n" not in text and text.startswith("classifier.classes: 'wolf', 'animals' are not among the labels "
                                                "of the detector of coco.onnx; valid: 'person', 'bicycle'")
    assert "'animal' (every COCO animal class the detector has)" in text
    with pytest.raises(ConfigError, match=r"^--classify-classes: 'bird' is not .* valid: 'animal', 'person', "
                                          r"'vehicle'$"):
        resolve_classes(["bird"], MD_LABELS, key="--classify-classes")


def test_preflight_hands_the_daemon_only_labels_its_detector_has(stamped: dict[str, Path]) -> None:
    def cfg(classes: list[str] | None) -> object:
        classifier = {"model": "cls.onnx"} | ({"classes": classes} if classes is not None else {})
        return config_from_dict({"device": {"id": "trap-01"}, "camera": {"type": "opencv", "source": 0},
                                 "trigger": {"type": "timelapse", "interval": "1h"},
                                 "detector": {"model": str(stamped["yolox"])}, "classifier": classifier})

    animals = preflight(cfg(["animal", "person"])).classifier.classes
    assert animals[0] == "person" and set(animals[1:]) == COCO_ANIMALS  # in the detector's label order
    assert preflight(cfg(None)).classifier.classes is None
    with pytest.raises(ConfigError, match=r"^classifier\.classes: 'wolf' is not among the labels of the detector"):
        preflight(cfg(["wolf"]))
    missing = config_from_dict({"device": {"id": "trap-01"}, "camera": {"type": "opencv", "source": 0},
                                "trigger": {"type": "timelapse", "interval": "1h"}, "detector": {"model": "/nowhere/d.onnx"},
                                "classifier": {"model": "c.onnx", "classes": ["wolf"]}})
    assert preflight(missing) is missing  # left to whoever loads the model: it names the file


def _config(tmp_path: Path, stamped: dict[str, Path], classifier: Path, classes: list[str], photo: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    shutil.copy(photo, photos / photo.name)
    classes_toml = "[" + ", ".join(f'"{name}"' for name in classes) + "]"
    return folder_config(tmp_path / "trap.toml", state=tmp_path / "state", photos=photos,
                         model=stamped["fastestdet"], detector="conf = 0.15",
                         extra=f'[classifier]\nmodel = "{classifier}"\nclasses = {classes_toml}')


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WILDEDGE, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.assets
def test_check_and_run_refuse_a_class_the_detector_lacks_alike_in_one_line(
        tmp_path: Path, assets: Path, stamped: dict[str, Path], classifier_model: Path) -> None:
    photo = sorted((assets / "camera_traps_lila" / "images").iterdir())[1]
    config = _config(tmp_path, stamped, classifier_model, ["animal", "wolf"], photo)
    outputs = {command: _run(command, "--config", str(config), *extra)
               for command, extra in (("check", ()), ("run", ("--once",)))}
    for command, done in outputs.items():
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr + done.stdout
        (line,) = [line for line in done.stderr.splitlines() if line.strip()]
        assert line.startswith(f"error: {config}: classifier.classes: 'wolf' is not among the labels"), line
        assert "valid: 'person', 'bicycle'" in line and "'animal' (every COCO animal class" in line
    assert outputs["check"].stderr == outputs["run"].stderr  # one code path, one message
    assert not (tmp_path / "state" / "wildedge.db").exists()  # run refused before the daemon started


@pytest.mark.assets
def test_animal_with_a_coco_detector_passes_check_and_runs_as_detect_reads_it(
        tmp_path: Path, assets: Path, stamped: dict[str, Path], classifier_model: Path) -> None:
    """Before: check said ok, then run crashed with a ValueError traceback from the pipeline."""
    photo = sorted((assets / "camera_traps_lila" / "images").iterdir())[1]
    config = _config(tmp_path, stamped, classifier_model, ["animal"], photo)
    checked = _run("check", "--config", str(config))
    assert "Traceback" not in checked.stderr and "classifier.classes" not in checked.stderr, checked.stderr
    assert "ok   detector" in checked.stdout and "ok   classifier" in checked.stdout, checked.stdout
    ran = _run("run", "--once", "--config", str(config))
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr
    assert (tmp_path / "state" / "wildedge.db").exists()
    detected = _run("detect", str(tmp_path / "photos"), "-m", str(stamped["fastestdet"]), "-c",
                    str(classifier_model), "--classify-classes", "animal,wolf", "-o", str(tmp_path / "out.json"))
    assert detected.returncode == 2 and "Traceback" not in detected.stderr, detected.stderr
    (line,) = [line for line in detected.stderr.splitlines() if line.strip()]
    assert "--classify-classes: 'wolf' is not among the labels of the detector" in line
    assert "valid: 'person'" in line


@pytest.mark.assets
@pytest.mark.parametrize(("mode", "content", "message"), [
    (0o644, b"k" * 32, "is readable by others (mode 0644): run `chmod 600 "),
    (0o600, b"", "is empty"),
])
def test_check_and_run_refuse_a_command_key_file_alike(tmp_path: Path, assets: Path, stamped: dict[str, Path],
                                                       mode: int, content: bytes, message: str) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sorted((assets / "camera_traps_lila" / "images").iterdir())[0], photos)
    key = tmp_path / "command-key"
    key.write_bytes(content)
    key.chmod(mode)
    config = folder_config(tmp_path / "trap.toml", state=tmp_path / "state", photos=photos,
                           model=stamped["fastestdet"],
                           extra=f'[mqtt]\nurl = "mqtt://127.0.0.1:9"\ncommand_key_file = "{key}"')
    outputs = {command: _run(command, "--config", str(config), *extra)
               for command, extra in (("check", ()), ("run", ("--once",)))}
    for command, done in outputs.items():
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        (line,) = [line for line in done.stderr.splitlines() if line.strip()]
        assert f"mqtt.command_key_file: {key} " in line and message in line, (command, line)
        assert "Traceback" not in done.stderr + done.stdout
    assert outputs["check"].stderr == outputs["run"].stderr
    assert not (tmp_path / "state").exists()  # neither created anything

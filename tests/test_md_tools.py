"""Our MegaDetector files through the ``megadetector`` package's own tools: its validator, and its
compare, merge and combine tools against the MegaDetector v5 reference output of the LILA photos.

The package is in the ``test`` extra (installed with --no-deps: see pyproject.toml); these tests skip
when it is absent, and those needing ../shared/assets skip when the assets are absent.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.outputs.megadetector import validate_megadetector

GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDENS = ("megadetector_1_6.json", "megadetector_coco_detector_md_categories.json")
MD_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}


def _md(module: str):
    return pytest.importorskip(f"megadetector.{module}", reason="needs the megadetector package (test extra)")


def md_errors(doc: dict[str, Any] | Path) -> list[str]:
    """MegaDetector's validator's errors for ``doc`` (a dict or a file)."""
    validate = _md("postprocessing.validate_batch_results")
    options = validate.ValidateBatchResultsOptions()
    return list(validate.validate_batch_results(doc if isinstance(doc, dict) else str(doc), options)
                ["validation_results"]["errors"])


def _detect(*args: str) -> None:
    result = CliRunner().invoke(app, ["detect", *args, "-q"])
    assert result.exit_code in (0, 1), result.output


@pytest.fixture(scope="module")
def lila(assets: Path) -> Path:
    return assets / "camera_traps_lila" / "images"


@pytest.fixture(scope="module")
def reference(assets: Path, lila: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MegaDetector v5's output (format 1.1) cut down to the 12 photos present (it lists 31)."""
    doc = json.loads((assets / "camera_traps_lila" / "expected_output_DRAFT.json").read_text(encoding="utf-8"))
    present = {p.name for p in lila.iterdir()}
    doc["images"] = [im for im in doc["images"] if im["file"] in present]
    assert len(doc["images"]) == 12
    path = tmp_path_factory.mktemp("md_reference") / "md_v5_reference.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def yolox_md(stamped: dict[str, Path], lila: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """YOLOX-Nano (COCO-80) on the LILA photos at --conf 0.01, as MegaDetector files are made for Timelapse:
    MegaDetector categories with and without the detector's classes, and the native 80 categories."""
    out = tmp_path_factory.mktemp("yolox_md")
    runs = {"md": ["--categories", "megadetector"],
            "md_plain": ["--categories", "megadetector", "--no-detector-classes"],
            "native": []}
    for name, extra in runs.items():
        _detect(str(lila), "-m", str(stamped["yolox"]), "-o", str(out / f"{name}.json"), "--conf", "0.01", *extra)
    return {name: out / f"{name}.json" for name in runs}


# --- the validator ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOLDENS)
def test_golden_files_pass_megadetectors_validator(name: str) -> None:
    assert md_errors(json.loads((GOLDEN_DIR / name).read_text(encoding="utf-8"))) == []


def test_real_runs_pass_megadetectors_validator(yolox_md: dict[str, Path]) -> None:
    for path in yolox_md.values():
        assert md_errors(path) == [] and validate_megadetector(json.loads(path.read_text())) == []


def test_mixed_folder_with_failed_video(stamped: dict[str, Path], lila: Path, tmp_path: Path) -> None:
    """Photos, a readable video, an unreadable video and a broken photo in one folder: the file that
    MegaDetector's validator refused before ("Video without frames_processed field") now passes."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    photos = sorted(lila.glob("*.jpg"))[:2]
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    writer = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (640, 480))
    for photo in photos:
        for _ in range(3):
            writer.write(cv2.resize(cv2.imread(str(photo)), (640, 480)))
    writer.release()
    (folder / "unreadable.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    out = tmp_path / "mixed.json"
    _detect(str(folder), "-m", str(stamped["yolox"]), "-o", str(out), "--categories", "megadetector",
            "--video-every", "2")
    doc = json.loads(out.read_text())
    assert md_errors(doc) == [] and validate_megadetector(doc) == []
    images = {im["file"]: im for im in doc["images"]}
    assert set(images) == {p.name for p in photos} | {"clip.avi", "unreadable.mp4", "broken.jpg"}
    bad = images["unreadable.mp4"]
    assert (bad["frame_rate"], bad["frames_processed"], bad["detections"]) == (-1.0, [], None)
    assert bad["failure"].startswith("Failure video access")
    assert images["clip.avi"]["frames_processed"] == [0, 2, 4]
    assert "frame_rate" not in images["broken.jpg"] and images["broken.jpg"]["detections"] is None


def _drop(key: str, index: int) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc["images"][index].pop(key)


def _set(index: int, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc["images"][index].__setitem__(key, value)


def _set_det(index: int, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc["images"][index]["detections"][0].__setitem__(key, value)


# Each breaks golden megadetector_1_6.json in a way MegaDetector's validator refuses.
REFUSED = {
    "failed video without frames_processed": _drop("frames_processed", 5),
    "failed video without frame_rate": _drop("frame_rate", 5),
    "video without frame_rate": _drop("frame_rate", 3),
    "negative frame_rate without failure": _set(3, "frame_rate", -1.0),
    "video detection without frame_number": lambda doc: doc["images"][3]["detections"][0].pop("frame_number"),
    "integer conf": _set_det(0, "conf", 1),
    "unmapped category": _set_det(0, "category", "9"),
    "unmapped classification": _set_det(0, "classifications", [["17", 0.9]]),
    "failure with a detections list": _set(2, "detections", []),
    "non-string failure": _set(2, "failure", 3),
    "image without file": _drop("file", 1),
    "success without a detections list": _set(1, "detections", None),
    "format_version as a number": lambda doc: doc["info"].__setitem__("format_version", 1.6),
}


@pytest.mark.parametrize("mutate", list(REFUSED.values()), ids=list(REFUSED))
def test_our_validator_refuses_what_megadetectors_refuses(mutate: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads((GOLDEN_DIR / GOLDENS[0]).read_text(encoding="utf-8"))
    mutate(doc)
    assert md_errors(copy.deepcopy(doc)), "MegaDetector's validator accepts this: not a parity case"
    assert validate_megadetector(doc)


# --- thresholds in info --------------------------------------------------------------------------------


def test_info_thresholds_describe_the_model_not_the_run(yolox_md: dict[str, Path], reference: Path) -> None:
    """At --conf 0.01 (how MegaDetector files are made for Timelapse) the file still says the card's 0.3,
    which Timelapse and MegaDetector's postprocessing take as their default threshold."""
    compare = _md("postprocessing.compare_batch_results")
    doc = json.loads(yolox_md["md"].read_text())
    meta = doc["info"]["detector_metadata"]
    assert meta["typical_detection_threshold"] == 0.3  # the YOLOX card's recommendation
    assert meta["conservative_detection_threshold"] == 0.15
    assert doc["info"]["custom_metadata"]["detection_threshold"] == 0.01
    ours = compare.find_image_level_detections_above_threshold(doc, threshold=meta["typical_detection_threshold"])
    at_run_conf = compare.find_image_level_detections_above_threshold(doc, threshold=0.01)
    mdv5 = compare.find_image_level_detections_above_threshold(json.loads(reference.read_text()), threshold=0.2)
    # A typical threshold that followed --conf called 10 of the 12 photos positive (3 are empty); the card's
    # calls 4 (YOLOX-Nano is no camera-trap model), never more than MegaDetector v5 at its own 0.2.
    assert len(at_run_conf) >= 10 and len(ours) <= 5 and len(ours) <= len(mdv5)


# --- compare, merge, combine against MegaDetector v5 ----------------------------------------------


def _compare(lila: Path, a: Path, b: Path, out: Path):
    compare = _md("postprocessing.compare_batch_results")
    options = compare.BatchComparisonOptions()
    options.output_folder, options.image_folder = str(out), str(lila)
    options.n_rendering_workers, options.target_width, options.max_images_per_category = 1, 200, 2
    options.return_images_by_category = True
    pair = compare.PairwiseBatchComparisonOptions()
    pair.results_filename_a, pair.results_filename_b = str(a), str(b)
    pair.detection_thresholds_a, pair.detection_thresholds_b = {"default": 0.2}, {"default": 0.3}
    options.pairwise_options = [pair]
    out.mkdir(exist_ok=True)
    return compare.compare_batch_results(options)


def test_compare_with_megadetector_v5(yolox_md: dict[str, Path], reference: Path, lila: Path,
                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(AssertionError, match="class-sensitive comparison across results with different"):
        _compare(lila, reference, yolox_md["native"], tmp_path / "native")  # 80 categories: refused
    result = _compare(lila, reference, yolox_md["md"], tmp_path / "md")
    capsys.readouterr()
    pairs = result.pairwise_results[0].categories_to_image_pairs
    assert sum(len(v) for v in pairs.values()) == 12
    assert len(pairs["common_detections"]) + len(pairs["class_transitions"]) >= 3
    assert Path(result.html_output_file).is_file()


def test_merge_and_combine_with_megadetector_v5(yolox_md: dict[str, Path], reference: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    merge = _md("postprocessing.merge_detections")
    combine = _md("postprocessing.combine_batch_outputs")
    options = merge.MergeDetectionsOptions()
    merged = merge.merge_detections([str(yolox_md["md_plain"])], str(reference), str(tmp_path / "m.json"), options)
    before = sum(len(im["detections"] or []) for im in json.loads(reference.read_text())["images"])
    assert merged["detection_categories"] == MD_CATEGORIES
    assert sum(len(im["detections"] or []) for im in merged["images"]) > before
    transferred = [d for im in merged["images"] for d in im["detections"] or [] if "transferred_from" in d]
    assert transferred and {d["transferred_from"] for d in transferred} == {"yolox.onnx"}
    assert validate_megadetector(merged, allow_older=True) == []  # the target's format 1.1 is kept
    # MegaDetector's rule, not ours: a file with classifications never merges into one without.
    with pytest.raises(ValueError, match="disagree on whether classifications are present"):
        merge.merge_detections([str(yolox_md["md"])], str(reference), None, merge.MergeDetectionsOptions())
    docs = [json.loads(p.read_text()) for p in (yolox_md["md"], reference)]
    combined = combine.combine_batch_output_dictionaries(docs, require_uniqueness=False)
    assert combined["detection_categories"] == MD_CATEGORIES and len(combined["images"]) == 12
    assert combined["classification_categories"] == docs[0]["classification_categories"]
    with pytest.raises(AssertionError, match="Detection category mismatch"):
        combine.combine_batch_output_dictionaries([json.loads(yolox_md["native"].read_text()), docs[1]])
    capsys.readouterr()


def test_a_card_can_stamp_a_coco_detector_as_megadetector_compatible(stamped: dict[str, Path], lila: Path,
                                                                     tmp_path: Path) -> None:
    """``categories`` in the model card makes MegaDetector's scheme the default; ``--categories native``
    still gives the detector's own classes; a card map overrides the COCO-name map."""
    from edge.inference.card import CategoryScheme, ModelCard, read_card, write_card

    card = read_card(stamped["yolox"])
    md_model = write_card(stamped["yolox"], tmp_path / "yolox_md.onnx",
                          card.model_copy(update={"categories": CategoryScheme()}))
    only_zebra = write_card(stamped["yolox"], tmp_path / "yolox_zebra.onnx",
                            card.model_copy(update={"categories": CategoryScheme(map={"zebra": "animal"})}))
    photos = str(lila)
    _detect(photos, "-m", str(md_model), "-o", str(tmp_path / "card.json"), "--conf", "0.3")
    _detect(photos, "-m", str(md_model), "-o", str(tmp_path / "native.json"), "--conf", "0.3", "--categories",
            "native")
    _detect(photos, "-m", str(only_zebra), "-o", str(tmp_path / "zebra.json"), "--conf", "0.3")
    by_card = json.loads((tmp_path / "card.json").read_text())
    assert by_card["detection_categories"] == MD_CATEGORIES and md_errors(by_card) == []
    assert json.loads((tmp_path / "native.json").read_text())["detection_categories"]["24"] == "zebra"
    zebra = json.loads((tmp_path / "zebra.json").read_text())
    kept = [d for im in zebra["images"] for d in im["detections"]]
    assert kept and {zebra["classification_categories"][d["classifications"][0][0]] for d in kept} == {"zebra"}
    with pytest.raises(ValueError, match="categories.map names labels the model lacks: okapi"):
        ModelCard.model_validate({**card.model_dump(), "categories": {"map": {"okapi": "animal"}}})


def test_separate_into_folders(yolox_md: dict[str, Path], lila: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """The tool that built every combination of 80 names (22.7 GB) sorts the photos by animal/person/vehicle."""
    separate = _md("postprocessing.separate_detections_into_folders")
    options = separate.SeparateDetectionsIntoFoldersOptions(threshold=0.3)
    options.results_file, options.base_input_folder = str(yolox_md["md"]), str(lila)
    options.base_output_folder = str(tmp_path / "sorted")
    separate.separate_detections_into_folders(options)
    capsys.readouterr()
    copied = [p for p in (tmp_path / "sorted").rglob("*") if p.is_file()]
    assert len(copied) == 12
    assert {p.parent.name for p in copied} <= {"empty", "animals", "people", "vehicles", "animal_person",
                                               "animal_vehicle", "person_vehicle", "animal_person_vehicle"}
    assert sum(p.parent.name == "empty" for p in copied) >= 3


def test_addaxai_files_in_the_input_folder(stamped: dict[str, Path], lila: Path, tmp_path: Path) -> None:
    folder = tmp_path / "deployment"
    shutil.copytree(lila, folder)
    _detect(str(folder), "-m", str(stamped["yolox"]), "-o", str(tmp_path / "md.json"), "--categories",
            "megadetector", "--addaxai")
    recognition = folder / "image_recognition_file.json"
    assert recognition.is_file() and not (folder / "video_recognition_file.json").exists()
    doc = json.loads(recognition.read_text())
    assert md_errors(doc) == [] and len(doc["images"]) == 12
    assert all(not Path(im["file"]).is_absolute() for im in doc["images"])
    result = CliRunner().invoke(app, ["detect", str(folder / "ena24_7904.jpg"), "-m", str(stamped["yolox"]),
                                      "-o", str(tmp_path / "x.json"), "--addaxai"])
    assert result.exit_code == 2 and "--addaxai needs exactly one input folder" in result.output

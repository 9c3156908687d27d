"""COCO and CSV output read by the tools people use on them: pycocotools (``loadRes`` + ``COCOeval``)
on real labelled photos, and pandas (``read_csv`` dtypes) on a real run with failures and classifications."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app

pytest.importorskip("pycocotools")


def _detect(*args: str) -> None:
    result = CliRunner().invoke(app, ["detect", *args, "-q"])
    assert result.exit_code in (0, 1), result.output


def _evaluate(gt_file: Path, results: Path) -> tuple[float, float]:
    """(AP@[.5:.95], AP@.5) of ``results`` against ``gt_file``, as COCO's own evaluation computes them."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(gt_file))
    evaluation = COCOeval(gt, gt.loadRes(str(results)), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return float(evaluation.stats[0]), float(evaluation.stats[1])


def test_coco_results_score_against_voc_ground_truth(assets: Path, stamped: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """YOLOX-Nano on the 60 labelled VOC photos, ids taken from the ground truth by file name and class
    name (VOC's motorbike/aeroplane/sofa... are COCO's motorcycle/airplane/couch): mAP@.5 0.712. Before,
    image ids were positions in the run (mAP 0.004) and the file was not a list loadRes accepts."""
    from pycocotools.coco import COCO

    voc = assets / "voc2007_labeled"
    gt_file = voc / "labels_coco_json" / "instances_default.json"
    out = tmp_path / "voc.json"
    _detect(str(voc / "images"), "-m", str(stamped["yolox"]), "-o", str(out), "--format", "coco",
            "--coco-gt", str(gt_file), "--conf", "0.01")
    assert not (tmp_path / "voc.images.json").exists()  # the ground truth is the pair
    ap, ap50 = _evaluate(gt_file, out)
    assert ap50 == pytest.approx(0.712, abs=0.02) and ap == pytest.approx(0.517, abs=0.02)

    # Without --coco-gt the pair is OUT.json + OUT.images.json; its ids do not claim to be GT's.
    plain = tmp_path / "plain.json"
    _detect(str(voc / "images"), "-m", str(stamped["yolox"]), "-o", str(plain), "--format", "coco",
            "--conf", "0.01")
    pair = COCO(str(tmp_path / "plain.images.json")).loadRes(str(plain))
    assert len(pair.getImgIds()) == 60 and len(pair.getAnnIds()) == len(json.loads(plain.read_text()))
    names = {c["name"] for c in pair.loadCats(pair.getCatIds())}
    assert {"motorbike", "zebra", "toothbrush"} <= names and pair.getCatIds(catNms=["zebra"]) == [24]
    capsys.readouterr()


def test_coco_gt_is_checked_before_inference(stamped: dict[str, Path], tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"")
    bad = tmp_path / "gt.json"
    bad.write_text("[]")
    result = CliRunner().invoke(app, ["detect", str(photo), "-m", str(stamped["yolox"]), "-o",
                                      str(tmp_path / "r.json"), "--format", "coco", "--coco-gt", str(bad)])
    assert result.exit_code == 2 and "not a COCO file" in result.output
    result = CliRunner().invoke(app, ["detect", str(photo), "-m", str(stamped["yolox"]), "-o",
                                      str(tmp_path / "r.json"), "--coco-gt", str(bad)])
    assert result.exit_code == 2 and "--coco-gt needs --format coco" in result.output
    result = CliRunner().invoke(app, ["detect", str(photo), "-m", str(stamped["yolox"]), "-o",
                                      str(tmp_path / "r.json"), "--categories", "coco"])
    assert result.exit_code == 2 and "--categories must be one of native, megadetector" in result.output
    result = CliRunner().invoke(app, ["detect", str(photo), "-m", str(stamped["yolox"]), "-o",
                                      str(tmp_path / "r.json"), "--no-detector-classes"])
    assert result.exit_code == 2 and "--no-detector-classes needs --categories megadetector" in result.output
    assert not list(tmp_path.glob("r.*"))


def test_csv_reads_with_integer_columns_in_pandas(assets: Path, stamped: dict[str, Path], classifier_model: Path,
                                                 tmp_path: Path) -> None:
    """A real run with a broken photo, photos with and without animals, and a classifier's top 3: the
    integer columns are integers in pandas, class ids are those of the MegaDetector file of the same run."""
    pd = pytest.importorskip("pandas")
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sorted((assets / "coco_val2017_animal_samples").glob("*.jpg"))[:2]:
        shutil.copy(photo, folder / photo.name)
    shutil.copy(sorted((assets / "camera_traps_lila" / "images").glob("wcs_*.jpg"))[0], folder / "empty.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    args = [str(folder), "-m", str(stamped["yolox"]), "-c", str(classifier_model), "--top-k", "3"]
    _detect(*args, "-o", str(tmp_path / "r.csv"))
    _detect(*args, "-o", str(tmp_path / "r.json"))
    frame = pd.read_csv(tmp_path / "r.csv")
    for column in ("width", "height", "frame", "class_id"):
        assert pd.api.types.is_integer_dtype(frame[column]), (column, frame[column].dtype)
    broken = frame[frame["file"] == "broken.jpg"].iloc[0]
    assert (broken["width"], broken["class_id"], broken["frame"]) == (0, 0, -1) and "Failure" in broken["failure"]
    assert frame[frame["file"] == "empty.jpg"]["class_id"].tolist() == [0]
    animals = frame[frame["class_id"] > 0]
    assert len(animals) >= 2 and animals["classification_prob_3"].notna().any()
    assert (animals["classification_prob"] >= animals["classification_prob_2"]).all()
    doc = json.loads((tmp_path / "r.json").read_text())
    md: dict[tuple[str, float], set[int]] = {}
    for im in doc["images"]:
        for d in im["detections"] or []:
            md.setdefault((im["file"], round(d["conf"], 2)), set()).add(int(d["category"]))
    for row in animals.itertuples():
        assert row.class_id in md[(row.file, round(row.confidence, 2))]  # same ids as the JSON
        assert doc["detection_categories"][str(row.class_id)] == row.label

"""``wildedge detect`` end to end on real models and real photos."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.batch.runner import BatchRunner
from edge.cli import app
from edge.outputs.megadetector import validate_megadetector

runner = CliRunner()


@pytest.fixture()
def photos(tmp_path: Path, assets: Path) -> Path:
    """A folder of real photos (one in a subfolder) plus a non-image file that must be skipped."""
    folder = tmp_path / "photos"
    (folder / "sub dir").mkdir(parents=True)
    samples = sorted((assets / "coco_val2017_animal_samples").glob("*.jpg"))
    for src in samples[:3]:
        shutil.copy(src, folder / src.name)
    shutil.copy(samples[3], folder / "sub dir" / samples[3].name)
    (folder / "notes.txt").write_text("field notes\n")
    return folder


def _detect(*args: str):
    return runner.invoke(app, ["detect", *args])


def test_megadetector_output(photos, tmp_path, stamped):
    out = tmp_path / "results.json"
    result = _detect(str(photos), "-m", str(stamped["yolox"]), "-o", str(out), "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert validate_megadetector(doc) == []
    assert doc["info"]["format_version"] == "1.6"
    files = [img["file"] for img in doc["images"]]
    assert len(files) == 4 and "notes.txt" not in files
    assert any(f.startswith("sub dir/") for f in files)
    bear = next(img for img in doc["images"] if img["file"] == "000000000285.jpg")
    cat = doc["detection_categories"][bear["detections"][0]["category"]]
    assert cat == "bear"
    x, y, w, h = bear["detections"][0]["bbox"]
    # Reference box [-4.2, 63.9, 573.6, 637.0] on the 586x640 photo, clipped to the frame.
    assert x == pytest.approx(0.0, abs=0.01) and y == pytest.approx(63.9 / 640, abs=0.01)
    assert x + w == pytest.approx(573.6 / 586, abs=0.01)
    assert not (tmp_path / "results.json.checkpoint.jsonl").exists()


def test_bad_files_become_failures(photos, tmp_path, stamped, assets):
    good = (photos / "000000000285.jpg").read_bytes()
    (photos / "zero.jpg").write_bytes(b"")
    (photos / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage" * 50)
    (photos / "text.png").write_text("not a picture")
    out = tmp_path / "results.json"
    result = _detect(str(photos), "-m", str(stamped["nanodet"]), "-o", str(out))
    assert result.exit_code == 1
    doc = json.loads(out.read_text())
    assert validate_megadetector(doc) == []
    failed = {img["file"]: img["failure"] for img in doc["images"] if img.get("failure")}
    assert set(failed) == {"zero.jpg", "truncated.jpg", "corrupt.jpg", "text.png"}
    assert "truncated" in failed["truncated.jpg"]
    assert all(img["detections"] is None for img in doc["images"] if img.get("failure"))
    assert sum(1 for img in doc["images"] if not img.get("failure")) == 4
    assert "failed: " in result.output


def test_usage_errors(tmp_path, stamped):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _detect(str(empty), "-m", str(stamped["yolox"]), "-o", str(tmp_path / "o.json"))
    assert result.exit_code == 2 and "no photos or videos" in result.output
    result = _detect(str(tmp_path / "nope"), "-m", str(stamped["yolox"]), "-o", str(tmp_path / "o.json"))
    assert result.exit_code == 2 and "no such file" in result.output
    img = tmp_path / "a.jpg"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    result = _detect(str(img), "-m", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.json"))
    assert result.exit_code == 2 and "not found" in result.output
    result = _detect(str(img), "-m", str(stamped["yolox"]), "-o", str(tmp_path / "o.json"), "--conf", "1.5")
    assert result.exit_code == 2


def test_csv_and_coco(photos, tmp_path, stamped):
    out_csv = tmp_path / "r.csv"
    assert _detect(str(photos), "-m", str(stamped["fastestdet"]), "-o", str(out_csv), "-q").exit_code == 0
    with out_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["file"] for r in rows} >= {"000000000285.jpg"}
    bear = [r for r in rows if r["file"] == "000000000285.jpg"]
    assert bear[0]["label"] == "bear" and float(bear[0]["confidence"]) > 0.65
    out_coco = tmp_path / "r.json"
    assert _detect(str(photos), "-m", str(stamped["fastestdet"]), "-o", str(out_coco), "--format", "coco",
                   "-q").exit_code == 0
    annotations = json.loads(out_coco.read_text())  # the results list; its images are in r.images.json
    assert len(json.loads((tmp_path / "r.images.json").read_text())["images"]) == 4 and annotations
    assert all(len(a["bbox"]) == 4 and a["score"] >= 0.65 for a in annotations)


def _interrupt_after(monkeypatch, count: int):
    """Make BatchRunner.run raise KeyboardInterrupt (Ctrl-C) after ``count`` files; returns the real run."""
    real_run = BatchRunner.run

    def interrupted(self, items):
        for index, result in enumerate(real_run(self, items)):
            if index == count:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(BatchRunner, "run", interrupted)
    return real_run


def test_resume_continues_without_redoing_work(photos, tmp_path, stamped, monkeypatch):
    out = tmp_path / "results.json"
    real_run = _interrupt_after(monkeypatch, 2)
    result = _detect(str(photos), "-m", str(stamped["yolox"]), "-o", str(out), "-q")
    assert result.exit_code != 0
    ckpt = tmp_path / "results.json.checkpoint.jsonl"
    assert ckpt.exists() and not out.exists()
    assert len(ckpt.read_text().splitlines()) == 1 + 2  # header + two results
    monkeypatch.setattr(BatchRunner, "run", real_run)

    result = _detect(str(photos), "-m", str(stamped["yolox"]), "-o", str(out), "-q")
    assert result.exit_code == 2 and "--resume" in result.output
    result = _detect(str(photos), "-m", str(stamped["yolox"]), "-o", str(out), "-q", "--resume", "--conf", "0.5")
    assert result.exit_code == 2 and "other settings" in result.output

    processed: list[str] = []
    real_finish = BatchRunner._finish

    def counting(self, item, loaded):
        processed.append(item.name)
        return real_finish(self, item, loaded)

    monkeypatch.setattr(BatchRunner, "_finish", counting)
    result = _detect(str(photos), "-m", str(stamped["yolox"]), "-o", str(out), "-q", "--resume")
    assert result.exit_code == 0, result.output
    assert len(processed) == 2
    doc = json.loads(out.read_text())
    assert len(doc["images"]) == 4 and validate_megadetector(doc) == []
    assert not ckpt.exists()


def test_resume_ignores_a_torn_last_line(photos, tmp_path, stamped, monkeypatch):
    out = tmp_path / "results.json"
    real_run = _interrupt_after(monkeypatch, 1)
    _detect(str(photos), "-m", str(stamped["yolox"]), "-o", str(out), "-q")
    monkeypatch.setattr(BatchRunner, "run", real_run)
    ckpt = tmp_path / "results.json.checkpoint.jsonl"
    with ckpt.open("a") as fh:
        fh.write('{"file": "torn')  # power cut in the middle of a write
    result = _detect(str(photos), "-m", str(stamped["yolox"]), "-o", str(out), "-q", "--resume")
    assert result.exit_code == 0, result.output
    assert len(json.loads(out.read_text())["images"]) == 4


def test_video_megadetector_convention(tmp_path, assets, stamped):
    frames = [cv2.imread(str(p)) for p in sorted((assets / "coco_val2017_animal_samples").glob("*.jpg"))[:2]]
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (640, 480))
    for frame in frames:
        for _ in range(6):
            writer.write(cv2.resize(frame, (640, 480)))
    writer.release()
    out = tmp_path / "v.json"
    result = _detect(str(video), "-m", str(stamped["yolox"]), "-o", str(out), "--video-every", "4", "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert validate_megadetector(doc) == []
    (entry,) = doc["images"]
    assert entry["file"] == "clip.avi"
    assert entry["frame_rate"] == pytest.approx(5.0)
    assert entry["frames_processed"] == [0, 4, 8]
    cats = {doc["detection_categories"][d["category"]] for d in entry["detections"]}
    assert "bear" in cats
    assert all(d["frame_number"] in (0, 4, 8) for d in entry["detections"])


def test_classifier_on_animal_crops(photos, tmp_path, stamped, classifier_model):
    out = tmp_path / "c.json"
    result = _detect(str(photos / "000000000285.jpg"), "-m", str(stamped["yolox"]), "-c", str(classifier_model),
                     "-o", str(out), "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert validate_megadetector(doc) == []
    (det,) = doc["images"][0]["detections"]
    top_id, top_prob = det["classifications"][0]
    assert "brown bear" in doc["classification_categories"][top_id]
    assert top_prob > 0.5
    assert len(det["classifications"]) == 5


def test_reduced_decode_matches_full_decode(tmp_path, assets, stamped):
    src = cv2.imread(str(assets / "coco_val2017_animal_samples" / "000000000285.jpg"))
    big = cv2.resize(src, (src.shape[1] * 4, src.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "big" / "bear.jpg"
    path.parent.mkdir()
    cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
    boxes = {}
    for mode in ("--reduced", "--full-decode"):
        out = tmp_path / f"{mode}.json"
        assert _detect(str(path), "-m", str(stamped["yolox"]), "-o", str(out), mode, "-q").exit_code == 0
        boxes[mode] = json.loads(out.read_text())["images"][0]["detections"][0]["bbox"]
    assert np.allclose(boxes["--reduced"], boxes["--full-decode"], atol=0.01)


def test_tiling_finds_small_squirrels(tmp_path, assets, stamped):
    images = assets / "camera_traps_squirrels" / "images" / "val"
    out = tmp_path / "t.json"
    result = _detect(str(images), "-m", str(stamped["yolox"]), "-o", str(out), "--tile", "320", "--overlap",
                     "0.25", "--conf", "0.1", "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert validate_megadetector(doc) == []
    hits = 0
    for img in doc["images"]:
        label = (assets / "camera_traps_squirrels" / "labels" / "val" / Path(img["file"]).with_suffix(".txt").name)
        _, cx, cy, w, h = (float(v) for v in label.read_text().split()[:5])
        for det in img["detections"]:
            x, y, bw, bh = det["bbox"]
            if abs(x + bw / 2 - cx) < w and abs(y + bh / 2 - cy) < h:
                hits += 1
                break
    assert hits >= 2

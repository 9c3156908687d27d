"""COCO detection results: the list ``pycocotools.coco.COCO(gt).loadRes(file)`` reads, and its image list.

A COCO results file is a JSON array of ``{"image_id", "category_id", "bbox": [x, y, w, h] (pixels),
"score"}``; the ids only mean something against a COCO file holding ``images`` and ``categories``:

- with ``--coco-gt GT.json`` (a COCO ground-truth file), image ids are GT's, matched by file name
  (the path relative to the inputs' common folder, else the base name when it is unique in GT), and
  category ids are GT's, matched by name (COCO's and Darknet/VOC spellings are the same name:
  ``motorbike`` is ``motorcycle``). Files and classes GT lacks are left out (a warning counts them).
  Then ``COCO("GT.json").loadRes("OUT.json")`` and ``COCOeval`` score the run.
- without it, ``OUT.images.json`` is written beside ``OUT.json``: a COCO file with the run's
  ``images`` (id = position in the run) and ``categories`` and no annotations, so that
  ``COCO("OUT.images.json").loadRes("OUT.json")`` loads the boxes.

Category ids are those of :mod:`edge.outputs.categories`: COCO's official ids for a COCO-80 detector.
A video becomes one image per processed frame, each with the video's path as ``file_name`` plus
``frame_index`` (the TAO / YouTube-VIS convention). Failed files have no size and no boxes, so they
are left out (a warning gives the count). Classifications are not part of COCO results.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from edge.batch.results import FileResult, RunInfo
from edge.outputs._common import clipped_detections, completion_time, run_categories
from edge.outputs.categories import coco_name

logger = logging.getLogger(__name__)

# COCO's supercategories, kept so the image list reads like instances_val2017.json.
_SUPER = {
    "person": "person", "bicycle": "vehicle", "car": "vehicle", "motorcycle": "vehicle", "airplane": "vehicle",
    "bus": "vehicle", "train": "vehicle", "truck": "vehicle", "boat": "vehicle",
    "bird": "animal", "cat": "animal", "dog": "animal", "horse": "animal", "sheep": "animal", "cow": "animal",
    "elephant": "animal", "bear": "animal", "zebra": "animal", "giraffe": "animal",
}


@dataclass(frozen=True, slots=True)
class CocoGroundTruth:
    """What a COCO ground-truth file gives a results file: image ids by file name, category ids by name."""

    path: Path
    by_path: dict[str, int]  # file_name (forward slashes) -> image id
    by_base: dict[str, int]  # base name -> image id, for base names unique in the file
    categories: dict[str, int]  # normalised name -> category id


def _norm(name: str) -> str:
    return coco_name(name) or " ".join(name.strip().lower().replace("_", " ").split())


def load_coco_gt(path: str | os.PathLike[str]) -> CocoGroundTruth:
    """Read the image and category ids of a COCO ground-truth file.

    Raises:
        ValueError: the file is missing, not JSON, or lacks ``images``/``categories`` (the reason is named).
    """
    file = Path(path)
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"--coco-gt {file}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--coco-gt {file}: cannot read it: {err}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"--coco-gt {file}: not valid JSON: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) \
            or not isinstance(doc.get("categories"), list):
        raise ValueError(f"--coco-gt {file}: not a COCO file (needs 'images' and 'categories' lists)")
    by_path: dict[str, int] = {}
    bases: Counter[str] = Counter()
    base_ids: dict[str, int] = {}
    for image in doc["images"]:
        try:
            name, image_id = str(image["file_name"]).replace("\\", "/"), image["id"]
        except (KeyError, TypeError):
            raise ValueError(f"--coco-gt {file}: an image lacks 'file_name' or 'id'") from None
        by_path[name] = image_id
        base = PurePosixPath(name).name
        bases[base] += 1
        base_ids[base] = image_id
    categories: dict[str, int] = {}
    for cat in doc["categories"]:
        try:
            categories.setdefault(_norm(str(cat["name"])), cat["id"])
        except (KeyError, TypeError):
            raise ValueError(f"--coco-gt {file}: a category lacks 'name' or 'id'") from None
    return CocoGroundTruth(file, by_path, {b: i for b, i in base_ids.items() if bases[b] == 1}, categories)


def coco_images_path(output: str | os.PathLike[str]) -> Path:
    """The image list written beside results file ``output`` when no ground truth is given."""
    out = Path(output)
    return out.with_name(f"{out.stem if out.suffix.lower() == '.json' else out.name}.images.json")


def to_coco(results: Sequence[FileResult], *, run: RunInfo,
            gt: CocoGroundTruth | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The results list for ``results``, and the COCO file of their images and categories.

    With ``gt`` the ids are ground truth's, and the second document only lists the matched images.

    Raises:
        ValueError: a processed file has no size, or a detection's class is not among the detector's labels.
    """
    cats = run_categories(run)
    if gt is None:
        category_ids = {cid: cid for cid in cats.names}
    else:
        category_ids = {cid: gt.categories[_norm(name)] for cid, name in cats.names.items()
                        if _norm(name) in gt.categories}
        missing = [name for cid, name in cats.names.items() if cid not in category_ids]
        if missing:
            logger.warning("%s has no category for %d of the detector's classes (%s...): their boxes are left out",
                           gt.path, len(missing), ", ".join(missing[:5]))
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    failed = unmatched = 0
    dropped: Counter[str] = Counter()
    for result in results:
        if result.failure is not None:
            failed += 1
            continue
        kept = clipped_detections(result)
        frames = result.frames_processed if result.is_video else [None]
        image_ids: dict[int | None, int] = {}
        for frame in frames or []:
            if gt is not None:
                image_id = None if frame is not None else _gt_image_id(gt, result.file)
                if image_id is None:
                    unmatched += 1
                    continue
            else:
                image_id = len(images) + 1
            image: dict[str, Any] = {"id": image_id, "file_name": result.file,
                                     "width": result.width, "height": result.height}
            if frame is not None:
                image["frame_index"] = frame
            images.append(image)
            image_ids[frame] = image_id
        for det, (x1, y1, x2, y2) in kept:
            written = cats.id_of(det.class_id)
            frame = det.frame if result.is_video else None
            if gt is None and frame not in image_ids:
                raise ValueError(f"{result.file}: detection at frame {frame} is not a processed frame")
            if written is None or written not in category_ids:
                dropped[det.label] += 1
                continue
            if frame not in image_ids:  # the image is not in ground truth
                continue
            annotations.append({
                "image_id": image_ids[frame],
                "category_id": category_ids[written],
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "score": round(float(det.score), 5),
            })
    if failed:
        logger.warning("%d failed files are left out of the COCO file (it has no place for failures)", failed)
    if unmatched:
        logger.warning("%d photos or video frames have no image in %s (matched by file name): left out",
                       unmatched, gt.path if gt else "")
    if sum(dropped.values()):
        logger.info("%d detections of classes outside the written categories are left out", sum(dropped.values()))
    categories = [{"id": category_ids[cid], "name": name, "supercategory": _SUPER.get(coco_name(name) or "", "")}
                  for cid, name in cats.names.items() if cid in category_ids]
    dataset = {
        "info": {"description": f"images of wildedge detect with {run.detector.name}",
                 "date_created": completion_time(run)},
        "images": images,
        "annotations": [],
        "categories": categories,
    }
    return annotations, dataset


def _gt_image_id(gt: CocoGroundTruth, file: str) -> int | None:
    if file in gt.by_path:
        return gt.by_path[file]
    return gt.by_base.get(PurePosixPath(file).name)


def write_coco(results: Sequence[FileResult], stream: TextIO, *, run: RunInfo,
               gt: CocoGroundTruth | None = None) -> None:
    """Write the COCO results list of ``results`` to ``stream`` (its image list: :func:`write_coco_images`)."""
    json.dump(to_coco(results, run=run, gt=gt)[0], stream, indent=1, allow_nan=False)
    stream.write("\n")


def write_coco_images(results: Sequence[FileResult], stream: TextIO, *, run: RunInfo) -> None:
    """Write the COCO file of the images and categories the results list refers to."""
    json.dump(to_coco(results, run=run)[1], stream, indent=1, allow_nan=False)
    stream.write("\n")


__all__ = ["CocoGroundTruth", "coco_images_path", "load_coco_gt", "to_coco", "write_coco",
           "write_coco_images"]

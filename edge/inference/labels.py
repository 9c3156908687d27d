"""Label files, and the class groups that camera-trap work needs (COCO animals, MegaDetector classes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from edge.errors import ModelError

# COCO-80 classes that are animals; "animal" in a --classify-classes list expands to these
# for a COCO detector, so a COCO model can feed a species classifier like MegaDetector does.
COCO_ANIMALS = frozenset(
    {"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"}
)
COCO_VEHICLES = frozenset(
    {"bicycle", "car", "motorcycle", "motorbike", "airplane", "aeroplane", "bus", "train", "truck", "boat"}
)


def read_labels(path: str | os.PathLike[str]) -> list[str]:
    """Read class names: a text file (one per line, index = class id) or JSON (list, or {id: name}).

    Raises:
        ModelError: the file is missing, empty or malformed.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ModelError(f"labels file not found: {file}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f"cannot read labels file {file}: {err}") from err
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ModelError(f"labels file {file} is not valid JSON: {err}") from err
        if isinstance(data, dict):
            try:
                ids = sorted(int(k) for k in data)
            except ValueError as err:
                raise ModelError(f"labels file {file}: keys must be class ids") from err
            if ids != list(range(len(ids))):
                raise ModelError(f"labels file {file}: class ids must run 0..N-1 without gaps")
            labels = [str(data[str(i)] if str(i) in data else data[i]) for i in ids]
        elif isinstance(data, list):
            labels = [str(v) for v in data]
        else:
            raise ModelError(f"labels file {file}: expected a JSON list or object")
    else:
        labels = text.rstrip("\n").split("\n")
        labels = [line.strip() for line in labels]
    if not labels or any(not label for label in labels):
        raise ModelError(f"labels file {file} is empty or has a blank label")
    return labels


def expand_classes(wanted: list[str], labels: list[str]) -> set[int]:
    """Class ids named by ``wanted``; ``animal`` also means every COCO animal the labels contain.

    Raises:
        ValueError: a name matches no label.
    """
    index = {name: i for i, name in enumerate(labels)}
    ids: set[int] = set()
    for name in wanted:
        if name in index:
            ids.add(index[name])
        elif name == "animal" and COCO_ANIMALS & index.keys():
            ids.update(index[n] for n in COCO_ANIMALS if n in index)
        else:
            raise ValueError(f"class {name!r} is not among the detector's labels")
    return ids

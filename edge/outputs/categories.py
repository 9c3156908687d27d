"""Which category id and name each detector class is written with, in every output format.

Two schemes (``wildedge detect --categories``):

- ``native`` (default): the detector's own classes. A detector whose labels are all COCO category
  names (COCO-80, in COCO's or Darknet/VOC spelling) gets COCO's official ids (1-90 with gaps:
  person 1, bird 16, giraffe 25, toothbrush 90); any other detector gets ``class index + 1``.
- ``megadetector``: MegaDetector's 1 animal / 2 person / 3 vehicle, which every camera-trap tool
  built around MegaDetector (Timelapse, AddaxAI, MegaDetector's compare/merge/separate tools) expects.
  For COCO names: the ten COCO animals are animal, person is person, and the road vehicles (bicycle,
  car, motorcycle, bus, truck) are vehicle; every other class (chair, kite, airplane, boat, train,
  teddy bear...) is dropped, so it cannot show up as a false animal. A model card can give its own
  ``label -> animal|person|vehicle`` map instead. A MegaDetector model keeps its scheme untouched.
  The detector's own class is kept as a classification (see :mod:`edge.outputs.megadetector`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge.inference.labels import COCO_ANIMALS

logger = logging.getLogger(__name__)

SCHEMES = ("native", "megadetector")
MEGADETECTOR: dict[int, str] = {1: "animal", 2: "person", 3: "vehicle"}
MD_IDS = {name: cid for cid, name in MEGADETECTOR.items()}

# COCO 2017 detection categories with their official ids (instances_val2017.json); 80 of 1-90.
COCO_IDS: dict[str, int] = {
    "person": 1, "bicycle": 2, "car": 3, "motorcycle": 4, "airplane": 5, "bus": 6, "train": 7, "truck": 8,
    "boat": 9, "traffic light": 10, "fire hydrant": 11, "stop sign": 13, "parking meter": 14, "bench": 15,
    "bird": 16, "cat": 17, "dog": 18, "horse": 19, "sheep": 20, "cow": 21, "elephant": 22, "bear": 23,
    "zebra": 24, "giraffe": 25, "backpack": 27, "umbrella": 28, "handbag": 31, "tie": 32, "suitcase": 33,
    "frisbee": 34, "skis": 35, "snowboard": 36, "sports ball": 37, "kite": 38, "baseball bat": 39,
    "baseball glove": 40, "skateboard": 41, "surfboard": 42, "tennis racket": 43, "bottle": 44,
    "wine glass": 46, "cup": 47, "fork": 48, "knife": 49, "spoon": 50, "bowl": 51, "banana": 52, "apple": 53,
    "sandwich": 54, "orange": 55, "broccoli": 56, "carrot": 57, "hot dog": 58, "pizza": 59, "donut": 60,
    "cake": 61, "chair": 62, "couch": 63, "potted plant": 64, "bed": 65, "dining table": 67, "toilet": 70,
    "tv": 72, "laptop": 73, "mouse": 74, "remote": 75, "keyboard": 76, "cell phone": 77, "microwave": 78,
    "oven": 79, "toaster": 80, "sink": 81, "refrigerator": 82, "book": 84, "clock": 85, "vase": 86,
    "scissors": 87, "teddy bear": 88, "hair drier": 89, "toothbrush": 90,
}
# Darknet / PASCAL VOC spellings of COCO names (the label files of YOLOX, NanoDet, FastestDet use them).
COCO_ALIASES = {
    "motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch", "pottedplant": "potted plant",
    "diningtable": "dining table", "tvmonitor": "tv", "hair dryer": "hair drier", "doughnut": "donut",
    "cellphone": "cell phone",
}
ROAD_VEHICLES = frozenset({"bicycle", "car", "motorcycle", "bus", "truck"})


def coco_name(label: str) -> str | None:
    """The official COCO name of ``label`` (case, ``_`` and VOC spellings forgiven), or None."""
    key = " ".join(label.strip().lower().replace("_", " ").split())
    key = COCO_ALIASES.get(key, key)
    return key if key in COCO_IDS else None


def _md_class(label: str) -> str | None:
    name = coco_name(label)
    if name is None:
        return None
    if name in COCO_ANIMALS:
        return "animal"
    if name == "person":
        return "person"
    return "vehicle" if name in ROAD_VEHICLES else None


def is_megadetector(labels: Sequence[str]) -> bool:
    """Whether ``labels`` are MegaDetector's own three classes, in its order."""
    return [label.strip().lower() for label in labels] == list(MEGADETECTOR.values())


@dataclass(frozen=True, slots=True)
class CategoryMap:
    """The written id of each detector class (None: dropped) and the name of each written id."""

    scheme: str
    ids: tuple[int | None, ...]  # indexed by the detector's class id
    names: dict[int, str]  # written id -> name, ascending ids
    labels: tuple[str, ...]  # the detector's own labels
    keep_classes: bool = False  # the detector's own class is written as a classification
    coco: bool = False  # ids are COCO's official ones

    def id_of(self, class_id: int) -> int | None:
        """The written id of detector class ``class_id`` (None when the scheme drops it).

        Raises:
            ValueError: ``class_id`` is not one of the detector's classes.
        """
        if not 0 <= class_id < len(self.ids):
            raise ValueError(f"class id {class_id} is outside the detector's {len(self.ids)} labels")
        return self.ids[class_id]


def native(labels: Sequence[str]) -> CategoryMap:
    """The detector's own classes: COCO's official ids when every label is a COCO name, else index + 1.

    Raises:
        ValueError: a label is blank.
    """
    _check_labels(labels)
    official = [coco_name(label) for label in labels]
    coco = all(official) and len(set(official)) == len(official)
    ids = tuple(COCO_IDS[name or ""] for name in official) if coco else tuple(range(1, len(labels) + 1))
    names = dict(sorted((cid, label) for cid, label in zip(ids, labels, strict=True)))
    return CategoryMap("native", ids, names, tuple(labels), coco=coco)


def megadetector(labels: Sequence[str], mapping: Mapping[str, str] | None = None, *,
                 keep_classes: bool = True) -> CategoryMap:
    """MegaDetector's animal/person/vehicle for ``labels``: by ``mapping`` (label -> class) when given,
    else by COCO name. MegaDetector's own labels map to themselves.

    ``keep_classes``: write each box's own class as a classification (MegaDetector's
    ``merge_detections`` refuses to merge a file with classifications into one without).

    Raises:
        ValueError: a label is blank, ``mapping`` names a label the detector lacks or a class other than
            animal/person/vehicle, or no label maps to any of them.
    """
    _check_labels(labels)
    if mapping is None and is_megadetector(labels):
        return CategoryMap("megadetector", (1, 2, 3), dict(MEGADETECTOR), tuple(labels))
    if mapping is not None:
        unknown = sorted(set(mapping) - set(labels))
        if unknown:
            raise ValueError(f"category map names labels the detector lacks: {', '.join(unknown)}")
        bad = sorted({v for v in mapping.values() if v not in MD_IDS})
        if bad:
            raise ValueError(f"category map: {', '.join(bad)} is not animal, person or vehicle")
        classes = [mapping.get(label) for label in labels]
    else:
        classes = [_md_class(label) for label in labels]
    if not any(classes):
        raise ValueError(
            "none of the detector's labels is an animal, person or vehicle ("
            + ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else "")
            + "): give a map in the model card (categories.map)")
    ids = tuple(MD_IDS[c] if c else None for c in classes)
    dropped = [label for label, c in zip(labels, classes, strict=True) if not c]
    if dropped:
        logger.debug("megadetector categories: %d classes are dropped: %s", len(dropped), ", ".join(dropped))
    return CategoryMap("megadetector", ids, dict(MEGADETECTOR), tuple(labels), keep_classes=keep_classes)


def categories_for(labels: Sequence[str], scheme: str = "native", mapping: Mapping[str, str] | None = None,
                   *, keep_classes: bool = True) -> CategoryMap:
    """The categories of ``scheme`` (one of ``SCHEMES``) for a detector with ``labels``.

    Raises:
        ValueError: unknown scheme, or see :func:`native` and :func:`megadetector`.
    """
    if scheme == "native":
        return native(labels)
    if scheme == "megadetector":
        return megadetector(labels, mapping, keep_classes=keep_classes)
    raise ValueError(f"unknown category scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")


def _check_labels(labels: Sequence[str]) -> None:
    for i, label in enumerate(labels):
        if not label.strip():
            raise ValueError(f"class {i} has a blank label; the output formats need a name")

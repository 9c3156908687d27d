"""Camtrap DP 1.0 (https://camtrap-dp.tdwg.org): a directory with datapackage.json and three CSV tables.

- ``deployments.csv``: one deployment per device (``deploymentID`` = device id), its location and
  its active period (effort and events together); ``timestampIssues`` when any event's clock was
  not synchronised.
- ``media.csv``: one image per event that kept one (``mediaID`` = event id, ``filePath`` =
  ``<device>/<image path>``, not public).
- ``observations.csv``: per event, one ``event``-level observation per detector class with the
  burst count (or ``blank``), and per detection of a kept image one ``media``-level observation
  with its box, ``classificationMethod`` machine, ``classifiedBy`` the model and its probability.

Labels become ``scientificName`` as the models give them (a classifier's label when it classified
the detection); ``observationType`` is human/vehicle for those labels, animal otherwise.
"""

from __future__ import annotations

import csv
import json
import mimetypes
import os
import shutil
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.outputs.event_writers import iso_z
from edge.outputs.events import Deployment, Event, EventDetection, EventExport

VERSION = "1.0.2"
BASE_URL = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}"
PROFILE = f"{BASE_URL}/camtrap-dp-profile.json"
#: Every column of the 1.0.2 table schemas, in their order (frictionless checks the header against them).
TABLES = {
    "deployments": ("deploymentID", "locationID", "locationName", "latitude", "longitude", "coordinateUncertainty",
                    "deploymentStart", "deploymentEnd", "setupBy", "cameraID", "cameraModel", "cameraDelay",
                    "cameraHeight", "cameraDepth", "cameraTilt", "cameraHeading", "detectionDistance",
                    "timestampIssues", "baitUse", "featureType", "habitat", "deploymentGroups", "deploymentTags",
                    "deploymentComments"),
    "media": ("mediaID", "deploymentID", "captureMethod", "timestamp", "filePath", "filePublic", "fileName",
              "fileMediatype", "exifData", "favorite", "mediaComments"),
    "observations": ("observationID", "deploymentID", "mediaID", "eventID", "eventStart", "eventEnd",
                     "observationLevel", "observationType", "cameraSetupType", "scientificName", "count", "lifeStage",
                     "sex", "behavior", "individualID", "individualPositionRadius", "individualPositionAngle",
                     "individualSpeed", "bboxX", "bboxY", "bboxWidth", "bboxHeight", "classificationMethod",
                     "classifiedBy", "classificationTimestamp", "classificationProbability", "observationTags",
                     "observationComments"),
}
CAPTURE_METHODS = {"timelapse": "timeLapse", "motion": "activityDetection", "external": "activityDetection",
                   "gpio": "activityDetection"}
HUMAN = frozenset({"person", "people", "human", "homo sapiens"})
VEHICLE = frozenset({"vehicle", "car", "truck", "bus", "motorcycle", "bicycle", "train", "boat", "airplane"})


def observation_type(label: str) -> str:
    """Camtrap DP ``observationType`` of a model label."""
    name = label.strip().lower()
    return "human" if name in HUMAN else "vehicle" if name in VEHICLE else "animal"


def _missing_locations(deployments: Sequence[Deployment]) -> list[str]:
    return sorted(d.device for d in deployments if d.latitude is None or d.longitude is None)


def _period(export: EventExport, dep: Deployment) -> tuple[datetime, datetime]:
    times = [e.time for e in export.events if e.device == dep.device]
    times += [t for t in (dep.start, dep.end) if t is not None]
    return min(times), max(times)


def _deployment_rows(export: EventExport, deps: Sequence[Deployment]) -> list[dict[str, Any]]:
    rows = []
    for dep in deps:
        start, end = _period(export, dep)
        issues = any(e.device == dep.device and e.clock == "unsynced" for e in export.events)
        frames = sum(c.get("frames", 0) for c in dep.effort.values())
        rows.append({"deploymentID": dep.device, "latitude": dep.latitude, "longitude": dep.longitude,
                     "deploymentStart": iso_z(start), "deploymentEnd": iso_z(end), "cameraID": dep.device,
                     "timestampIssues": "true" if issues else "false",
                     "deploymentComments": f"wildedge device {dep.device}; {frames} frames processed"
                                           if dep.effort else None})
    return rows


def _media_row(event: Event) -> dict[str, Any]:
    path = event.file or ""
    kind = mimetypes.guess_type(path)[0] or "image/jpeg"
    return {"mediaID": event.uid, "deploymentID": event.device, "captureMethod": CAPTURE_METHODS.get(event.trigger),
            "timestamp": iso_z(event.time), "filePath": path, "filePublic": "false",
            "fileName": path.rsplit("/", 1)[-1], "fileMediatype": kind if kind.startswith("image/") else "image/jpeg"}


def _classified(det: EventDetection, event: Event) -> tuple[str, str, float]:
    """(name, classified by, probability) of a detection: the classifier's when it classified it."""
    if det.classification is not None and event.models.classifier is not None:
        c = det.classification
        return c.label, event.models.classifier.name, c.prob
    return det.label, event.models.detector.name, det.score


def _observation_rows(event: Event) -> list[dict[str, Any]]:
    when = iso_z(event.time)
    base = {"deploymentID": event.device, "eventID": event.uid, "eventStart": when, "eventEnd": when,
            "classificationMethod": "machine"}
    rows: list[dict[str, Any]] = []
    labels = {d.class_id: d.label for d in event.detections}
    if not event.counts and not event.detections:
        rows.append({**base, "observationID": f"{event.uid}-e0", "observationLevel": "event",
                     "observationType": "blank", "classifiedBy": event.models.detector.name})
    for class_id, count in sorted(event.counts.items()):
        label = labels.get(class_id) or event.models.detector.label(class_id)
        name, by = label, event.models.detector.name
        if event.vote is not None and observation_type(label) == "animal" and event.models.classifier is not None:
            name, by = event.vote.label, event.models.classifier.name
        rows.append({**base, "observationID": f"{event.uid}-e{class_id}", "observationLevel": "event",
                     "observationType": observation_type(label),
                     "scientificName": name if observation_type(label) == "animal" else None,
                     "count": count, "classifiedBy": by})
    if event.image is None:
        return rows
    for i, det in enumerate(event.detections):
        name, by, prob = _classified(det, event)
        x1, y1, x2, y2 = det.box
        kind = observation_type(det.label)
        row = {**base, "observationID": f"{event.uid}-m{i}", "mediaID": event.uid, "observationLevel": "media",
               "observationType": kind, "scientificName": name if kind == "animal" else None, "count": 1,
               "classifiedBy": by, "classificationProbability": prob}
        if x2 > x1 and y2 > y1:
            row.update(bboxX=x1, bboxY=y1, bboxWidth=round(x2 - x1, 6), bboxHeight=round(y2 - y1, 6))
        rows.append(row)
    return rows


def datapackage(export: EventExport, deps: Sequence[Deployment]) -> dict[str, Any]:
    """The ``datapackage.json`` descriptor (resources point at the published 1.0.2 table schemas)."""
    periods = [_period(export, d) for d in deps]
    names = sorted({r["scientificName"] for e in export.events for r in _observation_rows(e)
                    if r.get("scientificName")})
    methods = sorted({CAPTURE_METHODS[e.trigger] for e in export.events if e.trigger in CAPTURE_METHODS})
    points = [[d.longitude, d.latitude] for d in deps]
    return {
        "resources": [{"name": name, "path": f"{name}.csv", "profile": "tabular-data-resource", "format": "csv",
                       "mediatype": "text/csv", "encoding": "utf-8", "schema": f"{BASE_URL}/{name}-table-schema.json"}
                      for name in TABLES],
        "profile": PROFILE,
        "name": "wildedge-export",
        "id": str(uuid.uuid4()),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "title": f"Camera-trap detections exported by {export.source}",
        "contributors": [{"title": export.source, "role": "contributor"}],
        "project": {"title": f"wildedge devices {', '.join(d.device for d in deps)}",
                    "samplingDesign": "opportunistic", "captureMethod": methods or ["activityDetection"],
                    "individualAnimals": False, "observationLevel": ["media", "event"]},
        "spatial": {"type": "Point", "coordinates": points[0]} if len(points) == 1
        else {"type": "MultiPoint", "coordinates": points},
        "temporal": {"start": min(p[0] for p in periods).strftime("%Y-%m-%d"),
                     "end": max(p[1] for p in periods).strftime("%Y-%m-%d")},
        "taxonomic": [{"scientificName": name} for name in names],
    }


def write_camtrapdp(export: EventExport, target: Path) -> Path:
    """Write ``export`` as a Camtrap DP directory at ``target``, replacing one there in one rename.

    Raises:
        ValueError: a device has no location, or there is nothing to describe (one line says which).
        OSError: the directory could not be written (a previous one is left untouched).
    """
    deps = [export.deployments[d] for d in sorted(export.deployments)]
    for event in export.events:
        if event.device not in export.deployments:
            deps.append(Deployment(event.device, None, None))
    deps = [d for d in deps if d.effort or d.start or any(e.device == d.device for e in export.events)]
    if not deps:
        raise ValueError("no events or effort in the chosen period: nothing to put in a Camtrap DP package")
    missing = _missing_locations(deps)
    if missing:
        raise ValueError(f"camtrapdp needs each device's latitude and longitude; missing for: {', '.join(missing)}"
                         " (device: set [device] latitude/longitude; collector: --locations FILE, or [mqtt] "
                         "send_location = true on the devices)")
    tables = {"deployments": _deployment_rows(export, deps),
              "media": [_media_row(e) for e in export.events if e.image is not None],
              "observations": [row for e in export.events for row in _observation_rows(e)]}
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    tmp.mkdir()
    try:
        for name, rows in tables.items():
            with open(tmp / f"{name}.csv", "w", encoding="utf-8", newline="") as stream:
                writer = csv.DictWriter(stream, fieldnames=TABLES[name], restval="", lineterminator="\n")
                writer.writeheader()
                for row in rows:
                    writer.writerow({k: "" if v is None else v for k, v in row.items()})
                stream.flush()
                os.fsync(stream.fileno())
        with open(tmp / "datapackage.json", "w", encoding="utf-8") as stream:
            json.dump(datapackage(export, deps), stream, indent=2, ensure_ascii=False, allow_nan=False)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


#: What a package directory holds; anything else in the target means it is not ours to replace.
PACKAGE_FILES = frozenset({"datapackage.json", "deployments.csv", "media.csv", "observations.csv"})


def _replace_dir(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing package at ``target`` is moved aside first, then removed.

    Raises:
        ValueError: ``target`` is a file, or a directory holding anything but an earlier package.
    """
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} exists and is not a directory; a Camtrap DP package is a directory")
    if target.is_dir():
        others = sorted(p.name for p in target.iterdir() if p.name not in PACKAGE_FILES)
        if others:
            raise ValueError(f"{target} holds other files ({', '.join(others[:3])}); give an empty or new "
                             "folder for the Camtrap DP package")
    old = None
    if target.exists():
        # A directory cannot be renamed over a non-empty one: move the old aside, then swap.
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.old")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

"""The collector's database as export records (:mod:`edge.outputs.events`), written by the device's writers.

:func:`export_to` is the one entry point for the command line and the web page: filters, then
:func:`edge.outputs.event_writers.write_events`. Per-mille integers become the same thousandths a
device exports; labels and model names come from the model messages (``class <id>`` when a
device's model message never arrived). Frame sizes are not on the wire, so they are unknown here.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select

from collector.db.schema import detections, effort, effort_counts, event_counts, events, labels, models
from collector.db.schema import devices as devices_table
from edge.outputs.event_writers import FrameSize, write_events
from edge.outputs.events import (
    Classification,
    Deployment,
    Event,
    EventDetection,
    EventExport,
    ModelRef,
    Models,
    Vote,
)

logger = logging.getLogger(__name__)

_CHUNK = 500
Location = tuple[float, float]


def load_locations(path: str | os.PathLike[str]) -> dict[str, Location]:
    """``device,latitude,longitude`` rows (a header row is optional) as device -> (lat, lon).

    Raises:
        ValueError: a row is malformed or out of range (the message names the file and line).
    """
    out: dict[str, Location] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            for n, row in enumerate(csv.reader(stream), start=1):
                if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                    continue
                if n == 1 and row[0].strip().lower() == "device":
                    continue
                if len(row) != 3:
                    raise ValueError(f"{path}:{n}: expected device,latitude,longitude, got {len(row)} columns")
                try:
                    lat, lon = float(row[1]), float(row[2])
                except ValueError:
                    raise ValueError(f"{path}:{n}: latitude and longitude must be decimal degrees") from None
                if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                    raise ValueError(f"{path}:{n}: latitude within -90..90 and longitude within -180..180")
                out[row[0].strip()] = (lat, lon)
    except OSError as err:
        raise ValueError(f"cannot read locations file {path}: {err.strerror or err}") from None
    return out


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _secs(when: datetime) -> int:
    return int(when.timestamp())


def _model_table(conn: Connection) -> dict[tuple[str, str], Models]:
    names: dict[tuple[str, str, str], dict[int, str]] = {}
    for row in conn.execute(select(labels)):
        names.setdefault((row.device, row.model_id, row.kind), {})[row.class_id] = row.label

    def ref(device: str, model_id: str, kind: str, name: str, conf: int | None) -> ModelRef:
        table = names.get((device, model_id, kind), {})
        labels_ = tuple(table.get(i, f"class {i}") for i in range(max(table, default=-1) + 1))
        return ModelRef(name, labels_, (conf or 0) / 1000)

    out = {}
    for m in conn.execute(select(models)):
        cls = ref(m.device, m.model_id, "cls", m.cls_name, m.cls_conf) if m.cls_name else None
        out[(m.device, m.model_id)] = Models(ref(m.device, m.model_id, "det", m.det_name, m.det_conf), cls)
    return out


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i:i + _CHUNK]


def _event_filter(devices: Sequence[str], since: datetime | None, until: datetime | None) -> list[Any]:
    where: list[Any] = []
    if devices:
        where.append(events.c.device.in_(list(devices)))
    if since is not None:
        where.append(events.c.time >= _secs(since))
    if until is not None:
        where.append(events.c.time < _secs(until))
    return where


def read_events(conn: Connection, *, devices: Sequence[str] = (), since: datetime | None = None,
                until: datetime | None = None) -> list[Event]:
    """Events of ``devices`` (all when empty) with best-known time in ``[since, until)``, oldest first."""
    rows = conn.execute(select(events).where(*_event_filter(devices, since, until))
                        .order_by(events.c.time, events.c.id)).all()
    ids = [r.id for r in rows]
    dets: dict[str, list[Any]] = {}
    counts: dict[str, dict[int, int]] = {}
    for chunk in _chunks(ids):
        for d in conn.execute(select(detections).where(detections.c.event_id.in_(chunk))
                              .order_by(detections.c.event_id, detections.c.idx)):
            dets.setdefault(d.event_id, []).append(d)
        for c in conn.execute(select(event_counts).where(event_counts.c.event_id.in_(chunk))):
            counts.setdefault(c.event_id, {})[c.class_id] = c.count
    table = _model_table(conn)
    out = []
    for r in rows:
        used = table.get((r.device, r.model_id)) or Models(ModelRef(f"unknown model {r.model_id}", (), 0.0))
        det, cls = used.detector, used.classifier
        found = tuple(EventDetection(
            d.class_id, det.label(d.class_id), d.score / 1000, (d.x1 / 1000, d.y1 / 1000, d.x2 / 1000, d.y2 / 1000),
            None if d.cls_class is None else Classification(
                d.cls_class, cls.label(d.cls_class) if cls else f"class {d.cls_class}", d.cls_prob / 1000))
            for d in dets.get(r.id, []))
        vote = None
        if r.vote_class is not None:
            vote = Vote(r.vote_class, cls.label(r.vote_class) if cls else f"class {r.vote_class}", r.votes, r.voters)
        out.append(Event(r.device, r.id, _utc(r.time), r.clock, r.trigger, r.image, None, None, found,
                         dict(sorted(counts.get(r.id, {}).items())), vote, used))
    return out


def read_deployments(conn: Connection, *, devices: Sequence[str], since: datetime | None = None,
                     until: datetime | None = None, locations: dict[str, Location] | None = None
                     ) -> dict[str, Deployment]:
    """Per device: the effort periods overlapping ``[since, until)``, summed per trigger, and its location
    (from ``locations``, else as the device reported it in its status, ``[mqtt] send_location``)."""
    where: list[Any] = [effort.c.device.in_(list(devices))]
    if since is not None:
        where.append(effort.c.end > _secs(since))
    if until is not None:
        where.append(effort.c.start < _secs(until))
    spans: dict[str, list[int]] = {}
    totals: dict[str, dict[str, dict[str, int]]] = {d: {} for d in devices}
    query = (select(effort.c.device, effort.c.start, effort.c.end, effort_counts)
             .select_from(effort.outerjoin(effort_counts, effort_counts.c.effort_id == effort.c.id)).where(*where))
    for row in conn.execute(query):
        span = spans.setdefault(row.device, [row.start, row.end])
        span[0], span[1] = min(span[0], row.start), max(span[1], row.end)
        if row.trigger is not None:
            per = totals[row.device].setdefault(row.trigger, {"frames": 0, "empty": 0, "events": 0, "failed": 0})
            for key in per:
                per[key] += getattr(row, key)
    reported = {r.device: (r.latitude_e6 / 1_000_000, r.longitude_e6 / 1_000_000) for r in conn.execute(
        select(devices_table.c.device, devices_table.c.latitude_e6, devices_table.c.longitude_e6).where(
            devices_table.c.latitude_e6.is_not(None)))}
    out = {}
    for device in devices:
        # A locations file wins over what a device reported (a GPS-less trap configured with a rough guess).
        lat, lon = (locations or {}).get(device) or reported.get(device, (None, None))
        start, end = spans.get(device, (None, None))
        out[device] = Deployment(device, None if start is None else _utc(start), None if end is None else _utc(end),
                                 lat, lon, totals[device])
    return out


def known_devices(conn: Connection) -> list[str]:
    """Every device with an event or an effort report."""
    found = {r[0] for r in conn.execute(select(events.c.device).distinct())}
    found |= {r[0] for r in conn.execute(select(effort.c.device).distinct())}
    return sorted(found)


def read_export(conn: Connection, *, devices: Sequence[str] = (), since: datetime | None = None,
                until: datetime | None = None, locations: dict[str, Location] | None = None) -> EventExport:
    """The events and deployments an export of the collector's database holds.

    Raises:
        ValueError: a device asked for has never sent an event or effort report.
    """
    known = known_devices(conn)
    unknown = sorted(set(devices) - set(known))
    if unknown:
        raise ValueError(f"unknown device {', '.join(unknown)}; devices in the database: {', '.join(known) or 'none'}")
    found = read_events(conn, devices=devices, since=since, until=until)
    deployments = read_deployments(conn, devices=list(devices) or known, since=since, until=until,
                                   locations=locations)
    active = {e.device for e in found} | {d.device for d in deployments.values() if d.effort or d.start}
    return EventExport(found, {k: v for k, v in deployments.items() if k in active},
                       source="wildedge collect export")


def export_to(engine: Engine, fmt: str, path: str | os.PathLike[str], *, devices: Sequence[str] = (),
              since: datetime | None = None, until: datetime | None = None,
              locations: dict[str, Location] | None = None, frame_size: FrameSize | None = None,
              categories: str = "native") -> Path:
    """Export the collector's events in format ``fmt`` to ``path`` (a directory for camtrapdp).

    Raises:
        ValueError: an unknown format or device, a device without location for camtrapdp, coco
            without frame sizes (one line each).
        OSError: the output could not be written.
    """
    with engine.connect() as conn:
        export = read_export(conn, devices=devices, since=since, until=until, locations=locations)
    return write_events(fmt, export, path, frame_size=frame_size, categories=categories)

"""What the daemon hands to delivery: event and effort messages for the outbox, the retained
model message, and remote ``set`` commands validated against the config schema and persisted.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from edge import payload as wire
from edge.errors import ConfigError, StoreError
from edge.inference.card import sha256_file
from edge.store import EventRecord, OutboxMessage, Store
from edge.store.images import FILE_MODE, write_atomic

logger = logging.getLogger(__name__)

EFFORT_KEY = "effort_until"
OVERRIDES_FILE = "remote-settings.json"
#: What a remote ``set`` may not go beyond, whatever the schema allows: a value that would delete the
#: store's history, flood the link, or blind the person filter needs someone at the config file.
REMOTE_FLOORS: dict[str, timedelta] = {
    "storage.max_age": timedelta(days=1), "health.interval": timedelta(seconds=10),
    "mqtt.effort_interval": timedelta(minutes=1), "mqtt.crop_min_interval": timedelta(seconds=1),
}
#: The highest detector threshold a remote ``set`` may choose: above it the detector, and with it the
#: person filter that keeps people out of saved images, goes blind.
REMOTE_MAX_CONF = 0.8


def model_message(cfg: Any, *, detector: Any, classifier: Any | None, at: datetime, synced: bool
                  ) -> tuple[bytes, str]:
    """The retained model message (labels travel here, once) and the model id events refer to."""
    det = wire.ModelInfo(name=detector.card.name or detector.card.decoder.name,
                         sha256=sha256_file(cfg.detector.model), labels=list(detector.labels),
                         conf=detector.conf, iou=detector.iou)
    cls = None
    if classifier is not None:
        cls = wire.ModelInfo(name=classifier.card.name or classifier.card.decoder.name,
                             sha256=sha256_file(cfg.classifier.model), labels=list(classifier.labels),
                             conf=cfg.classifier.min_confidence, iou=None)
    data = wire.encode_model(device=cfg.device.id, detector=det, classifier=cls, at=at, clock_synced=synced)
    return data, wire.model_id(det.sha256, cls.sha256 if cls else None)


class EventMessages:
    """Builds an event's outbox messages (the daemon's ``messages`` hook)."""

    def __init__(self, cfg: Any, *, model_id: str, sticky: bool, monotonic: Callable[[], float] = time.monotonic
                 ) -> None:
        self.device = cfg.device.id
        self.topics = wire.topics(cfg.mqtt.prefix, self.device)
        self.model_id = model_id
        self.sticky = sticky
        self.folder = Path(cfg.camera.path) if cfg.camera.type == "folder" else None
        self.crops = cfg.mqtt.crops
        self.crop_min_interval = cfg.mqtt.crop_min_interval.total_seconds()
        self._monotonic = monotonic
        self._last_crop: float | None = None
        self.crops_skipped = 0  # rate-limited

    def __call__(self, event: EventRecord, frames: Sequence[Any]) -> list[OutboxMessage]:
        best = next(p.record for p in frames if p.record.uid == event.best_frame_uid)
        image = event.image_path
        if self.folder is not None and best.source:
            # A folder camera's photo is its own file: name it as the server's copy of the card does.
            try:
                image = Path(best.source).relative_to(self.folder).as_posix()
            except ValueError:
                image = Path(best.source).name
        # A folder camera's photo carries the camera's time (EXIF): marked so that no server "corrects" it.
        camera_clock = self.folder is not None and wire.camera_clock(best)
        data = wire.encode_event(event, best, device=self.device, model_id=self.model_id, image=image,
                                 sticky=self.sticky, camera_clock=camera_clock)
        messages = [OutboxMessage(self.topics.event, data, qos=1, event_uid=event.uid)]
        crop = next((p.crop for p in frames if p.record.uid == event.best_frame_uid), None)
        if self.crops and crop is not None:
            now = self._monotonic()
            if self._last_crop is None or now - self._last_crop >= self.crop_min_interval:
                self._last_crop = now
                messages.append(OutboxMessage(self.topics.crop(event.uid), crop, qos=1,
                                              event_uid=event.uid))
            else:
                self.crops_skipped += 1
        return messages


def enqueue_effort(store: Store, cfg: Any, *, now: datetime, synced: bool, boot_id: str, monotonic: float,
                   force: bool = False) -> bool:
    """Queue the sampling-effort summary for the time since the last one, when it is due.

    The window's end is stored with the message in one step after it, and the message id is
    derived from the device and the window start, so a crash in between sends the same id twice
    (the server keeps one) rather than losing or double-counting a window.
    """
    text = store.get_meta(EFFORT_KEY)
    if text is None:
        store.set_meta(EFFORT_KEY, now.isoformat())
        return False
    start = datetime.fromisoformat(text)
    if now - start < timedelta(seconds=1) or (not force and now - start < cfg.mqtt.effort_interval):
        return False
    counts = store.effort_window(start, now)  # reason names; the encoder merges external and gpio
    uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"wildedge:{cfg.device.id}:effort:{start.isoformat()}"))
    data = wire.encode_effort(device=cfg.device.id, uid=uid, start=start, end=now, clock_synced=synced,
                              boot_id=boot_id, monotonic=monotonic, counts=counts)
    store.enqueue(OutboxMessage(wire.topics(cfg.mqtt.prefix, cfg.device.id).effort, data, qos=1))
    store.set_meta(EFFORT_KEY, now.isoformat())
    return True


# -- remote settings --------------------------------------------------------------------------------

def _check_remote_bounds(new: Any, values: Mapping[str, Any]) -> None:
    """Raises ConfigError for a remote value beyond :data:`REMOTE_FLOORS` or :data:`REMOTE_MAX_CONF`."""
    problems = []
    for key, floor in REMOTE_FLOORS.items():
        if key in values:
            section, name = key.split(".")
            value = getattr(getattr(new, section), name)
            if value < floor:
                problems.append(f"{key}: at least {floor} when set remotely (edit the config file for less)")
    if "detector.conf" in values and new.detector.conf is not None and new.detector.conf > REMOTE_MAX_CONF:
        problems.append(f"detector.conf: at most {REMOTE_MAX_CONF} when set remotely (higher blinds the person "
                        "filter; edit the config file)")
    if problems:
        raise ConfigError("; ".join(problems))


def read_overrides(state_dir: Path) -> list[str]:
    """The ``key=value`` overrides persisted by earlier ``set`` commands (oldest first)."""
    path = Path(state_dir) / OVERRIDES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        logger.warning("ignoring unreadable remote settings %s: %s", path, err)
        return []
    return [f"{key}={json.dumps(value)}" for key, value in data.items()] if isinstance(data, dict) else []


def apply_set(config: Any, values: Mapping[str, Any], *, state_dir: Path) -> Any:
    """Validate ``values`` (``{"key.path": value}``) against the whole config and persist them.

    Returns the new config. Nothing is written when anything is refused.

    Raises:
        ConfigError: a key is outside ``[mqtt] remote_set`` (or never settable remotely), or the result does not validate (the message
            lists every problem as ``key.path: message``), or the settings file (0600) cannot be written.
    """
    from edge.config import InvalidConfigError, config_from_dict
    from edge.config.models import REMOTE_SET_DEFAULT, remote_settable

    allowed = config.mqtt.remote_set if config.mqtt is not None else REMOTE_SET_DEFAULT
    if not allowed:
        raise ConfigError("remote set is turned off on this device ([mqtt] remote_set = [])")
    refused = sorted(key for key in values if not remote_settable(key, allowed))
    if refused:
        raise ConfigError(f"not settable remotely: {', '.join(refused)} (allowed: {', '.join(allowed)}; "
                          "see [mqtt] remote_set)")
    overrides = [f"{key}={json.dumps(value)}" for key, value in values.items()]
    try:
        new = config_from_dict(config.model_dump(exclude_none=True), overrides=overrides)
    except InvalidConfigError as err:
        raise ConfigError("; ".join(err.problems)) from None
    _check_remote_bounds(new, values)
    path = Path(state_dir) / OVERRIDES_FILE
    try:
        current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError):
        current = {}
    current.update(values)
    try:
        write_atomic(path, json.dumps(current, indent=2, sort_keys=True).encode(), mode=FILE_MODE)
    except StoreError as err:
        raise ConfigError(f"cannot save the remote settings: {err}") from err
    logger.info("remote settings changed: %s", ", ".join(f"{k}={v!r}" for k, v in values.items()))
    return new


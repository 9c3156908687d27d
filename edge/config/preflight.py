"""The checks beyond the config schema that need the model files: one code path for ``run`` and ``check``.

The schema (:mod:`edge.config.models`) checks each value on its own. Some values are only valid for
the models named: ``classifier.classes`` must name labels the detector has. ``wildedge run`` calls
:func:`preflight` before it starts the daemon and ``wildedge check`` calls the same function, so a
config that ``check`` passes does not fail ``run`` with a traceback; ``wildedge detect`` resolves its
``--classify-classes`` with the same :func:`resolve_classes`, so both read a class list alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from edge.errors import ConfigError

logger = logging.getLogger(__name__)

#: How many label names an error lists before it says how many more there are.
_MAX_LISTED = 90


def _valid(labels: Sequence[str]) -> str:
    from edge.inference.labels import COCO_ANIMALS

    names = [repr(name) for name in labels[:_MAX_LISTED]]
    if len(labels) > _MAX_LISTED:
        names.append(f"... ({len(labels) - _MAX_LISTED} more)")
    if "animal" not in labels and COCO_ANIMALS & set(labels):
        names.append("'animal' (every COCO animal class the detector has)")
    return ", ".join(names)


def resolve_classes(wanted: Sequence[str], labels: Sequence[str], *, key: str, model: Any = None) -> set[int]:
    """The detector class ids that ``wanted`` names; ``animal`` also means every COCO animal class.

    Args:
        wanted: the class names given (``classifier.classes``, ``--classify-classes``).
        labels: the detector's labels.
        key: the config key or option the names came from, for the error.
        model: the detector file, for the error.

    Raises:
        ConfigError: one line naming ``key``, the unknown names and the valid ones.
    """
    from edge.inference.labels import expand_classes

    ids: set[int] = set()
    unknown = []
    for name in wanted:
        try:
            ids |= expand_classes([name], list(labels))
        except ValueError:
            unknown.append(name)
    if unknown:
        where = f" of {model}" if model is not None else ""
        raise ConfigError(f"{key}: {', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not "
                          f"among the labels of the detector{where}; valid: {_valid(labels)}")
    return ids


def preflight(cfg: Any) -> Any:
    """Check ``cfg`` against its model files; returns the config the daemon runs.

    ``classifier.classes`` comes back as the detector labels it names (``animal`` expanded, as
    ``wildedge detect`` does), so the pipeline gets only labels the detector has.

    A detector file that cannot be read (missing, not ONNX, no card) is left to whoever loads it
    (``check``'s detector line, the daemon's start), which names it: the config comes back as it is.

    Also reads ``mqtt.command_key_file`` as the daemon does at start (mode, readable, not empty).

    Raises:
        ConfigError: a value that the models make invalid, or a command key file the daemon would
            refuse (one line naming the key).
    """
    if cfg.mqtt is not None:
        # The daemon refuses to start with a command key file others may read, an empty or an
        # unreadable one; check says so first (a systemd credential is the service's own: not here).
        from edge.mqtt.connect import read_command_key

        read_command_key(cfg.mqtt.command_key_file)
    if cfg.classifier is None or cfg.classifier.classes is None:
        return cfg
    from edge.errors import ModelError
    from edge.inference.card import read_card

    try:
        labels = list(read_card(cfg.detector.model).labels)
    except (ModelError, OSError, ValueError) as err:
        logger.debug("classifier.classes not checked: %s", err)
        return cfg
    ids = resolve_classes(cfg.classifier.classes, labels, key="classifier.classes", model=cfg.detector.model)
    names = tuple(labels[i] for i in sorted(ids))
    if names != tuple(cfg.classifier.classes):
        logger.debug("classifier.classes %s: the detector labels %s", list(cfg.classifier.classes), list(names))
    return cfg.model_copy(update={"classifier": cfg.classifier.model_copy(update={"classes": names})})


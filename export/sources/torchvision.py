"""torchvision classifiers: an architecture name plus a state-dict file; weights are never downloaded."""

from __future__ import annotations

import difflib
import logging
import warnings
from pathlib import Path

from edge.errors import ExportError
from export.deps import require
from export.sources.base import LoadedModel, make_card, match_state_dict, read_state_dict

logger = logging.getLogger(__name__)


def architectures() -> list[str]:
    """The classification architectures torchvision can build."""
    tv = require("torchvision")
    return sorted(tv.models.list_models(module=tv.models))


def unknown_arch(name: str, known: list[str], library: str) -> ExportError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"; close names: {', '.join(close)}" if close else f" ({len(known)} known)"
    return ExportError(f"unknown {library} architecture {name!r}{hint}")


def _published_transform(tv, arch: str) -> tuple[int, float] | None:
    """(crop size, crop/resize ratio) of the arch's published weights, read from torchvision's metadata."""
    try:
        weights = tv.models.get_model_weights(arch).DEFAULT
        transform = weights.transforms()
        crop, resize = int(transform.crop_size[0]), int(transform.resize_size[0])
    except (ValueError, AttributeError, IndexError, TypeError, KeyError):
        return None
    return crop, min(1.0, crop / resize)


def preprocessing(
    default: tuple[int, float] | None,
    *,
    imgsz: int | None,
    mean: tuple[float, float, float] | None,
    std: tuple[float, float, float] | None,
) -> tuple[tuple[int, int], dict]:
    """Input size and the ``imagenet`` preset overrides: crop ratio of the arch, user mean/std."""
    size, ratio = default or (224, 0.875)
    if imgsz is not None:
        size = imgsz
    overrides: dict = {"crop_ratio": ratio}
    if mean is not None:
        overrides["mean"] = tuple(mean)
    if std is not None:
        overrides["std"] = tuple(std)
    return (size, size), overrides


def load(
    arch: str,
    weights: Path,
    *,
    labels: list[str],
    imgsz: int | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    url: str | None = None,
) -> LoadedModel:
    """Build torchvision ``arch`` with ``len(labels)`` classes and load ``weights`` into it.

    Raises:
        ExportError: unknown architecture (with close names), or a checkpoint that does not fit it.
    """
    tv = require("torchvision")
    known = architectures()
    if arch not in known:
        raise unknown_arch(arch, known, "torchvision")
    if not labels:
        raise ExportError("a classifier needs its labels (--labels FILE)")
    with warnings.catch_warnings():
        # GoogLeNet/Inception warn that their default init will change when built without weights;
        # harmless here, every parameter is overwritten by the checkpoint next.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchvision\.models")
        try:
            module = tv.models.get_model(arch, weights=None, num_classes=len(labels))
        except (TypeError, ValueError) as err:
            raise ExportError(f"cannot build torchvision {arch} with {len(labels)} classes: {err}") from err
    state = read_state_dict(weights, set(module.state_dict()))
    match_state_dict(module, state, what=f"torchvision {arch} with {len(labels)} classes",
                     hint=f" (the labels file has {len(labels)} names; the last layer must have as "
                          "many outputs)")
    module.eval()
    input_size, overrides = preprocessing(_published_transform(tv, arch), imgsz=imgsz, mean=mean, std=std)
    card = make_card("imagenet", labels=labels, input_size=input_size, name=f"{arch} ({weights.stem})",
                     source=weights, url=url, preprocess=overrides)
    logger.info("built torchvision %s with %d classes from %s", arch, len(labels), weights)
    return LoadedModel("classify", card, "torchvision", arch, weights, module=module, dynamic_batch=True,
                       output_names=("logits",))

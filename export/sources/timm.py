"""timm classifiers: ``timm.create_model(name, pretrained=False)`` plus a state-dict file (extra ``timm``)."""

from __future__ import annotations

import logging
from pathlib import Path

from edge.errors import ExportError
from export.deps import require
from export.sources.base import LoadedModel, make_card, match_state_dict, read_state_dict
from export.sources.torchvision import preprocessing, unknown_arch

logger = logging.getLogger(__name__)

PREFIX = "timm/"  # --arch timm/NAME picks timm over torchvision (both have e.g. resnet18)


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
    """Build timm ``arch`` (without pretrained weights) with ``len(labels)`` classes and load ``weights``.

    Preprocessing follows the model's own data config (input size, crop_pct, mean/std).

    Raises:
        MissingExtraError: timm is not installed.
        ExportError: unknown architecture (with close names), or a checkpoint that does not fit it.
    """
    timm = require("timm")
    name = arch.removeprefix(PREFIX)
    if not timm.is_model(name):
        raise unknown_arch(name, timm.list_models(), "timm")
    if not labels:
        raise ExportError("a classifier needs its labels (--labels FILE)")
    try:
        module = timm.create_model(name, pretrained=False, num_classes=len(labels))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ExportError(f"cannot build timm {name} with {len(labels)} classes: {err}") from err
    state = read_state_dict(weights, set(module.state_dict()))
    match_state_dict(module, state, what=f"timm {name} with {len(labels)} classes",
                     hint=f" (the labels file has {len(labels)} names; the classifier must have as "
                          "many outputs)")
    module.eval()
    config = require("timm.data").resolve_data_config({}, model=module)
    _, height, width = config["input_size"]
    default = (int(height), float(config.get("crop_pct") or 0.875)) if height == width else None
    input_size, overrides = preprocessing(default, imgsz=imgsz, mean=mean or tuple(config["mean"]),
                                          std=std or tuple(config["std"]))
    card = make_card("imagenet", labels=labels, input_size=input_size, name=f"{name} ({weights.stem})",
                     source=weights, url=url, preprocess=overrides)
    logger.info("built timm %s with %d classes from %s", name, len(labels), weights)
    return LoadedModel("classify", card, "timm", name, weights, module=module, dynamic_batch=True,
                       output_names=("logits",))

"""Ultralytics detectors: ``.pt`` checkpoints and ``.yaml`` architectures (optional extra, AGPL-3.0).

The decoder follows the head: ``Detect`` (YOLOv5u/v8/v9/v11) exports ``[1, 4+nc, N]`` for the
``ultralytics`` decoder; a head with a one-to-one branch (YOLOv10, YOLO26) exports its NMS-free
output ``[1, K, 6]`` for ``e2e`` (the branch these models are trained to be deployed with, and no
NMS on the device); ``RTDETRDecoder`` exports ``[1, 300, 4+nc]`` (normalised cxcywh, sigmoid scores)
for ``rtdetr``. The graph comes from ``torch.onnx.export`` on the module, not from Ultralytics'
exporter, which pip-installs missing packages at run time.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from edge.errors import ExportError
from export.deps import require
from export.sources.base import LoadedModel, check_file, make_card

logger = logging.getLogger(__name__)

SUPPORTED_HEADS = ("Detect", "v10Detect", "RTDETRDecoder")  # segment, pose, OBB, YOLO-World: not detectors
MAX_DET = 300
_BUILTIN_EXAMPLES = "yolov8n.yaml, yolo11n.yaml, yolov10n.yaml, yolov5nu.yaml, rtdetr-l.yaml"


def import_ultralytics():
    """Import ultralytics with its network features off; returns the module.

    Ultralytics reads these at import: YOLO_OFFLINE skips its DNS probe and every online feature,
    YOLO_AUTOINSTALL=False stops ``check_requirements`` from pip-installing packages.
    """
    if "ultralytics" not in sys.modules:
        os.environ["YOLO_OFFLINE"] = "1"
        os.environ["YOLO_AUTOINSTALL"] = "False"
    return require("ultralytics")


def _names(model: Any) -> list[str]:
    names = getattr(model, "names", None) or {}
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    return [str(n) for n in names]


def _is_default_names(names: list[str]) -> bool:
    return names == [str(i) for i in range(len(names))]


def _build_from_yaml(source: str) -> tuple[Any, Path]:
    """An untrained model from an Ultralytics yaml: a local file or one of the package's configs."""
    import_ultralytics()
    from ultralytics.nn import tasks

    local = Path(source).expanduser()
    if not local.is_file() and ("/" in source or os.sep in source):
        raise ExportError(f"architecture file not found: {local}")
    try:
        cfg = tasks.yaml_model_load(local if local.is_file() else source)
    except FileNotFoundError as err:
        raise ExportError(f"{source} is neither a file nor a built-in Ultralytics config "
                          f"(e.g. {_BUILTIN_EXAMPLES})") from err
    is_rtdetr = any("RTDETRDecoder" in str(layer) for layer in cfg.get("head", []))
    task = "detect" if is_rtdetr else tasks.guess_model_task(cfg)
    if task != "detect":
        raise ExportError(f"{source} is an Ultralytics {task} model; only detect models export as detectors")
    cls = tasks.RTDETRDetectionModel if is_rtdetr else tasks.DetectionModel
    model = cls(cfg, verbose=False)
    if local.is_file():
        return model, local
    # The package's own config: yolov8n.yaml is yolov8.yaml at scale n (Ultralytics' naming rule).
    from ultralytics.utils.checks import check_yaml

    found = check_yaml(source, hard=False) or check_yaml(re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", source))
    return model, Path(found)


def _load_checkpoint(path: Path) -> tuple[Any, dict]:
    import_ultralytics()
    from ultralytics.nn import tasks
    from ultralytics.utils.checks import check_yolov5u_filename

    with tempfile.TemporaryDirectory(prefix="wildedge-pt-") as tmp:
        file = path
        if check_yolov5u_filename(str(path), verbose=False) != str(path):
            # Ultralytics reads yolov5n.pt as yolov5nu.pt, and downloads that when it is absent:
            # load these very bytes under a neutral name instead.
            file = Path(tmp) / "checkpoint.pt"
            shutil.copyfile(path, file)
        try:
            # Ultralytics checkpoints are pickles of its own classes: load only files you trust.
            model, ckpt = tasks.load_checkpoint(str(file))
        except (TypeError, ModuleNotFoundError, RuntimeError, EOFError, AttributeError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ExportError(f"cannot load {path} as an Ultralytics checkpoint: {first}") from err
    return model, ckpt


def _prepare(model: Any, *, end2end: bool) -> tuple[Any, str]:
    """A fused eval-mode copy whose forward returns the decoder's layout; and that decoder's name."""
    from ultralytics.nn.modules import C2f, Detect, RTDETRDecoder

    head = model.model[-1]
    head_type = type(head).__name__
    one2one = getattr(head, "one2one_cv2", None) is not None
    if head_type not in SUPPORTED_HEADS:
        raise ExportError(f"Ultralytics head {head_type} is not supported "
                          f"(supported: {', '.join(SUPPORTED_HEADS)})")
    model = copy.deepcopy(model).float().eval()
    for param in model.parameters():
        param.requires_grad = False
    if isinstance(head, Detect):
        model.end2end = one2one and end2end  # must be set before fuse(), which drops the other branch
    model = model.fuse(verbose=False)
    head = model.model[-1]
    for m in model.modules():
        if isinstance(m, (Detect, RTDETRDecoder)):
            m.dynamic = False
            m.export = True  # forward returns the decoded tensor alone
            m.format = "onnx"
            m.max_det = MAX_DET
            m.xyxy = False
            m.shape = None
            if hasattr(m, "agnostic_nms"):
                m.agnostic_nms = False
        elif isinstance(m, C2f):
            m.forward = m.forward_split  # Split instead of Chunk: the same maths, a simpler graph
    if isinstance(head, RTDETRDecoder):
        # Skip the export-time top-k ([1, K, 6]): keep every query's box and class scores.
        head.postprocess = _rtdetr_raw
        return model, "rtdetr"
    return model, "e2e" if getattr(model, "end2end", False) else "ultralytics"


def _rtdetr_raw(boxes: Any, scores: Any) -> Any:
    """RT-DETR output for the ``rtdetr`` decoder: ``[1, queries, 4+nc]`` normalised cxcywh, sigmoid scores."""
    torch = require("torch")
    return torch.cat([boxes, scores], dim=-1)


def _imgsz(model: Any, ckpt: dict | None, imgsz: int | None) -> int:
    if imgsz is None:
        train = (ckpt or {}).get("train_args") or {}
        value = train.get("imgsz", 640) if isinstance(train, dict) else 640
        imgsz = int(value[0] if isinstance(value, (list, tuple)) else value)
    stride = int(max(getattr(model, "stride", [32]))) if getattr(model, "stride", None) is not None else 32
    if imgsz < stride or imgsz % stride:
        raise ExportError(f"--imgsz {imgsz} must be a positive multiple of the model's stride {stride}")
    return imgsz


def load(
    source: str | Path,
    *,
    imgsz: int | None = None,
    labels: list[str] | None = None,
    end2end: bool = True,
    url: str | None = None,
) -> LoadedModel:
    """Load an Ultralytics checkpoint (``.pt``) or architecture (``.yaml``) for export.

    Labels come from the model's ``names``; a stock COCO yaml (80 classes, no names) gets the COCO-80
    names. ``labels`` replaces them (same count). ``end2end=False`` exports a YOLOv10 through its
    one-to-many head instead (``ultralytics`` decoder, NMS on the device).

    Raises:
        MissingExtraError: ultralytics is not installed.
        ExportError: unreadable checkpoint, unknown config, unsupported head, bad imgsz or labels.
    """
    text = str(source)
    ckpt: dict | None = None
    if text.lower().endswith((".yaml", ".yml")):
        raw, path = _build_from_yaml(text)
        arch = Path(text).stem
    else:
        path = check_file(text, "Ultralytics checkpoint")
        raw, ckpt = _load_checkpoint(path)
        arch = Path(str((getattr(raw, "yaml", None) or {}).get("yaml_file") or path.name)).stem
    task = getattr(raw, "task", "detect")
    if task != "detect":
        raise ExportError(f"{path.name} is an Ultralytics {task} model; only detect models export as "
                          "detectors")
    names = _names(raw)
    notes = []
    if labels is not None:
        if len(labels) != len(names):
            raise ExportError(f"the labels file has {len(labels)} names but {path.name} has "
                              f"{len(names)} classes")
        names = list(labels)
    elif len(names) == 80 and _is_default_names(names):
        from edge.models.registry import builtin_labels

        names = builtin_labels("coco80")
        notes.append("untrained COCO architecture: labels are the COCO-80 names")
    size = _imgsz(raw, ckpt, imgsz)
    module, decoder = _prepare(raw, end2end=end2end)
    if decoder == "ultralytics" and getattr(raw.model[-1], "one2one_cv2", None) is not None:
        notes.append("one-to-many head exported (end2end=False): NMS runs on the device")
    card = make_card(decoder, labels=names, input_size=(size, size), name=Path(text).stem, source=path,
                     url=url)
    logger.info("loaded Ultralytics %s (%s head, %d classes) from %s", arch, decoder, len(names), path)
    return LoadedModel("detect", card, "ultralytics", arch, path, module=module, notes=notes)

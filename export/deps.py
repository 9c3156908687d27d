"""Optional dependencies of the export stage, imported on demand with a one-line hint when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from edge.errors import MissingExtraError

# module -> the extra that provides it
_EXTRA = {
    "torch": "export",
    "torchvision": "export",
    "onnx": "export",
    "onnxslim": "export",
    "pycocotools": "export",
    "onnxruntime.quantization": "export",
    "ultralytics": "ultralytics",
    "timm": "timm",
    "mlflow": "mlflow",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise MissingExtraError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra = _EXTRA.get(module, _EXTRA.get(module.split(".")[0], "export"))
        raise MissingExtraError(
            f"{module} is not installed: pip install 'wildedge[{extra}]'"
        ) from err

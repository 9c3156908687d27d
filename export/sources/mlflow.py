"""MLflow model URIs (``models:/NAME/VERSION``, ``models:/NAME/STAGE``, ``runs:/ID/PATH``; extra ``mlflow``).

The artefacts are downloaded with MLflow's own API (which reads ``MLFLOW_TRACKING_URI`` and
``MLFLOW_REGISTRY_URI`` as usual); the one model file found among them goes to the matching source.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edge.errors import ExportError
from export.deps import require

logger = logging.getLogger(__name__)

SCHEMES = ("models:/", "runs:/")
MODEL_SUFFIXES = (".onnx", ".pt", ".pth", ".ckpt", ".bin", ".safetensors")


def is_uri(source: str) -> bool:
    return source.startswith(SCHEMES)


def _model_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root] if root.suffix.lower() in MODEL_SUFFIXES else []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)


def download(uri: str, dst_dir: Path, *, tracking_uri: str | None = None) -> Path:
    """Download the artefacts of ``uri`` into ``dst_dir``; returns the one model file among them.

    Raises:
        MissingExtraError: mlflow is not installed.
        ExportError: MLflow cannot resolve or download ``uri``, or it holds no or several model files.
    """
    # MLflow sends usage telemetry to its developers unless told not to; a download asks for no upload.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    artifacts = require("mlflow.artifacts")
    exceptions = require("mlflow.exceptions")
    try:
        local = Path(artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst_dir),
                                                  tracking_uri=tracking_uri))
    except (exceptions.MlflowException, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"MLflow cannot download {uri}: {first}") from err
    found = _model_files(local)
    if not found:
        raise ExportError(f"{uri} holds no model file ({', '.join(MODEL_SUFFIXES)})")
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(local)) for p in found[:8])
        raise ExportError(f"{uri} holds several model files ({names}); name one: runs:/RUN_ID/PATH/TO/FILE")
    logger.info("downloaded %s from MLflow: %s", found[0].name, uri)
    return found[0]

"""Where a model to export comes from: a file, an MLflow URI or a published checkpoint name.

One module per source (``ultralytics``, ``torchvision``, ``timm``, ``onnx_file``, ``mlflow``,
``published``), each returning a :class:`LoadedModel`. :func:`open_source` picks the source for a
``SOURCE`` argument; optional packages are imported only inside the functions that need them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge.errors import ExportError
from export.sources.base import Kind, LoadedModel, load_labels

__all__ = ["Kind", "LoadedModel", "load_labels", "open_source"]

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


def _load_file(
    path: Path,
    *,
    kind: Kind,
    arch: str | None,
    labels: list[str] | None,
    imgsz: int | None,
    mean: tuple[float, float, float] | None,
    std: tuple[float, float, float] | None,
    preset: str | None,
    url: str | None,
) -> LoadedModel:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from export.sources import onnx_file

        return onnx_file.load(path, kind=kind, preset=preset, labels=labels, imgsz=imgsz, url=url)
    if preset is not None:
        raise ExportError("--preset is for ONNX sources; a checkpoint's family comes from its architecture")
    if kind == "detect":
        if suffix not in (".pt", ".yaml", ".yml"):
            raise ExportError(f"{path.name}: a detector source is an Ultralytics .pt or .yaml, "
                              "or an .onnx file")
        from export.sources import ultralytics

        return ultralytics.load(path, imgsz=imgsz, labels=labels, url=url)
    if suffix not in _CHECKPOINT_SUFFIXES:
        raise ExportError(f"{path.name}: a classifier source is a state dict "
                          f"({', '.join(_CHECKPOINT_SUFFIXES)}) or an .onnx file")
    if not arch:
        raise ExportError("a classifier checkpoint needs its architecture: --arch NAME (torchvision) or "
                          "--arch timm/NAME")
    from export.sources import timm, torchvision

    loader = timm.load if arch.startswith(timm.PREFIX) else torchvision.load
    return loader(arch, path, labels=labels or [], imgsz=imgsz, mean=mean, std=std, url=url)


@contextmanager
def open_source(
    source: str,
    *,
    kind: Kind,
    arch: str | None = None,
    labels: list[str] | None = None,
    imgsz: int | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    preset: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    table: str | os.PathLike[str] | None = None,
) -> Iterator[LoadedModel]:
    """The model meant by ``source``, loaded for export; downloaded files live until the block ends.

    ``source`` is, in this order: an MLflow URI (``models:/...``, ``runs:/...``); an existing file
    (``.pt``/``.yaml`` Ultralytics, ``.onnx``, a state dict with ``arch``); an Ultralytics built-in
    config name (``yolov8n.yaml``); a published checkpoint name (``table``, default the packaged one),
    downloaded into the cache on first use.

    Raises:
        ExportError: the source cannot be found or loaded (MissingExtraError for a missing extra).
    """
    options = {"kind": kind, "arch": arch, "labels": labels, "imgsz": imgsz, "mean": mean, "std": std,
               "preset": preset}
    from export.sources import mlflow

    if mlflow.is_uri(source):
        with tempfile.TemporaryDirectory(prefix="wildedge-mlflow-") as tmp:
            yield _load_file(mlflow.download(source, Path(tmp)), url=source, **options)
        return
    path = Path(source).expanduser()
    if path.is_file():
        yield _load_file(path, url=None, **options)
        return
    if path.suffix.lower() in (".yaml", ".yml") and kind == "detect":
        from export.sources import ultralytics

        yield ultralytics.load(source, imgsz=imgsz, labels=labels)
        return
    from export.sources import published

    entries = published.load_table(table)
    looks_like_path = "/" in source or os.sep in source or bool(path.suffix)
    if looks_like_path or source not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise ExportError(f"{source} not found: not a file, an MLflow URI (models:/NAME/VERSION, "
                          f"runs:/ID/PATH) nor a published checkpoint ({known})")
    entry = entries[source]
    entry_kind = "detector" if entry.framework == "ultralytics" else "classifier"
    if (entry_kind == "detector") != (kind == "detect"):
        raise ExportError(f"{source} is a {entry_kind}: use 'wildedge export {entry_kind}'")
    file, entry = published.fetch(source, table=entries, cache_dir=cache_dir)
    if entry.arch and not arch:
        arch = f"timm/{entry.arch}" if entry.framework == "timm" else entry.arch
    labels_from_entry = labels
    if labels_from_entry is None and entry.labels:
        from edge.models.registry import builtin_labels, labels_kind

        labels_from_entry = (builtin_labels(entry.labels) if labels_kind(entry.labels) == "builtin"
                             else load_labels(entry.labels))
    yield _load_file(file, url=entry.url, **{**options, "labels": labels_from_entry, "arch": arch})

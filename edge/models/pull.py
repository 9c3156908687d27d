"""Download published models into the cache, check their sha256 and stamp their card.

Cache layout (root: ``$WILDEDGE_CACHE``, else ``$XDG_CACHE_HOME/wildedge``, else ``~/.cache/wildedge``)::

    models/NAME.onnx                 the stamped model that ``detect -m NAME`` runs
    downloads/NAME/FILE.onnx         the verified download, kept so a re-stamp needs no network
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from edge import __version__
from edge.errors import CardMissingError, ModelError, RegistryError
from edge.inference.card import read_card, sha256_file
from edge.inference.labels import read_labels
from edge.inference.stamp import stamp_file
from edge.models.registry import (
    ModelEntry,
    builtin_labels,
    get_entry,
    labels_kind,
    load_registry,
)

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]
"""Called as ``progress(bytes_done, bytes_total_or_None)`` while a download runs."""

DEFAULT_TIMEOUT = 30.0
_CHUNK = 1 << 16
_SAFE_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAX_LABELS_BYTES = 4 << 20


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache_dir``, $WILDEDGE_CACHE, $XDG_CACHE_HOME/wildedge or ~/.cache/wildedge."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    explicit = os.environ.get("WILDEDGE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "wildedge"


def model_path(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the stamped model ``name`` lives in the cache (whether or not it is there)."""
    return cache_root(cache_dir) / "models" / f"{name}.onnx"


def _download_path(root: Path, name: str, url: str) -> Path:
    filename = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not _SAFE_FILENAME.match(filename):
        filename = f"{name}.onnx"
    return root / "downloads" / name / filename


def _is_fresh(path: Path, entry: ModelEntry) -> bool:
    if not path.is_file():
        return False
    try:
        return read_card(path).source.sha256 == entry.sha256
    except ModelError as err:
        logger.warning("cached model %s is unreadable (%s); it will be replaced", path, err)
        return False


def cached_model(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    registry: Mapping[str, ModelEntry] | None = None,
) -> Path | None:
    """The stamped model ``name`` if it is cached and matches the registry's sha256, else None."""
    entry = get_entry(name, load_registry() if registry is None else registry)
    path = model_path(name, cache_dir=cache_dir)
    return path if _is_fresh(path, entry) else None


def offline_hint(name: str, entry: ModelEntry) -> str:
    """How to get model ``name`` running, by name, from a file downloaded by other means.

    ``pull --from`` checks the file against the pinned sha256 and stamps it into the cache, so
    ``-m NAME`` works afterwards; no packaged path (which an install may move) is printed.
    """
    labels = ""
    if labels_kind(entry.labels) == "url":
        labels = (f" (its labels come from {entry.labels}: download them too and set labels to that file "
                  "in your models.toml, docs/models.md)")
    return (f"Offline? Download {entry.url} elsewhere, then run: wildedge model pull {name} --from FILE.onnx"
            f"{labels}")


def _cannot_download(name: str, entry: ModelEntry, url: str, reason: str) -> RegistryError:
    return RegistryError(f"cannot download {name} from {url}: {reason}. {offline_hint(name, entry)}")


def _stream(url: str, out: BinaryIO, *, timeout: float, progress: ProgressCallback | None) -> tuple[str, int]:
    """Copy ``url`` into ``out`` in chunks; returns (sha256 hex, byte count)."""
    request = urllib.request.Request(url, headers={"User-Agent": f"wildedge/{__version__}"})
    digest = hashlib.sha256()
    done = 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if progress is not None:
            progress(0, total)
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest(), done


def _network_reason(err: BaseException) -> str | None:
    """A short reason when ``err`` is a network failure, else None."""
    if isinstance(err, urllib.error.HTTPError):
        err.close()  # it holds the response socket: release it now, not at garbage collection
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    if isinstance(err, (http.client.HTTPException, TimeoutError, ConnectionError, ssl.SSLError)):
        return str(err) or type(err).__name__
    return None


def download_verified(
    url: str,
    sha256: str,
    dst: Path,
    *,
    name: str,
    hint: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    progress: ProgressCallback | None = None,
) -> Path:
    """Download ``url`` to ``dst`` through a temp file beside it; only a file with ``sha256`` is renamed in.

    Shared by ``pull`` and the export stage's published checkpoints. ``hint`` follows a network error.

    Raises:
        RegistryError: the cache is not writable, the download failed, or the sha256 does not match.
    """
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    except OSError as err:
        raise RegistryError(f"cannot write to the model cache {dst.parent}: {err.strerror}") from err
    tmp = Path(tmp_name)
    logger.info("downloading %s from %s", name, url)
    started = time.monotonic()
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                digest, size = _stream(url, fh, timeout=timeout, progress=progress)
                fh.flush()
                os.fsync(fh.fileno())
        except (OSError, http.client.HTTPException) as err:
            reason = _network_reason(err)
            if reason is None:
                raise RegistryError(f"cannot write {tmp}: {err}") from err
            raise RegistryError(f"cannot download {name} from {url}: {reason}. {hint}".rstrip()) from err
        if digest != sha256:
            raise RegistryError(
                f"sha256 mismatch for {name} from {url}: expected {sha256}, got {digest} "
                f"({size} bytes); the download was deleted. The file behind the URL is not the one "
                "the registry pins: check the URL, or the sha256 if the entry is your own"
            )
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("downloaded %s: %d bytes in %.1f s, sha256 ok", name, size, time.monotonic() - started)
    return dst


def _copy_verified(name: str, entry: ModelEntry, source: Path, raw: Path) -> None:
    """Put a local copy of the published file into the cache, if it is the pinned file."""
    if not source.is_file():
        raise RegistryError(f"--from {source}: no such file")
    digest = sha256_file(source)
    if digest != entry.sha256:
        raise RegistryError(
            f"--from {source} is not the published {name}: its sha256 is {digest}, the registry pins "
            f"{entry.sha256}. Give the file exactly as downloaded from {entry.url}; for another model, "
            "stamp it (wildedge model stamp) and pass its path to -m, or add it to models.toml (docs/models.md)")
    download_verified(source.resolve().as_uri(), entry.sha256, raw, name=name)


def _fetch_verified(
    name: str, entry: ModelEntry, dst: Path, *, timeout: float, progress: ProgressCallback | None
) -> None:
    download_verified(entry.url, entry.sha256, dst, name=name, hint=offline_hint(name, entry),
                      timeout=timeout, progress=progress)


def _fetch_labels(name: str, entry: ModelEntry, *, timeout: float) -> list[str]:
    url = entry.labels
    with tempfile.TemporaryDirectory(prefix="wildedge-labels-") as tmp_dir:
        filename = PurePosixPath(urllib.parse.urlsplit(url).path).name
        path = Path(tmp_dir) / (filename if _SAFE_FILENAME.match(filename) else "labels.txt")
        request = urllib.request.Request(url, headers={"User-Agent": f"wildedge/{__version__}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data = response.read(_MAX_LABELS_BYTES + 1)
        except (OSError, http.client.HTTPException) as err:
            reason = _network_reason(err)
            if reason is None:
                raise
            raise _cannot_download(f"the labels of {name}", entry, url, reason) from err
        if len(data) > _MAX_LABELS_BYTES:
            raise RegistryError(f"labels of {name} from {url} are larger than {_MAX_LABELS_BYTES} bytes")
        path.write_bytes(data)
        return read_labels(path)


def _labels(name: str, entry: ModelEntry, *, timeout: float) -> list[str]:
    kind = labels_kind(entry.labels)
    if kind == "builtin":
        return builtin_labels(entry.labels)
    if kind == "url":
        return _fetch_labels(name, entry, timeout=timeout)
    return read_labels(entry.labels)


def pull(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    registry: Mapping[str, ModelEntry] | None = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    progress: ProgressCallback | None = None,
    source: str | os.PathLike[str] | None = None,
) -> Path:
    """Make the published model ``name`` available in the cache; returns the stamped file.

    A cached model whose card carries the registry's sha256 is returned without any network access;
    a verified download already in the cache is re-stamped without one. ``force`` downloads again.
    ``source`` is a local copy of the published file (offline use): it must have the pinned sha256,
    and is copied into the cache as if downloaded.

    Raises:
        RegistryError: unknown name, download failed (with an offline hint), or sha256 mismatch.
        ModelError: the downloaded file cannot be stamped.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0, got {timeout}")
    entry = get_entry(name, load_registry() if registry is None else registry)
    root = cache_root(cache_dir)
    dst = root / "models" / f"{name}.onnx"
    if source is None and not force and _is_fresh(dst, entry):
        logger.info("%s is already cached: %s", name, dst)
        return dst
    labels = _labels(name, entry, timeout=timeout)
    raw = _download_path(root, name, entry.url)
    if source is not None:
        _copy_verified(name, entry, Path(source).expanduser(), raw)
    elif force or not (raw.is_file() and sha256_file(raw) == entry.sha256):
        _fetch_verified(name, entry, raw, timeout=timeout, progress=progress)
    else:
        logger.info("re-stamping %s from the verified download %s", name, raw)
    card = stamp_file(
        raw, dst, preset=entry.preset, labels=labels, input_size=entry.input_size, name=name, url=entry.url
    )
    logger.info("stamped %s (%s, %d labels): %s", name, card.decoder.name, len(card.labels), dst)
    return dst


def _refuse_unstamped_published(path: Path, entries: Mapping[str, ModelEntry]) -> None:
    """A published model's file as downloaded (no card yet) names the one command that makes it usable.

    Raises:
        CardMissingError: ``path`` has no card and is byte-identical to a published model.
    """
    try:
        read_card(path)
        return
    except CardMissingError as err:
        digest = sha256_file(path)
        for name, entry in entries.items():
            if entry.sha256 == digest:
                raise CardMissingError(
                    f"{path} is the published {name} as downloaded, without its model card: run "
                    f"'wildedge model pull {name} --from {path}', then use -m {name}") from err
    except ModelError:
        return  # not readable as a model: the loader says why, with the file's name


def resolve_model(
    name_or_path: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    registry: Mapping[str, ModelEntry] | None = None,
) -> Path:
    """The model file meant by ``name_or_path``: an existing file, else a cached published model.

    Raises:
        RegistryError: a published model that is not downloaded yet (run ``wildedge model pull NAME``).
        ModelError: neither a file nor a published model name.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        _refuse_unstamped_published(path, load_registry() if registry is None else registry)
        return path
    looks_like_path = os.sep in name_or_path or "/" in name_or_path or path.suffix.lower() == ".onnx"
    if looks_like_path:
        raise ModelError(f"model file not found: {name_or_path}")
    entries = load_registry() if registry is None else registry
    if name_or_path not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise ModelError(f"model file not found: {name_or_path} (nor is it a published model: {known})")
    cached = model_path(name_or_path, cache_dir=cache_dir)
    if not cached.is_file():
        raise RegistryError(
            f"model {name_or_path} is not downloaded yet: run 'wildedge model pull {name_or_path}' "
            f"(offline: 'wildedge model pull {name_or_path} --from FILE.onnx' with the file from "
            f"{entries[name_or_path].url}, or pass the path of a stamped .onnx file to -m)"
        )
    if not _is_fresh(cached, entries[name_or_path]):
        logger.warning(
            "cached %s does not match the registry's sha256; run 'wildedge model pull %s' to update it",
            name_or_path, name_or_path,
        )
    return cached

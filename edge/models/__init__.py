"""Published models by name: the registry, ``pull`` into the cache, and ``resolve_model`` for ``-m NAME``."""

from __future__ import annotations

from edge.models.pull import DEFAULT_TIMEOUT, cache_root, cached_model, model_path, pull, resolve_model
from edge.models.registry import (
    DEFAULT_MODEL,
    ModelEntry,
    builtin_registry,
    load_registry,
    user_registry_path,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT",
    "ModelEntry",
    "builtin_registry",
    "cache_root",
    "cached_model",
    "load_registry",
    "model_path",
    "pull",
    "resolve_model",
    "user_registry_path",
]

"""The wildedge exception tree.

    WildedgeError                 base of everything wildedge raises on purpose
     +-- ConfigError              a config file or option is invalid
     +-- CaptureError             a camera or image source failed
     |    +-- ImageReadError      one image or video could not be read or decoded
     +-- ModelError               a model file is missing, malformed, or its card is wrong
     |    +-- CardMissingError    the ONNX file carries no wildedge card and no Ultralytics metadata
     |    +-- RegistryError       a published model name is unknown, or pulling it failed
     +-- StoreError               the local SQLite store or the image store failed
     +-- PublishError             MQTT delivery failed
     +-- CollectorError           the collector's database or broker cannot be used (server)
     +-- ExportError              exporting, quantizing or verifying a model failed (workstation)
          +-- MissingExtraError   an optional extra (export, ultralytics, mlflow) is not installed

Caller mistakes (wrong argument types or values) raise ``ValueError`` / ``TypeError`` at once.
"""

from __future__ import annotations


class WildedgeError(Exception):
    """Base class of every error wildedge raises on purpose."""


class ConfigError(WildedgeError):
    """A config file or command-line option is invalid."""


class CaptureError(WildedgeError):
    """A camera or image source failed."""


class ImageReadError(CaptureError):
    """One image or video could not be read or decoded; ``source`` names it when known."""

    def __init__(self, message: str = "", *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class ModelError(WildedgeError):
    """A model file is missing, malformed, or its card does not match the graph."""


class CardMissingError(ModelError):
    """The ONNX file carries neither a wildedge card nor Ultralytics metadata."""


class RegistryError(ModelError):
    """A published model name is unknown, or pulling it failed."""


class StoreError(WildedgeError):
    """The local store failed."""


class PublishError(WildedgeError):
    """MQTT delivery failed."""


class CollectorError(WildedgeError):
    """The collector's database or broker cannot be used; the message says which and what to do."""


class ExportError(WildedgeError):
    """Exporting, quantizing or verifying a model failed."""


class MissingExtraError(ExportError):
    """An optional extra is not installed; the message names the pip command."""

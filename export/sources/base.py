"""What every source returns, and the helpers the sources share (cards, labels, state dicts)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from edge import __version__
from edge.errors import ExportError, ModelError
from edge.inference.card import ModelCard, format_errors, sha256_file
from edge.inference.labels import read_labels
from edge.inference.presets import build_card
from export.deps import require

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Kind = Literal["detect", "classify"]
EXPORTER_NAME = "wildedge-export"
# Keys under which training frameworks nest the weights (Lightning, timm's train.py, DeiT/MAE scripts).
_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema", "net")
# Prefixes that wrappers add to every key: DataParallel/DDP, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class LoadedModel:
    """A model ready for the FP32 stage: a torch module in eval mode (or an ONNX file) and its card.

    ``card`` is what the exported file will carry: task, preprocessing, decoder, labels and the source
    checkpoint's name and sha256. ``module`` maps a ``[N, 3, H, W]`` float tensor to the outputs the
    card's decoder reads; it is None when the source is already an ONNX file (``onnx_path``).
    """

    kind: Kind
    card: ModelCard
    framework: str  # ultralytics | torchvision | timm | onnx
    arch: str
    source: Path
    module: torch.nn.Module | None = None
    onnx_path: Path | None = None
    dynamic_batch: bool = False
    output_names: tuple[str, ...] = ("output0",)
    notes: list[str] = field(default_factory=list)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.card.preprocess.input_size

    @property
    def labels(self) -> list[str]:
        return self.card.labels

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description for reports."""
        return {
            "framework": self.framework, "arch": self.arch, "task": self.kind, "file": str(self.source),
            "sha256": self.card.source.sha256, "url": self.card.source.url, "decoder": self.card.decoder.name,
            "input_size": list(self.input_size), "labels": len(self.labels), "notes": list(self.notes),
        }


def make_card(
    preset: str,
    *,
    labels: list[str],
    input_size: tuple[int, int],
    name: str,
    source: Path,
    sha256: str | None = None,
    url: str | None = None,
    preprocess: dict[str, Any] | None = None,
) -> ModelCard:
    """The card of ``preset`` for an exported model, with its source file and this exporter named.

    Raises:
        ExportError: the resulting card is invalid (e.g. a zero std, an input under 8 px).
    """
    try:
        card = build_card(preset, labels=labels, input_size=input_size, name=name,
                          preprocess_overrides=preprocess)
        return ModelCard.model_validate({
            **card.model_dump(),
            "source": {"file": source.name, "sha256": sha256 or sha256_file(source), "url": url},
            "exporter": {"name": EXPORTER_NAME, "version": __version__},
        })
    except ValidationError as err:
        raise ExportError(f"invalid model card for {name}: {format_errors(err)}") from err


def load_labels(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a labels file (text, one per line, or JSON); ExportError when it does not parse."""
    try:
        return read_labels(path)
    except ModelError as err:
        raise ExportError(str(err)) from err


def check_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path; ExportError when it is not an existing file."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ExportError(f"{what} not found: {file}")
    return file


def _strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_state_dict(path: Path, expected: set[str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file, unwrapped from training-framework containers.

    Accepts ``torch.save(model.state_dict())`` files, dicts nesting one under ``state_dict``/``model``
    (Lightning, timm, DeiT), ``module.``/``_orig_mod.`` key prefixes, and ``.safetensors``. When
    ``expected`` (the model's keys) is given, a prefix shared by every key (Lightning's ``model.``)
    is dropped if that makes the keys match. Never unpickles code: ``weights_only=True``.

    Raises:
        ExportError: the file is unreadable, pickles Python objects, or holds no tensors.
    """
    torch = require("torch")
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ExportError(f"{path.name}: reading .safetensors needs the safetensors package: "
                              "pip install safetensors") from err
        try:
            state: Any = load_file(str(path))
        except Exception as err:  # safetensors raises its own untyped errors for damaged files
            raise ExportError(f"cannot read {path}: {err}") from err
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
            lines = str(err).strip().splitlines() or [type(err).__name__]
            reason = next((line.strip() for line in lines if "WeightsUnpickler error" in line), lines[0])
            if "Unsupported global" in str(err):
                raise ExportError(
                    f"{path} is not a plain state dict (it pickles Python objects, which are not loaded "
                    "for safety): save model.state_dict() with torch.save and export that file"
                ) from err
            raise ExportError(f"cannot read {path} as a PyTorch state dict: {reason}") from err
    for key in _NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExportError(f"{path} holds no state dict (expected a mapping of parameter names to tensors)")
    state = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    for prefix in _WRAPPER_PREFIXES:
        state = _strip_prefix(state, prefix)
    if expected is not None and not expected & state.keys():
        first = next(iter(state)).split(".", 1)[0] + "."
        stripped = _strip_prefix(state, first)
        if expected & stripped.keys():
            state = stripped
    return state


def match_state_dict(
    module: torch.nn.Module, state: dict[str, torch.Tensor], *, what: str, hint: str = ""
) -> None:
    """Load ``state`` into ``module``; ExportError listing a few missing, unexpected or misshapen keys."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} checkpoint {list(state[k].shape)} vs model {list(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    found = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
    for title, items in found:
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            problems.append(f"{len(items)} {title} ({'; '.join(items[:5])}{more})")
    if problems:
        raise ExportError(f"the checkpoint does not match {what}: {', '.join(problems)}{hint}")
    module.load_state_dict(state, strict=False)  # num_batches_tracked may be absent in old checkpoints

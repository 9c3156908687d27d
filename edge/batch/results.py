"""Per-file results of a batch run, and what the writers need to know about the models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge.inference.detector import Detection

if TYPE_CHECKING:
    from edge.outputs.categories import CategoryMap


@dataclass(slots=True)
class FileResult:
    """The result of one image or video; boxes are xyxy in full-resolution pixels.

    ``failure`` is set (and ``detections`` empty) when the file could not be processed.
    Videos also carry ``frame_rate`` and ``frames_processed``; their detections carry ``frame``.
    """

    file: str  # relative to the run's base folder, forward slashes
    width: int = 0
    height: int = 0
    detections: list[Detection] = field(default_factory=list)
    failure: str | None = None
    frame_rate: float | None = None
    frames_processed: list[int] | None = None

    @property
    def is_video(self) -> bool:
        return self.frames_processed is not None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (used by the checkpoint file)."""
        out: dict[str, Any] = {"file": self.file, "width": self.width, "height": self.height}
        if self.failure is not None:
            out["failure"] = self.failure
        out["detections"] = [
            {
                "box": [round(v, 2) for v in d.box],
                "score": round(d.score, 5),
                "class_id": d.class_id,
                "label": d.label,
                **({"classifications": [[c, round(p, 5)] for c, p in d.classifications]}
                   if d.classifications else {}),
                **({"frame": d.frame} if d.frame is not None else {}),
            }
            for d in self.detections
        ]
        if self.frame_rate is not None:
            out["frame_rate"] = self.frame_rate
        if self.frames_processed is not None:
            out["frames_processed"] = self.frames_processed
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileResult:
        return cls(
            file=data["file"],
            width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
            detections=[
                Detection(
                    box=tuple(d["box"]),  # type: ignore[arg-type]
                    score=float(d["score"]),
                    class_id=int(d["class_id"]),
                    label=str(d["label"]),
                    classifications=[(int(c), float(p)) for c, p in d.get("classifications", [])],
                    frame=d.get("frame"),
                )
                for d in data.get("detections", [])
            ],
            failure=data.get("failure"),
            frame_rate=data.get("frame_rate"),
            frames_processed=data.get("frames_processed"),
        )


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What an output file says about a model that produced it.

    ``conf`` is the threshold this run used; ``typical_conf`` the one the model's card recommends
    (it describes the model, so MegaDetector's ``typical_*_threshold`` is taken from it).
    """

    name: str  # model file's base name
    labels: list[str]
    conf: float
    input_size: tuple[int, int]
    typical_conf: float | None = None


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The models of a run (classifier optional), how classes are written, and the run's settings."""

    detector: ModelInfo
    classifier: ModelInfo | None = None
    completed: str = ""  # "YYYY-MM-DD HH:MM:SS", local time of completion
    categories: CategoryMap | None = None  # None: the detector's own classes (categories.native)
    settings: dict[str, Any] = field(default_factory=dict)  # run settings recorded in the output (conf, iou...)

"""The ``[camera]`` and ``[trigger]`` sections: unions discriminated by their ``type`` key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edge.config.units import Duration, PositiveDuration, UserPath, Window, WindowSpec, parse_window


def problem_at(key: str, message: str) -> PydanticCustomError:
    """A cross-field error reported at ``key`` below the model that raises it (see ``load``)."""
    return PydanticCustomError("config_problem", message, {"at": key})


_FLAG_TYPES = (bool, bool | None, Optional[bool])


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are frozen after loading, and a
    yes/no key takes only ``true`` or ``false`` (pydantic alone would read ``"yes"``, ``"off"`` or ``1``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _strict_flags(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            value = data.get(name)
            if field.annotation in _FLAG_TYPES and name in data and not isinstance(value, bool):
                if value is None and field.annotation is not bool:
                    continue
                raise problem_at(name, f"must be true or false (got {value!r})")
        return data


# --- cameras -----------------------------------------------------------------------------------------


class FolderCamera(Section):
    """Photos from a folder: replayed once in card order, or watched for new files."""

    can_preview: ClassVar[bool] = False

    type: Literal["folder"] = Field(description="camera backend")
    path: UserPath = Field(description="folder to read images from")
    mode: Literal["replay", "watch"] = Field("replay", description="replay the folder once, or watch it")
    recursive: bool = Field(True, description="also read sub-folders")
    settle: Duration = Field(
        timedelta(seconds=2), description="watch: a file must be unchanged this long before it is read")
    poll: PositiveDuration = Field(
        timedelta(seconds=2), description="watch: how often the folder is rescanned")


class OpenCVCamera(Section):
    """A USB camera index, a stream URL or a video file, read through OpenCV."""

    can_preview: ClassVar[bool] = True

    type: Literal["opencv"] = Field(description="camera backend")
    source: int | str = Field(description="camera index (0 = /dev/video0), stream URL or video file")
    width: int | None = Field(None, ge=1, le=16384, description="live cameras: width to ask the driver for")
    height: int | None = Field(None, ge=1, le=16384, description="live cameras: height to ask the driver for")

    @field_validator("source", mode="before")
    @classmethod
    def _check_source(cls, value: Any) -> Any:
        # bool is an int to Python; `source = true` is a mistake, not camera 1.
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"must be a camera index, a URL or a file path (got {value!r})")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"a camera index must be >= 0 (got {value})")
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("must not be empty")
            if value.startswith("~"):
                return str(Path(value).expanduser())
        return value

    @model_validator(mode="after")
    def _check_size(self) -> OpenCVCamera:
        if (self.width is None) != (self.height is None):
            missing = "height" if self.height is None else "width"
            raise problem_at(missing, "missing: width and height go together")
        return self


class Picamera2Camera(Section):
    """A Raspberry Pi camera module through picamera2: full-size stills plus a small preview stream."""

    can_preview: ClassVar[bool] = True

    type: Literal["picamera2"] = Field(description="camera backend")
    width: int = Field(4056, ge=64, le=16384, description="still width in pixels")
    height: int = Field(3040, ge=64, le=16384, description="still height in pixels")
    lores_width: int = Field(320, ge=64, le=4096, description="preview (motion) stream width")
    lores_height: int = Field(240, ge=64, le=4096, description="preview (motion) stream height")
    settle: Duration = Field(
        timedelta(seconds=2), description="wait after starting so auto-exposure and white balance converge")
    lock_exposure: bool = Field(True, description="freeze exposure and white balance after settling")

    @model_validator(mode="after")
    def _check_lores(self) -> Picamera2Camera:
        if self.lores_width > self.width:
            raise problem_at("lores_width", f"must be <= width ({self.width}) (got {self.lores_width})")
        if self.lores_height > self.height:
            raise problem_at("lores_height", f"must be <= height ({self.height}) (got {self.lores_height})")
        return self


CameraConfig = Annotated[FolderCamera | OpenCVCamera | Picamera2Camera, Field(discriminator="type")]


# --- triggers ----------------------------------------------------------------------------------------

#: The longest timelapse interval (the trigger's slots are wall-clock multiples within one day).
MAX_TIMELAPSE_INTERVAL = timedelta(days=1)


def _seconds_text(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


class _Trigger(Section):
    """Keys every trigger has."""

    active: tuple[Window, ...] = Field(
        (), description='windows when the trigger may fire, e.g. "sunset-30m..sunrise+30m"; empty = always')
    burst: int = Field(1, ge=1, le=100, description="frames captured per firing")
    burst_interval: Duration = Field(timedelta(seconds=0.5), description="time between the frames of a burst")

    @property
    def windows(self) -> tuple[WindowSpec, ...]:
        """The ``active`` windows, parsed."""
        return tuple(parse_window(text) for text in self.active)


class TimelapseTrigger(_Trigger):
    """Fire every ``interval``, aligned to the local wall clock."""

    type: Literal["timelapse"] = Field(description="trigger kind")
    interval: PositiveDuration = Field(
        description="time between firings, aligned to the wall clock; at most 1d")

    @field_validator("interval")
    @classmethod
    def _at_most_a_day(cls, value: timedelta) -> timedelta:
        if value > MAX_TIMELAPSE_INTERVAL:
            raise ValueError(f"must be at most 1d: slots restart at local midnight every day "
                             f"(got {_seconds_text(value)})")
        return value

    @model_validator(mode="after")
    def _check_burst(self) -> TimelapseTrigger:
        if (self.burst - 1) * self.burst_interval >= self.interval:
            raise problem_at(
                "burst",
                f"a burst of {self.burst} frames {self.burst_interval.total_seconds():g}s apart does not fit "
                f"in the interval ({self.interval.total_seconds():g}s): lower burst or burst_interval")
        return self


class MotionTrigger(_Trigger):
    """Fire when the camera's preview stream changes (frame difference against a running average)."""

    type: Literal["motion"] = Field(description="trigger kind")
    fps: float = Field(2.0, gt=0, le=30, description="preview frames examined per second")
    threshold: int = Field(25, ge=1, le=255, description="grey-level change that counts as changed")
    min_area: float = Field(
        0.002, gt=0, lt=1, description="smallest changed area that fires, as a fraction of the frame")
    max_area: float = Field(
        0.6, gt=0, le=1, description="larger changes (as a fraction) are whole-frame light changes, ignored")
    blur: int = Field(5, ge=1, le=99, description="blur kernel size in preview pixels (odd; 1 = none)")
    alpha: float = Field(0.1, gt=0, le=1, description="running-average weight of each new frame")
    cooldown: Duration = Field(timedelta(seconds=10), description="quiet time after a firing")

    @field_validator("blur")
    @classmethod
    def _odd_blur(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"must be an odd number (got {value}; try {value + 1})")
        return value

    @model_validator(mode="after")
    def _check_areas(self) -> MotionTrigger:
        if self.min_area >= self.max_area:
            raise problem_at(
                "min_area", f"must be less than max_area ({self.max_area:g}) (got {self.min_area:g})")
        return self


class ExternalTrigger(_Trigger):
    """Fire on an outside signal: a PIR sensor on a GPIO pin, or a command over MQTT."""

    type: Literal["external"] = Field(description="trigger kind")
    gpio_pin: int | None = Field(None, ge=0, le=27, description="BCM number of a PIR sensor's GPIO pin")
    cooldown: Duration = Field(timedelta(seconds=5), description="quiet time after a firing")


TriggerConfig = Annotated[TimelapseTrigger | MotionTrigger | ExternalTrigger, Field(discriminator="type")]

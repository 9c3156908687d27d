"""The daemon config: models, value types, windows, loading, --set overrides and error messages."""

from __future__ import annotations

import re
from datetime import time, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from edge.config import (
    Config,
    ExternalTrigger,
    FolderCamera,
    InvalidConfigError,
    MotionTrigger,
    OpenCVCamera,
    Picamera2Camera,
    SunTime,
    TimelapseTrigger,
    config_from_dict,
    load_config,
    parse_duration,
    parse_size,
    parse_window,
)
from edge.config.models import ClassifierConfig
from edge.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

MINIMAL = """\
[device]
id = "trap-01"

[camera]
type = "folder"
path = "/data/incoming"

[trigger]
type = "timelapse"
interval = "20m"

[detector]
model = "/etc/wildedge/detector.onnx"
"""


def _base() -> dict[str, Any]:
    return {
        "device": {"id": "trap-01"},
        "camera": {"type": "folder", "path": "/data/incoming"},
        "trigger": {"type": "timelapse", "interval": "20m"},
        "detector": {"model": "/etc/wildedge/detector.onnx"},
    }


def _with(**sections: dict[str, Any]) -> dict[str, Any]:
    data = _base()
    data.update(sections)
    return data


def _problems(data: dict[str, Any], overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(InvalidConfigError) as info:
        config_from_dict(data, overrides=overrides)
    assert isinstance(info.value, ConfigError)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


@pytest.fixture
def minimal(tmp_path: Path) -> Path:
    path = tmp_path / "wildedge.toml"
    path.write_text(MINIMAL)
    return path


# --- loading and defaults ----------------------------------------------------------------------------


def test_minimal_config_and_defaults(minimal: Path) -> None:
    config = load_config(minimal)
    assert config.device.id == "trap-01"
    assert config.device.state_dir == Path("/var/lib/wildedge")
    assert config.device.latitude is None and config.device.timezone is None and config.device.rtc is False
    assert isinstance(config.camera, FolderCamera)
    assert config.camera.path == Path("/data/incoming")
    assert (config.camera.mode, config.camera.recursive) == ("replay", True)
    assert config.camera.settle == timedelta(seconds=2) and config.camera.poll == timedelta(seconds=2)
    assert isinstance(config.trigger, TimelapseTrigger)
    assert config.trigger.interval == timedelta(minutes=20)
    assert config.trigger.active == () and config.trigger.windows == ()
    assert config.trigger.burst == 1 and config.trigger.burst_interval == timedelta(milliseconds=500)
    assert config.detector.conf is None and config.detector.iou is None and config.detector.threads is None
    assert config.classifier is None and config.mqtt is None
    assert (config.events.mode, config.events.match_iou) == ("burst", 0.3)
    assert (config.privacy.person, config.privacy.labels) == ("drop", ("person", "human"))
    assert config.storage.save_images == "detections" and config.storage.jpeg_quality == 90
    assert config.storage.max_age == timedelta(days=30) and config.storage.min_free == 200_000_000
    assert config.health.interval == timedelta(minutes=5)


def test_config_is_frozen(minimal: Path) -> None:
    config = load_config(minimal)
    with pytest.raises(ValueError):
        config.detector.conf = 0.5  # type: ignore[misc]


def test_tilde_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = config_from_dict(_with(
        device={"id": "x", "state_dir": "~/state"},
        camera={"type": "folder", "path": "~/photos"},
        detector={"model": "~/m.onnx"},
        mqtt={"url": "mqtts://h", "username": "u", "password_file": "~/pw", "ca_file": "~/ca.pem"},
    ))
    assert config.device.state_dir == tmp_path / "state"
    assert config.camera.path == tmp_path / "photos"
    assert config.detector.model == tmp_path / "m.onnx"
    assert config.mqtt is not None and config.mqtt.password_file == tmp_path / "pw"
    assert config.mqtt.ca_file == tmp_path / "ca.pem"


def test_missing_file_and_toml_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError) as info:
        load_config(tmp_path / "absent.toml")
    assert info.value.problems == [f"{tmp_path / 'absent.toml'}: no such file"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[device]\nid = "x"\n\n[camera\ntype = "folder"\n')
    with pytest.raises(ConfigError) as info2:
        load_config(bad)
    assert "invalid TOML" in str(info2.value) and "line 4" in str(info2.value)


def test_missing_sections() -> None:
    problems = _problems({"device": {"id": "x"}})
    assert "camera: missing: add a [camera] section" in problems
    live = _problems({"device": {"id": "x"}, "camera": {"type": "opencv", "source": 0},
                      "detector": {"model": "d.onnx"}})
    assert live == ["trigger: missing: add a [trigger] section (a live camera needs one)"]
    folder = config_from_dict({"device": {"id": "x"}, "camera": {"type": "folder", "path": "p"},
                               "detector": {"model": "d.onnx"}})
    assert folder.trigger is None
    assert "detector: missing: add a [detector] section" in problems


# --- union members -----------------------------------------------------------------------------------


def test_camera_types() -> None:
    opencv = config_from_dict(_with(camera={"type": "opencv", "source": "rtsp://cam/1", "width": 1920,
                                            "height": 1080})).camera
    assert isinstance(opencv, OpenCVCamera) and opencv.source == "rtsp://cam/1" and opencv.width == 1920
    assert config_from_dict(_with(camera={"type": "opencv", "source": 0})).camera.source == 0
    pi = config_from_dict(_with(camera={"type": "picamera2"})).camera
    assert isinstance(pi, Picamera2Camera)
    assert (pi.width, pi.height, pi.lores_width, pi.lores_height) == (4056, 3040, 320, 240)
    assert pi.lock_exposure is True
    watch = {"type": "folder", "path": "/x", "mode": "watch", "poll": 5}
    folder = config_from_dict(_with(camera=watch)).camera
    assert isinstance(folder, FolderCamera) and folder.mode == "watch" and folder.poll == timedelta(seconds=5)
    assert not FolderCamera.can_preview and OpenCVCamera.can_preview and Picamera2Camera.can_preview


def test_trigger_types() -> None:
    pi = {"type": "picamera2"}
    trigger = {"type": "motion", "burst": 3, "cooldown": "1m"}
    motion = config_from_dict(_with(camera=pi, trigger=trigger)).trigger
    assert isinstance(motion, MotionTrigger)
    assert (motion.fps, motion.threshold, motion.min_area, motion.max_area) == (2.0, 25, 0.002, 0.6)
    assert (motion.blur, motion.alpha, motion.burst) == (5, 0.1, 3)
    assert motion.cooldown == timedelta(minutes=1)
    external = config_from_dict(_with(trigger={"type": "external", "gpio_pin": 17})).trigger
    assert isinstance(external, ExternalTrigger)
    assert external.gpio_pin == 17 and external.cooldown == timedelta(seconds=5)


@pytest.mark.parametrize(("camera", "trigger", "expected"), [
    ({"type": "usb"}, {}, "camera.type: must be one of 'folder', 'opencv', 'picamera2' (got 'usb')"),
    ({"path": "/x"}, {}, "camera.type: missing: one of 'folder', 'opencv', 'picamera2'"),
    ({}, {"type": "pir"}, "trigger.type: must be one of 'timelapse', 'motion', 'external' (got 'pir')"),
    ("folder", {}, "camera: must be a table (got 'folder')"),
])
def test_bad_union_type(camera: Any, trigger: dict[str, Any], expected: str) -> None:
    data = _base()
    if camera:
        data["camera"] = camera
    if trigger:
        data["trigger"] = trigger
    assert expected in _problems(data)


def test_motion_needs_a_live_camera() -> None:
    problems = _problems(_with(trigger={"type": "motion"}))
    assert len(problems) == 1
    assert problems[0].startswith("trigger.type: a motion trigger needs a live camera")
    assert "folder camera has no preview" in problems[0] and '"timelapse"' in problems[0]
    live = _with(camera={"type": "opencv", "source": 0}, trigger={"type": "motion"})
    assert isinstance(config_from_dict(live).trigger, MotionTrigger)


# --- unknown keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "expected"), [
    (_with(detecter={"model": "x"}), "detecter: unknown key (did you mean 'detector'?)"),
    (_with(camera={"type": "folder", "path": "/x", "recursve": True}),
     "camera.recursve: unknown key (did you mean 'recursive'?)"),
    (_with(camera={"type": "folder", "path": "/x", "source": 0}),
     "camera.source: unknown key (only for type = 'opencv')"),
    (_with(trigger={"type": "timelapse", "interval": "1m", "intervall": "2m"}),
     "trigger.intervall: unknown key (did you mean 'interval'?)"),
    (_with(device={"id": "x", "lat": 52.0}), "device.lat: unknown key"),
    (_with(storage={"max_agee": "2d"}), "storage.max_agee: unknown key (did you mean 'max_age'?)"),
    (_with(mqtt={"url": "mqtt://h", "prefx": "a"}), "mqtt.prefx: unknown key (did you mean 'prefix'?)"),
])
def test_unknown_keys_with_hints(data: dict[str, Any], expected: str) -> None:
    problems = _problems(data)
    assert any(line.startswith(expected) for line in problems), problems


def test_unknown_key_without_close_match_lists_allowed() -> None:
    (line,) = _problems(_with(health={"zzz": 1}))
    assert line == "health.zzz: unknown key (allowed: interval)"


# --- bad values --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "expected"), [
    (_with(detector={"model": "m", "conf": 1.5}), "detector.conf: must be <= 1 (got 1.5)"),
    (_with(detector={"model": "m", "iou": -0.1}), "detector.iou: must be >= 0 (got -0.1)"),
    (_with(detector={"model": "m", "threads": 2.5}), "detector.threads: must be a whole number (got 2.5)"),
    (_with(detector={"conf": 0.3}), "detector.model: missing (required)"),
    (_with(trigger={"type": "timelapse", "interval": "20x"}),
     "trigger.interval: invalid duration '20x' (use e.g. 30s, 20m, 1h)"),
    (_with(trigger={"type": "timelapse", "interval": 0}), "trigger.interval: must be more than 0"),
    (_with(trigger={"type": "timelapse", "interval": "10s", "burst": 30}),
     "trigger.burst: a burst of 30 frames 0.5s apart does not fit in the interval (10s)"),
    (_with(storage={"save_images": "some"}),
     "storage.save_images: must be 'all', 'detections' or 'none' (got 'some')"),
    (_with(storage={"min_free": "3XB"}),
     "storage.min_free: invalid size '3XB' (use e.g. 200MB, 1.5GiB, 512kB)"),
    (_with(storage={"jpeg_quality": 101}), "storage.jpeg_quality: must be <= 100 (got 101)"),
    (_with(events={"mode": "track"}), "events.mode: must be 'burst' or 'sticky' (got 'track')"),
    (_with(privacy={"labels": []}), 'privacy.labels: empty: to keep images of people, set person = "keep"'),
    (_with(classifier={"model": "c", "classes": []}), "classifier.classes: empty"),
    (_with(classifier={"model": "c", "classes": "animal"}), "classifier.classes: must be a list"),
    (_with(device={"id": "trap 01"}), "device.id: invalid device id 'trap 01'"),
    (_with(device={"id": "x", "rtc": "maybe"}), "device.rtc: must be true or false (got 'maybe')"),
    (_with(device={"id": "x", "timezone": "Europe/Amsterdm"}),
     "device.timezone: unknown time zone 'Europe/Amsterdm' (did you mean 'Europe/Amsterdam'?)"),
    (_with(device={"id": "x", "latitude": 91, "longitude": 0}), "device.latitude: must be <= 90 (got 91)"),
    (_with(camera={"type": "opencv", "source": True}), "camera.source: must be a camera index"),
    (_with(camera={"type": "opencv", "source": 0, "width": 640}),
     "camera.height: missing: width and height go together"),
    (_with(camera={"type": "picamera2", "width": 1000, "lores_width": 1200}),
     "camera.lores_width: must be <= width (1000) (got 1200)"),
    (_with(camera={"type": "picamera2"}, trigger={"type": "motion", "blur": 4}),
     "trigger.blur: must be an odd number (got 4; try 5)"),
    (_with(camera={"type": "picamera2"}, trigger={"type": "motion", "min_area": 0.5, "max_area": 0.4}),
     "trigger.min_area: must be less than max_area"),
    (_with(trigger={"type": "external", "gpio_pin": 40}), "trigger.gpio_pin: must be <= 27 (got 40)"),
])
def test_bad_values(data: dict[str, Any], expected: str) -> None:
    problems = _problems(data)
    assert any(line.startswith(expected) for line in problems), problems


def test_every_problem_is_reported_as_key_path_message() -> None:
    problems = _problems(_with(
        detector={"model": "m", "conf": 2, "threads": 0},
        storage={"jpeg_quality": 0, "max_age": "soon"},
        camera={"type": "folder", "pth": "/x"},
    ))
    assert len(problems) == 6
    for line in problems:
        assert re.match(r"^[a-z_]+(\.[a-z_]+|\[\d+\])*: \S", line), line


def test_timezone_is_usable() -> None:
    device = config_from_dict(_with(device={"id": "x", "timezone": "Europe/Amsterdam"})).device
    assert str(device.zone()) == "Europe/Amsterdam"
    assert config_from_dict(_base()).device.zone() is not None


# --- location rules ----------------------------------------------------------------------------------


def test_latitude_and_longitude_go_together() -> None:
    assert _problems(_with(device={"id": "x", "latitude": 52.1})) == [
        "device.longitude: missing: latitude and longitude go together (decimal degrees)"]
    assert _problems(_with(device={"id": "x", "longitude": 5.2}))[0].startswith("device.latitude: missing")
    device = config_from_dict(_with(device={"id": "x", "latitude": 52.1, "longitude": 5.2})).device
    assert (device.latitude, device.longitude) == (52.1, 5.2)


def test_sun_windows_need_a_location() -> None:
    trigger = {"type": "timelapse", "interval": "20m", "active": ["06:00..08:00", "sunset-30m..sunrise"]}
    assert _problems(_with(trigger=trigger)) == [
        "trigger.active[1]: 'sunset-30m..sunrise' uses sunrise/sunset: "
        "set device.latitude and device.longitude"]
    config = config_from_dict(_with(trigger=trigger, device={"id": "x", "latitude": 52.0, "longitude": 5.0}))
    assert [w.uses_sun for w in config.trigger.windows] == [False, True]
    night = config_from_dict(_with(trigger={**trigger, "active": ["22:00..06:00"]})).trigger
    assert night.windows[0].start == time(22) and night.windows[0].end == time(6)


# --- durations, sizes, windows -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("500ms", timedelta(milliseconds=500)),
    ("10s", timedelta(seconds=10)),
    ("20m", timedelta(minutes=20)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("1h 30m", timedelta(hours=1, minutes=30)),
    ("1.5h", timedelta(minutes=90)),
    ("2d", timedelta(days=2)),
    ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
    ("30", timedelta(seconds=30)),
    (30, timedelta(seconds=30)),
    (0.25, timedelta(milliseconds=250)),
    (0, timedelta(0)),
    (timedelta(minutes=3), timedelta(minutes=3)),
])
def test_parse_duration(text: Any, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["20x", "", "m", "10 seconds", "1h30", "h1", "-5s", "1.2.3s", "5S", True, None, [1]])
def test_parse_duration_rejects(text: Any) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_parse_duration_rejects_negative_numbers() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration(-1)


@pytest.mark.parametrize(("text", "expected"), [
    ("200MB", 200_000_000),
    ("200mb", 200_000_000),
    ("1.5GiB", 1_610_612_736),
    ("512kB", 512_000),
    ("512KiB", 524_288),
    ("1 GB", 1_000_000_000),
    ("2TB", 2 * 10**12),
    ("100B", 100),
    ("4096", 4096),
    (4096, 4096),
    (0, 0),
])
def test_parse_size(text: Any, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["3XB", "MB", "", "1.5.2MB", "-1MB", -5, 1.5, True, "1e9"])
def test_parse_size_rejects(text: Any) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@pytest.mark.parametrize(("text", "start", "end"), [
    ("06:00..18:00", time(6, 0), time(18, 0)),
    ("22:30..6:15", time(22, 30), time(6, 15)),
    ("sunset-30m..sunrise+1h",
     SunTime("sunset", -timedelta(minutes=30)), SunTime("sunrise", timedelta(hours=1))),
    ("06:00..sunrise", time(6, 0), SunTime("sunrise", timedelta(0))),
    ("sunrise + 1h30m .. 23:59", SunTime("sunrise", timedelta(minutes=90)), time(23, 59)),
    ("Sunset..Sunrise", SunTime("sunset", timedelta(0)), SunTime("sunrise", timedelta(0))),
])
def test_parse_window(text: str, start: Any, end: Any) -> None:
    spec = parse_window(text)
    assert (spec.start, spec.end, spec.text) == (start, end, text)
    assert spec.uses_sun == (isinstance(start, SunTime) or isinstance(end, SunTime))


@pytest.mark.parametrize(("text", "message"), [
    ("06:00-18:00", "invalid window"),
    ("06:00..", "invalid window"),
    ("06:00..18:00..20:00", "invalid window"),
    ("25:00..06:00", "invalid time '25:00'"),
    ("06:60..07:00", "invalid time '06:60'"),
    ("dawn..dusk", "invalid window end 'dawn'"),
    ("sunset-30x..sunrise", "invalid offset '30x'"),
    ("sunset+13h..sunrise", "must be less than 12h"),
    ("06:00..06:00", "starts and ends at the same time"),
    ("sunset..sunset", "starts and ends at the same time"),
])
def test_parse_window_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_window(text)


def test_bad_window_in_config_names_its_index() -> None:
    trigger = {"type": "timelapse", "interval": "20m", "active": ["06:00..18:00", "dusk..dawn"]}
    (line,) = _problems(_with(trigger=trigger))
    assert line.startswith("trigger.active[1]: invalid window end 'dusk'")


# --- mqtt --------------------------------------------------------------------------------------------


def test_mqtt_defaults_and_ports() -> None:
    mqtt = config_from_dict(_with(mqtt={"url": "mqtt://broker.example"})).mqtt
    assert mqtt is not None
    assert (mqtt.host, mqtt.port, mqtt.tls, mqtt.prefix) == ("broker.example", 1883, False, "wildedge")
    assert mqtt.keepalive == timedelta(seconds=60) and mqtt.username is None
    secure = config_from_dict(_with(mqtt={"url": "mqtts://10.0.0.2", "prefix": "lab/traps"})).mqtt
    assert secure is not None and (secure.host, secure.port, secure.tls) == ("10.0.0.2", 8883, True)
    custom = config_from_dict(_with(mqtt={"url": "mqtts://b:9000"})).mqtt
    assert custom is not None and custom.port == 9000


def test_mqtt_password_is_rejected_with_hint() -> None:
    (line,) = _problems(_with(mqtt={"url": "mqtt://h", "username": "u", "password": "hunter2"}))
    assert line.startswith("mqtt.password: secrets do not belong in the config file")
    assert "password_file" in line and "$CREDENTIALS_DIRECTORY" in line
    assert "hunter2" not in line


@pytest.mark.parametrize(("mqtt", "expected"), [
    ({"url": "http://h"}, "mqtt.url: must start with mqtt:// or mqtts://"),
    ({"url": "mqtt://"}, "mqtt.url: no host"),
    ({"url": "mqtt://u:pw@h"}, "mqtt.url: credentials do not belong in the URL"),
    ({"url": "http://u:pw@h"}, "mqtt.url: credentials do not belong in the URL"),
    ({"url": "mqtt://h/topic"}, "mqtt.url: must be mqtt[s]://host[:port] only"),
    ({"url": "mqtt://h:99999"}, "mqtt.url: invalid URL"),
    ({"url": "mqtt://h", "prefix": "a/#"}, "mqtt.prefix: invalid topic prefix"),
    ({"url": "mqtt://h", "prefix": "/a"}, "mqtt.prefix: invalid topic prefix"),
    ({"url": "mqtt://h", "keepalive": "1.5s"}, "mqtt.keepalive: must be a whole number of seconds"),
    ({"url": "mqtt://h", "ca_file": "/ca.pem"}, "mqtt.ca_file: TLS files need an mqtts:// url"),
    ({"url": "mqtts://h", "key_file": "/k.pem"}, "mqtt.cert_file: missing: key_file needs cert_file"),
    ({"url": "mqtt://h", "password_file": "/pw"}, "mqtt.username: missing: password_file needs username"),
])
def test_mqtt_bad_values(mqtt: dict[str, Any], expected: str) -> None:
    problems = _problems(_with(mqtt=mqtt))
    assert any(line.startswith(expected) for line in problems), problems


# --- --set overrides ---------------------------------------------------------------------------------


def test_set_number_list_string_and_new_table(minimal: Path) -> None:
    config = load_config(minimal, overrides=[
        "detector.conf=0.3",
        'trigger.active=["06:00..18:00", "20:00..22:00"]',
        "camera.path=/data/x",
        "classifier.model=/m/species.onnx",
        'classifier.classes=["animal"]',
        "device.rtc = true",
        "trigger.interval=10m",
    ])
    assert config.detector.conf == 0.3
    assert config.trigger.active == ("06:00..18:00", "20:00..22:00")
    assert config.camera.path == Path("/data/x")
    assert config.classifier == ClassifierConfig(model=Path("/m/species.onnx"), classes=("animal",))
    assert config.device.rtc is True
    assert config.trigger.interval == timedelta(minutes=10)


def test_set_switching_camera_type_validates_the_result(minimal: Path) -> None:
    with pytest.raises(InvalidConfigError) as info:
        load_config(minimal, overrides=["camera.type=opencv", "camera.source=2"])
    assert info.value.problems == ["camera.path: unknown key (only for type = 'folder')"]
    config = load_config(minimal, overrides=['camera={type = "opencv", source = 2}'])
    assert isinstance(config.camera, OpenCVCamera) and config.camera.source == 2


@pytest.mark.parametrize(("override", "expected"), [
    ("detector", "--set 'detector': expected key.path=value"),
    ("=3", "--set '=3': expected key.path=value"),
    ("detector..conf=3", "--set 'detector..conf=3': expected key.path=value"),
    ("detector.co nf=3", "--set 'detector.co nf=3': expected key.path=value"),
    ("device.id.x=1", "--set 'device.id.x=1': device.id is a value, not a table"),
])
def test_set_bad_syntax(minimal: Path, override: str, expected: str) -> None:
    with pytest.raises(InvalidConfigError) as info:
        load_config(minimal, overrides=["detector.conf=0.3", override])
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(expected)


def test_set_value_is_validated_with_quote_hint(minimal: Path) -> None:
    with pytest.raises(InvalidConfigError) as info:
        load_config(minimal, overrides=["detector.conf=1.5", "device.id=2024"])
    assert info.value.problems == [
        "device.id: must be a string (in quotes) (got 2024) (quote it: --set 'device.id=\"...\"')",
        "detector.conf: must be <= 1 (got 1.5)",
    ]
    assert load_config(minimal, overrides=['device.id="2024"']).device.id == "2024"


def test_set_does_not_touch_the_callers_data() -> None:
    data = _base()
    config_from_dict(data, overrides=["detector.conf=0.5", "storage.jpeg_quality=80"])
    assert data == _base()


# --- examples and docs -------------------------------------------------------------------------------


EXAMPLES = sorted((REPO / "examples").glob("*.toml"))


def test_the_three_examples_exist() -> None:
    assert {path.name for path in EXAMPLES} >= {
        "camera_trap_motion.toml", "sticky_card_timelapse.toml", "process_folder.toml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_loads(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, Config) and config.device.id


def test_examples_show_what_they_promise() -> None:
    trap = load_config(REPO / "examples" / "camera_trap_motion.toml")
    assert isinstance(trap.camera, Picamera2Camera) and isinstance(trap.trigger, MotionTrigger)
    assert trap.trigger.burst == 3 and trap.classifier is not None
    card = load_config(REPO / "examples" / "sticky_card_timelapse.toml")
    assert isinstance(card.trigger, TimelapseTrigger) and card.trigger.interval == timedelta(minutes=20)
    assert card.events.mode == "sticky" and all(w.uses_sun for w in card.trigger.windows)
    folder = load_config(REPO / "examples" / "process_folder.toml")
    assert isinstance(folder.camera, FolderCamera) and folder.camera.mode == "replay"


def _all_models() -> dict[str, type[BaseModel]]:
    sections = {name: field.annotation for name, field in Config.model_fields.items()}
    from edge.config.load import _models
    return {f"{name}:{model.__name__}": model for name, annotation in sections.items()
            for model in _models(annotation)}


def test_docs_describe_every_key() -> None:
    text = (REPO / "docs" / "config.md").read_text()
    for label, model in _all_models().items():
        section = label.split(":")[0]
        assert f"## `[{section}]`" in text, section
        for key in model.model_fields:
            if key == "type":
                tag = model.model_fields["type"].annotation.__args__[0]
                assert f'### `type = "{tag}"`' in text, label
            elif key != "password":
                assert f"| `{key}` |" in text, f"{label}.{key} is not documented"

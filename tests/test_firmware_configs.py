"""firmware_configs/: every config.txt fragment against the documented keys and overlays, every profile
against the config schema and the hardware it names (edge/config/profiles.py)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.config import InvalidConfigError, config_from_dict
from edge.config.profiles import (
    BOARD_MODELS,
    ProfileError,
    apply_profile,
    board_problem,
    list_profiles,
    load_profile,
    merge_profile,
)

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware_configs"
PROFILES = FW / "profiles"

# --- sources -----------------------------------------------------------------------------------------
CONFIG_TXT = "https://www.raspberrypi.com/documentation/computers/config_txt.html"
CONDITIONAL = CONFIG_TXT + "#conditional-filters"
OVERLAYS = "https://github.com/raspberrypi/linux/blob/rpi-6.6.y/arch/arm/boot/dts/overlays/README"
CAMERA_CFG = "https://www.raspberrypi.com/documentation/computers/camera_software.html#configuration"
CAMERA_SPEC = "https://www.raspberrypi.com/documentation/accessories/camera.html#hardware-specification"
DTS = "https://github.com/raspberrypi/linux/blob/rpi-6.6.y/arch/arm/boot/dts/broadcom/"
DTS_PI02 = DTS + "bcm2710-rpi-zero-2-w.dts"  # __overrides__: act_led_gpio/activelow/trigger only
DTS_PI4 = DTS + "bcm2711-rpi-4-b.dts"  # act_led_*, pwr_led_*, eth_led0/1
DTS_PI5 = DTS + "bcm2712-rpi-5-b.dts"  # act_led_*, pwr_led_*, rtc_bbat_vchg; no watchdog, no eth_led
DTSI_270X = DTS + "bcm270x-rpi.dtsi"  # watchdog = <&watchdog>,"status" (BCM2835..2711)
STOCK_SRC = "https://github.com/RPi-Distro/pi-gen/blob/bookworm/stage1/00-boot-files/files/config.txt"
I2C = "https://github.com/raspberrypi/linux/blob/rpi-6.6.y/drivers/media/i2c/"

BOARDS = ("pi02w", "pi4", "pi5")
ALL = frozenset(BOARDS)
#: conditional filter -> the boards (of ours) that apply the lines after it (CONDITIONAL). [pi02] also
#: matches [pi0]/[pi0w]; [pi4] is 4B/400/CM4; [cm4]/[cm5] match none of the three boards tested here.
FILTERS = {"all": ALL, "pi0": {"pi02w"}, "pi0w": {"pi02w"}, "pi02": {"pi02w"}, "pi4": {"pi4"},
           "pi5": {"pi5"}, "cm4": frozenset(), "cm5": frozenset(), "none": frozenset()}
#: cores per board: Cortex-A53 x4 (Zero 2 W), A72 x4 (Pi 4), A76 x4 (Pi 5), from the product briefs at
#: https://www.raspberrypi.com/documentation/computers/raspberry-pi.html#processors
CORES = {"pi02w": 4, "pi4": 4, "pi5": 4}

_BOOL = r"on|off|true|false|yes|no|1|0"
_TRIGGER = r"none|default-on|heartbeat|mmc0|mmc|actpwr|timer|cpu|cpu0|input|panic"


@dataclass(frozen=True)
class Known:
    """A documented setting: the boards it exists on, a regex its value must match, where it is documented."""

    boards: frozenset[str]
    value: str
    source: str


#: plain config.txt keys (those in our fragments and in the stock Raspberry Pi OS file)
KEYS = {
    "camera_auto_detect": Known(ALL, "0|1", CONFIG_TXT + "#camera_auto_detect"),
    "display_auto_detect": Known(ALL, "0|1", CONFIG_TXT + "#display_auto_detect"),
    "auto_initramfs": Known(ALL, "0|1", CONFIG_TXT + "#auto_initramfs"),
    "max_framebuffers": Known(ALL, r"\d+", CONFIG_TXT + "#max_framebuffers"),
    "disable_fw_kms_setup": Known(ALL, "0|1", CONFIG_TXT + "#disable_fw_kms_setup"),
    "arm_64bit": Known(ALL, "0|1", CONFIG_TXT + "#arm_64bit"),
    "disable_overscan": Known(ALL, "0|1", CONFIG_TXT + "#disable_overscan"),
    "arm_boost": Known(ALL, "0|1", CONFIG_TXT + "#arm_boost"),  # acts on Pi 4B/400 only, harmless elsewhere
    "otg_mode": Known(ALL, "0|1", CONFIG_TXT + "#otg_mode-raspberry-pi-4-only"),
}
#: base device-tree parameters (dtparam= with no overlay loaded before it)
DTPARAMS = {
    "audio": Known(ALL, _BOOL, OVERLAYS + " (base DTB)"),
    "act_led_trigger": Known(ALL, _TRIGGER, f"{DTS_PI02}, {DTS_PI4}, {DTS_PI5}"),
    "act_led_activelow": Known(ALL, _BOOL, f"{DTS_PI02}, {DTS_PI4}, {DTS_PI5}"),
    "pwr_led_trigger": Known(frozenset({"pi4", "pi5"}), _TRIGGER, f"{DTS_PI4}, {DTS_PI5}"),
    "pwr_led_activelow": Known(frozenset({"pi4", "pi5"}), _BOOL, f"{DTS_PI4}, {DTS_PI5}"),
    "eth_led0": Known(frozenset({"pi4"}), r"[0-9]", f"{DTS_PI4}; {OVERLAYS} (4 = off on Pi 4)"),
    "eth_led1": Known(frozenset({"pi4"}), r"[0-9]", f"{DTS_PI4}; {OVERLAYS} (4 = off on Pi 4)"),
    "watchdog": Known(frozenset({"pi02w", "pi4"}), _BOOL, f"{DTSI_270X}; {OVERLAYS} (base DTB)"),
    "rtc_bbat_vchg": Known(frozenset({"pi5"}), r"0|3000000",
                           "https://www.raspberrypi.com/documentation/computers/raspberry-pi.html"
                           "#add-a-backup-battery"),
}


@dataclass(frozen=True)
class Overlay:
    """A documented overlay: the boards it is for, its parameters (name -> value regex), the source."""

    boards: frozenset[str]
    params: dict[str, str]
    source: str
    family: str = ""  # overlays that must not both be loaded (one display driver)


_CMA = {f"cma-{n}": "" for n in (512, 448, 384, 320, 256, 192, 128, 96, 64)} | {"cma-default": ""}
_KMS = _CMA | {"audio": _BOOL, "noaudio": "", "composite": "", "nohdmi": ""}
_KMS_PI4 = _KMS | {"audio1": _BOOL, "nohdmi0": "", "nohdmi1": ""}
_SENSOR = {"cam0": "", "rotation": r"0|180", "orientation": r"0|180"}
OVERLAYS_KNOWN = {
    "vc4-kms-v3d": Overlay(ALL, _KMS, OVERLAYS + " (Name: vc4-kms-v3d)", "kms"),
    "vc4-kms-v3d-pi4": Overlay(frozenset({"pi4"}), _KMS_PI4, OVERLAYS + " (Name: vc4-kms-v3d-pi4)", "kms"),
    "vc4-kms-v3d-pi5": Overlay(frozenset({"pi5"}), _KMS_PI4, OVERLAYS + " (Name: vc4-kms-v3d-pi5)", "kms"),
    "disable-bt": Overlay(frozenset({"pi02w", "pi4"}), {}, OVERLAYS + " (Name: disable-bt)"),
    "disable-bt-pi5": Overlay(frozenset({"pi5"}), {}, OVERLAYS + " (Name: disable-bt-pi5)"),
    "disable-wifi": Overlay(frozenset({"pi02w", "pi4"}), {}, OVERLAYS + " (Name: disable-wifi)"),
    "disable-wifi-pi5": Overlay(frozenset({"pi5"}), {}, OVERLAYS + " (Name: disable-wifi-pi5)"),
    "i2c-rtc": Overlay(ALL, {"ds3231": "", "ds1307": "", "pcf8523": "", "pcf85063a": "", "addr": "0x[0-9a-f]+"},
                       OVERLAYS + " (Name: i2c-rtc)"),
    "dwc2": Overlay(ALL, {"dr_mode": "host|peripheral|otg"}, OVERLAYS + " (Name: dwc2)"),
    **{sensor: Overlay(ALL, _SENSOR, f"{CAMERA_CFG}; {OVERLAYS} (Name: {sensor}; cam0 = the CAM0 connector)")
       for sensor in ("ov5647", "imx219", "imx708", "imx477")},
}
#: the cam0 parameter only makes sense where there are two connectors (CAMERA_CFG)
CAM0_BOARDS = frozenset({"pi5"})

#: the modes each sensor reads out (width, height): full resolution first. CAMERA_SPEC's "Sensor resolution"
#: and "Video modes" rows, and the kernel drivers' mode tables.
SENSOR_MODES = {
    "ov5647": ([(2592, 1944), (1920, 1080), (1296, 972), (640, 480)], I2C + "ov5647.c"),
    "imx219": ([(3280, 2464), (1920, 1080), (1640, 1232), (640, 480)], I2C + "imx219.c"),
    "imx708": ([(4608, 2592), (2304, 1296), (1536, 864)], I2C + "imx708.c"),
    "imx477": ([(4056, 3040), (2028, 1520), (2028, 1080), (1332, 990)], I2C + "imx477.c"),
}

#: Raspberry Pi OS Bookworm's stock /boot/firmware/config.txt (STOCK_SRC), which the fragments are appended to.
STOCK = """\
dtparam=audio=on
camera_auto_detect=1
display_auto_detect=1
auto_initramfs=1
dtoverlay=vc4-kms-v3d
max_framebuffers=2
disable_fw_kms_setup=1
arm_64bit=1
disable_overscan=1
arm_boost=1
[cm4]
otg_mode=1
[cm5]
dtoverlay=dwc2,dr_mode=host
[all]
"""
#: the two stock lines README.md says to comment out before appending
STOCK_EDITED = STOCK.replace("camera_auto_detect=1", "#camera_auto_detect=1").replace(
    "dtoverlay=vc4-kms-v3d\n", "#dtoverlay=vc4-kms-v3d\n")


# --- a config.txt reader that knows what the firmware does with each line ----------------------------


def check_config_txt(text: str, board: str) -> list[str]:
    """Problems in ``text`` as firmware on ``board`` reads it: unknown or misplaced keys, overlays and
    parameters, values that do not match, lines over 98 characters, and settings given twice."""
    problems: list[str] = []
    active: frozenset[str] = ALL
    overlay: str | None = None  # a dtparam after a dtoverlay line is that overlay's parameter
    seen: dict[str, tuple[int, str]] = {}

    def setting(number: int, key: str, value: str) -> None:
        if key in seen and seen[key][1] != value:
            problems.append(f"line {number}: {key} set again ({seen[key][1]!r} on line {seen[key][0]}, "
                            f"now {value!r})")
        seen.setdefault(key, (number, value))

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if len(raw) > 98:
            problems.append(f"line {number}: longer than 98 characters (the firmware ignores the rest)")
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            name = line.strip("[]")
            if name not in FILTERS:
                problems.append(f"line {number}: unknown conditional filter {line}")
                continue
            active = frozenset(FILTERS[name])
            continue
        key, sep, value = line.partition("=")
        if not sep:
            problems.append(f"line {number}: not key=value: {line!r}")
            continue
        applies = board in active
        if key == "dtoverlay":
            if not value:
                overlay = None if applies else overlay
                continue
            name, *params = value.split(",")
            known = OVERLAYS_KNOWN.get(name)
            if known is None:
                problems.append(f"line {number}: unknown overlay {name!r}")
                continue
            for param in params:
                pname, _, pvalue = param.partition("=")
                if pname not in known.params or not re.fullmatch(known.params[pname] or "", pvalue):
                    problems.append(f"line {number}: overlay {name} has no parameter {param!r}")
                if pname == "cam0" and applies and board not in CAM0_BOARDS:
                    problems.append(f"line {number}: {board} has one camera connector: no cam0")
            if applies:
                if board not in known.boards:
                    problems.append(f"line {number}: overlay {name} is not for {board}")
                family = known.family or name
                if f"overlay:{family}" in seen:
                    problems.append(f"line {number}: overlay {name} loaded again (first on line "
                                    f"{seen[f'overlay:{family}'][0]})")
                seen.setdefault(f"overlay:{family}", (number, name))
                overlay = name
            continue
        if key == "dtparam":
            for param in value.split(","):
                pname, _, pvalue = param.partition("=")
                if overlay is not None and applies:
                    pattern = OVERLAYS_KNOWN[overlay].params.get(pname)
                    if pattern is None or not re.fullmatch(pattern, pvalue):
                        problems.append(f"line {number}: dtparam {param!r} lands on overlay {overlay} "
                                        "(end its parameters with an empty dtoverlay= line)")
                    continue
                known_param = DTPARAMS.get(pname)
                if known_param is None or not re.fullmatch(known_param.value, pvalue):
                    problems.append(f"line {number}: unknown dtparam {param!r}")
                elif applies and board not in known_param.boards:
                    problems.append(f"line {number}: dtparam {pname} does not exist on {board}")
                elif applies:
                    setting(number, f"dtparam:{pname}", pvalue)
            continue
        known_key = KEYS.get(key)
        if known_key is None or not re.fullmatch(known_key.value, value):
            problems.append(f"line {number}: unknown key or value {line!r}")
        elif applies:
            setting(number, key, value)
    return problems


def fragments(folder: str) -> list[Path]:
    return sorted((FW / folder).glob("*.txt"))


def read(relative: str) -> str:
    return (FW / relative).read_text(encoding="utf-8")


# --- the checker itself catches what it must ---------------------------------------------------------


@pytest.mark.parametrize(("text", "board", "expected"), [
    ("dtparam=act_led_trigger=none\n", "pi4", None),
    ("hdmi_blanking=1\n", "pi4", "unknown key"),                     # legacy, not used on Bookworm
    ("dtoverlay=disable-bluetooth\n", "pi4", "unknown overlay"),
    ("dtoverlay=disable-bt\n", "pi5", "not for pi5"),                  # the Pi 5 needs disable-bt-pi5
    ("dtparam=watchdog=on\n", "pi5", "does not exist on pi5"),
    ("dtparam=pwr_led_trigger=none\n", "pi02w", "does not exist on pi02w"),
    ("dtoverlay=imx708,cam0\n", "pi4", "no cam0"),
    ("dtoverlay=vc4-kms-v3d\ndtparam=watchdog=on\n", "pi4", "lands on overlay"),
    ("dtoverlay=vc4-kms-v3d\ndtoverlay=\ndtparam=watchdog=on\n", "pi4", None),
    ("camera_auto_detect=1\ncamera_auto_detect=0\n", "pi4", "set again"),
    ("dtoverlay=vc4-kms-v3d\ndtoverlay=vc4-kms-v3d-pi4,nohdmi\n", "pi4", "loaded again"),
    ("[pi5]\ndtoverlay=disable-bt-pi5\n[pi4]\ndtoverlay=disable-bt\n[all]\n", "pi4", None),
    ("[pi3]\ndtparam=watchdog=on\n", "pi4", "unknown conditional filter"),
    ("dtparam=watchdog=on # on\n", "pi4", "unknown dtparam"),          # no inline comments in config.txt
    ("dtoverlay=imx708,cam0,rotation=90\n", "pi5", "no parameter"),
    ("dtoverlay=" + "x" * 100 + "\n", "pi4", "longer than 98"),
])
def test_checker_flags_what_the_firmware_would_get_wrong(text, board, expected):
    problems = check_config_txt(text, board)
    if expected is None:
        assert problems == []
    else:
        assert any(expected in problem for problem in problems), problems


def test_every_known_entry_names_its_source():
    for table in (KEYS, DTPARAMS, OVERLAYS_KNOWN):
        for name, entry in table.items():
            assert entry.source.startswith("https://"), name
    for name, (_, source) in SENSOR_MODES.items():
        assert source.startswith("https://"), name


# --- the fragments -----------------------------------------------------------------------------------


def test_the_folders_hold_what_the_readme_promises():
    assert [p.stem for p in fragments("boards")] == sorted(BOARDS)
    cameras = sorted(p.stem for p in fragments("cameras"))
    assert cameras == sorted([*SENSOR_MODES, *(f"{s}-cam0" for s in SENSOR_MODES)])
    assert (FW / "README.md").is_file()


@pytest.mark.parametrize("path", [*fragments("boards"), *fragments("cameras"), *fragments("extras")],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("board", BOARDS)
def test_each_fragment_is_documented_config_txt(path, board):
    text = path.read_text(encoding="utf-8")
    if path.name.endswith("-cam0.txt") and board not in CAM0_BOARDS:
        assert any("no cam0" in p for p in check_config_txt(text, board))
        return
    assert check_config_txt(text, board) == []
    assert text.endswith("\n") and "\t" not in text


@pytest.mark.parametrize("board", BOARDS)
def test_a_board_fragment_applies_to_its_board_only_and_resets_the_filter(board):
    text = read(f"boards/{board}.txt")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    first, last = lines[0].strip("[]"), lines[-1]
    assert FILTERS[first] == {board} and last == "[all]"
    assert lines[1] == "dtoverlay=", "the base dtparams must not land on the stock file's last overlay"
    others = [b for b in BOARDS if b != board]
    for other in others:  # on another board, every line is skipped
        assert check_config_txt(STOCK + text, other) == check_config_txt(STOCK, other)


@pytest.mark.parametrize("board", BOARDS)
def test_a_board_fragment_turns_off_hdmi_leds_and_bluetooth(board):
    text = read(f"boards/{board}.txt")
    assert re.search(r"^dtoverlay=vc4-kms-v3d(-pi4|-pi5)?,nohdmi$", text, re.MULTILINE)
    assert "dtparam=act_led_trigger=none" in text
    assert re.search(r"^dtoverlay=disable-bt(-pi5)?$", text, re.MULTILINE)
    assert ("dtparam=watchdog=on" in text) == (board != "pi5")


@pytest.mark.parametrize("board", BOARDS)
@pytest.mark.parametrize("sensor", SENSOR_MODES)
def test_board_and_camera_appended_to_the_edited_stock_file_conflict_with_nothing(board, sensor):
    camera = f"cameras/{sensor}{'-cam0' if board in CAM0_BOARDS else ''}.txt"
    extras = "".join(read(f"extras/{p.name}") for p in fragments("extras"))
    text = STOCK_EDITED + read(f"boards/{board}.txt") + read(camera) + extras
    assert check_config_txt(text, board) == []


def test_appending_to_the_unedited_stock_file_is_caught():
    problems = check_config_txt(STOCK + read("boards/pi4.txt") + read("cameras/imx708.txt"), "pi4")
    assert any("camera_auto_detect set again" in p for p in problems)
    assert any("loaded again" in p for p in problems)


# --- the profiles ------------------------------------------------------------------------------------

_BASE = {
    "device": {"id": "trap-01", "state_dir": "/tmp/wildedge-test-unused"},
    "camera": {"type": "picamera2"},
    "trigger": {"type": "motion"},
    "detector": {"model": "/tmp/detector.onnx"},
}


def with_profile(name: str, **sections) -> dict:
    data = {key: dict(value) for key, value in _BASE.items()}
    data["device"]["profile"] = name
    for key, value in sections.items():
        data[key] = value
    return data


def test_profiles_cover_every_board_and_camera():
    assert list_profiles() == sorted(f"{b}-{s}" for b in BOARDS for s in SENSOR_MODES)
    assert set(BOARD_MODELS) == set(BOARDS)


@pytest.mark.parametrize("name", list_profiles())
def test_each_profile_is_a_valid_partial_config(name):
    profile = load_profile(name)
    merged = apply_profile(with_profile(name))
    merged["device"].pop("profile")  # the schema's [device] profile key is wired separately
    config = config_from_dict(merged)
    assert (config.camera.width, config.camera.height) == (
        profile.sections["camera"]["width"], profile.sections["camera"]["height"])
    assert config.detector.threads == profile.sections["detector"]["threads"]
    assert set(profile.sections) <= {"camera", "detector"}


@pytest.mark.parametrize("name", list_profiles())
def test_each_profile_fits_its_board_and_sensor(name):
    profile = load_profile(name)
    assert name == f"{profile.board}-{profile.sensor}"
    camera, detector = profile.sections["camera"], profile.sections["detector"]
    assert 1 <= detector["threads"] <= CORES[profile.board]
    modes, _ = SENSOR_MODES[profile.sensor]
    size = (camera["width"], camera["height"])
    assert size in modes, f"{size} is not a mode of {profile.sensor}: {modes}"
    if profile.board == "pi02w":  # 512 MB: never the full-resolution mode
        assert size != modes[0]
    lores = (camera["lores_width"], camera["lores_height"])
    assert lores[0] <= size[0] and lores[1] <= size[1] and lores[0] % 2 == 0 and lores[1] % 2 == 0
    assert abs(lores[0] / lores[1] - size[0] / size[1]) < 0.02, "motion stream aspect differs from stills"


@pytest.mark.parametrize("name", list_profiles())
def test_each_profile_names_real_firmware_a_real_model_and_arm_int8_types(name):
    profile = load_profile(name)
    assert profile.firmware[0] == f"boards/{profile.board}.txt"
    assert profile.firmware[1] in (f"cameras/{profile.sensor}.txt", f"cameras/{profile.sensor}-cam0.txt")
    for relative in profile.firmware:
        assert (FW / relative).is_file(), relative
    registry = tomllib.loads((ROOT / "edge" / "data" / "models.toml").read_text(encoding="utf-8"))["models"]
    assert profile.model in registry
    assert list(profile.input_size) == registry[profile.model]["input_size"]
    assert profile.int8_types == "u8s8"  # onnxruntime's exact fast path on ARM64 (docs/quantization.md)


def test_the_config_wins_over_the_profile():
    data = with_profile("pi4-imx708", camera={"type": "picamera2", "width": 1536, "height": 864},
                        detector={"model": "/tmp/d.onnx", "threads": 1})
    merged = apply_profile(data)
    assert merged["camera"]["width"] == 1536 and merged["camera"]["height"] == 864
    assert merged["camera"]["lores_height"] == 180  # filled in from the profile
    assert merged["detector"] == {"model": "/tmp/d.onnx", "threads": 1}
    assert data["camera"] == {"type": "picamera2", "width": 1536, "height": 864}, "input changed"


def test_a_profile_camera_does_not_apply_to_another_kind_of_camera():
    data = with_profile("pi5-imx477", camera={"type": "folder", "path": "/tmp/photos"}, trigger=None)
    data.pop("trigger")
    merged = apply_profile(data)
    assert merged["camera"] == {"type": "folder", "path": "/tmp/photos"}
    assert merged["detector"]["threads"] == 3
    merged["device"].pop("profile")
    assert config_from_dict(merged).camera.type == "folder"


def test_a_config_without_a_profile_is_returned_unchanged():
    data = {key: dict(value) for key, value in _BASE.items()}
    assert apply_profile(data) == data


def test_an_invalid_merged_value_is_reported_at_its_key(tmp_path):
    (tmp_path / "bad.toml").write_text(
        (PROFILES / "pi4-imx708.toml").read_text(encoding="utf-8").replace("threads = 3", "threads = 0"))
    merged = merge_profile(_BASE, load_profile("bad", [tmp_path]))
    with pytest.raises(InvalidConfigError) as err:
        config_from_dict(merged)
    assert err.value.problems[0].startswith("detector.threads: must be >= 1")


@pytest.mark.parametrize(("name", "message"), [
    ("pi4-imx78", "did you mean 'pi4-imx708'?"),
    ("Pi4 IMX708", "invalid profile name"),
    ("nothing-like-it", "known: pi02w-imx219"),
])
def test_an_unknown_profile_says_what_exists(name, message):
    with pytest.raises(ProfileError, match=re.escape(message)):
        apply_profile(with_profile(name))


def test_a_profile_name_must_be_a_string():
    with pytest.raises(ProfileError, match="in quotes"):
        apply_profile(with_profile(3))  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "message"), [
    ("[profile]\nboard = 'pi4'\n", "profile.sensor missing"),
    ("[device]\nid = 'x'\n", "only [profile] and [camera], [detector]"),
    ("[profile\n", "cannot be read"),
])
def test_a_broken_profile_file_is_one_clear_line(tmp_path, text, message):
    (tmp_path / "broken.toml").write_text(text)
    with pytest.raises(ProfileError, match=re.escape(message)):
        load_profile("broken", [tmp_path])


def test_profiles_are_found_in_the_installed_data_folder(tmp_path, monkeypatch):
    import sysconfig

    installed = tmp_path / "share" / "wildedge" / "firmware_configs" / "profiles"
    installed.mkdir(parents=True)
    (installed / "only-here.toml").write_text((PROFILES / "pi5-imx708.toml").read_text(encoding="utf-8"))
    real = sysconfig.get_path
    monkeypatch.setattr(sysconfig, "get_path",
                        lambda name, scheme=None, *a, **k: str(tmp_path) if name == "data" else real(name, scheme))
    assert "only-here" in list_profiles()
    assert load_profile("only-here").path == installed / "only-here.toml"


@pytest.mark.parametrize(("model", "expected"), [
    ("Raspberry Pi 4 Model B Rev 1.5", None),
    ("Raspberry Pi 400 Rev 1.0", None),
    ("Raspberry Pi 5 Model B Rev 1.0", "is for a Raspberry Pi 4 Model B, but this is a Raspberry Pi 5"),
])
def test_check_can_tell_a_profile_for_another_board(tmp_path, model, expected):
    model_file = tmp_path / "model"
    model_file.write_bytes(model.encode() + b"\0")
    problem = board_problem(load_profile("pi4-imx708"), model_file)
    assert problem is None if expected is None else expected in problem
    assert board_problem(load_profile("pi4-imx708"), tmp_path / "absent") is None


# --- the wiring in edge/config (DeviceConfig.profile + apply_profile in config_from_dict) ------------


def _wired() -> bool:
    from edge.config.models import DeviceConfig

    return "profile" in DeviceConfig.model_fields


_CONFIG = """\
[device]
id = "trap-01"
state_dir = "{state}"
profile = "{profile}"

[camera]
type = "picamera2"

[trigger]
type = "motion"

[detector]
model = "/tmp/detector.onnx"
"""


@pytest.mark.skipif(not _wired(), reason="not wired yet: DeviceConfig.profile and apply_profile in "
                                         "config_from_dict (see edge/config/profiles.py)")
def test_load_config_applies_the_profile_named_in_device(tmp_path):
    from edge.config import load_config

    path = tmp_path / "wildedge.toml"
    path.write_text(_CONFIG.format(state=tmp_path, profile="pi4-imx708"))
    cfg = load_config(path)
    assert cfg.device.profile == "pi4-imx708"
    assert (cfg.camera.width, cfg.camera.height, cfg.camera.lores_height) == (4608, 2592, 180)
    assert cfg.detector.threads == 3
    cfg = load_config(path, overrides=["camera.width=2304", "camera.height=1296"])
    assert (cfg.camera.width, cfg.camera.height) == (2304, 1296)  # --set wins over the profile
    cfg = load_config(path, overrides=["device.profile=pi02w-imx708"])
    assert (cfg.camera.width, cfg.detector.threads) == (2304, 3)
    path.write_text(_CONFIG.format(state=tmp_path, profile="pi4-imx78"))
    with pytest.raises(InvalidConfigError) as err:
        load_config(path)
    assert err.value.problems == ["device.profile: unknown profile 'pi4-imx78' (did you mean 'pi4-imx708'?)"]


@pytest.mark.assets
def test_check_names_the_profile_and_warns_on_another_board(tmp_path, assets, stamped):
    import shutil
    import subprocess

    from daemon_helpers import WILDEDGE, folder_config

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sorted((assets / "camera_traps_lila" / "images").iterdir())[0], photos)
    config = folder_config(tmp_path / "trap.toml", state=tmp_path / "state", photos=photos,
                           model=stamped["fastestdet"], device='profile = "pi4-imx708"')
    done = subprocess.run([*WILDEDGE, "check", "--config", str(config)], capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stdout.splitlines() if " profile " in f" {line} "]
    assert lines and lines[0].startswith("ok") and "pi4-imx708" in lines[0], done.stdout + done.stderr
    assert done.returncode == 0, done.stdout + done.stderr  # a profile never makes check fail by itself
    bad = config.read_text().replace('"pi4-imx708"', '"pi9-imx999"')
    config.write_text(bad)
    refused = subprocess.run([*WILDEDGE, "check", "--config", str(config)], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and "device.profile:" in refused.stderr and "Traceback" not in refused.stderr

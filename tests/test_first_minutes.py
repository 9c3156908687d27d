"""A new user's first ten minutes (issue 12, items 9-14): every mistake ends in one ``error:`` line that
names the file, option or key and says what to do; never a traceback, never work thrown away.

Most tests run the real ``wildedge`` entry point in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from daemon_helpers import WILDEDGE

from edge.batch import checkpoint
from edge.batch.sources import nothing_found
from edge.config import InvalidConfigError, config_from_dict
from edge.errors import WildedgeError


def _cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*WILDEDGE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _one_error(result: subprocess.CompletedProcess, *needles: str, code: int | None = None) -> str:
    """The single ``error:`` line of a failed command (stderr holds nothing else), checked for needles."""
    shown = (result.returncode, result.stdout, result.stderr)
    assert result.returncode != 0, shown
    if code is not None:
        assert result.returncode == code, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    for needle in needles:
        assert needle in lines[0], (needle, shown)
    return lines[0]


def _config(path: Path, tmp: Path, **sections: str) -> Path:
    text = {
        "device": f'id = "trap-01"\nstate_dir = "{tmp / "state"}"',
        "camera": f'type = "folder"\npath = "{tmp}"',
        "detector": f'model = "{tmp / "absent.onnx"}"',
    }
    text.update(sections)
    path.write_text("\n".join(f"[{name}]\n{body}\n" for name, body in text.items()), encoding="utf-8")
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "IMG_0001.JPG").write_bytes(b"\xff\xd8 not really a photo")
    return folder


# -- item 11: output paths are checked before inference ----------------------------------------------

@pytest.mark.parametrize("kind", ["folder", "empty", "under a file"])
def test_a_bad_output_path_fails_before_any_model_is_loaded(tmp_path, photos, kind):
    target = {"folder": str(tmp_path / "out"), "empty": "", "under a file": str(photos / "IMG_0001.JPG" / "r.json")}
    (tmp_path / "out").mkdir()
    # The model does not exist: the error is about -o, so the output was checked first.
    result = _cli("detect", str(photos), "-m", str(tmp_path / "absent.onnx"), "-o", target[kind])
    line = _one_error(result, "-o", code=2)
    assert "absent.onnx" not in line
    assert {"folder": "is a folder", "empty": "names no file", "under a file": "is a file"}[kind] in line
    assert not list(tmp_path.rglob("*.checkpoint.jsonl"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a mode-0555 folder; the probe is tested below")
def test_a_read_only_output_folder_fails_before_inference(tmp_path, photos):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = _cli("detect", str(photos), "-m", str(tmp_path / "absent.onnx"), "-o", str(folder / "r.json"))
    finally:
        folder.chmod(0o755)
    _one_error(result, "cannot write in", str(folder), code=2)


def test_the_output_probe_catches_what_os_access_misses(tmp_path, monkeypatch):
    def refuse(**_kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint.tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(checkpoint.OutputPathError, match=r"cannot write in .* \(Permission denied\); choose"):
        checkpoint.check_output(tmp_path / "new" / "r.json")
    assert not (tmp_path / "new").exists()  # nothing is created by the check


# -- item 10: check refuses exactly what run refuses --------------------------------------------------

@pytest.mark.parametrize("interval", ["25h", "2d", "86401"])
def test_an_interval_run_would_refuse_fails_check_and_run_alike(tmp_path, interval):
    cfg = _config(tmp_path / "c.toml", tmp_path, trigger=f'type = "timelapse"\ninterval = "{interval}"')
    lines = {command: _one_error(_cli(command, "--config", str(cfg)), "trigger.interval", str(cfg), code=2)
             for command in ("check", "run")}
    assert lines["check"] == lines["run"]
    assert "at most 1d" in lines["check"]


def test_a_whole_day_is_the_longest_interval():
    base = {"device": {"id": "x"}, "camera": {"type": "folder", "path": "/tmp"}, "detector": {"model": "m.onnx"}}
    assert config_from_dict({**base, "trigger": {"type": "timelapse", "interval": "24h"}}).trigger.interval.days == 1


@pytest.mark.parametrize(("override", "message"), [
    ("storage.max_age=1000000d", "storage.max_age: must be at most 36500d (100 years)"),
    ("storage.max_age=99999999999d", "storage.max_age: must be at most 36500d (100 years)"),
    ("health.interval=" + "9" * 400, "health.interval: must be at most 36500d"),
    ("storage.min_free=2000000TB", "storage.min_free: must be at most 1000000TB"),
    ("storage.min_free=" + "9" * 400 + "TB", "storage.min_free: must be at most 1000000TB"),
])
def test_absurd_durations_and_sizes_are_config_errors_not_crashes(override, message):
    data = {"device": {"id": "x"}, "camera": {"type": "folder", "path": "/tmp"}, "detector": {"model": "m.onnx"}}
    with pytest.raises(InvalidConfigError) as info:
        config_from_dict(data, overrides=[override])
    (problem,) = info.value.problems
    assert problem.startswith(message) and len(problem) < 120
    assert config_from_dict(data, overrides=["storage.max_age=36500d"]).storage.max_age.days == 36500


@pytest.mark.parametrize(("key", "value"), [
    ("camera.recursive", '"yes"'), ("camera.recursive", "1"), ("device.rtc", '"true"'), ("mqtt.health", '"off"'),
])
def test_yes_no_keys_take_only_true_or_false(key, value):
    data = {"device": {"id": "x"}, "camera": {"type": "folder", "path": "/tmp"}, "detector": {"model": "m.onnx"},
            "mqtt": {"url": "mqtt://localhost"}}
    with pytest.raises(InvalidConfigError) as info:
        config_from_dict(data, overrides=[f"{key}={value}"])
    assert info.value.problems == [f"{key}: must be true or false (got {json.loads(value)!r})"]


# -- item 12: messages that name the file and the option ------------------------------------------------

def test_not_an_onnx_file_names_the_file(tmp_path, photos):
    junk = tmp_path / "classifier.onnx"
    junk.write_bytes(bytes(range(7, 250)) * 8)
    line = _one_error(_cli("model", "show", str(junk)), code=2)
    assert line.startswith(f"error: not an ONNX file: {junk} (")


def test_a_heic_only_folder_says_what_was_skipped(tmp_path):
    folder = tmp_path / "iphone"
    folder.mkdir()
    for name in ("IMG_1.HEIC", "IMG_2.heic", "notes.txt"):
        (folder / name).write_bytes(b"x")
    line = _one_error(_cli("detect", str(folder), "-m", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "r.json")),
                      code=2)
    assert "skipped 2 .heic files (HEIC" in line and "convert them to JPEG" in line
    assert "no photos or videos found" in nothing_found([tmp_path / "photos-absent"])


def test_check_warns_about_photos_a_folder_camera_cannot_read(tmp_path):
    folder = tmp_path / "card"
    (folder / "100RECNX").mkdir(parents=True)
    (folder / "100RECNX" / "IMG_1.HEIC").write_bytes(b"x")
    cfg = _config(tmp_path / "c.toml", folder, camera=f'type = "folder"\npath = "{folder}"')
    result = _cli("check", "--config", str(cfg))
    assert "Traceback" not in result.stderr
    assert any(line.startswith("warn camera      skipped 1 .heic file (HEIC") for line in result.stdout.splitlines()), \
        result.stdout


def test_resume_with_other_settings_names_the_options(tmp_path):
    ckpt = tmp_path / "r.json.checkpoint.jsonl"
    old = {"detector": "a" * 64, "conf": 0.25, "iou": 0.45, "tile": None, "top_k": None}
    ckpt.write_text(json.dumps({"wildedge_checkpoint": 1, "settings": old}) + "\n")
    with pytest.raises(WildedgeError) as info:
        checkpoint.load(ckpt, {**old, "conf": 0.3, "tile": 640})
    message = str(info.value)
    assert "--conf (0.25 then, 0.3 now), --tile (null then, 640 now)" in message
    assert "{" not in message and "delete it to start over" in message


# -- usage errors: one line through the real entry point -------------------------------------------------

def test_bad_invocations_each_end_in_one_line(tmp_path, photos):
    bad_config = _config(tmp_path / "bad.toml", tmp_path, camera=f'type = "folder"\npath = "{tmp_path}"\n'
                                                                    'recursive = "yes"')
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01hello")
    model = str(tmp_path / "absent.onnx")
    cases = [
        (["detect"], "'PATH'"),
        (["detect", str(photos), "-m", model, "-o", "r.json", "--bogus"], "--bogus"),
        (["detect", str(photos), "-m", model, "-o", "r.json", "--conf", "high"], "--conf"),
        (["detect", str(photos), "-m", model, "-o", "r.json", "--conf", "2"], "--conf"),
        (["detect", str(photos), "-m", model, "-o", "r.json", "--video-every", "0"], "--video-every"),
        (["detect", str(photos), "-o", "r.json"], "--model"),
        (["detect", str(tmp_path / "nowhere"), "-m", model, "-o", "r.json"], "nowhere"),
        (["detect", str(photos), "-m", model, "-o", str(tmp_path / "r.json"), "-v"], "absent.onnx"),
        (["detect", str(photos), "-m", str(junk), "-o", str(tmp_path / "r.json")], str(junk)),
        (["frobnicate"], "frobnicate"),
        (["model", "show", str(tmp_path / "absent.onnx")], "absent.onnx"),
        (["model", "stamp", str(junk), "-o", "x.onnx", "--preset", "nope", "--labels", "l.txt"], "nope"),
        (["model", "pull", "no-such-model"], "no-such-model"),
        (["check", "--config", str(tmp_path / "absent.toml")], "absent.toml"),
        (["check", "--config", str(bad_config)], "camera.recursive"),
        (["run", "--config", str(bad_config), "-v"], "camera.recursive"),
        (["results", "--config", str(tmp_path / "absent.toml")], "absent.toml"),
        (["check", "--config", str(bad_config), "--set", "nonsense"], "--set"),
    ]
    env = {"WILDEDGE_CACHE": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda case: _cli(*case[0], env=env), cases))
    for (args, needle), result in zip(cases, results):
        line = _one_error(result, needle)
        assert len(line) < 400, (args, line)


def test_verbose_after_the_command_is_accepted_everywhere():
    for command in (["detect"], ["check"], ["results"], ["model", "show"], ["model", "pull"], ["trigger"]):
        result = _cli(*command, "--help")
        assert result.returncode == 0 and "-v, --verbose" in result.stdout, (command, result.stdout)
        assert "<bool>" not in result.stdout, command


# -- item 13: one INFO line per event at default verbosity -----------------------------------------------

def test_the_daemon_logs_one_line_per_event_and_none_for_empty_frames(tmp_path, stamped, assets):
    import cv2
    import numpy as np

    photos = tmp_path / "photos"
    photos.mkdir()
    zebra = assets / "coco_val2017_animal_samples" / "000000001818.jpg"
    (photos / "IMG_0001.JPG").write_bytes(zebra.read_bytes())
    for index in (2, 3, 4):  # empty frames: a grey night
        cv2.imwrite(str(photos / f"IMG_000{index}.JPG"), np.full((480, 640, 3), 90, np.uint8))
    cfg = _config(tmp_path / "c.toml", photos, camera=f'type = "folder"\npath = "{photos}"',
                  detector=f'model = "{stamped["yolox"]}"')
    result = _cli("run", "--config", str(cfg), "--once")
    assert result.returncode == 0, result.stderr
    events = [line for line in result.stderr.splitlines() if " INFO edge.daemon: event " in line]
    assert len(events) == 1, result.stderr
    assert events[0].endswith("in IMG_0001.JPG") and ": 1 zebra (0." in events[0]


def test_the_event_line_names_the_classes_the_verdict_and_the_trigger():
    from types import SimpleNamespace

    from edge.logsetup import event_line

    summary = {"classes": [{"label": "bird", "count": 1, "best_score": 0.4},
                           {"label": "zebra", "count": 2, "best_score": 0.91}],
               "classification": {"label": "plains zebra", "mean_prob": 0.8}}
    event = SimpleNamespace(uid="e1", summary=summary, best_frame_uid="f1", trigger="timelapse")
    frame = SimpleNamespace(record=SimpleNamespace(uid="f1", source=None))
    assert event_line(event, [frame]) == ("event e1: 2 zebra (0.91), 1 bird (0.40); classified plains zebra (0.80) "
                                          "(timelapse trigger)")


# -- item 9: an offline first run from a local ONNX file, by name -------------------------------------------

def test_an_offline_first_run_works_from_a_local_file_by_name(tmp_path, assets, photos):
    offline = {"WILDEDGE_CACHE": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
               "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    (photos / "IMG_0002.JPG").write_bytes((assets / "coco_val2017_animal_samples" / "000000001818.jpg").read_bytes())
    out = tmp_path / "results.json"
    # What the README says first: the name. The error says what to do, and doing it works.
    line = _one_error(_cli("detect", str(photos), "-m", "yolox-nano", "-o", str(out), env=offline), code=2)
    assert "wildedge model pull yolox-nano --from FILE.onnx" in line and "site-packages" not in line
    line = _one_error(_cli("model", "pull", "yolox-nano", env=offline), "Offline?")
    assert "wildedge model pull yolox-nano --from FILE.onnx" in line and "site-packages" not in line
    local = assets / "yolox_nano" / "yolox_nano.onnx"
    pulled = _cli("model", "pull", "yolox-nano", "--from", str(local), env=offline)
    assert pulled.returncode == 0 and f"(from {local})" in pulled.stdout, pulled.stderr
    result = _cli("detect", str(photos), "-m", "yolox-nano", "-o", str(out), env=offline)
    assert result.returncode == 1, result.stderr  # the fake JPEG fails; the zebra is found
    images = {image["file"]: image for image in json.loads(out.read_text())["images"]}
    assert images["IMG_0002.JPG"]["detections"] and "failure" in images["IMG_0001.JPG"]


def test_the_published_file_as_downloaded_names_the_one_command_that_makes_it_usable(tmp_path, assets, photos):
    raw = assets / "yolox_nano" / "yolox_nano.onnx"
    line = _one_error(_cli("detect", str(photos), "-m", str(raw), "-o", str(tmp_path / "r.json")), code=2)
    assert f"run 'wildedge model pull yolox-nano --from {raw}', then use -m yolox-nano" in line


def test_pull_from_a_file_that_is_not_the_published_one_says_what_to_do(tmp_path):
    other = tmp_path / "mine.onnx"
    other.write_bytes(b"not the published file")
    line = _one_error(_cli("model", "pull", "yolox-nano", "--from", str(other),
                           env={"WILDEDGE_CACHE": str(tmp_path / "cache")}), code=2)
    assert f"--from {other} is not the published yolox-nano" in line and "models.toml" in line
    assert not (tmp_path / "cache" / "models").exists()


def test_the_models_toml_route_runs_your_own_file_by_name_offline(tmp_path, assets):
    local = assets / "yolox_nano" / "yolox_nano.onnx"
    (tmp_path / "xdg" / "wildedge").mkdir(parents=True)
    (tmp_path / "xdg" / "wildedge" / "models.toml").write_text(
        f'[models.my-trap]\nurl = "{local.as_uri()}"\nsha256 = "{_sha256(local)}"\npreset = "yolox"\n'
        'labels = "coco80"\n', encoding="utf-8")
    offline = {"WILDEDGE_CACHE": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
               "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    assert _cli("model", "pull", "my-trap", env=offline).returncode == 0
    shown = _cli("model", "show", str(tmp_path / "cache" / "models" / "my-trap.onnx"), env=offline)
    assert shown.returncode == 0 and "yolox" in shown.stdout


def _sha256(path: Path) -> str:
    from edge.inference.card import sha256_file

    return sha256_file(path)


# -- item 14: one meaning per option name across commands ---------------------------------------------------

def test_labels_names_classes_and_gt_labels_ground_truth_everywhere():
    helps = {command: _cli("export", command, "--help").stdout for command in ("detector", "classifier",
                                                                                  "quantize", "verify")}
    helps["stamp"] = _cli("model", "stamp", "--help").stdout
    for command, text in helps.items():
        assert "--calib-labels" not in text, command  # the old name is a hidden alias
        if command != "stamp":
            assert "--gt-labels <path>" in text and "Ground truth" in text, command
        if command in ("quantize", "verify"):
            assert "--labels" not in text, command
            assert "--imgsz N" in text  # the option of 'export detector', named as such
        else:
            assert "--labels <path>" in text, command


def test_the_old_ground_truth_name_still_works_but_not_beside_the_new_one(tmp_path):
    result = _cli("export", "verify", "a.onnx", "b.onnx", "--images", str(tmp_path), "--labels", "old.json",
                  "--gt-labels", "new.json")
    _one_error(result, "--labels is the old name of --gt-labels", code=2)


# -- item 14: every example passes `wildedge check` --------------------------------------------------------

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml"))


def _picamera2_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("picamera2") is None


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_every_example_passes_check(example, tmp_path, stamped, classifier_model, assets):
    """Run as shipped, with the files it names put in place: a fake home for ``~`` paths, and ``--set``
    for the absolute paths of a device (``/etc/wildedge``, ``/var/lib/wildedge``) a test cannot write."""
    from edge.config import load_config

    home = tmp_path / "home"
    cfg = load_config(example)
    overrides: list[str] = []

    def place(key: str, path: Path, source: Path | None) -> None:
        text = str(path)
        if text.startswith(str(Path.home())):  # a ~ path: put the file in the fake home
            target = home / Path(text).relative_to(Path.home())
            target.parent.mkdir(parents=True, exist_ok=True)
            if source is not None:
                target.write_bytes(source.read_bytes())
            else:
                target.mkdir(exist_ok=True)
                (target / "IMG_0001.JPG").write_bytes(
                    (assets / "coco_val2017_animal_samples" / "000000001818.jpg").read_bytes())
        else:
            overrides.extend(["--set", f"{key}={source if source is not None else tmp_path / key}"])

    place("detector.model", cfg.detector.model, stamped["yolox"])
    if cfg.classifier is not None:
        place("classifier.model", cfg.classifier.model, classifier_model)
    if cfg.camera.type == "folder":
        place("camera.path", cfg.camera.path, None)
    if not str(cfg.device.state_dir).startswith(str(Path.home())):
        overrides.extend(["--set", f"device.state_dir={tmp_path / 'state'}"])
    if cfg.mqtt is not None and cfg.mqtt.password_file is not None:
        secret = tmp_path / "mqtt-password"
        secret.write_text("secret\n")
        secret.chmod(0o600)
        overrides.extend(["--set", f"mqtt.password_file={secret}", "--set", "mqtt.url=mqtts://127.0.0.1:9"])
    result = _cli("check", "--config", str(example), *overrides, env={"HOME": str(home)})
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    if cfg.camera.type == "picamera2" and _picamera2_missing():
        # This machine has no Raspberry Pi camera: that line, and only it, may fail.
        assert [line.split()[1] for line in failed] == ["camera"], result.stdout + result.stderr
    else:
        assert result.returncode == 0 and not failed, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_model_stamp_refuses_a_folder_for_output_and_names_range_options(tmp_path):
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"x")
    base = ["model", "stamp", str(junk), "--preset", "yolox", "--labels", str(junk)]
    _one_error(_cli(*base, "-o", str(tmp_path)), "is a folder", "model_card.onnx", code=2)
    _one_error(_cli(*base, "-o", str(tmp_path / "out.onnx"), "--conf", "2"), "--conf", code=2)

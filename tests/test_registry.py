"""Published models: registry files, ``pull`` from a local HTTP mirror, ``resolve_model``, the CLI."""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath

import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.errors import ModelError, RegistryError
from edge.inference.card import read_card, sha256_file
from edge.inference.labels import read_labels
from edge.models import (
    DEFAULT_MODEL,
    ModelEntry,
    builtin_registry,
    cache_root,
    cached_model,
    load_registry,
    model_path,
    pull,
    resolve_model,
)
from edge.models.registry import builtin_labels

# registry name -> (asset folder, asset file, decoder name, input size)
SHIPPED = {
    "yolox-nano": ("yolox_nano", "yolox_nano.onnx", "yolox", (416, 416)),
    "nanodet-m": ("nanodet_m", "nanodet_m_320.onnx", "nanodet", (320, 320)),
    "fastestdet": ("fastestdet", "FastestDet.onnx", "fastestdet", (352, 352)),
}


class Mirror:
    """A local HTTP server: URL path -> file to serve, an HTTP status, or "hang"; counts requests."""

    def __init__(self) -> None:
        self.routes: dict[str, Path | int | str] = {}
        self.requests: list[str] = []
        self.release = threading.Event()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                target = mirror.routes.get(self.path, 404)
                if target == "hang":
                    mirror.release.wait(10)
                    return
                if isinstance(target, int):
                    self.send_error(target)
                    return
                data = Path(target).read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._stopped = False

    def url(self, path: str) -> str:
        return self.base + path

    def stop(self) -> None:
        """Shut the server down and close its port (later connections are refused)."""
        if self._stopped:
            return
        self._stopped = True
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test off the user's real cache and config."""
    monkeypatch.setenv("WILDEDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("WILDEDGE_MODELS", raising=False)


@pytest.fixture
def server() -> Iterator[Mirror]:
    mirror = Mirror()
    yield mirror
    mirror.stop()


def _write_registry(path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("WILDEDGE_MODELS", str(path))
    return path


@pytest.fixture
def mirror(server: Mirror, assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Mirror:
    """The shipped models served from the assets; a user models.toml points their URLs at the server."""
    lines = []
    for name, (folder, filename, _, _) in SHIPPED.items():
        server.routes[f"/{filename}"] = assets / folder / filename
        lines.append(f'[models.{name}]\nurl = "{server.url("/" + filename)}"\n')
    _write_registry(tmp_path / "user" / "models.toml", monkeypatch, "\n".join(lines))
    return server


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# --- the shipped registry -------------------------------------------------------------------------------


def test_shipped_entries_pin_the_asset_files(assets: Path) -> None:
    registry = builtin_registry()
    assert set(registry) == set(SHIPPED)
    sums = dict(
        reversed(line.split()) for line in (assets / "SHA256SUMS").read_text().splitlines() if line.strip()
    )
    for name, (folder, filename, _, size) in SHIPPED.items():
        entry = registry[name]
        assert entry.sha256 == sha256_file(assets / folder / filename), name
        assert entry.sha256 == sums[f"{folder}/{filename}"], name
        assert entry.input_size == size
        # The URL is pinned to the commit in which the file last changed, as the asset README records.
        readme = (assets / folder / "README.txt").read_text()
        commit = re.search(r"last changed in commit ([0-9a-f]{40})", readme)
        assert commit is not None, folder
        assert f"/{commit.group(1)}/" in entry.url, name
        assert entry.url.startswith("https://raw.githubusercontent.com/")
        assert PurePosixPath(entry.url).name == filename


def test_default_model_is_shipped() -> None:
    assert DEFAULT_MODEL == "yolox-nano"
    assert builtin_registry()[DEFAULT_MODEL].preset == "yolox"


def test_builtin_coco80_matches_the_asset_label_files(assets: Path) -> None:
    labels = builtin_labels("coco80")
    assert len(labels) == 80 and labels[0] == "person" and labels[-1] == "toothbrush"
    assert labels == read_labels(assets / "yolox_nano" / "coco_classes.txt")
    assert labels == read_labels(assets / "fastestdet" / "coco.names")


# --- pull -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SHIPPED))
def test_pull_writes_a_stamped_model(mirror: Mirror, assets: Path, tmp_path: Path, name: str) -> None:
    folder, filename, decoder, size = SHIPPED[name]
    path = pull(name)
    assert path == tmp_path / "cache" / "models" / f"{name}.onnx"
    card = read_card(path)
    assert card.name == name
    assert card.decoder.name == decoder
    assert len(card.labels) == 80
    assert card.preprocess.input_size == size
    assert card.source.sha256 == sha256_file(assets / folder / filename)
    assert card.source.url == mirror.url(f"/{filename}")
    assert card.source.file == filename
    raw = tmp_path / "cache" / "downloads" / name / filename
    assert sha256_file(raw) == card.source.sha256
    assert mirror.requests == [f"/{filename}"]
    assert not [p for p in _files(tmp_path / "cache") if p.name.startswith(".")]  # no temp files left


def test_second_pull_needs_no_network(mirror: Mirror) -> None:
    first = pull("fastestdet")
    stamp_time = first.stat().st_mtime_ns
    mirror.stop()
    assert pull("fastestdet") == first
    assert first.stat().st_mtime_ns == stamp_time
    assert len(mirror.requests) == 1


def test_missing_stamp_is_rebuilt_from_the_verified_download(mirror: Mirror) -> None:
    path = pull("fastestdet")
    path.unlink()
    mirror.stop()
    assert pull("fastestdet") == path
    assert read_card(path).decoder.name == "fastestdet"
    assert len(mirror.requests) == 1


def test_force_downloads_again_and_reports_progress(mirror: Mirror, assets: Path) -> None:
    pull("fastestdet")
    seen: list[tuple[int, int | None]] = []
    pull("fastestdet", force=True, progress=lambda done, total: seen.append((done, total)))
    size = (assets / "fastestdet" / "FastestDet.onnx").stat().st_size
    assert len(mirror.requests) == 2
    assert seen[0] == (0, size) and seen[-1] == (size, size)


def test_sha256_mismatch_raises_and_keeps_nothing(mirror: Mirror, assets: Path, tmp_path: Path) -> None:
    mirror.routes["/FastestDet.onnx"] = assets / "yolox_nano" / "yolox_nano.onnx"
    with pytest.raises(RegistryError) as info:
        pull("fastestdet")
    message = str(info.value)
    assert "sha256 mismatch" in message
    assert builtin_registry()["fastestdet"].sha256 in message
    assert sha256_file(assets / "yolox_nano" / "yolox_nano.onnx") in message
    assert _files(tmp_path / "cache") == []


def test_sha256_mismatch_does_not_replace_a_good_cached_model(mirror: Mirror, assets: Path) -> None:
    path = pull("fastestdet")
    before = path.read_bytes()
    mirror.routes["/FastestDet.onnx"] = assets / "yolox_nano" / "yolox_nano.onnx"
    with pytest.raises(RegistryError, match="sha256 mismatch"):
        pull("fastestdet", force=True)
    assert path.read_bytes() == before


def test_http_404_raises_with_offline_hint(mirror: Mirror, tmp_path: Path) -> None:
    del mirror.routes["/FastestDet.onnx"]
    with pytest.raises(RegistryError) as info:
        pull("fastestdet")
    message = str(info.value)
    assert "cannot download fastestdet from http://127.0.0.1:" in message
    assert "HTTP 404" in message
    assert "Offline?" in message
    # The hint leads to a name that works (no 'model stamp' that -m NAME would not find) and prints
    # no packaged path, which an install may move.
    assert "then run: wildedge model pull fastestdet --from FILE.onnx" in message
    assert "site-packages" not in message and "coco80.txt" not in message
    assert _files(tmp_path / "cache") == []


def test_connection_refused_raises_with_offline_hint(mirror: Mirror, tmp_path: Path) -> None:
    mirror.stop()
    with pytest.raises(RegistryError) as info:
        pull("yolox-nano")
    message = str(info.value)
    assert "cannot download yolox-nano" in message
    assert "refused" in message.lower()
    assert "model pull yolox-nano --from" in message and "Offline?" in message
    assert _files(tmp_path / "cache") == []


def test_stalled_server_times_out(mirror: Mirror, tmp_path: Path) -> None:
    mirror.routes["/FastestDet.onnx"] = "hang"
    with pytest.raises(RegistryError, match="timed out.*Offline?"):
        pull("fastestdet", timeout=0.5)
    assert _files(tmp_path / "cache") == []


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(RegistryError) as info:
        pull("yolox-giant")
    assert "yolox-giant" in str(info.value)
    for name in SHIPPED:
        assert name in str(info.value)


def test_registry_argument_overrides_per_call(server: Mirror, assets: Path, tmp_path: Path) -> None:
    server.routes["/m.onnx"] = assets / "fastestdet" / "FastestDet.onnx"
    entry = ModelEntry(
        url=server.url("/m.onnx"), sha256=sha256_file(assets / "fastestdet" / "FastestDet.onnx"),
        preset="fastestdet", labels="coco80",
    )
    path = pull("mine", registry={"mine": entry}, cache_dir=tmp_path / "elsewhere")
    assert path == tmp_path / "elsewhere" / "models" / "mine.onnx"
    assert read_card(path).preprocess.input_size == (352, 352)  # read from the graph
    with pytest.raises(RegistryError, match="unknown model 'fastestdet'"):
        pull("fastestdet", registry={"mine": entry})


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        pull("fastestdet", timeout=0)


# --- user registry file ---------------------------------------------------------------------------------


def test_user_file_overrides_only_the_keys_it_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = '[models.yolox-nano]\nurl = "https://mirror.example/y.onnx"\n'
    _write_registry(tmp_path / "m.toml", monkeypatch, text)
    shipped = builtin_registry()["yolox-nano"]
    entry = load_registry()["yolox-nano"]
    assert entry.url == "https://mirror.example/y.onnx"
    assert entry.model_dump(exclude={"url"}) == shipped.model_dump(exclude={"url"})
    assert set(load_registry()) == set(SHIPPED)


def test_user_file_adds_a_model_with_relative_labels(
    server: Mirror, assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.routes["/fd.onnx"] = assets / "fastestdet" / "FastestDet.onnx"
    (tmp_path / "conf" / "labels").mkdir(parents=True)
    shutil.copy(assets / "fastestdet" / "coco.names", tmp_path / "conf" / "labels" / "coco.names")
    _write_registry(tmp_path / "conf" / "models.toml", monkeypatch, f"""
[models.my-fastest]
url = "{server.url('/fd.onnx')}"
sha256 = "{sha256_file(assets / 'fastestdet' / 'FastestDet.onnx')}"
preset = "fastestdet"
labels = "labels/coco.names"
description = "mine"
""")
    monkeypatch.chdir(tmp_path)  # the labels path is relative to the registry file, not the cwd
    assert set(load_registry()) == set(SHIPPED) | {"my-fastest"}
    card = read_card(pull("my-fastest"))
    assert card.name == "my-fastest" and len(card.labels) == 80 and card.decoder.name == "fastestdet"


def test_user_file_from_xdg_config_home(tmp_path: Path) -> None:
    path = tmp_path / "config" / "wildedge" / "models.toml"
    path.parent.mkdir(parents=True)
    path.write_text('[models.fastestdet]\ndescription = "from xdg"\n', encoding="utf-8")
    assert load_registry()["fastestdet"].description == "from xdg"


def test_invalid_user_entries_name_the_key_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_registry(tmp_path / "models.toml", monkeypatch, """
[models.bad]
sha256 = "abc"
preset = "yolo9000"
labels = "coco81"
colour = "RGB"

[models.yolox-nano]
input_size = [416, 4]
url = "ftp://example.org/y.onnx"
""")
    with pytest.raises(RegistryError) as info:
        load_registry()
    message = str(info.value)
    assert f"{path}: models.bad.url: Field required" in message
    assert f"{path}: models.bad.sha256: " in message
    assert f"{path}: models.bad.preset: " in message and "yolo9000" in message
    assert f"{path}: models.bad.labels: " in message and "coco81" in message
    assert f"{path}: models.bad.colour: Extra inputs are not permitted" in message
    assert f"{path}: models.yolox-nano.input_size: " in message
    assert f"{path}: models.yolox-nano.url: " in message


def test_invalid_user_file_structure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = 'model = 1\n[models."bad name"]\nurl = "x"\n'
    path = _write_registry(tmp_path / "models.toml", monkeypatch, text)
    with pytest.raises(RegistryError) as info:
        load_registry()
    assert f"{path}: model: unknown top-level key" in str(info.value)
    assert f"{path}: models.bad name: invalid name" in str(info.value)


def test_user_file_toml_syntax_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_registry(tmp_path / "models.toml", monkeypatch, "[models.x\n")
    with pytest.raises(RegistryError, match=re.escape(f"{path}: invalid TOML")):
        load_registry()


def test_wildedge_models_pointing_nowhere_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WILDEDGE_MODELS", str(tmp_path / "missing.toml"))
    with pytest.raises(RegistryError, match="not found"):
        load_registry()


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_root(tmp_path / "x") == tmp_path / "x"
    assert cache_root() == tmp_path / "cache"
    monkeypatch.delenv("WILDEDGE_CACHE")
    assert cache_root() == tmp_path / "xdg-cache" / "wildedge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "wildedge"
    home_cache = tmp_path / "home" / ".cache" / "wildedge"
    assert model_path("fastestdet") == home_cache / "models" / "fastestdet.onnx"


# --- resolve_model --------------------------------------------------------------------------------------


def test_resolve_existing_file_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fastestdet").write_bytes(b"local")
    assert resolve_model("fastestdet") == Path("fastestdet")


def test_resolve_cached_name(mirror: Mirror) -> None:
    path = pull("fastestdet")
    mirror.stop()
    assert resolve_model("fastestdet") == path


def test_resolve_uncached_name_says_pull() -> None:
    with pytest.raises(RegistryError, match="wildedge model pull nanodet-m"):
        resolve_model("nanodet-m")


def test_resolve_unknown_is_model_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError, match="model file not found: nothing-here") as info:
        resolve_model("nothing-here")
    assert not isinstance(info.value, RegistryError)
    # A path-like argument never consults the registry, so a broken user file does not hide the real problem.
    _write_registry(tmp_path / "models.toml", monkeypatch, "[models.x\n")
    with pytest.raises(ModelError, match=re.escape(f"model file not found: {tmp_path / 'gone.onnx'}")):
        resolve_model(str(tmp_path / "gone.onnx"))


# --- CLI ------------------------------------------------------------------------------------------------


def test_cli_pull_then_list(mirror: Mirror, tmp_path: Path) -> None:
    runner = CliRunner()
    cache = tmp_path / "cli-cache"
    result = runner.invoke(app, ["model", "pull", "fastestdet", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    expected = cache / "models" / "fastestdet.onnx"
    assert result.stdout.strip() == f"{expected} (pulled)"
    assert read_card(expected).decoder.name == "fastestdet"

    mirror.stop()
    result = runner.invoke(app, ["model", "pull", "fastestdet", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{expected} (already cached)"

    result = runner.invoke(app, ["model", "list", "--json", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(SHIPPED)
    assert rows["fastestdet"]["cached"] is True and rows["fastestdet"]["path"] == str(expected)
    assert rows["yolox-nano"]["cached"] is False and rows["yolox-nano"]["default"] is True
    assert rows["fastestdet"]["licence"] == "BSD-3-Clause" and rows["nanodet-m"]["preset"] == "nanodet"

    result = runner.invoke(app, ["model", "list", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "PRESET", "LICENCE", "CACHED"]
    assert any(line.startswith("fastestdet ") and " yes " in line for line in lines)


def test_cli_pull_failure_exits_nonzero_with_hint(mirror: Mirror) -> None:
    mirror.stop()
    result = CliRunner().invoke(app, ["model", "pull", "fastestdet"])
    assert result.exit_code != 0
    assert "error: cannot download fastestdet" in result.stderr
    assert "Offline?" in result.stderr
    result = CliRunner().invoke(app, ["model", "pull", "no-such-model"])
    assert result.exit_code != 0 and "unknown model" in result.stderr


def test_cached_model_ignores_a_stale_card(mirror: Mirror) -> None:
    path = pull("fastestdet")
    assert cached_model("fastestdet") == path
    registry = load_registry()
    stale = {"fastestdet": registry["fastestdet"].model_copy(update={"sha256": "0" * 64})}
    assert cached_model("fastestdet", registry=stale) is None
    assert resolve_model("fastestdet", registry=stale) == path  # still usable offline, with a warning

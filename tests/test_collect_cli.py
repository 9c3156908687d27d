"""``wildedge collect export|status|serve`` and ``wildedge results`` by hand, with bad input.

Each test is a regression for one thing a new user hit: one ``error:`` line, exit 2 for a usage or
setup mistake, no traceback, no password on screen, and nothing created or changed by a command
that failed.
"""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_collect_export import golden_messages, seed
from test_results import populate, write_config
from typer.testing import CliRunner

pytest.importorskip("sqlalchemy")

from edge.cli import app

SECRET = "s3cretPW42"


def wildedge(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def one_error(result: Any, code: int = 2) -> str:
    """The single ``error:`` line of a failed command (asserting there is exactly one and no traceback)."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def collector_db(tmp_path: Path) -> Path:
    """A SQLite collector database holding the golden messages of two devices."""
    path = tmp_path / "collector.db"
    seed(f"sqlite:///{path}", golden_messages() + golden_messages("trap-02"))
    return path


@pytest.fixture()
def sites(tmp_path: Path) -> Path:
    path = tmp_path / "sites.csv"
    path.write_text("device,latitude,longitude\ntrap-01,52.1,5.2\ntrap-02,52.2,5.3\n", encoding="utf-8")
    return path


@pytest.fixture()
def device(tmp_path: Path) -> Path:
    config = write_config(tmp_path)
    populate(tmp_path / "state")
    return config


# -- --help ---------------------------------------------------------------------------------------

def test_help_keeps_square_brackets_and_explains_the_db_default() -> None:
    group = wildedge("collect", "--help")
    assert group.exit_code == 0 and "wildedge[collector]" in group.output
    for command in ("status", "serve", "export"):
        result = CliRunner().invoke(app, ["collect", command, "--help"], terminal_width=100)
        assert result.exit_code == 0
        text = " ".join(result.output.replace("│", " ").split())
        assert "postgresql://USER@HOST/DB" in text and "wildedge-collector.db in the current folder" in text


# -- --db -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["status"], ["export", "-o", "out.json"]])
def test_a_plain_path_as_db_suggests_the_sqlite_url(command: list[str], collector_db: Path) -> None:
    line = one_error(wildedge("collect", *command, "--db", str(collector_db)))
    assert f"sqlite:///{collector_db}" in line


def test_an_empty_db_is_refused_not_taken_for_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert "--db is empty" in one_error(wildedge("collect", "status", "--db", ""))


def test_a_folder_as_db_says_so(tmp_path: Path) -> None:
    line = one_error(wildedge("collect", "status", "--db", f"sqlite:///{tmp_path}"))
    assert "is a folder" in line and "wildedge-collector.db" in line


def test_a_port_that_is_not_a_number_is_one_line_not_a_traceback() -> None:
    line = one_error(wildedge("collect", "status", "--db", f"postgresql://bob:{SECRET}@127.0.0.1:notaport/db"))
    assert "port" in line and SECRET not in line


@pytest.mark.parametrize("url", [
    f"postgres//bob:{SECRET}@127.0.0.1/db",                # no "://": unparseable, must not be echoed
    f"postgresql://bob:{SECRET[:4]}@{SECRET[4:]}@127.0.0.1:1/db",  # an unencoded '@' in the password
    f"postgresql://bob@127.0.0.1:1/db?password={SECRET}",  # libpq's password in the query
    f"postgresql:///db?host=/nonexistent&password={SECRET}",
    f"postgresql://bob:{SECRET}@127.0.0.1:1/db",           # nothing listens on port 1
])
@pytest.mark.parametrize("command", [["status"], ["export", "-o", "out.json"]])
def test_a_database_password_is_never_printed(url: str, command: list[str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = wildedge("collect", *command, "--db", url)
    line = one_error(result)
    assert SECRET not in result.output and SECRET[4:] not in line
    assert not (tmp_path / "out.json").exists()


def test_another_programs_sqlite_database_is_named_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "birds.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE sightings (species TEXT)")
    conn.close()
    before = snapshot(tmp_path)
    line = one_error(wildedge("collect", "status", "--db", f"sqlite:///{path}"))
    assert "another program's database" in line and "file:" not in line and "mode=ro" not in line
    assert snapshot(tmp_path) == before


def test_a_file_that_is_not_sqlite_is_named_by_its_url(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n", encoding="utf-8")
    line = one_error(wildedge("collect", "status", "--db", f"sqlite:///{path}"))
    assert f"sqlite:///{path}" in line and "mode=ro" not in line


# -- export: where the output goes -----------------------------------------------------------------

def test_camtrapdp_never_replaces_a_folder_of_the_users_files(collector_db: Path, sites: Path,
                                                              tmp_path: Path) -> None:
    folder = tmp_path / "fieldwork"
    folder.mkdir()
    (folder / "thesis.txt").write_text("three years of work\n", encoding="utf-8")
    line = one_error(wildedge("collect", "export", "--db", f"sqlite:///{collector_db}", "-f", "camtrapdp",
                              "--locations", str(sites), "-o", str(folder)))
    assert "thesis.txt" in line and "new or empty folder" in line
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]


def test_camtrapdp_replaces_its_own_previous_package(collector_db: Path, sites: Path, tmp_path: Path) -> None:
    args = ["collect", "export", "--db", f"sqlite:///{collector_db}", "-f", "camtrapdp", "--locations", str(sites),
            "-o", str(tmp_path / "pkg")]
    assert wildedge(*args).exit_code == 0
    result = wildedge(*args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pkg" / "datapackage.json").is_file()


def test_export_over_the_database_itself_is_refused(collector_db: Path) -> None:
    before = collector_db.read_bytes()
    line = one_error(wildedge("collect", "export", "--db", f"sqlite:///{collector_db}", "-f", "csv",
                              "-o", str(collector_db)))
    assert "is the database" in line
    assert collector_db.read_bytes() == before


@pytest.mark.parametrize(("target", "says"), [
    ("missing/out.json", "does not exist"),
    ("sites.csv/out.json", "is a file, not a folder"),
    (".", "is a folder; give a file name"),
])
def test_export_output_problems_are_usage_errors_found_before_reading(
        target: str, says: str, collector_db: Path, sites: Path, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    line = one_error(wildedge("collect", "export", "--db", f"sqlite:///{collector_db}",
                              "-o", str(tmp_path / target)))
    assert says in line and line.startswith("error: -o ")
    assert snapshot(tmp_path) == before


def test_coco_without_frame_size_fails_before_opening_the_database(tmp_path: Path) -> None:
    line = one_error(wildedge("collect", "export", "--db", f"sqlite:///{tmp_path / 'none.db'}", "-f", "coco",
                              "-o", str(tmp_path / "coco.json")))
    assert "--frame-size" in line
    assert list(tmp_path.iterdir()) == []


# -- serve --------------------------------------------------------------------------------------------

def test_serve_on_a_port_in_use_is_one_line_exit_2(collector_db: Path) -> None:
    pytest.importorskip("uvicorn")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_error(wildedge("collect", "serve", "--db", f"sqlite:///{collector_db}", "--port", str(port)))
    assert f"127.0.0.1:{port}" in line and "--port" in line


# -- results (device) -----------------------------------------------------------------------------

def results(config: Path, *args: str) -> Any:
    return wildedge("results", "--config", str(config), *args)


def test_results_camtrapdp_never_replaces_the_state_dir(device: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    before = snapshot(state)
    line = one_error(results(device, "-f", "camtrapdp", "-o", str(state)))
    assert "wildedge.db" in line and "new or empty folder" in line
    assert snapshot(state) == before


def test_results_export_over_the_store_is_refused(device: Path, tmp_path: Path) -> None:
    store = tmp_path / "state" / "wildedge.db"
    before = store.read_bytes()
    assert "is the database" in one_error(results(device, "-f", "csv", "-o", str(store)))
    assert store.read_bytes() == before


@pytest.mark.parametrize(("target", "says"), [("missing/x.csv", "does not exist"), ("state", "is a folder")])
def test_results_output_problems_are_usage_errors_before_the_summary(device: Path, tmp_path: Path, target: str,
                                                                     says: str) -> None:
    result = results(device, "-f", "csv", "-o", str(tmp_path / target))
    assert says in one_error(result)
    assert "events" not in result.stdout  # refused before reading anything
    assert not (tmp_path / "missing").exists()


def test_results_until_before_since_is_refused(device: Path, tmp_path: Path) -> None:
    line = one_error(results(device, "-o", str(tmp_path / "x.csv"), "-f", "csv", "--since", "2026-05-02",
                             "--until", "2026-05-01"))
    assert line == "error: --until must be after --since"
    assert not (tmp_path / "x.csv").exists()


def test_results_a_folder_where_the_store_should_be(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "state" / "wildedge.db").mkdir(parents=True)
    line = one_error(results(config), code=1)
    assert "is not a file" in line and "state_dir" in line


# -- the web page ---------------------------------------------------------------------------------

def test_page_with_a_from_date_after_every_event_is_a_page_not_a_500(collector_db: Path) -> None:
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from collector.common import open_db
    from collector.web.app import create_app

    engine = open_db(f"sqlite:///{collector_db}", read_only=True)
    try:
        with TestClient(create_app(engine), raise_server_exceptions=False) as client:
            response = client.get("/", params={"from": "9999-12-31"})
    finally:
        engine.dispose()
    assert response.status_code == 200
    assert "no events on or after 9999-12-31" in response.text

"""The collector's web page: every route through Starlette's TestClient, then the real page in headless Chromium."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.testclient import TestClient
from test_collect_status import XSS_LABEL, XSS_TOPIC, seed

from collector import queries
from collector.common import open_db
from collector.web import exports, plot
from collector.web.app import SECURITY_HEADERS, create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def site(tmp_path: Path):
    """(client, now, event ids) on a seeded SQLite database opened read-only (the queries run on both dialects
    in test_every_query_runs_on_both_dialects)."""
    now = int(time.time())
    url = f"sqlite:///{tmp_path / 'collector.db'}"
    ids = seed(url, now)
    engine = open_db(url, read_only=True)
    with TestClient(create_app(engine, now=lambda: now)) as client:
        yield client, now, ids
    engine.dispose()


def _section(html: str, name: str) -> str:
    start = html.index(f'<section id="{name}">')
    return html[start:html.index("</section>", start)]


def test_index_shows_devices_plot_crops_and_headers(site):
    client, _now, ids = site
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for name, value in SECURITY_HEADERS.items():
        assert r.headers[name] == value
    assert "default-src 'self'" in r.headers["content-security-policy"]
    devices = _section(r.text, "devices")
    for device in ("trap-01", "trap-02", "trap-03"):
        assert f'data-device="{device}"' in devices
    assert devices.count('class="mark offline"') == 1 and devices.count('class="mark silent"') == 2
    chart = _section(r.text, "plot")
    assert "<svg" in chart and 'data-label="red fox"' in chart and 'data-label="person"' in chart
    assert 'data-label="empty"' not in chart
    crops = _section(r.text, "crops")
    assert [f"/crops/{i}.jpg" in crops for i in ids["crops"]] == [True] * 3
    assert crops.index(ids["crops"][0]) < crops.index(ids["crops"][2])  # newest first
    assert "http://" not in r.text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in r.text


def test_html_in_labels_and_topics_is_escaped(site):
    client, _now, _ids = site
    html = client.get("/").text
    assert XSS_LABEL not in html and "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in _section(html, "plot")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in _section(html, "crops")
    rejects = _section(html, "rejects")
    assert "<img src=x" not in html and "wildedge/&lt;img src=x onerror=alert(2)&gt;/event" in rejects
    assert "bad_topic: 1" in rejects
    assert XSS_TOPIC not in html
    # The label as a filter value comes back escaped too, in the form and the legend link.
    r = client.get("/", params={"class": XSS_LABEL})
    assert r.status_code == 200 and "<script" not in r.text
    assert 'selected>&lt;script&gt;alert(1)&lt;/script&gt;</option>' in r.text


def test_filters_select_device_class_and_dates(site):
    client, now, ids = site
    fox = client.get("/", params={"class": "red fox"}).text
    events = _section(fox, "events")
    assert "red fox x2" in events and "person" not in events
    assert 'data-label="red fox"' in _section(fox, "plot") and 'data-label="person"' not in _section(fox, "plot")
    assert ids["xss"][0] not in _section(fox, "crops") and ids["fox"][0] in _section(fox, "crops")
    quiet = client.get("/", params={"device": "trap-02"}).text
    assert "No crops for these filters" in quiet and "No events for these filters" in quiet
    day = queries.utc_day(now - 86400)
    one_day = client.get("/", params={"from": day, "to": day}).text
    assert "person x1" in _section(one_day, "events") and "red fox" not in _section(one_day, "events")
    assert f"Detections per day (UTC), {day} to {day}" in one_day
    exports_line = _section(one_day, "events").split('<p class="exports">')[1].split("</p>")[0]
    assert f'href="/export/csv?from={day}&amp;to={day}"' in exports_line


@pytest.mark.parametrize(("params", "message"), [
    ({"from": "2024-13-01"}, "from: &#39;2024-13-01&#39; is not a date; use YYYY-MM-DD"),
    ({"to": "yesterday"}, "to: &#39;yesterday&#39; is not a date"),
    ({"from": "2024-02-02", "to": "2024-02-01"}, "from 2024-02-02 is after to 2024-02-01; swap them"),
    ({"device": "x" * 300}, "device: at most 200 printable characters"),
    ({"class": "a\x00b"}, "class: at most 200 printable characters"),
])
def test_bad_filters_are_400_with_a_message(site, params, message):
    client, _now, _ids = site
    r = client.get("/", params=params)
    assert r.status_code == 400 and message in r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/export/csv", params=params).status_code == 400


def test_crop_route(site):
    client, _now, ids = site
    r = client.get(f"/crops/{ids['crops'][0]}.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content[:2] == b"\xff\xd8" and r.headers["x-content-type-options"] == "nosniff"
    for bad in (f"/crops/{ids['person'][0]}.jpg", f"/crops/{ids['crops'][0]}", "/crops/..%2Fetc.jpg",
                "/crops/' or 1=1.jpg"):
        assert client.get(bad).status_code == 404, bad


def test_exports_without_a_writer_are_501(site, monkeypatch):
    client, _now, _ids = site
    monkeypatch.setattr(exports, "_writer", lambda: None)
    for fmt in exports.FORMATS:
        r = client.get(f"/export/{fmt}")
        assert r.status_code == 501 and f"wildedge collect export --format {fmt}" in r.text
    assert client.get("/export/nope").status_code == 404


def test_exports_stream_the_writers_file(site, monkeypatch):
    client, _now, _ids = site
    seen = []

    def write(engine, fmt, dst, *, devices, since, until):
        seen.append((fmt, devices, since, until))
        if fmt == "camtrapdp":
            dst.mkdir()
            (dst / "datapackage.json").write_text("{}")
        else:
            dst.write_bytes(b"event,device\n")

    monkeypatch.setattr(exports, "_writer", lambda: write)
    r = client.get("/export/camtrapdp", params={"device": "trap-01", "from": "2026-01-01", "to": "2026-01-31"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert 'filename="wildedge-camtrapdp.zip"' in r.headers["content-disposition"]
    assert zipfile.ZipFile(io.BytesIO(r.content)).namelist() == ["datapackage.json"]
    assert seen == [("camtrapdp", ["trap-01"], datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))]
    r = client.get("/export/csv")
    assert r.status_code == 200 and r.text == "event,device\n" and r.headers["content-type"].startswith("text/csv")
    assert seen[-1] == ("csv", [], None, None)
    assert client.get("/export/csv", params={"class": "red fox"}).status_code == 400


def test_exports_through_collector_export(site):
    client, _now, _ids = site
    r = client.get("/export/megadetector", params={"device": "trap-01"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert json.loads(r.content)["images"] == []  # the seeded events keep no image
    r = client.get("/export/csv")
    assert r.status_code == 200 and "trap-01" in r.text
    for fmt, params in (("csv", {"device": "nobody"}), ("camtrapdp", {})):
        r = client.get(f"/export/{fmt}", params=params)  # unknown device; camtrapdp without locations
        assert r.status_code == 400 and f"cannot export {fmt}: " in r.text


def test_read_only_routes(site):
    client, _now, ids = site
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", f"/crops/{ids['crops'][0]}.jpg", "/export/csv"):
            assert client.request(method, path).status_code == 405
    assert client.head("/").status_code == 200
    css = client.get("/static/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/nothing").status_code == 404


def test_database_gone_is_503(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    seed(url, int(time.time()))
    engine = open_db(url, read_only=True)
    (tmp_path / "c.db").unlink()
    engine.dispose()
    with TestClient(create_app(engine)) as client:
        r = client.get("/")
    assert r.status_code == 503 and "the database is unavailable" in r.text


def test_daily_counts_rule(collector_url):
    now = int(time.time())
    seed(collector_url, now)
    engine = open_db(collector_url, read_only=True)
    today, yesterday = queries.utc_day(now), queries.utc_day(now - 86400)
    with engine.connect() as conn:
        counts = queries.daily_counts(conn, queries.Filters(), now=now)
        fox = queries.daily_counts(conn, queries.Filters(label="red fox", start=yesterday), now=now)
    engine.dispose()
    assert len(counts.days) == queries.DEFAULT_DAYS and counts.days[-1] == queries.utc_day(now - 600)
    totals = {label: sum(values) for label, values in counts.series.items()}
    # Classified events count under their vote class (fox: burst counts 2 + 1); the empty event adds nothing.
    assert totals == {"red fox": 3, XSS_LABEL: 1, "person": 1}
    assert counts.series["person"][counts.days.index(queries.utc_day(now - 86400 - 100))] == 1
    assert list(fox.series) == ["red fox"] and fox.days[0] == yesterday
    assert sum(fox.series["red fox"]) == 3 and today in fox.days


def test_every_query_runs_on_both_dialects(collector_url):
    now = int(time.time())
    seed(collector_url, now)
    engine = open_db(collector_url, read_only=True)
    f = queries.Filters(device="trap-01", label="red fox", start="2020-01-01", end=queries.utc_day(now))
    with engine.connect() as conn:
        assert [d.device for d in queries.device_rows(conn, now=now)] == ["trap-01", "trap-02", "trap-03"]
        assert queries.daily_counts(conn, f, now=now).days[-1] == queries.utc_day(now)
        queries.event_rows(conn, f)
        assert len(queries.latest_crops(conn, queries.Filters())) == 3
        queries.latest_crops(conn, f)
        assert XSS_LABEL in queries.class_labels(conn)
        assert queries.reject_counts(conn).counts == {"bad_topic": 1}
        assert queries.crop_jpeg(conn, "not-an-id") is None
    engine.dispose()


def test_plot_geometry():
    counts = queries.DailyCounts(["2026-06-01", "2026-06-02", "2026-06-03"],
                                 {f"c{i}": [i, 0, 2 * i] for i in range(10)})
    p = plot.build(counts)
    assert [s.label for s in p.series] == [*(f"c{i}" for i in range(7)), "other"]
    assert p.series[-1].dots[2].value == 2 * (7 + 8 + 9)
    assert [t for _y, t in p.y_ticks] == ["0", "10", "20", "30", "40", "50"]
    assert plot._nice_step(1) == 1 and plot._nice_step(7) == 2 and plot._nice_step(230) == 50
    assert plot.build(queries.DailyCounts(["2026-06-01"], {})).series == []


# -- the real page in headless Chromium ---------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path):
    """``wildedge collect serve`` on 127.0.0.1 at a free port over a seeded SQLite database: (base URL, ids)."""
    url = f"sqlite:///{tmp_path / 'collector.db'}"
    ids = seed(url, int(time.time()))
    port = _free_port()
    cmd = [str(Path(sys.executable).with_name("wildedge")), "collect", "serve", "--db", url, "--port", str(port)]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(base + "/static/style.css", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not start: {(tmp_path / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield base, ids
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_page_in_headless_chromium(served, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install "
                                                                 "playwright; no browser download)")
    base, ids = served
    requests: list[str] = []
    shot = tmp_path / "collector-page.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            tmp_path / "chromium-profile", executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS,
            viewport={"width": 1200, "height": 900})
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(base + "/", wait_until="load")
            assert page.locator("tr.device").count() == 3
            assert page.locator("tr.device.offline").count() == 1
            assert page.locator("svg.chart g.series").count() == 3
            assert page.locator('svg.chart g.series[data-label="red fox"] polyline').count() == 1
            widths = page.eval_on_selector_all("#crops img", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
            assert len(widths) == 3 and all(w == 96 for w in widths), widths
            assert page.title() == "wildedge collector"
            assert page.locator("text=<script>alert(1)</script>").count() >= 1  # shown as text, not run
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("WILDEDGE_ARTEFACTS"):
        target = Path(os.environ["WILDEDGE_ARTEFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / shot.name)
    hosts = {urlsplit(u).netloc for u in requests if not u.startswith(("data:", "about:"))}
    assert hosts == {urlsplit(base).netloc}, requests
    assert any(u.endswith(f"/crops/{ids['crops'][0]}.jpg") for u in requests)

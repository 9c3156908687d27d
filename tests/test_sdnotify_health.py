"""Process plumbing: the sd_notify protocol over real unix sockets, health readers, logging format."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.health import (
    CpuMeter,
    collect_health,
    parse_meminfo,
    read_cpu_temperature,
    read_memory,
    read_process_memory,
    read_throttled,
    read_uptime,
)
from edge.logsetup import configure_logging, stream_is_journal, syslog_priority
from edge.sdnotify import Notifier

# ---------------------------------------------------------------- sd_notify


@pytest.fixture
def listener(tmp_path: Path):
    """A bound AF_UNIX datagram socket standing in for systemd's notify socket."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield path, sock
    sock.close()


def _received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode("utf-8").split("\n")


def test_messages_reach_the_notify_socket(listener) -> None:
    path, sock = listener
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "10000000"}
    with Notifier.from_env(env) as notifier:
        assert notifier.enabled
        assert notifier.ready("camera open\nmodel warm") is True
        assert _received(sock) == ["READY=1", "STATUS=camera open model warm"]
        notifier.status("3 events today")
        assert _received(sock) == ["STATUS=3 events today"]
        assert notifier.watchdog() is True
        assert _received(sock) == ["WATCHDOG=1"]
        notifier.extend_timeout(30)
        assert _received(sock) == ["EXTEND_TIMEOUT_USEC=30000000"]
        notifier.stopping()
        assert _received(sock) == ["STOPPING=1"]
    assert not notifier.enabled
    assert notifier.ready() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")
def test_abstract_namespace_socket() -> None:
    name = f"wildedge-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        with Notifier.from_env({"NOTIFY_SOCKET": "@" + name}) as notifier:
            assert notifier.address == "\0" + name
            assert notifier.ready() is True
            assert _received(sock) == ["READY=1"]
            assert name in repr(notifier)
    finally:
        sock.close()


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}])
def test_disabled_notifier_is_a_no_op(env: dict[str, str]) -> None:
    notifier = Notifier.from_env({**env, "WATCHDOG_USEC": "2000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    assert notifier.ready("x") is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    notifier.close()


def test_watchdog_interval_is_half_the_timeout(listener) -> None:
    path, _ = listener
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env(env).watchdog_interval() == 15.0
    ours = {**env, "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(ours).watchdog_interval() == 15.0
    assert Notifier.from_env(ours, pid=os.getpid() + 1).watchdog_interval() is None


@pytest.mark.parametrize(
    "extra", [{}, {"WATCHDOG_PID": "1"}, {"WATCHDOG_USEC": "soon"}, {"WATCHDOG_USEC": "0"}]
)
def test_watchdog_not_ours_sends_nothing(listener, extra: dict[str, str]) -> None:
    path, sock = listener
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "4000000", **extra}
    if not extra:
        env.pop("WATCHDOG_USEC")
    with Notifier.from_env(env, pid=4242) as notifier:
        assert notifier.enabled
        assert notifier.watchdog_interval() is None
        assert notifier.watchdog() is False
        notifier.status("alive")  # still talks to systemd, just not as the watchdog
        assert _received(sock) == ["STATUS=alive"]


def test_vanished_socket_does_not_raise(listener, caplog: pytest.LogCaptureFixture) -> None:
    path, sock = listener
    with Notifier.from_env({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"}) as notifier:
        assert notifier.ready() is True
        sock.close()
        path.unlink()
        with caplog.at_level(logging.WARNING, logger="edge.sdnotify"):
            assert notifier.watchdog() is False
            assert notifier.watchdog() is False
            assert notifier.status("still going") is False
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # logged once per outage, not per ping
        assert str(path) in warnings[0].getMessage()
        back = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        back.bind(str(path))
        back.settimeout(5)
        try:
            assert notifier.watchdog() is True
            assert _received(back) == ["WATCHDOG=1"]
        finally:
            back.close()


def test_bad_assignment_is_a_caller_mistake(listener) -> None:
    path, _ = listener
    with Notifier.from_env({"NOTIFY_SOCKET": str(path)}) as notifier:
        with pytest.raises(ValueError):
            notifier.notify("READY=1\nSTATUS=x")
        with pytest.raises(ValueError):
            notifier.notify("READY")
        with pytest.raises(ValueError):
            notifier.extend_timeout(0)
    with pytest.raises(ValueError):
        Notifier("/run/x", watchdog_usec=0)


# ---------------------------------------------------------------- health


def _zone(root: Path, number: int, kind: str, temp: str | None) -> None:
    zone = root / "sys/class/thermal" / f"thermal_zone{number}"
    zone.mkdir(parents=True)
    (zone / "type").write_text(kind + "\n")
    if temp is not None:
        (zone / "temp").write_text(temp + "\n")


def test_thermal_prefers_the_cpu_zone(tmp_path: Path) -> None:
    _zone(tmp_path, 0, "acpitz", "27800")
    _zone(tmp_path, 2, "cpu-thermal", "51540")
    _zone(tmp_path, 10, "x86_pkg_temp", "60000")
    assert read_cpu_temperature(tmp_path) == pytest.approx(51.54)


def test_thermal_falls_back_to_first_readable_zone(tmp_path: Path) -> None:
    _zone(tmp_path, 10, "iwlwifi_1", "40000")
    _zone(tmp_path, 2, "acpitz", "33000")
    _zone(tmp_path, 1, "sleepy", None)
    assert read_cpu_temperature(tmp_path) == pytest.approx(33.0)
    _zone(tmp_path, 11, "x86_pkg_temp", "45500")
    assert read_cpu_temperature(tmp_path) == pytest.approx(45.5)


def test_missing_files_give_none(tmp_path: Path) -> None:
    assert read_cpu_temperature(tmp_path) is None
    assert read_throttled(tmp_path) is None
    assert read_memory(tmp_path) is None
    assert read_process_memory(tmp_path) is None
    assert read_uptime(tmp_path) is None


def test_throttled_flags(tmp_path: Path) -> None:
    path = tmp_path / "sys/devices/platform/soc/soc:firmware/get_throttled"
    path.parent.mkdir(parents=True)
    path.write_text("50005\n")
    flags = read_throttled(tmp_path)
    assert flags is not None
    assert flags["raw"] == 0x50005
    assert flags["under_voltage"] and flags["throttled"] and not flags["freq_capped"]
    assert flags["under_voltage_occurred"] and flags["throttled_occurred"]
    assert not flags["soft_temp_limit_occurred"]
    path.write_text("0\n")
    assert not any(v for k, v in read_throttled(tmp_path).items() if k != "raw")


MEMINFO = """\
MemTotal:        3884096 kB
MemFree:          512300 kB
MemAvailable:    2765432 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""


def test_meminfo_parsing(tmp_path: Path) -> None:
    fields = parse_meminfo(MEMINFO)
    assert fields["MemTotal"] == 3884096 * 1024
    assert fields["HugePages_Total"] == 0  # a count, not kB
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/meminfo").write_text(MEMINFO)
    assert read_memory(tmp_path) == {"total_bytes": 3884096 * 1024, "available_bytes": 2765432 * 1024}
    (tmp_path / "proc/meminfo").write_text("MemTotal: 1000 kB\n")  # kernel older than 3.14
    assert read_memory(tmp_path) == {"total_bytes": 1024000, "available_bytes": None}
    (tmp_path / "proc/self/status").write_text("Name:\tpython\nVmHWM:\t  20480 kB\nVmRSS:\t  10240 kB\n")
    assert read_process_memory(tmp_path) == {"rss_bytes": 10240 * 1024, "peak_rss_bytes": 20480 * 1024}
    (tmp_path / "proc/uptime").write_text("1302.32 1922.14\n")
    assert read_uptime(tmp_path) == pytest.approx(1302.32)


def _number_or_none(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def test_snapshot_on_this_machine(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 6, 1, 4, 30, tzinfo=timezone.utc))
    meter = CpuMeter()
    snap = collect_health(state_dir=tmp_path, clock=clock, cpu=meter,
                          extra={"queue_depth": 3, "camera": "open", "inference_ms": 41.5})
    assert json.loads(json.dumps(snap)) == snap
    assert snap["at"] == "2026-06-01T04:30:00+00:00"
    assert snap["queue_depth"] == 3 and snap["camera"] == "open"
    for key in ("cpu_temp_c", "mem_total_bytes", "mem_available_bytes", "rss_bytes", "peak_rss_bytes",
                "uptime_s", "process_cpu"):
        assert _number_or_none(snap[key]), key
    assert snap["throttled"] is None or isinstance(snap["throttled"], dict)
    assert snap["load_avg"] is None or (len(snap["load_avg"]) == 3 and all(x >= 0 for x in snap["load_avg"]))
    # The state dir exists on a real file system: its space is always known.
    assert 0 < snap["disk_free_bytes"] <= snap["disk_total_bytes"]
    if Path("/proc/self/status").exists():
        assert 0 < snap["rss_bytes"] <= snap["peak_rss_bytes"]
        assert 0 < snap["mem_available_bytes"] <= snap["mem_total_bytes"]


def test_snapshot_reads_under_root(tmp_path: Path) -> None:
    _zone(tmp_path, 0, "cpu-thermal", "48312")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text(MEMINFO)
    snap = collect_health(state_dir=tmp_path, root=tmp_path)
    assert snap["cpu_temp_c"] == pytest.approx(48.312)
    assert snap["mem_total_bytes"] == 3884096 * 1024
    assert snap["rss_bytes"] is None and snap["uptime_s"] is None and snap["throttled"] is None


def test_snapshot_rejects_bad_extra(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cpu_temp_c"):
        collect_health(state_dir=tmp_path, extra={"cpu_temp_c": 1.0})
    with pytest.raises(ValueError, match="JSON"):
        collect_health(state_dir=tmp_path, extra={"camera": object()})


def test_cpu_meter_busy_versus_sleep() -> None:
    meter = CpuMeter()
    time.sleep(0.05)
    idle = meter.sample()
    end = time.monotonic() + 0.05
    while time.monotonic() < end:
        pass
    busy = meter.sample()
    assert idle is not None and busy is not None
    assert busy > idle


def test_cpu_meter_arithmetic() -> None:
    cpu, wall = [0.0], [100.0]
    meter = CpuMeter(process_time=lambda: cpu[0], monotonic=lambda: wall[0])
    cpu[0], wall[0] = 3.0, 104.0
    assert meter.sample() == pytest.approx(0.75)
    assert meter.sample() is None  # no time passed since the last sample
    cpu[0], wall[0] = 7.0, 106.0
    assert meter.sample() == pytest.approx(2.0)  # two busy threads
    meter.reset()
    wall[0] = 116.0
    assert meter.sample() == 0.0


# ---------------------------------------------------------------- logging


@pytest.fixture
def root_logger():
    """Restore the root logger after a test reconfigures it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _emit_all(name: str) -> None:
    log = logging.getLogger(name)
    log.debug("dbg %d", 1)
    log.info("started")
    log.warning("disk low")
    try:
        raise RuntimeError("camera lost")
    except RuntimeError:
        log.exception("capture failed")


def test_plain_format(root_logger) -> None:
    out = io.StringIO()
    configure_logging(verbosity=0, stream=out, environ={})
    _emit_all("edge.test")
    lines = out.getvalue().splitlines()
    assert not any("dbg" in line for line in lines)
    assert any(line.endswith("INFO edge.test: started") for line in lines)
    assert lines[0][:4].isdigit() and lines[0][4] == "-"  # starts with a timestamp
    assert not any(line.startswith("<") for line in lines)


def test_journald_format(root_logger, tmp_path: Path) -> None:
    with open(tmp_path / "stderr.log", "w+", encoding="utf-8") as stream:
        st = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stream_is_journal(stream, env)
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        configure_logging(verbosity=1, stream=stream, environ=env)
        _emit_all("edge.test")
        stream.seek(0)
        lines = stream.read().splitlines()
    assert "<7>edge.test: dbg 1" in lines
    assert "<6>edge.test: started" in lines
    assert "<4>edge.test: disk low" in lines
    assert "<3>edge.test: capture failed" in lines
    # Every traceback line carries the error priority too.
    tb = lines[lines.index("<3>edge.test: capture failed") + 1:]
    assert tb and all(line.startswith("<3>") for line in tb)
    assert tb[-1] == "<3>RuntimeError: camera lost"


def test_reconfigure_replaces_handler_and_levels(root_logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first, journald=True)
    configure_logging(verbosity=-1, stream=second, journald=False)
    _emit_all("edge.test")
    assert first.getvalue() == ""
    assert "disk low" in second.getvalue() and "started" not in second.getvalue()
    assert not stream_is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})
    assert [syslog_priority(x) for x in (50, 40, 30, 20, 10)] == [2, 3, 4, 6, 7]

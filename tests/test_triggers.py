"""Triggers: timelapse slots, active windows (clock, sun, polar, DST), external fires, GPIO, control."""

from __future__ import annotations

import json
import socket
import sys
import threading
import types
from datetime import date, datetime, time, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import astral
import astral.sun
import pytest

from edge.clock import FakeClock
from edge.errors import ConfigError
from edge.triggers import (
    ActiveWindows,
    ControlServer,
    ExternalTriggers,
    Fire,
    GpioTrigger,
    OnceTrigger,
    Timelapse,
    send_command,
)

AMS = ZoneInfo("Europe/Amsterdam")
AMSTERDAM = (52.37, 4.89)
LONGYEARBYEN = (78.22, 15.65)
LYR = ZoneInfo("Arctic/Longyearbyen")
TROMSO = (69.65, 18.96)
OSLO = ZoneInfo("Europe/Oslo")


def local(zone: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone)


def walk(trigger: Timelapse, start: datetime, end: datetime) -> list[datetime]:
    """Fire a timelapse as the daemon would, checking exactly when due, until ``end``."""
    fired, now = [], start
    while (due := trigger.due(now)) is not None and due < end:
        now = max(now, due)
        fire = trigger.check(now, None)
        assert fire is not None and fire.reason == "timelapse"
        fired.append(now)
    return fired


# -- timelapse ----------------------------------------------------------------------------------------
def test_timelapse_slots_align_to_the_local_wall_clock():
    lapse = Timelapse(timedelta(minutes=20), tz=AMS)
    assert lapse.due(local(AMS, 2024, 6, 1, 10, 7)) == local(AMS, 2024, 6, 1, 10, 20)
    assert lapse.check(local(AMS, 2024, 6, 1, 10, 19, 59), None) is None  # not before its slot
    fired = walk(lapse, local(AMS, 2024, 6, 1, 10, 7), local(AMS, 2024, 6, 1, 13, 0))
    assert [t.astimezone(AMS).strftime("%H:%M") for t in fired] == [
        "10:20", "10:40", "11:00", "11:20", "11:40", "12:00", "12:20", "12:40"]
    assert all(t.astimezone(AMS).second == 0 and t.astimezone(AMS).minute in (0, 20, 40) for t in fired)


def test_timelapse_slot_exactly_now_is_due_now():
    lapse = Timelapse(timedelta(minutes=20), tz=AMS)
    assert lapse.due(local(AMS, 2024, 6, 1, 10, 40)) == local(AMS, 2024, 6, 1, 10, 40)


@pytest.mark.parametrize(("minutes", "count", "last"),
                         [(7, 206, "23:55"), (90, 16, "22:30"), (20, 72, "23:40")])
def test_intervals_that_do_not_divide_a_day_restart_at_midnight(minutes, count, last):
    lapse = Timelapse(timedelta(minutes=minutes), tz=AMS)
    slots = lapse.slots(date(2024, 6, 1))
    assert len(slots) == count
    assert slots[-1].astimezone(AMS).strftime("%H:%M") == last
    after_last = lapse.next_slot(slots[-1] + timedelta(seconds=1))
    assert after_last == local(AMS, 2024, 6, 2, 0, 0)
    gaps = {b - a for a, b in pairwise(slots)}
    assert gaps == {timedelta(minutes=minutes)}


def test_late_check_fires_once_and_skips_the_missed_slots(caplog):
    lapse = Timelapse(timedelta(minutes=20), tz=AMS)
    assert lapse.due(local(AMS, 2024, 6, 1, 10, 7)) == local(AMS, 2024, 6, 1, 10, 20)
    late = local(AMS, 2024, 6, 1, 11, 5)  # slept through 10:20, 10:40 and 11:00
    with caplog.at_level("INFO", logger="edge.triggers.timelapse"):
        fire = lapse.check(late, None)
    assert fire is not None and fire.at == late and fire.burst == 1
    slot = local(AMS, 2024, 6, 1, 10, 20).astimezone(timezone.utc)
    assert fire.detail == {"slot": slot.isoformat(), "missed": 2}
    assert "2 slot(s)" in caplog.text
    assert lapse.check(late, None) is None  # once, not a burst of catch-up shots
    assert lapse.due(late) == local(AMS, 2024, 6, 1, 11, 20)
    assert lapse.fired == 1 and lapse.missed == 2


def test_timelapse_follows_the_clock_when_it_steps_back():
    lapse = Timelapse(timedelta(minutes=20), tz=AMS)
    lapse.check(local(AMS, 2024, 6, 1, 10, 0), None)
    assert lapse.due(local(AMS, 2024, 6, 1, 10, 0)) == local(AMS, 2024, 6, 1, 10, 20)
    # NTP corrects a clock that ran a day ahead: the timelapse must not wait a day for its slot
    assert lapse.due(local(AMS, 2024, 5, 31, 10, 5)) == local(AMS, 2024, 5, 31, 10, 20)


def test_timelapse_burst_and_bad_options():
    lapse = Timelapse(timedelta(hours=1), tz=AMS, burst=3)
    fire = lapse.check(lapse.due(local(AMS, 2024, 6, 1, 0, 0)), None)
    assert fire is not None and fire.burst == 3
    with pytest.raises(ValueError, match="interval"):
        Timelapse(timedelta(days=2), tz=AMS)
    with pytest.raises(ValueError, match="interval"):
        Timelapse(timedelta(0), tz=AMS)
    with pytest.raises(ValueError, match="aware"):
        lapse.due(datetime(2024, 6, 1, 10, 0))


# -- DST ----------------------------------------------------------------------------------------------
def test_spring_forward_skips_the_missing_slots():
    lapse = Timelapse(timedelta(minutes=20), tz=AMS)
    slots = lapse.slots(date(2024, 3, 31))  # 02:00 -> 03:00
    assert len(slots) == 69
    walls = [s.astimezone(AMS).strftime("%H:%M") for s in slots]
    assert "01:40" in walls and "03:00" in walls and not any(w.startswith("02:") for w in walls)
    fired = walk(lapse, local(AMS, 2024, 3, 31, 0, 0), local(AMS, 2024, 4, 1, 0, 0))
    assert fired == slots


def test_fall_back_fires_the_repeated_hour_twice():
    lapse = Timelapse(timedelta(minutes=20), tz=AMS)
    slots = lapse.slots(date(2024, 10, 27))  # 03:00 CEST -> 02:00 CET
    assert len(slots) == 75
    assert len(set(slots)) == 75 and slots == sorted(slots)
    repeated = [s for s in slots if s.astimezone(AMS).hour == 2]
    assert len(repeated) == 6
    assert repeated[3] - repeated[0] == timedelta(hours=1)  # 02:00 CEST, then 02:00 CET an hour later
    fired = walk(lapse, local(AMS, 2024, 10, 27, 0, 0), local(AMS, 2024, 10, 28, 0, 0))
    assert fired == slots
    # from inside the first 02:xx, the next slot is the next real instant, not the next wall time
    first_pass = repeated[2] + timedelta(minutes=5)  # 02:45 CEST
    assert lapse.next_slot(first_pass) == repeated[3]


def test_window_end_on_a_skipped_wall_time_falls_after_the_jump():
    windows = ActiveWindows(["22:00..02:30"], tz=AMS)
    end = windows.next_change(local(AMS, 2024, 3, 30, 23, 0))
    assert end == datetime(2024, 3, 31, 3, 30, tzinfo=AMS)  # 02:30 does not exist that night
    assert end - local(AMS, 2024, 3, 30, 22, 0) == timedelta(hours=4, minutes=30)


# -- clock-time windows -------------------------------------------------------------------------------
def test_fixed_window_crossing_midnight():
    windows = ActiveWindows(["22:00..02:00"], tz=AMS)
    assert windows.is_active(local(AMS, 2024, 6, 1, 23, 0))
    assert windows.is_active(local(AMS, 2024, 6, 2, 1, 59))
    assert windows.is_active(local(AMS, 2024, 6, 1, 22, 0))  # the start is in, the end is out
    assert not windows.is_active(local(AMS, 2024, 6, 2, 2, 0))
    assert not windows.is_active(local(AMS, 2024, 6, 1, 12, 0))
    assert windows.next_change(local(AMS, 2024, 6, 1, 12, 0)) == local(AMS, 2024, 6, 1, 22, 0)
    assert windows.next_change(local(AMS, 2024, 6, 1, 23, 0)) == local(AMS, 2024, 6, 2, 2, 0)
    assert windows.next_active(local(AMS, 2024, 6, 2, 3, 0)) == local(AMS, 2024, 6, 2, 22, 0)
    assert windows.next_active(local(AMS, 2024, 6, 2, 1, 0)) == local(AMS, 2024, 6, 2, 1, 0)


def test_several_windows_are_unioned_and_empty_means_always():
    windows = ActiveWindows(["06:00..08:00", "07:30..09:00", "18:00..19:00"], tz=AMS)
    spans = windows.spans(local(AMS, 2024, 6, 1, 0, 0), local(AMS, 2024, 6, 2, 0, 0))
    assert spans == [(local(AMS, 2024, 6, 1, 6, 0), local(AMS, 2024, 6, 1, 9, 0)),
                     (local(AMS, 2024, 6, 1, 18, 0), local(AMS, 2024, 6, 1, 19, 0))]
    always = ActiveWindows([], tz=AMS)
    assert always.is_active(local(AMS, 2024, 6, 1, 3, 0))
    assert always.next_change(local(AMS, 2024, 6, 1)) is None


def test_timelapse_fires_only_inside_its_window():
    windows = ActiveWindows(["22:00..02:00"], tz=AMS)
    lapse = Timelapse(timedelta(minutes=90), tz=AMS, windows=windows)
    fired = walk(lapse, local(AMS, 2024, 6, 1, 12, 0), local(AMS, 2024, 6, 2, 12, 0))
    assert [t.astimezone(AMS).strftime("%H:%M") for t in fired] == ["22:30", "00:00", "01:30"]


def test_a_late_check_after_the_window_closed_does_not_fire():
    lapse = Timelapse(timedelta(minutes=20), tz=AMS, windows=ActiveWindows(["22:00..02:00"], tz=AMS))
    assert lapse.due(local(AMS, 2024, 6, 1, 12, 0)) == local(AMS, 2024, 6, 1, 22, 0)
    assert lapse.check(local(AMS, 2024, 6, 2, 9, 0), None) is None  # slept through the whole night
    assert lapse.missed == 12 and lapse.fired == 0
    assert lapse.due(local(AMS, 2024, 6, 2, 9, 0)) == local(AMS, 2024, 6, 2, 22, 0)


def test_bad_windows_are_refused():
    with pytest.raises(ValueError, match="latitude"):
        ActiveWindows(["sunset..sunrise"], tz=AMS)
    with pytest.raises(ValueError, match="window"):
        ActiveWindows(["06:00-18:00"], tz=AMS)
    with pytest.raises(ValueError, match="list"):
        ActiveWindows("06:00..18:00", tz=AMS)  # type: ignore[arg-type]


# -- sun windows --------------------------------------------------------------------------------------
@pytest.mark.parametrize("day", [date(2024, 3, 20), date(2024, 6, 21), date(2024, 10, 27),
                                 date(2024, 12, 21)])
def test_sun_window_matches_astral_in_amsterdam(day):
    observer = astral.Observer(*AMSTERDAM)
    windows = ActiveWindows(["sunrise..sunset"], tz=AMS, latitude=AMSTERDAM[0], longitude=AMSTERDAM[1])
    midnight = datetime.combine(day, time(), tzinfo=AMS)
    rise = windows.next_change(midnight)
    fall = windows.next_change(rise)
    assert abs(rise - astral.sun.sunrise(observer, day, AMS)) < timedelta(minutes=1)
    assert abs(fall - astral.sun.sunset(observer, day, AMS)) < timedelta(minutes=1)
    assert windows.is_active(rise) and not windows.is_active(fall) and not windows.is_active(midnight)

    night = ActiveWindows(["sunset-30m..sunrise+30m"], tz=AMS, latitude=AMSTERDAM[0], longitude=AMSTERDAM[1])
    assert night.is_active(midnight)
    assert abs(night.next_change(midnight) - (rise + timedelta(minutes=30))) < timedelta(seconds=1)
    assert abs(night.next_change(midnight + timedelta(hours=12)) - (fall - timedelta(minutes=30))) \
        < timedelta(seconds=1)


def test_mixed_clock_and_sun_window():
    windows = ActiveWindows(["sunset..02:00"], tz=AMS, latitude=AMSTERDAM[0], longitude=AMSTERDAM[1])
    fall = astral.sun.sunset(astral.Observer(*AMSTERDAM), date(2024, 6, 21), AMS)
    start = windows.next_change(local(AMS, 2024, 6, 21, 12, 0))
    assert abs(start - fall) < timedelta(minutes=1)
    assert windows.next_change(start) == local(AMS, 2024, 6, 22, 2, 0)


@pytest.mark.parametrize(("place", "zone"), [(LONGYEARBYEN, LYR), (TROMSO, OSLO)])
def test_polar_day_sun_is_up_all_day(place, zone):
    day = ActiveWindows(["sunrise..sunset"], tz=zone, latitude=place[0], longitude=place[1])
    night = ActiveWindows(["sunset..sunrise"], tz=zone, latitude=place[0], longitude=place[1])
    for hour in (0, 6, 12, 18, 23):
        when = local(zone, 2024, 6, 21, hour, 30)
        assert day.is_active(when) and not night.is_active(when)
    # the first night after the midnight sun starts when astral finds sunsets again (late July/August)
    first_night = night.next_active(local(zone, 2024, 6, 21, 12, 0))
    assert first_night is not None
    assert datetime(2024, 7, 15, tzinfo=zone) < first_night < datetime(2024, 8, 31, tzinfo=zone)
    assert day.next_change(local(zone, 2024, 6, 21, 12, 0)) == first_night


@pytest.mark.parametrize(("place", "zone"), [(LONGYEARBYEN, LYR), (TROMSO, OSLO)])
def test_polar_night_sun_is_down_all_day(place, zone):
    observer = astral.Observer(*place)
    day = ActiveWindows(["sunrise..sunset"], tz=zone, latitude=place[0], longitude=place[1])
    padded = ActiveWindows(["sunset-30m..sunrise+30m"], tz=zone, latitude=place[0], longitude=place[1])
    for hour in (0, 6, 12, 18, 23):
        when = local(zone, 2024, 12, 21, hour, 30)
        assert not day.is_active(when) and padded.is_active(when)
    # the sun comes back on the first date astral finds a sunrise again
    first = day.next_active(local(zone, 2024, 12, 21, 12, 0))
    when = date(2024, 12, 21)
    while True:
        try:
            expected = astral.sun.sunrise(observer, when, zone)
            break
        except ValueError:
            when += timedelta(days=1)
    assert abs(first - expected) < timedelta(minutes=1)


def test_a_window_that_never_opens_gives_none():
    quito = ZoneInfo("America/Guayaquil")  # days are about 12 h 7 min all year on the equator
    windows = ActiveWindows(["sunrise+7h..sunset-7h"], tz=quito, latitude=-0.18, longitude=-78.47)
    now = local(quito, 2024, 6, 1, 12, 0)
    assert not windows.is_active(now)
    assert windows.next_active(now) is None and windows.next_change(now) is None
    assert Timelapse(timedelta(minutes=20), tz=quito, windows=windows).due(now) is None


# -- once and external --------------------------------------------------------------------------------
def test_once_trigger_fires_once():
    once = OnceTrigger(burst=2)
    now = datetime(2024, 6, 1, tzinfo=timezone.utc)
    assert once.due(now) == now
    assert once.check(now, None) == Fire("once", now, burst=2)  # type: ignore[arg-type]
    assert once.due(now) is None and once.check(now, None) is None  # type: ignore[arg-type]


def test_external_fires_from_many_threads_all_arrive():
    external = ExternalTriggers(burst=2, maxlen=1000)
    threads = [threading.Thread(target=lambda n=n: [external.fire("command", detail={"n": n, "i": i})
                                                    for i in range(25)]) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got, bursts = [], set()
    while (fire := external.poll()) is not None:
        got.append((fire.detail["n"], fire.detail["i"]))
        bursts.add(fire.burst)
    assert sorted(got) == [(n, i) for n in range(8) for i in range(25)]
    assert external.accepted == 200 and external.dropped == 0 and external.poll() is None
    assert bursts == {2}  # the queue's default burst
    assert all(got.index((n, i)) < got.index((n, i + 1)) for n in range(8) for i in range(24))


def test_external_wait_wakes_on_a_fire_from_another_thread():
    external = ExternalTriggers()
    waiting = threading.Event()

    def later() -> None:
        waiting.wait()
        external.fire("external", burst=3, detail={"pin": 17})

    thread = threading.Thread(target=later)
    thread.start()
    waiting.set()
    fire = external.wait(60.0)  # returns with the fire, long before the timeout
    thread.join()
    assert fire is not None and fire.reason == "external" and fire.burst == 3 and fire.detail == {"pin": 17}
    assert external.wait(0.0) is None


def test_external_cooldown_drops_sensor_fires_but_not_commands():
    clock = FakeClock(datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc))
    external = ExternalTriggers(cooldown=timedelta(seconds=5), clock=clock)
    assert external.fire()
    clock.advance(2)
    assert not external.fire()  # within the cooldown
    assert external.fire("command")  # a person asked: never dropped
    clock.advance(4)
    assert external.fire()
    assert external.ignored == 1 and external.accepted == 3
    assert external.fire("stop")
    assert [external.poll().reason for _ in range(4)] == ["stop", "external", "command", "external"]
    assert external.poll() is None


def test_external_queue_is_bounded_but_stop_gets_through():
    external = ExternalTriggers(maxlen=2)
    assert external.fire("command") and external.fire("command")
    assert not external.fire("command") and external.dropped == 1
    assert external.fire("stop") and len(external) == 3
    assert external.poll().reason == "stop"


# -- GPIO ---------------------------------------------------------------------------------------------
class FakeInput:
    """Stands in for gpiozero.DigitalInputDevice."""

    opened: list[FakeInput] = []

    def __init__(self, pin: int, *, pull_up: bool = False) -> None:
        if pin == 99:
            raise RuntimeError("pin 99 does not exist")
        self.pin, self.pull_up, self.closed = pin, pull_up, False
        self.when_activated = None
        FakeInput.opened.append(self)

    def activate(self) -> None:
        if self.when_activated is not None:
            self.when_activated()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_gpiozero(monkeypatch):
    FakeInput.opened = []
    module = types.ModuleType("gpiozero")
    module.DigitalInputDevice = FakeInput  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gpiozero", module)
    return module


def test_gpio_activation_fires_an_external_trigger(fake_gpiozero):
    external = ExternalTriggers()
    with GpioTrigger(17, external, pull_up=True) as gpio:
        (device,) = FakeInput.opened
        assert device.pin == 17 and device.pull_up is True
        threading.Thread(target=device.activate).start()  # gpiozero calls back on its own thread
        fire = external.wait(60.0)
        assert fire is not None and fire.reason == "external" and fire.detail == {"pin": 17}
        assert gpio.activations == 1
    assert device.closed and device.when_activated is None


def test_gpio_errors_are_config_errors(fake_gpiozero, monkeypatch):
    with pytest.raises(ConfigError, match="pin 99"):
        GpioTrigger(99, ExternalTriggers()).open()
    monkeypatch.setitem(sys.modules, "gpiozero", None)  # import fails as when not installed
    with pytest.raises(ConfigError, match="gpiozero"):
        GpioTrigger(17, ExternalTriggers()).open()


# -- control socket -----------------------------------------------------------------------------------
def _raw(path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return json.loads(data)


def test_control_round_trip_and_malformed_input(tmp_path):
    path = tmp_path / "control.sock"
    seen = []

    def handler(request: dict) -> dict:
        seen.append(request)
        if request["cmd"] == "boom":
            raise RuntimeError("handler bug")
        return {"ok": True, "echo": request}

    with ControlServer(path, handler) as server:
        reply = send_command(path, {"cmd": "capture", "burst": 3})
        assert reply == {"ok": True, "echo": {"cmd": "capture", "burst": 3}}
        bad = _raw(path, b"{not json\n")
        assert bad["ok"] is False and "malformed" in bad["error"]
        assert _raw(path, b"[1, 2]\n")["ok"] is False
        assert _raw(path, b'{"no": "cmd"}')["ok"] is False
        boom = send_command(path, {"cmd": "boom"})
        assert boom == {"ok": False, "error": "RuntimeError: handler bug"}
        # the server survived all of that
        assert send_command(path, {"cmd": "status"})["ok"] is True
        assert server.served == 6 and server.errors == 4
    assert [r["cmd"] for r in seen] == ["capture", "boom", "status"]
    assert not path.exists()


def test_send_command_without_a_daemon_says_so(tmp_path):
    with pytest.raises(ConfigError, match="no wildedge daemon"):
        send_command(tmp_path / "control.sock", {"cmd": "capture"})
    # a socket file left behind by a daemon that died
    stale = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(stale))
    sock.close()
    with pytest.raises(ConfigError, match="no wildedge daemon"):
        send_command(stale, {"cmd": "capture"})
    with ControlServer(stale, lambda request: {"ok": True}):  # takes the stale socket's place
        assert send_command(stale, {"cmd": "ping"}) == {"ok": True}
        with pytest.raises(ConfigError, match="another wildedge daemon"):
            ControlServer(stale, lambda request: {"ok": True}).start()
    with pytest.raises(ValueError, match="cmd"):
        send_command(stale, {"command": "capture"})


def test_control_server_never_deletes_a_regular_file(tmp_path):
    path = tmp_path / "control.sock"
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="not a socket"):
        ControlServer(path, lambda request: {"ok": True}).start()
    assert path.read_text() == "not a socket"

"""The reboot strategy, window and locksmithd settings (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from provisioner.cloudconfig.model import RebootStrategy
from provisioner.errors import ConfigError
from provisioner.node.update.strategy import (
    DEFAULT_ENDPOINTS,
    Window,
    key_value,
    merged_update_conf,
    parse_window,
    reboot_settings,
)

# 2026-12-07 is a Monday.
MON = dt.datetime(2026, 12, 7)


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return MON + dt.timedelta(days=day, hours=hour, minutes=minute)


def test_key_value_follows_update_engine():
    text = 'GROUP="beta"\n# REBOOT_STRATEGY=off\nnonsense\nSERVER=http://x/a=b\nREBOOT_STRATEGY=\'etcd-lock\'\n'
    assert key_value(text) == {"GROUP": "beta", "SERVER": "http://x/a=b", "REBOOT_STRATEGY": "etcd-lock"}


def test_first_file_with_a_key_wins():
    merged = merged_update_conf([("/etc/coreos/update.conf", "GROUP=beta\n"),
                                 ("/usr/share/coreos/update.conf", "GROUP=stable\nREBOOT_STRATEGY=off\n")])
    assert merged == {"GROUP": ("beta", "/etc/coreos/update.conf"),
                      "REBOOT_STRATEGY": ("off", "/usr/share/coreos/update.conf")}


def test_defaults_reboot_without_window():
    settings = reboot_settings({}, {})
    assert settings.strategy is RebootStrategy.REBOOT
    assert settings.endpoints == DEFAULT_ENDPOINTS and settings.window is None and settings.group == ""


def test_environment_wins_over_update_conf():
    conf = {"REBOOT_STRATEGY": ("reboot", "/etc/coreos/update.conf"),
            "LOCKSMITHD_GROUP": ("racks", "/etc/coreos/update.conf")}
    environ = {"REBOOT_STRATEGY": "etcd-lock", "LOCKSMITHD_ENDPOINT": "http://10.0.0.1:2379,http://10.0.0.2:2379",
               "REBOOT_WINDOW_START": "Thu 23:00", "REBOOT_WINDOW_LENGTH": "1h30m"}
    settings = reboot_settings(conf, environ)
    assert settings.strategy is RebootStrategy.ETCD_LOCK
    assert settings.endpoints == ("http://10.0.0.1:2379", "http://10.0.0.2:2379")
    assert settings.group == "racks"
    assert settings.window == Window(23, 0, dt.timedelta(minutes=90), weekday=3)


def test_locksmithd_window_names_count_too():
    settings = reboot_settings({}, {"LOCKSMITHD_REBOOT_WINDOW_START": "04:00",
                                    "LOCKSMITHD_REBOOT_WINDOW_LENGTH": "30m"})
    assert settings.window == Window(4, 0, dt.timedelta(minutes=30))


@pytest.mark.parametrize(("conf", "environ", "message"), [
    ({"REBOOT_STRATEGY": ("sometimes", "/etc/coreos/update.conf")}, {},
     "/etc/coreos/update.conf: REBOOT_STRATEGY: 'sometimes' is not a reboot strategy (best-effort, etcd-lock, "
     "reboot, off)"),
    ({}, {"LOCKSMITHD_ENDPOINT": "127.0.0.1:2379"},
     "LOCKSMITHD_ENDPOINT: etcd endpoint '127.0.0.1:2379' is not an http:// or https:// URL"),
    ({}, {"REBOOT_WINDOW_START": "23:00"},
     "LOCKSMITHD_REBOOT_WINDOW_LENGTH: not set, but the window's other half is (both or neither)"),
    ({}, {"REBOOT_WINDOW_START": "25:00", "REBOOT_WINDOW_LENGTH": "1h"},
     "REBOOT_WINDOW_START: '25:00' is not a time like 23:00 or Thu 23:00"),
    ({}, {"REBOOT_WINDOW_START": "Thx 01:00", "REBOOT_WINDOW_LENGTH": "1h"},
     "REBOOT_WINDOW_START: 'Thx' is not a weekday (Mon..Sun)"),
    ({}, {"REBOOT_WINDOW_START": "01:00", "REBOOT_WINDOW_LENGTH": "an hour"},
     "REBOOT_WINDOW_LENGTH: 'an hour' is not a duration like 5s, 500ms or 1m30s"),
    ({}, {"REBOOT_WINDOW_START": "01:00", "REBOOT_WINDOW_LENGTH": "24h"},
     "REBOOT_WINDOW_LENGTH: '24h' must be more than 0 and less than a day"),
    ({"REBOOT_WINDOW_START": ("Sun 01:00", "/etc/coreos/update.conf")}, {"REBOOT_WINDOW_LENGTH": "168h"},
     "REBOOT_WINDOW_LENGTH: '168h' must be more than 0 and less than a week"),
])
def test_bad_settings_name_their_source(conf, environ, message):
    with pytest.raises(ConfigError) as error:
        reboot_settings(conf, environ)
    assert str(error.value) == message


def test_daily_window():
    window = parse_window("23:30", "1h")
    assert window is not None
    assert window.seconds_until_open(at(0, 22)) == 90 * 60
    assert window.is_open(at(0, 23, 30)) and window.is_open(at(1, 0, 29))
    assert not window.is_open(at(1, 0, 30))
    # just after it closed: the next one is tomorrow's
    assert window.current_or_next(at(1, 0, 30)) == (at(1, 23, 30), at(2, 0, 30))
    assert window.seconds_until_open(at(1, 0, 15)) == 0


def test_weekly_window_wraps_over_the_week_end():
    window = parse_window("sun 23:00", "2h")
    assert window == Window(23, 0, dt.timedelta(hours=2), weekday=6)
    # Monday 00:30 is inside the window that opened on Sunday (the day before, last week's)
    assert window.is_open(at(0, 0, 30))
    assert window.current_or_next(at(0, 1)) == (at(6, 23), at(7, 1))
    assert window.seconds_until_open(at(6, 22)) == 3600
    assert not window.is_open(at(3, 23, 30))


def test_thursday_window_from_every_day_of_the_week():
    window = parse_window("Thu 23:00", "1h30m")
    assert window is not None
    for day in range(7):
        start, end = window.current_or_next(at(day, 12))
        assert start.weekday() == 3 and (start.hour, start.minute) == (23, 0)
        assert end - start == dt.timedelta(minutes=90)
        assert start >= at(day, 12) and start - at(day, 12) < dt.timedelta(days=7)


def test_no_window_means_none():
    assert parse_window("", "") is None

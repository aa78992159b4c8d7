"""How a node reboots after an update: locksmithd's strategy, reboot window and etcd settings.

Sources, as on CoreOS:
- REBOOT_STRATEGY from update.conf, searched the way update_engine searches its keys
  (simple_key_value_store.cc): /etc/coreos/update.conf, /etc/flatcar/update.conf, then
  /usr/share/coreos/update.conf, /usr/share/flatcar/update.conf; the first file that has the key wins;
  `KEY=VALUE` split at the first `=`, one pair of outer quotes stripped. coreos-cloudinit writes the key
  there from `coreos.update.reboot-strategy`.
- the locksmithd environment: LOCKSMITHD_ENDPOINT (comma list), LOCKSMITHD_GROUP,
  LOCKSMITHD_ETCD_CAFILE/CERTFILE/KEYFILE, LOCKSMITHD_REBOOT_WINDOW_START/LENGTH or REBOOT_WINDOW_*
  (coreos-cloudinit writes `coreos.locksmith` as the drop-in locksmithd.service.d/20-cloudinit.conf, the
  window under the REBOOT_WINDOW_* names); the same keys in update.conf count too (locksmithd.service
  read it as an EnvironmentFile), the environment winning.

Strategies: etcd-lock, reboot, best-effort (etcd-lock while the local etcd member is active, else
reboot: locksmith removed it in v0.6.0, kept here because cloud-configs still say it), off. Unset means
reboot (locksmith >= v0.6.0).

Window (locksmith pkg/timeutil/periodic.go): start `HH:MM` (daily) or `Thu 23:00` (weekly), local time;
length a Go duration shorter than the period. Both or neither.

Pure: `key_value`, `parse_window`, `Window.*`, `reboot_settings`; I/O: `load_reboot_settings`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioner.cloudconfig.model import RebootStrategy
from provisioner.errors import ConfigError, UsageError
from provisioner.scheduler.config import parse_duration
from provisioner.scheduler.etcd import TlsFiles, parse_endpoints

UPDATE_CONF_FILES = ("/etc/coreos/update.conf", "/etc/flatcar/update.conf",
                     "/usr/share/coreos/update.conf", "/usr/share/flatcar/update.conf")
# locksmithctl's and locksmithd's default endpoints (the etcd v2-era client port 4001 included).
DEFAULT_ENDPOINTS = ("http://127.0.0.1:2379", "http://127.0.0.1:4001")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_START = re.compile(r"(?:(?P<day>[A-Za-z]{3}) )?(?P<hour>\d{1,2}):(?P<minute>\d{1,2})")
DAY = dt.timedelta(days=1)
WEEK = dt.timedelta(days=7)


# -- update.conf (pure) -----------------------------------------------------------------------------

def key_value(text: str) -> dict[str, str]:
    """update_engine's key=value file: split at the first '=', one pair of outer quotes stripped;
    lines without '=' and comments are skipped."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, value = stripped.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def merged_update_conf(files: Sequence[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """{key: (value, file)} from (path, text) pairs in search order: the first file with a key wins."""
    merged: dict[str, tuple[str, str]] = {}
    for path, text in files:
        for key, value in key_value(text).items():
            merged.setdefault(key, (value, path))
    return merged


# -- the reboot window (pure) -----------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """A daily (weekday None) or weekly window of `length`, starting at hour:minute local time."""

    hour: int
    minute: int
    length: dt.timedelta
    weekday: int | None = None   # 0 = Monday, as datetime.weekday()

    @property
    def period(self) -> dt.timedelta:
        return DAY if self.weekday is None else WEEK

    def _start_near(self, now: dt.datetime) -> dt.datetime:
        """The window start in `now`'s day (daily) or week (weekly)."""
        start = now.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
        if self.weekday is not None:
            start += dt.timedelta(days=self.weekday - now.weekday())
        return start

    def current_or_next(self, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """(start, end) of the window that contains `now`, else of the next one."""
        base = self._start_near(now)
        for start in (base - self.period, base, base + self.period):
            if now < start + self.length:
                return start, start + self.length
        raise AssertionError("unreachable: the window after `base` ends after `now`")

    def is_open(self, now: dt.datetime) -> bool:
        start, _ = self.current_or_next(now)
        return start <= now

    def seconds_until_open(self, now: dt.datetime) -> float:
        """0 inside the window, else the seconds to its next start."""
        start, _ = self.current_or_next(now)
        return max(0.0, (start - now).total_seconds())


def parse_window(start: str, length: str, start_name: str = "REBOOT_WINDOW_START",
                 length_name: str = "REBOOT_WINDOW_LENGTH") -> Window | None:
    """A window from its start and Go-duration length; None when neither is set. Raises ConfigError naming
    `start_name` or `length_name` (a variable, or `file: key`)."""
    start, length = start.strip(), length.strip()
    if not start and not length:
        return None
    if not start or not length:
        missing = start_name if not start else length_name
        raise ConfigError(f"{missing}: not set, but the window's other half is (both or neither)")
    match = _START.fullmatch(start)
    weekday = None
    if match is None or int(match["hour"]) > 23 or int(match["minute"]) > 59:
        raise ConfigError(f"{start_name}: {start!r} is not a time like 23:00 or Thu 23:00")
    if match["day"] is not None:
        if match["day"].lower() not in WEEKDAYS:
            raise ConfigError(f"{start_name}: {match['day']!r} is not a weekday (Mon..Sun)")
        weekday = WEEKDAYS.index(match["day"].lower())
    seconds = parse_duration(length, length_name)
    window = Window(int(match["hour"]), int(match["minute"]), dt.timedelta(seconds=seconds), weekday)
    if not dt.timedelta(0) < window.length < window.period:
        raise ConfigError(f"{length_name}: {length!r} must be more than 0 and less than "
                          f"{'a day' if weekday is None else 'a week'}")
    return window


# -- the settings -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RebootSettings:
    strategy: RebootStrategy = RebootStrategy.REBOOT
    endpoints: tuple[str, ...] = DEFAULT_ENDPOINTS
    group: str = ""
    window: Window | None = None
    tls: TlsFiles = TlsFiles()


def reboot_settings(update_conf: Mapping[str, tuple[str, str]], environ: Mapping[str, str]) -> RebootSettings:
    """The settings from update.conf's merged keys ({key: (value, file)}) and the environment, which wins.
    Raises ConfigError naming the file or variable of a bad value."""

    def get(*names: str) -> tuple[str, str]:
        for name in names:
            if environ.get(name):
                return environ[name], name
        for name in names:
            if name in update_conf and update_conf[name][0]:
                value, path = update_conf[name]
                return value, f"{path}: {name}"
        return "", names[0]

    text, where = get("REBOOT_STRATEGY")
    strategy = RebootStrategy.REBOOT
    if text:
        try:
            strategy = RebootStrategy(text.strip())
        except ValueError:
            names = ", ".join(s.value for s in RebootStrategy)
            raise ConfigError(f"{where}: {text!r} is not a reboot strategy ({names})") from None
    endpoints: tuple[str, ...] = DEFAULT_ENDPOINTS
    text, where = get("LOCKSMITHD_ENDPOINT")
    if text:
        try:
            endpoints = tuple(parse_endpoints(text))
        except UsageError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    start, start_where = get("LOCKSMITHD_REBOOT_WINDOW_START", "REBOOT_WINDOW_START")
    length, length_where = get("LOCKSMITHD_REBOOT_WINDOW_LENGTH", "REBOOT_WINDOW_LENGTH")
    window = parse_window(start, length, start_where, length_where)
    tls = TlsFiles(get("LOCKSMITHD_ETCD_CAFILE")[0] or None, get("LOCKSMITHD_ETCD_CERTFILE")[0] or None,
                   get("LOCKSMITHD_ETCD_KEYFILE")[0] or None)
    return RebootSettings(strategy, endpoints, get("LOCKSMITHD_GROUP")[0], window, tls)


def load_reboot_settings(environ: Mapping[str, str], files: Sequence[str] = UPDATE_CONF_FILES) -> RebootSettings:
    """Read the update.conf files that exist, then `reboot_settings`. Raises ConfigError."""
    texts = []
    for name in files:
        path = Path(name)
        try:
            texts.append((name, path.read_text()))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read: {exc.strerror}") from None
    return reboot_settings(merged_update_conf(texts), environ)

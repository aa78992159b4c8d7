"""fleetd's configuration: fleet's keys, from /etc/fleet/fleet.conf and FLEET_* variables.

fleet read `key=value` lines from /etc/fleet/fleet.conf and the same keys as FLEET_<KEY> from the
environment (which cloud-config's `coreos.fleet` section writes as a drop-in), the environment
winning. The keys and their meaning are fleet's; the defaults differ where fleet's users suffered:

| key | fleet's default | here | why |
|---|---|---|---|
| agent_ttl | 30s | 5s | failover within 7 s of a machine's death; leases survive etcd leader changes |
| etcd_servers | http://127.0.0.1:2379,http://127.0.0.1:4001 | same | |
| etcd_request_timeout | 1.0 | same | a silent member costs one timeout, then the next one is asked |
| engine_reconcile_interval | 2.0 | same | |

Added: FLEET_MACHINE_ID (the file holding the machine ID, default /etc/machine-id), so several
agents can share a host in tests, and FLEET_UNIT_BACKEND (systemd or process; default systemd when
systemd is PID 1, else process). Keys fleet accepted but that mean nothing here (verify_units,
authorized_keys_file, enable_grpc, token_limit, etcd_username/password) are accepted and ignored.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import ConfigError, UsageError
from provisioner.scheduler.etcd import TlsFiles, parse_endpoints
from provisioner.scheduler.model import Backend, Machine
from provisioner.scheduler.registry import DEFAULT_PREFIX

log = logging.getLogger("provisioner.scheduler.config")

DEFAULT_CONFIG_FILE = "/etc/fleet/fleet.conf"
DEFAULT_AGENT_TTL = "5s"
KNOWN_KEYS = frozenset({
    "verbosity", "etcd_servers", "etcd_username", "etcd_password", "etcd_keyfile", "etcd_certfile", "etcd_cafile",
    "etcd_key_prefix", "etcd_request_timeout", "engine_reconcile_interval", "public_ip", "metadata", "agent_ttl",
    "units_directory", "systemd_user", "token_limit", "enable_grpc", "disable_engine", "disable_watches",
    "verify_units", "authorized_keys_file", "machine_id", "unit_backend",
})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class FleetConfig:
    etcd_servers: tuple[str, ...] = ("http://127.0.0.1:2379", "http://127.0.0.1:4001")
    etcd_key_prefix: str = DEFAULT_PREFIX
    etcd_request_timeout: float = 1.0
    etcd_tls: TlsFiles = TlsFiles()
    engine_reconcile_interval: float = 2.0
    agent_ttl: float = 5.0
    public_ip: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    units_directory: str = "/run/fleet/units/"
    systemd_user: bool = False
    disable_engine: bool = False
    disable_watches: bool = False
    machine_id_file: str = "/etc/machine-id"
    unit_backend: Backend = Backend.SYSTEMD
    verbosity: int = 0

    @property
    def runtime_dir(self) -> Path:
        """Where fleetd keeps its state next to the unit files (/run/fleet for the default units dir)."""
        return Path(self.units_directory.rstrip("/")).parent

    def machine(self, machine_id: str) -> Machine:
        return Machine(id=machine_id, public_ip=self.public_ip, metadata=self.metadata, backend=self.unit_backend,
                       runtime_dir=str(self.runtime_dir))


def parse_duration(text: str, key: str) -> float:
    """A Go duration ('30s', '1m30s', '500ms'), or plain seconds; raises ConfigError naming `key`."""
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ConfigError(f"{key}: {text!r} is not a duration like 5s, 500ms or 1m30s")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def parse_metadata(text: str) -> tuple[tuple[str, str], ...]:
    """fleet's Config.Metadata: 'k=v,k2=v2'; pairs without '=' are skipped, spaces around parts trimmed."""
    pairs: dict[str, str] = {}
    for pair in text.split(","):
        key, equals, value = pair.partition("=")
        if equals:
            pairs[key.strip()] = value.strip()
    return tuple(sorted(pairs.items()))


def read_config_file(path: Path) -> dict[str, str]:
    """key=value lines (fleet's globalconf INI without sections); raises ConfigError 'file:line: ...'."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or stripped.startswith("["):
            continue
        key, equals, value = stripped.partition("=")
        if not equals:
            raise ConfigError(f"{path}:{number}: expected key=value, got {stripped!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _boolean(text: str, key: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "t", "true", "yes", "on"):
        return True
    if lowered in ("0", "f", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{key}: {text!r} is not a boolean")


def _number(text: str, key: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a number") from None


def default_backend() -> Backend:
    """systemd when it is PID 1 (sd_booted: /run/systemd/system exists), else the process backend."""
    return Backend.SYSTEMD if os.path.isdir("/run/systemd/system") else Backend.PROCESS


def load_config(environ: Mapping[str, str], config_file: str | None = None) -> FleetConfig:
    """fleet.conf (the given file must exist; the default one may not), then FLEET_* variables over it.

    Raises ConfigError naming the file line or the variable of a bad value.
    """
    raw: dict[str, tuple[str, str]] = {}  # key -> (value, where it came from)
    path = Path(config_file or DEFAULT_CONFIG_FILE)
    if config_file is not None or path.exists():
        for key, value in read_config_file(path).items():
            raw[key] = (value, f"{path}: {key}")
    for name, value in environ.items():
        if name.startswith("FLEET_"):
            raw[name[len("FLEET_"):].lower()] = (value, name)
    for key, (_, where) in raw.items():
        if key not in KNOWN_KEYS:
            log.warning("%s: unknown fleet setting, ignored", where)

    def get(key: str) -> tuple[str, str] | None:
        return raw.get(key)

    settings: dict[str, object] = {}
    if (item := get("etcd_servers")) is not None:
        try:
            settings["etcd_servers"] = tuple(parse_endpoints(item[0]))
        except UsageError as exc:
            raise ConfigError(f"{item[1]}: {exc}") from None
    if (item := get("etcd_key_prefix")) is not None:
        settings["etcd_key_prefix"] = item[0] if item[0].endswith("/") else item[0] + "/"
    for key in ("etcd_request_timeout", "engine_reconcile_interval"):
        if (item := get(key)) is not None:
            settings[key] = _number(item[0], item[1])
    if (item := get("agent_ttl")) is not None:
        settings["agent_ttl"] = parse_duration(item[0], item[1])
    if (item := get("public_ip")) is not None:
        settings["public_ip"] = item[0].strip()
    if (item := get("metadata")) is not None:
        settings["metadata"] = parse_metadata(item[0])
    if (item := get("units_directory")) is not None:
        settings["units_directory"] = item[0]
    for key in ("systemd_user", "disable_engine", "disable_watches"):
        if (item := get(key)) is not None:
            settings[key] = _boolean(item[0], item[1])
    if (item := get("machine_id")) is not None:
        settings["machine_id_file"] = item[0]
    if (item := get("verbosity")) is not None:
        settings["verbosity"] = int(_number(item[0], item[1]))
    item = get("unit_backend")
    if item is None:
        settings["unit_backend"] = default_backend()
    else:
        try:
            settings["unit_backend"] = Backend(item[0].strip())
        except ValueError:
            raise ConfigError(f"{item[1]}: {item[0]!r} is not systemd or process") from None
    tls = {name: item[0] for name, key in (("ca_file", "etcd_cafile"), ("cert_file", "etcd_certfile"),
                                           ("key_file", "etcd_keyfile")) if (item := get(key)) is not None and item[0]}
    settings["etcd_tls"] = TlsFiles(**tls)
    config = FleetConfig(**settings)  # type: ignore[arg-type]
    if config.agent_ttl <= 0 or config.engine_reconcile_interval <= 0 or config.etcd_request_timeout <= 0:
        raise ConfigError("agent_ttl, engine_reconcile_interval and etcd_request_timeout must be positive")
    return config


def read_machine_id(path: str) -> str:
    """The machine ID from `path` (one line, as /etc/machine-id); raises ConfigError if absent or empty."""
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the machine ID: {exc.strerror} (set FLEET_MACHINE_ID to its file)") \
            from None
    if not value or "/" in value or len(value.split()) != 1:
        raise ConfigError(f"{path}: not a machine ID: {value[:40]!r}")
    return value

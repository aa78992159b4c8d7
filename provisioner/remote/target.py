"""Where to connect: `[user@]host[:port]` plus ~/.ssh/config (aliases, ports, users, keys, ProxyJump).

Pure: `parse_target` and `resolve` read strings and a config file, they open no socket. Precedence is
ssh's: the command line wins over ~/.ssh/config, which wins over the defaults (root, port 22: rescue
systems log in as root).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.errors import ConfigError, UsageError
from provisioner.remote.paramiko_lib import enable_match_exec, paramiko

DEFAULT_SSH_CONFIG = "~/.ssh/config"
DEFAULT_USER = "root"
_MATCH_EXEC = re.compile(r"^\s*match\b.*\bexec\b", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Endpoint:
    """One resolved hop: connect to hostname:port as user, with these key files (in order)."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    known_hosts: str | None = None

    def __str__(self) -> str:
        suffix = f":{self.port}" if self.port != 22 else ""
        return f"{self.user}@{self.hostname}{suffix}"


@dataclass(frozen=True)
class Target:
    """The rescue host, and the jump hosts to go through first (ProxyJump order)."""

    endpoint: Endpoint
    jumps: tuple[Endpoint, ...] = field(default=())


def parse_target(text: str) -> tuple[str | None, str, int | None]:
    """'root@host', 'host:2222', 'user@[::1]:22', 'alias' -> (user, host, port).

    Raises UsageError for an empty host or a bad port.
    """
    user: str | None = None
    rest = text.strip()
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not user:
            raise UsageError(f"{text!r}: empty user name before '@'")
    port: int | None = None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = _port(tail[1:], text)
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = _port(port_text, text)
    else:
        host = rest
    if not host:
        raise UsageError(f"{text!r}: no host name")
    return user, host, port


def _port(value: str, text: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise UsageError(f"{text!r}: port {value!r} is not a number between 1 and 65535")
    return int(value)


def load_ssh_config(path: str | None) -> paramiko.SSHConfig:
    """Parse ~/.ssh/config (or `path`); a missing default file is an empty config.

    Raises ConfigError when an explicitly given file is missing or unparsable.
    """
    explicit = path is not None
    config_path = Path(os.path.expanduser(path or DEFAULT_SSH_CONFIG))
    if not config_path.exists():
        if explicit:
            raise ConfigError(f"{config_path}: no such ssh config file")
        return paramiko.SSHConfig()
    try:
        text = config_path.read_text()
        if _MATCH_EXEC.search(text):
            enable_match_exec()
        return paramiko.SSHConfig.from_text(text)
    except Exception as exc:  # paramiko raises a mix of ConfigParseError, ValueError, KeyError
        raise ConfigError(f"{config_path}: cannot parse ssh config: {exc}") from None


def _endpoint(config: paramiko.SSHConfig, text: str, user: str | None, port: int | None,
              identities: tuple[str, ...]) -> Endpoint:
    user_arg, alias, port_arg = parse_target(text)
    entry = config.lookup(alias)
    config_port = entry.get("port")
    try:
        resolved_port = port or port_arg or (int(config_port) if config_port else 22)
    except ValueError:
        raise ConfigError(f"ssh config: Host {alias}: Port {config_port!r} is not a number") from None
    files = identities or tuple(os.path.expanduser(p) for p in entry.get("identityfile", []))
    known = entry.get("userknownhostsfile")
    return Endpoint(
        alias=alias,
        hostname=entry.get("hostname", alias),
        port=resolved_port,
        user=user or user_arg or entry.get("user") or DEFAULT_USER,
        identity_files=tuple(files),
        known_hosts=os.path.expanduser(known.split()[0]) if known else None,
    )


def resolve(text: str, *, config: paramiko.SSHConfig, port: int | None = None,
            identities: tuple[str, ...] = ()) -> Target:
    """Resolve the target and its ProxyJump chain through the ssh config.

    `port` and `identities` come from the command line and apply to the final hop only (as in ssh).
    Raises UsageError for a malformed target, ConfigError for a malformed config entry.
    """
    endpoint = _endpoint(config, text, None, port, identities)
    jumps: list[Endpoint] = []
    proxy = config.lookup(endpoint.alias).get("proxyjump")
    if proxy and proxy.lower() != "none":
        # ProxyJump is a comma-separated chain, first hop first (ssh_config(5)); each hop may itself
        # be an alias with its own settings.
        for hop in proxy.split(","):
            jumps.append(_endpoint(config, hop.strip(), None, None, ()))
    if any(config.lookup(j.alias).get("proxyjump", "none").lower() != "none" for j in jumps):
        raise ConfigError(f"ssh config: Host {endpoint.alias}: nested ProxyJump on a jump host is not supported; "
                          f"list the whole chain in one ProxyJump line")
    return Target(endpoint=endpoint, jumps=tuple(jumps))

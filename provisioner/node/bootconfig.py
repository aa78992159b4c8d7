"""Apply the machine's cloud-config at boot: the hostname and SSH keys (provisioner-bootconfig.service).

Sources, as CoreOS/Flatcar look for them (shared/reference/installer.md §1): `cloud-config-url=`
on the kernel command line (PXE), /var/lib/flatcar-install/user_data and
/var/lib/coreos-install/user_data (written by the installer's -c), and the OEM partition's
cloud-config.yml and config.ign (-i). Every source found is applied in that order. The full
cloud-config applier is a separate part of the node runtime; until it is wired in here, this
applies what a node needs to be reached: `hostname`, `ssh_authorized_keys` (for `core`) and
`users[].ssh-authorized-keys`; Ignition's passwd.users[].sshAuthorizedKeys and /etc/hostname file.

Pure: `parse_config`, `merge`; I/O: fetching, writing /etc/hostname and authorized_keys.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from provisioner.core.commands import run
from provisioner.core.entry import run_main
from provisioner.errors import ProvisionerError
from provisioner.node.kernel_cmdline import read_kernel_cmdline

FILE_SOURCES = (
    "/var/lib/flatcar-install/user_data",
    "/var/lib/coreos-install/user_data",
    "/oem/cloud-config.yml",
    "/usr/share/oem/cloud-config.yml",
    "/oem/config.ign",
    "/usr/share/oem/config.ign",
)
DEFAULT_USER = "core"
PROG = "provisioner-bootconfig"


@dataclass
class BootConfig:
    hostname: str | None = None
    keys: dict[str, list[str]] = field(default_factory=dict)  # user -> public keys
    sources: list[str] = field(default_factory=list)


def _add_keys(config: BootConfig, user: str, keys) -> None:
    if isinstance(keys, list):
        bucket = config.keys.setdefault(user, [])
        for key in keys:
            if isinstance(key, str) and key.strip() and key.strip() not in bucket:
                bucket.append(key.strip())


def _ignition_hostname(doc: dict) -> str | None:
    for entry in (doc.get("storage") or {}).get("files") or []:
        if isinstance(entry, dict) and entry.get("path") == "/etc/hostname":
            source = ((entry.get("contents") or {}).get("source")) or ""
            if source.startswith("data:"):
                return urllib.parse.unquote(source.split(",", 1)[1]).strip() or None
    return None


def parse_config(text: str, name: str) -> BootConfig:
    """The hostname and keys of one cloud-config (#cloud-config YAML) or Ignition (JSON) document.

    Raises ValueError naming `name` when it is neither."""
    config = BootConfig(sources=[name])
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{name}: not valid Ignition JSON: {exc}") from None
        for user in (doc.get("passwd") or {}).get("users") or []:
            if isinstance(user, dict) and user.get("name"):
                _add_keys(config, user["name"], user.get("sshAuthorizedKeys"))
        config.hostname = _ignition_hostname(doc)
        return config
    if stripped.startswith("#!"):
        raise ValueError(f"{name}: a script, not a cloud-config (scripts are the full applier's job)")
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{name}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{name}: a cloud-config must be a mapping")
    if isinstance(doc.get("hostname"), str):
        config.hostname = doc["hostname"].strip() or None
    _add_keys(config, DEFAULT_USER, doc.get("ssh_authorized_keys"))
    for user in doc.get("users") or []:
        if isinstance(user, dict) and user.get("name"):
            _add_keys(config, str(user["name"]), user.get("ssh-authorized-keys") or user.get("ssh_authorized_keys"))
    return config


def merge(configs: list[BootConfig]) -> BootConfig:
    """Later sources override the hostname; keys accumulate."""
    result = BootConfig()
    for config in configs:
        if config.hostname:
            result.hostname = config.hostname
        for user, keys in config.keys.items():
            _add_keys(result, user, keys)
        result.sources += config.sources
    return result


def fetch(url: str, timeout: float = 60) -> str:
    """GET url, retrying while the network comes up; raises ProvisionerError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() > deadline:
                raise ProvisionerError(f"cloud-config-url={url}: {getattr(exc, 'reason', exc)}") from None
            time.sleep(2)


def write_authorized_keys(user: str, keys: list[str]) -> None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        run(["useradd", "--create-home", "--user-group", "--password", "*", user])
        entry = pwd.getpwnam(user)
    ssh_dir = Path(entry.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = ssh_dir / "authorized_keys"
    existing = path.read_text().splitlines() if path.exists() else []
    lines = existing + [key for key in keys if key not in existing]
    path.write_text("\n".join(lines) + "\n")
    for item in (ssh_dir, path):
        os.chown(item, entry.pw_uid, entry.pw_gid)
    path.chmod(0o600)


def hosts_with_hostname(text: str, hostname: str) -> str:
    """/etc/hosts with `127.0.1.1 <hostname>` (Debian's convention, so the machine resolves its own
    name without DNS: sudo and etcd look it up), replacing an earlier 127.0.1.1 line (pure)."""
    short = hostname.split(".")[0]
    names = hostname if short == hostname else f"{hostname} {short}"
    lines = [line for line in text.splitlines() if line.split("#")[0].split()[:1] != ["127.0.1.1"]]
    at = next((i + 1 for i, line in enumerate(lines) if line.split()[:1] == ["127.0.0.1"]), 0)
    lines.insert(at, f"127.0.1.1\t{names}")
    return "\n".join(lines) + "\n"


def apply(config: BootConfig) -> list[str]:
    """Write the hostname and keys; returns what was done, one phrase each."""
    done = []
    if config.hostname:
        Path("/etc/hostname").write_text(config.hostname + "\n")
        hosts = Path("/etc/hosts")
        hosts.write_text(hosts_with_hostname(hosts.read_text() if hosts.exists() else "", config.hostname))
        socket.sethostname(config.hostname)
        done.append(f"hostname {config.hostname}")
    for user, keys in config.keys.items():
        write_authorized_keys(user, keys)
        done.append(f"{len(keys)} SSH key(s) for {user}")
    return done


def apply_boot_config() -> int:
    """Read every source, apply what was found; 1 when a source could not be fetched, else 0.

    Raises ProvisionerError when applying fails."""
    configs = []
    errors = 0
    url = read_kernel_cmdline().get("cloud-config-url")
    texts: list[tuple[str, str]] = []
    if url:
        try:
            texts.append((fetch(url), url))
        except ProvisionerError as exc:  # the other sources still apply; the exit code says one failed
            print(f"{PROG}: error: {exc}", flush=True)
            errors += 1
    for path in FILE_SOURCES:
        if os.path.isfile(path):
            texts.append((Path(path).read_text(errors="replace"), path))
    for text, name in texts:
        try:
            configs.append(parse_config(text, name))
        except ValueError as exc:
            print(f"{PROG}: skipped {exc}", flush=True)
    if not configs:
        print(f"{PROG}: no cloud-config found", flush=True)
        return 1 if errors else 0
    config = merge(configs)
    try:
        done = apply(config)
    except OSError as exc:
        raise ProvisionerError(f"applying {', '.join(config.sources)}: {exc}") from None
    print(f"{PROG}: applied {', '.join(done) or 'nothing'} from {', '.join(config.sources)}", flush=True)
    return 1 if errors else 0


def main() -> int:
    return run_main(PROG, apply_boot_config)


if __name__ == "__main__":
    sys.exit(main())

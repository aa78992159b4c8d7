"""The part of an Ignition config (OEM `config.ign`) the node applies: users' SSH keys and /etc/hostname.

coreos-cloudinit exits on an Ignition config ("Detected an Ignition config"): Ignition ran in the
initramfs on CoreOS. This image has no Ignition, and `provisioner install -i` places config.ign, so the
node keeps what it needs to be reached: `passwd.users[].sshAuthorizedKeys` and a `storage.files` entry
for /etc/hostname with a `data:` URL.
"""

from __future__ import annotations

import json
import urllib.parse

from provisioner.cloudconfig.model import CloudConfig, User
from provisioner.errors import ConfigError


def parse(text: str, name: str) -> CloudConfig:
    """The hostname and users' keys of an Ignition document. Raises ConfigError naming `name`."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{name}: not valid Ignition JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{name}: an Ignition config is a JSON object")
    users = []
    for index, entry in enumerate(_list(doc, "passwd", "users")):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{name}: passwd.users[{index}]: needs a name")
        keys = entry.get("sshAuthorizedKeys") or []
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise ConfigError(f"{name}: passwd.users[{index}].sshAuthorizedKeys: want a list of strings")
        users.append(User(name=entry["name"], ssh_authorized_keys=tuple(keys)))
    return CloudConfig(hostname=_hostname(doc), users=tuple(users))


def _list(doc: dict, section: str, key: str) -> list:
    value = (doc.get(section) or {}).get(key) if isinstance(doc.get(section) or {}, dict) else None
    return value if isinstance(value, list) else []


def _hostname(doc: dict) -> str:
    for entry in _list(doc, "storage", "files"):
        if isinstance(entry, dict) and entry.get("path") == "/etc/hostname":
            source = ((entry.get("contents") or {}).get("source")) or ""
            if isinstance(source, str) and source.startswith("data:"):
                return urllib.parse.unquote(source.split(",", 1)[1]).strip()
    return ""

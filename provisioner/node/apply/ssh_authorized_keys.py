"""`ssh_authorized_keys:` -> the keys of the `core` user, as the key set `coreos-cloudinit` (see users.py)."""

from __future__ import annotations

from provisioner.cloudconfig.model import CloudConfig
from provisioner.node.apply.target import Target
from provisioner.node.apply.users import authorize_keys

DEFAULT_USER = "core"


def apply(config: CloudConfig, target: Target) -> None:
    """Raises ApplyError (e.g. no `core` user in /etc/passwd)."""
    if config.ssh_authorized_keys:
        authorize_keys(target, DEFAULT_USER, config.ssh_authorized_keys)

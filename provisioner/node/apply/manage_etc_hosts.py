"""`manage_etc_hosts: localhost` -> /etc/hosts is `127.0.0.1 <hostname>` (coreos-cloudinit system/etc_hosts.go).

The hostname is the one the config sets, else the machine's current one (coreos-cloudinit asks the OS
after setting it, which is the same).
"""

from __future__ import annotations

import socket

from provisioner.cloudconfig.model import CloudConfig
from provisioner.node.apply.target import ApplyError, Target


def apply(config: CloudConfig, target: Target) -> None:
    """Raises ApplyError for any value but "localhost" (coreos-cloudinit: "Invalid option to manage_etc_hosts")."""
    if not config.manage_etc_hosts:
        return
    if config.manage_etc_hosts != "localhost":
        raise ApplyError(f"manage_etc_hosts: invalid option {config.manage_etc_hosts!r} (only 'localhost')")
    target.write_file("/etc/hosts", etc_hosts(config.hostname or current_hostname(target)).encode())


def etc_hosts(hostname: str) -> str:
    return f"127.0.0.1 {hostname}\n"


def current_hostname(target: Target) -> str:
    if target.root.as_posix() == "/":
        return socket.gethostname()
    return (target.read("/etc/hostname") or b"localhost").decode().strip()

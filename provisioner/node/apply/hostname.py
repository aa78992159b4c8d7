"""`hostname:` -> /etc/hostname, the running hostname, and the name resolvable through /etc/hosts.

coreos-cloudinit ran `hostnamectl set-hostname`, which writes /etc/hostname and sets the kernel's
hostname; the image has no D-Bus for hostnamed, so both are done directly. Debian's convention is added:
`127.0.1.1 <hostname> <short>` in /etc/hosts, so the machine resolves its own name without DNS (sudo and
etcd look it up). When `manage_etc_hosts` is set, that key owns /etc/hosts and the line is left to it.
"""

from __future__ import annotations

import socket

from provisioner.cloudconfig.model import CloudConfig
from provisioner.node.apply.target import ApplyError, Target


def apply(config: CloudConfig, target: Target) -> None:
    """Raises ApplyError."""
    name = config.hostname
    if not name:
        return
    target.write_file("/etc/hostname", f"{name}\n".encode())
    if not config.manage_etc_hosts:
        hosts = (target.read("/etc/hosts") or b"").decode("utf-8", "replace")
        target.write_file("/etc/hosts", hosts_with_hostname(hosts, name).encode())
    if target.is_live and socket.gethostname() != name:
        target.record(f"set the running hostname to {name}")
        try:
            socket.sethostname(name)
        except OSError as exc:
            raise ApplyError(f"hostname {name!r}: cannot set the running hostname: {exc.strerror}") from None


def hosts_with_hostname(text: str, hostname: str) -> str:
    """/etc/hosts with `127.0.1.1 <hostname> [<short name>]`, replacing an earlier 127.0.1.1 line,
    after the 127.0.0.1 line (pure)."""
    short = hostname.split(".")[0]
    names = hostname if short == hostname else f"{hostname} {short}"
    lines = [line for line in text.splitlines() if line.split("#")[0].split()[:1] != ["127.0.1.1"]]
    at = next((i + 1 for i, line in enumerate(lines) if line.split()[:1] == ["127.0.0.1"]), 0)
    lines.insert(at, f"127.0.1.1\t{names}")
    return "\n".join(lines) + "\n"

"""Isolated lab networks for tests and the demo: a network namespace with a bridge that has no uplink.

Network-safety rule: DHCP, PXE and VM traffic stays inside a namespace we create, on a
bridge that is connected to nothing outside it. `LabNetwork` builds exactly that:

    with LabNetwork.create("pxe", "10.77.0.1/24") as net:   # netns + bridge br0 with the server address
        tap = net.add_tap("tap0")                          # for a QEMU NIC (QEMU runs inside the netns)
        client = net.add_client_namespace("cli0")          # a second netns joined by a veth pair
        net.run(["ip", "addr"])                            # run a command inside the namespace
    # everything is deleted on exit, even after a failure

Everything goes through `provisioner.core.commands.run` (iproute2). Needs root.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from provisioner.core.commands import require_tool, run
from provisioner.errors import CommandError, NetworkError

log = logging.getLogger("provisioner.lab.netns")

BRIDGE = "br0"


def netns_exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` inside the named namespace (pure)."""
    return ["ip", "netns", "exec", netns, *[str(a) for a in argv]]


@dataclass
class LabNetwork:
    """A namespace `name` holding bridge br0 (address `bridge_cidr`), taps, veths and client namespaces."""

    name: str
    bridge_cidr: str
    taps: list[str] = field(default_factory=list)
    client_namespaces: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return BRIDGE

    @property
    def server_ip(self) -> str:
        return str(ipaddress.ip_interface(self.bridge_cidr).ip)

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_interface(self.bridge_cidr).network  # type: ignore[return-value]

    @classmethod
    def create(cls, name: str, bridge_cidr: str = "10.77.0.1/24") -> LabNetwork:
        """Create the namespace, its loopback and the bridge; raises NetworkError without root/iproute2."""
        if os.geteuid() != 0:
            raise NetworkError("lab network: creating a network namespace needs root")
        require_tool("ip")
        # A stale namespace from a crashed run would make `ip netns add` fail: remove it first, unless
        # processes still live in it (another demo or test run is using it).
        users = run(["ip", "netns", "pids", name], check=False).stdout.split()
        if users:
            raise NetworkError(f"lab network: namespace {name} is in use by pid(s) {', '.join(users)} "
                               f"(another run?); stop them or choose another name")
        run(["ip", "netns", "delete", name], check=False)
        try:
            run(["ip", "netns", "add", name])
        except CommandError as exc:
            raise NetworkError(f"lab network: cannot create namespace {name}: {exc}") from None
        net = cls(name=name, bridge_cidr=bridge_cidr)
        try:
            net.ip("link", "set", "lo", "up")
            net.ip("link", "add", BRIDGE, "type", "bridge", "forward_delay", "0", "stp_state", "0")
            net.ip("addr", "add", bridge_cidr, "dev", BRIDGE)
            net.ip("link", "set", BRIDGE, "up")
        except CommandError:
            net.destroy()
            raise
        log.info("lab network %s: bridge %s %s", name, BRIDGE, bridge_cidr)
        return net

    def ip(self, *args: str) -> subprocess.CompletedProcess:
        """`ip -n <ns> ...`; raises CommandError."""
        return run(["ip", "-n", self.name, *args])

    def add_tap(self, tap: str) -> str:
        """A tap device on the bridge, for QEMU `-netdev tap,ifname=<tap>` run inside the namespace."""
        self.ip("tuntap", "add", "dev", tap, "mode", "tap")
        self.ip("link", "set", tap, "master", BRIDGE)
        self.ip("link", "set", tap, "up")
        self.taps.append(tap)
        return tap

    def add_client_namespace(self, client: str, ifname: str = "eth0", mac: str | None = None) -> str:
        """A second namespace `client` whose `ifname` is a veth joined to the bridge (no address set).

        Use it for DHCP clients such as busybox udhcpc: their broadcasts reach the bridge only."""
        run(["ip", "netns", "delete", client], check=False)
        run(["ip", "netns", "add", client])
        self.client_namespaces.append(client)
        peer = f"v{client}"[:15]
        self.ip("link", "add", peer, "type", "veth", "peer", "name", ifname, "netns", client)
        self.ip("link", "set", peer, "master", BRIDGE)
        self.ip("link", "set", peer, "up")
        run(["ip", "-n", client, "link", "set", "lo", "up"])
        if mac:
            run(["ip", "-n", client, "link", "set", ifname, "address", mac])
        run(["ip", "-n", client, "link", "set", ifname, "up"])
        return client

    def argv(self, argv: Sequence[str]) -> list[str]:
        return netns_exec_argv(self.name, argv)

    def run(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        """Run a command inside the namespace (same keywords as core.commands.run)."""
        return run(self.argv(argv), **kwargs)

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start a long-running process inside the namespace; the caller stops it."""
        full = self.argv(argv)
        log.debug("popen in %s: %s", self.name, full)
        return subprocess.Popen(full, **kwargs)

    def destroy(self) -> None:
        """Delete client namespaces and the namespace (its bridge, taps and veths go with it)."""
        for client in reversed(self.client_namespaces):
            run(["ip", "netns", "delete", client], check=False)
        self.client_namespaces.clear()
        run(["ip", "netns", "delete", self.name], check=False)
        self.taps.clear()

    def __enter__(self) -> LabNetwork:
        return self

    def __exit__(self, *exc_info) -> None:
        self.destroy()

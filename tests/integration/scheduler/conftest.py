"""A real etcd 3.4 cluster (3 members on 127.0.0.1) and real fleetd processes using the process backend.

One etcd cluster serves a whole test module; each test gets its own key prefix, so tests never see
each other's units or machines and no etcd restart is paid per test. `fleet_cluster(n, ...)` starts
`provisioner fleetd` n times, each with its own machine ID file, runtime directory and public IP (a
label: nothing listens on it), optionally through a TcpProxy per machine so one machine can be cut
off from etcd. Every process is killed at teardown, and its unit processes die with it.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provisioner.cli.fleetctl import run as fleetctl_run
from provisioner.core.commands import terminate
from tests.fixtures.etcd import EtcdCluster
from tests.fixtures.polling import wait_until
from tests.fixtures.system import need_root
from tests.fixtures.tcpproxy import TcpProxy

REPO = Path(__file__).resolve().parents[3]
PROVISIONER = [sys.executable, "-m", "provisioner.cli.main"]
FLEETCTL = [str(Path(sys.executable).parent / "fleetctl")]


@dataclass
class Node:
    index: int
    machine_id: str
    directory: Path
    env: dict[str, str]
    proxies: list[TcpProxy] = field(default_factory=list)
    process: subprocess.Popen | None = None

    @property
    def runtime(self) -> Path:
        return self.directory / "run"

    @property
    def short(self) -> str:
        return self.machine_id[:8]

    def log(self) -> str:
        path = self.directory / "fleetd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cut(self) -> None:
        for proxy in self.proxies:
            proxy.cut()

    def heal(self) -> None:
        for proxy in self.proxies:
            proxy.heal()


@dataclass
class FleetCluster:
    etcd: EtcdCluster
    prefix: str
    workdir: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "FLEETCTL_ENDPOINT": ",".join(self.etcd.endpoints),
                "FLEETCTL_ETCD_KEY_PREFIX": self.prefix, "PYTHONPATH": str(REPO)}

    def add_node(self, ttl: str | None = None, metadata: str = "", proxied: bool = False,
                 machine_id: str | None = None, public_ip: str | None = None, **extra: str) -> Node:
        index = len(self.nodes)
        machine_id = machine_id or f"{index:x}{uuid.uuid4().hex[:7]}{uuid.uuid4().hex}"
        directory = self.workdir / f"node{index}"
        directory.mkdir(parents=True)
        (directory / "machine-id").write_text(machine_id + "\n")
        proxies = [TcpProxy(("127.0.0.1", m.client_port)).start() for m in self.etcd.members] if proxied else []
        servers = [p.url for p in proxies] if proxied else self.etcd.endpoints
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "FLEET_ETCD_SERVERS": ",".join(servers),
               "FLEET_ETCD_KEY_PREFIX": self.prefix, "FLEET_MACHINE_ID": str(directory / "machine-id"),
               "FLEET_UNIT_BACKEND": "process", "FLEET_UNITS_DIRECTORY": str(directory / "run" / "units"),
               "FLEET_PUBLIC_IP": public_ip or f"10.99.0.{index + 1}", "FLEET_METADATA": metadata, **extra}
        if ttl is not None:
            env["FLEET_AGENT_TTL"] = ttl
        node = Node(index, machine_id, directory, env, proxies)
        self.nodes.append(node)
        self.start(node)
        return node

    def start(self, node: Node) -> None:
        with open(node.directory / "fleetd.log", "ab") as log:
            node.process = subprocess.Popen([*PROVISIONER, "-v", "fleetd"], env=node.env, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=REPO)

    def kill(self, node: Node) -> None:
        """SIGKILL fleetd (its unit processes die with it: they carry PDEATHSIG)."""
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait(timeout=10)

    def stop(self, node: Node, timeout: float = 60) -> None:
        if node.process is not None:
            terminate(node.process, timeout)

    def fleetctl(self, *args: str, check: bool = True, timeout: float = 60, cwd: Path | None = None,
                 env: dict[str, str] | None = None, process: bool = False) -> subprocess.CompletedProcess:
        """Run fleetctl: in this process (fast, for the many checks) or as the installed console script."""
        full_env = {**self.env, **(env or {})}
        if process:
            result = subprocess.run([*FLEETCTL, *args], capture_output=True, text=True, timeout=timeout,
                                    env=full_env, cwd=cwd or self.workdir)
        else:
            result = fleetctl_in_process(list(args), full_env, cwd or self.workdir)
        if check and result.returncode != 0:
            raise AssertionError(f"fleetctl {' '.join(args)} exited {result.returncode}\nstdout: {result.stdout}\n"
                                 f"stderr: {result.stderr}\n{self.logs()}")
        return result

    def units(self) -> dict[str, list[tuple[str, str]]]:
        """list-units as {unit: [(machine id, active state), ...]}."""
        out = self.fleetctl("list-units", "--no-legend", "--full", "--fields", "unit,machine,active").stdout
        result: dict[str, list[tuple[str, str]]] = {}
        for line in out.splitlines():
            unit, machine, active = line.split()
            result.setdefault(unit, []).append((machine.split("/")[0], active))
        return result

    def active_on(self, unit: str) -> list[str]:
        return sorted(m for m, a in self.units().get(unit, []) if a == "active")

    def node_of(self, machine_id: str) -> Node:
        return next(n for n in self.nodes if n.machine_id == machine_id)

    def wait_for(self, condition: Callable[[], object], timeout: float = 30, what: str = "condition") -> object:
        return wait_until(what, condition, timeout, interval=0.1,
                          context=lambda: f"{self.fleetctl('list-units').stdout}\n{self.logs()}")

    def wait_machines(self, count: int, timeout: float = 30) -> None:
        self.wait_for(lambda: len(self.fleetctl("list-machines", "--no-legend").stdout.splitlines()) == count,
                      timeout, f"{count} machines")

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- fleetd {n.index} ({n.short})\n{n.log()[-tail:]}" for n in self.nodes)

    def close(self) -> None:
        for node in self.nodes:
            self.kill(node)
        for node in self.nodes:
            for proxy in node.proxies:
                proxy.stop()


def fleetctl_in_process(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """provisioner.cli.fleetctl.run with its stdout and stderr captured (no interpreter start per call)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = fleetctl_run(args, env)
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(["fleetctl", *args], code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory):
    need_root()  # fleetd processes start units as separate sessions and read /proc; CI runs as root
    cluster = EtcdCluster.start(tmp_path_factory.mktemp("etcd"), size=3)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def fleet_cluster(etcd_cluster, tmp_path):
    """Factory: fleet_cluster(n, ttl=None, metadata=[...], proxied=False) -> FleetCluster with n machines up."""
    clusters: list[FleetCluster] = []

    def make(count: int, ttl: str | None = None, metadata: list[str] | None = None,
             proxied: bool = False) -> FleetCluster:
        cluster = FleetCluster(etcd_cluster, f"/test-{uuid.uuid4().hex[:8]}/", tmp_path / f"fleet{len(clusters)}")
        cluster.workdir.mkdir()
        clusters.append(cluster)
        for index in range(count):
            cluster.add_node(ttl, (metadata or [""] * count)[index], proxied)
        cluster.wait_machines(count)
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()


def write_unit(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(body)
    return path


HELLO = ('[Unit]\nDescription=Hello World\n[Service]\n'
         'ExecStart=/bin/bash -c "while true; do echo Hello, World!; sleep 1; done"\n')

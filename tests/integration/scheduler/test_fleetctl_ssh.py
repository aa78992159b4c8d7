"""fleetctl's SSH side against a real sshd on 127.0.0.1: status, journal (and -f), ssh, --tunnel, and the
local path (the unit's machine is this one: no SSH at all)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.remote.conftest import start_sshd
from tests.integration.scheduler.conftest import FLEETCTL, HELLO, FleetCluster, write_unit


@pytest.fixture
def ssh_cluster(fleet_cluster, tmp_path, monkeypatch):
    """Two machines whose public IP is 127.0.0.1 (where sshd listens), and an operator whose key sshd accepts."""
    sshd = start_sshd(tmp_path / "sshd")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd.client_key, home / ".ssh" / "id_ed25519")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    cluster = fleet_cluster(0)
    for _ in range(2):
        cluster.add_node(public_ip="127.0.0.1")
    cluster.wait_machines(2)
    cluster.ssh_flags = ["--ssh-username", "root", "--known-hosts-file", str(sshd.known_hosts)]  # type: ignore
    cluster.ssh_port = ["--ssh-port", str(sshd.port)]  # type: ignore
    cluster.home = home  # type: ignore
    try:
        yield cluster
    finally:
        sshd.stop()


def test_status_journal_and_ssh_reach_the_units_machine(ssh_cluster: FleetCluster):
    cluster = ssh_cluster
    flags, port = cluster.ssh_flags, cluster.ssh_port  # type: ignore[attr-defined]
    write_unit(cluster.workdir, "hello.service", HELLO)
    cluster.fleetctl("start", "hello.service")
    machine = cluster.active_on("hello.service")[0]
    node = cluster.node_of(machine)
    log = node.runtime / "journal" / "hello.service.log"
    cluster.wait_for(lambda: log.exists() and log.read_text().count("Hello, World!") >= 4, 15, "four greetings")

    status = cluster.fleetctl(*flags, "status", *port, "hello.service")
    lines = status.stdout.splitlines()
    assert lines[0] == "● hello.service - Hello World"
    assert re.match(r"     Active: active \(running\) since ", lines[2])
    assert re.match(r"   Main PID: \d+ \(bash\)", lines[3])
    assert lines[-1].endswith("Hello, World!")

    journal = cluster.fleetctl(*flags, "journal", *port, "--lines", "3", "hello")
    assert len(journal.stdout.splitlines()) == 3
    assert all(re.match(r"\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ bash\[\d+\]: Hello, World!$", line)
               for line in journal.stdout.splitlines()), journal.stdout

    ssh = cluster.fleetctl(*flags, "ssh", *port, node.short, "echo", "from", "$HOSTNAME-less", "shell")
    assert ssh.returncode == 0
    unit_ssh = cluster.fleetctl(*flags, "ssh", *port, "--unit", "hello.service", "--", "test", "-e", str(log))
    assert unit_ssh.returncode == 0
    nowhere = cluster.fleetctl(*flags, "ssh", *port, "nosuchthing", check=False)
    assert (nowhere.returncode, nowhere.stderr) == (1, "Unable to proceed: could not find matching unit or machine\n")


def test_journal_follow_streams_new_lines(ssh_cluster: FleetCluster):
    cluster = ssh_cluster
    write_unit(cluster.workdir, "hello.service", HELLO)
    cluster.fleetctl("start", "hello.service")
    env = {**cluster.env, "HOME": str(cluster.home)}  # type: ignore[attr-defined]
    follower = subprocess.Popen([*FLEETCTL, *cluster.ssh_flags, "journal", *cluster.ssh_port, "-f", "--lines", "1",  # type: ignore[attr-defined]
                                 "hello.service"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        first = follower.stdout.readline()  # type: ignore[union-attr]
        second = follower.stdout.readline()  # type: ignore[union-attr]
        assert first.rstrip().endswith("Hello, World!") and second.rstrip().endswith("Hello, World!")
        assert first != second  # a later line, not the same one twice
    finally:
        follower.terminate()
        follower.wait(timeout=10)


def test_tunnel_carries_etcd_and_ssh_through_the_bastion(ssh_cluster: FleetCluster):
    cluster = ssh_cluster
    flags, port = cluster.ssh_flags, cluster.ssh_port  # type: ignore[attr-defined]
    tunnel = f"127.0.0.1:{port[1]}"
    machines = cluster.fleetctl(*flags, "--tunnel", tunnel, "list-machines", "--no-legend")
    assert len(machines.stdout.splitlines()) == 2
    # The endpoint is only reachable for the bastion here, as on a laptop outside the cluster network.
    assert cluster.fleetctl(*flags, "--tunnel", tunnel, "ssh", *port, cluster.nodes[0].short, "true").returncode == 0


def test_status_and_journal_of_a_unit_on_this_machine_run_locally(fleet_cluster, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no SSH key anywhere: SSH would fail
    cluster = fleet_cluster(0)
    local = cluster.add_node(machine_id=Path("/etc/machine-id").read_text().strip(), public_ip="192.0.2.1")
    cluster.wait_machines(1)
    write_unit(cluster.workdir, "hello.service", HELLO)
    cluster.fleetctl("start", "hello.service")
    log = local.runtime / "journal" / "hello.service.log"
    cluster.wait_for(lambda: log.exists() and "Hello, World!" in log.read_text(), 10, "a greeting")
    time.sleep(0.5)
    status = cluster.fleetctl("status", "hello.service")
    assert status.stdout.startswith("● hello.service - Hello World\n")
    assert cluster.fleetctl("journal", "--lines", "1", "hello").stdout.rstrip().endswith("Hello, World!")
    cluster.fleetctl("stop", "hello")
    stopped = cluster.fleetctl("status", "hello", check=False)
    assert stopped.returncode == 3 and "     Active: inactive (dead) since " in stopped.stdout

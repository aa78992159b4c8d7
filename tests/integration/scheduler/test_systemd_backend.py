"""fleetd with the systemd backend against a real systemd manager (`systemd --user` in a private mount
namespace, tests/fixtures/user_systemd.py): units linked under the manager's runtime directory, started
and stopped by systemd, states from systemd, adopted (not restarted) by a restarted fleetd."""

from __future__ import annotations

import os

import pytest

from tests.fixtures.user_systemd import user_systemd  # noqa: F401  (the fixture)
from tests.integration.scheduler.conftest import HELLO, write_unit


@pytest.fixture
def systemd_node(fleet_cluster, user_systemd):  # noqa: F811
    machine = user_systemd("m1")
    cluster = fleet_cluster(0)
    node = cluster.add_node(FLEET_UNIT_BACKEND="systemd", FLEET_SYSTEMD_USER="true",
                            **{k: v for k, v in machine.env.items() if k != "PATH"})
    cluster.wait_machines(1)
    return cluster, node, machine


def test_units_run_under_systemd_and_survive_a_fleetd_restart(systemd_node):
    cluster, node, machine = systemd_node
    write_unit(cluster.workdir, "hello.service", HELLO)
    write_unit(cluster.workdir, "installed.service", "[Service]\nExecStart=/bin/sleep 600\n"
                                                    "[Install]\nWantedBy=default.target\n")
    assert "launched on" in cluster.fleetctl("start", "hello.service", "installed.service").stdout
    systemctl = machine.systemctl
    assert systemctl.state("hello.service").active == "active"
    units_dir = node.runtime / "units"
    assert (machine.unit_dir / "hello.service").resolve() == units_dir / "hello.service"
    assert (machine.unit_dir / "default.target.wants" / "installed.service").is_symlink()
    assert cluster.units()["hello.service"] == [(node.machine_id, "active")]
    pid = systemctl.show(["hello.service"], ["MainPID"])["hello.service"]["MainPID"]
    assert int(pid) > 0

    # fleetd restarts (a crash): the units keep running under systemd and are adopted, not restarted.
    cluster.kill(node)
    cluster.start(node)
    cluster.wait_for(lambda: "took back lease" in node.log() or node.log().count("registered") >= 2, 30,
                     "fleetd back")
    cluster.wait_for(lambda: cluster.units().get("hello.service") == [(node.machine_id, "active")], 20,
                     "hello reported again")
    assert systemctl.show(["hello.service"], ["MainPID"])["hello.service"]["MainPID"] == pid

    cluster.fleetctl("stop", "hello.service")
    assert systemctl.state("hello.service").active == "inactive"
    cluster.fleetctl("unload", "installed.service")
    cluster.wait_for(lambda: not (machine.unit_dir / "default.target.wants" / "installed.service").exists(), 10,
                     "installed.service disabled")
    assert not (units_dir / "installed.service").exists()
    assert systemctl.state("installed.service").load == "not-found"
    cluster.fleetctl("destroy", "hello.service")
    assert not (units_dir / "hello.service").exists() and not os.path.lexists(machine.unit_dir / "hello.service")

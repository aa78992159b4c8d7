"""fleet's functional scenarios (functional/*_test.go) on 3 real fleetd processes and a 3-member etcd.

Each test drives the cluster only through fleetctl, as an operator would, and checks what fleetctl
prints (fleet's words and columns) and where the units really run (their processes' output).
"""

from __future__ import annotations

import re

from tests.integration.scheduler.conftest import HELLO, write_unit

NGINX = ('[Unit]\nDescription=web %i\n[Service]\nExecStart=/bin/bash -c "while true; do echo web %i; sleep 1; done"\n'
         '[X-Fleet]\nConflicts=nginx@*.service\n')
SLEEPER = "[Service]\nExecStart=/bin/sleep 600\n"


def test_guides_hello_and_nginx_template(fleet_cluster):
    cluster = fleet_cluster(3)
    write_unit(cluster.workdir, "hello.service", HELLO)
    write_unit(cluster.workdir, "nginx@.service", NGINX)

    started = cluster.fleetctl("start", "hello.service", process=True)  # the installed console script
    machine = re.search(r"^Unit hello\.service launched on ([0-9a-f]{8})\.\.\./(10\.99\.0\.\d)$", started.stdout, re.M)
    assert machine, started.stdout
    assert started.stdout.startswith("Unit hello.service inactive\n")

    cluster.fleetctl("submit", "nginx@.service")
    # The guides' spelling for docker before 1.10: submitted as written, with a warning naming file, line and fix.
    write_unit(cluster.workdir, "guide.service", "[Service]\nExecStartPre=-/usr/bin/docker rm hello\n"
                                                 "ExecStart=/usr/bin/docker run -rm --name hello busybox true\n")
    submitted = cluster.fleetctl("submit", "guide.service")
    assert "guide.service:3: warning: docker run: \"-rm\"" in submitted.stderr and "--rm" in submitted.stderr
    assert submitted.stderr.count("\n") == 1, submitted.stderr
    started = cluster.fleetctl("start", "nginx@1", "nginx@2")
    hosts = re.findall(r"^Unit nginx@\d\.service launched on (\w{8})\.\.\./", started.stdout, re.M)
    assert len(hosts) == 2 and hosts[0] != hosts[1], started.stdout  # Conflicts: two machines

    listing = cluster.fleetctl("list-units").stdout.splitlines()
    assert re.split(r"\t+", listing[0]) == ["UNIT", "MACHINE", "ACTIVE", "SUB"]
    rows = {re.split(r"\t+", line)[0]: re.split(r"\t+", line) for line in listing[1:]}
    assert rows["hello.service"][1] == f"{machine.group(1)}.../{machine.group(2)}"
    assert rows["hello.service"][2:] == ["active", "running"]
    files = cluster.fleetctl("list-unit-files").stdout.splitlines()
    assert re.split(r"\t+", files[0]) == ["UNIT", "HASH", "DSTATE", "STATE", "TARGET"]
    nginx_template = next(line for line in files if line.startswith("nginx@.service"))
    assert re.split(r"\t+", nginx_template)[2:] == ["inactive", "inactive", "-"]
    assert [line.split()[0] for line in files[1:]] == sorted(line.split()[0] for line in files[1:])

    # The unit really runs: its machine's log has its output.
    node = next(n for n in cluster.nodes if n.short == machine.group(1))
    log = node.runtime / "journal" / "hello.service.log"
    cluster.wait_for(lambda: log.exists() and "Hello, World!" in log.read_text(), 10, "hello output")

    assert cluster.fleetctl("cat", "hello").stdout == ('[Unit]\nDescription=Hello World\n\n[Service]\n'
                                                       'ExecStart=/bin/bash -c "while true; do echo Hello, World!; '
                                                       'sleep 1; done"\n')
    stopped = cluster.fleetctl("stop", "hello.service")
    assert stopped.stdout == f"Unit hello.service loaded on {machine.group(1)}.../{machine.group(2)}\n"
    assert stopped.stderr == "Successfully stopped units [hello.service].\n"
    assert cluster.units()["hello.service"] == [(node.machine_id, "inactive")]
    again = cluster.fleetctl("stop", "hello.service")  # already loaded: nothing to wait for
    assert again.stdout == "" and again.stderr == "Successfully stopped units [].\n"
    unloaded = cluster.fleetctl("unload", "hello.service")
    assert unloaded.stdout == "Unit hello.service inactive\n"
    assert "hello.service" not in cluster.units()
    refused = cluster.fleetctl("stop", "hello.service", check=False)
    assert (refused.returncode, refused.stderr) == (1, "Unable to stop unit hello.service in state inactive\n")
    assert cluster.fleetctl("destroy", "hello.service").stdout == "Destroyed hello.service\n"
    assert "hello.service" not in cluster.fleetctl("list-unit-files").stdout

    missing = cluster.fleetctl("status", "hello.service", check=False)
    assert (missing.returncode, missing.stderr) == (1, "Unit hello.service does not exist.\n")
    missing = cluster.fleetctl("journal", "nope", check=False)
    assert (missing.returncode, missing.stderr) == (1, "Unit nope.service does not exist.\n")
    assert cluster.fleetctl("cat", "hello", check=False).stderr == "Unit hello.service not found\n"
    assert cluster.fleetctl("destroy", "hello", check=False).stderr == "Units not found in registry\n"


def test_more_conflicting_units_than_machines(fleet_cluster):
    cluster = fleet_cluster(3)
    for index in range(5):
        write_unit(cluster.workdir, f"conflict.{index}.service",
                   "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nConflicts=conflict.*.service\n")
    triggered = cluster.fleetctl("start", "--no-block", *[f"conflict.{i}.service" for i in range(5)])
    assert triggered.stdout.count("Triggered unit conflict.") == 5
    cluster.wait_for(lambda: sum(1 for u, s in cluster.units().items() if s[0][1] == "active") == 3, 30,
                     "three running")
    running = cluster.units()
    assert sorted(s[0][0] for s in running.values()) == sorted(n.machine_id for n in cluster.nodes)
    files = cluster.fleetctl("list-unit-files", "--no-legend", "--fields", "unit,state").stdout
    assert sorted(line.split()[1] for line in files.splitlines()) == ["inactive", "inactive", "launched",
                                                                      "launched", "launched"]


def test_machine_of_colocation_and_co_migration(fleet_cluster):
    cluster = fleet_cluster(3)
    write_unit(cluster.workdir, "ping.service", SLEEPER)
    write_unit(cluster.workdir, "pong.service", SLEEPER + "[X-Fleet]\nMachineOf=ping.service\n")
    cluster.fleetctl("start", "ping.service", "pong.service")
    assert cluster.active_on("ping.service") == cluster.active_on("pong.service") != []
    home = cluster.node_of(cluster.active_on("ping.service")[0])
    cluster.kill(home)
    moved = cluster.wait_for(lambda: (lambda p, q: p if p and p == q and p != [home.machine_id] else None)(
        cluster.active_on("ping.service"), cluster.active_on("pong.service")), 30, "ping and pong moved together")
    assert moved[0] != home.machine_id


def test_metadata_machine_id_and_template_specifiers(fleet_cluster):
    cluster = fleet_cluster(3, metadata=["hostname=alpha,region=eu", "hostname=beta,region=us",
                                         "hostname=gamma,region=us"])
    write_unit(cluster.workdir, "metadata@.service", SLEEPER + "[X-Fleet]\nMachineMetadata=hostname=%i\n")
    write_unit(cluster.workdir, "pin@.service", SLEEPER + "[X-Fleet]\nMachineID=%i\n")
    write_unit(cluster.workdir, "us.service", SLEEPER + '[X-Fleet]\nMachineMetadata="region=us" "region=asia"\n')
    target = cluster.nodes[2]
    cluster.fleetctl("start", "metadata@beta.service", f"pin@{target.short}.service", "us.service")
    assert cluster.active_on("metadata@beta.service") == [cluster.nodes[1].machine_id]
    assert cluster.active_on(f"pin@{target.short}.service") == [target.machine_id]
    assert cluster.active_on("us.service")[0] in (cluster.nodes[1].machine_id, cluster.nodes[2].machine_id)
    machines = cluster.fleetctl("list-machines", "--full").stdout.splitlines()
    assert machines[0].split() == ["MACHINE", "IP", "METADATA"]
    assert f"{cluster.nodes[0].machine_id}\t10.99.0.1\thostname=alpha,region=eu" in machines
    # No machine has the metadata: the unit stays unscheduled (fleetctl would wait for ever: --no-block).
    assert cluster.fleetctl("start", "--no-block", "metadata@delta.service").stdout == (
        "Unit metadata@delta.service inactive\nTriggered unit metadata@delta.service start\n")


def test_global_units_and_global_conflicts(fleet_cluster):
    cluster = fleet_cluster(3, metadata=["role=edge", "role=core", "role=edge"])
    write_unit(cluster.workdir, "global.service", SLEEPER + "[X-Fleet]\nGlobal=true\n")
    write_unit(cluster.workdir, "edge.service", SLEEPER + "[X-Fleet]\nGlobal=true\nMachineMetadata=role=edge\n")
    for index in range(2):
        write_unit(cluster.workdir, f"conflict-global.{index}.service",
                   SLEEPER + "[X-Fleet]\nGlobal=true\nConflicts=conflict-global.*.service\n")
    out = cluster.fleetctl("start", "global.service", "edge.service").stdout
    assert "Triggered global unit global.service start\n" in out and "Triggered global unit edge.service start\n" in out
    every = sorted(n.machine_id for n in cluster.nodes)
    cluster.wait_for(lambda: cluster.active_on("global.service") == every, 20, "global everywhere")
    cluster.wait_for(lambda: cluster.active_on("edge.service") == sorted(
        [cluster.nodes[0].machine_id, cluster.nodes[2].machine_id]), 20, "edge on the edge machines")
    files = cluster.fleetctl("list-unit-files", "--no-legend", "--fields", "unit,state,target,global").stdout
    assert "global.service\t-\tglobal\ttrue" in files
    cluster.fleetctl("start", "conflict-global.0.service", "conflict-global.1.service")
    cluster.wait_for(lambda: cluster.active_on("conflict-global.0.service") == every, 20, "first global conflict")
    assert cluster.active_on("conflict-global.1.service") == []
    # A machine joining later gets the global unit.
    late = cluster.add_node(metadata="role=edge")
    cluster.wait_for(lambda: late.machine_id in cluster.active_on("edge.service"), 20, "late machine runs edge")


def test_replaces_moves_the_replaced_unit_away(fleet_cluster):
    cluster = fleet_cluster(2)
    write_unit(cluster.workdir, "replace.0.service", SLEEPER)
    write_unit(cluster.workdir, "replace-kick0.service", SLEEPER + "[X-Fleet]\nReplaces=replace.0.service\n")
    cluster.fleetctl("start", "replace.0.service")
    old = cluster.active_on("replace.0.service")
    cluster.fleetctl("start", "replace-kick0.service")
    cluster.wait_for(lambda: cluster.active_on("replace-kick0.service") == old
                     and cluster.active_on("replace.0.service") not in ([], old), 30, "kick0 took replace.0's place")


def test_destroy_and_resubmit_runs_the_new_contents(fleet_cluster):
    cluster = fleet_cluster(2)
    unit = write_unit(cluster.workdir, "echo.service",
                      '[Service]\nExecStart=/bin/bash -c "while true; do echo first; sleep 1; done"\n')
    cluster.fleetctl("start", "echo.service")
    first_hash = cluster.fleetctl("list-unit-files", "--no-legend", "--fields", "hash").stdout.strip()
    unit.write_text('[Service]\nExecStart=/bin/bash -c "while true; do echo second; sleep 1; done"\n')
    warned = cluster.fleetctl("start", "echo.service")
    assert "WARNING: Unit echo.service in registry differs from local unit file echo.service. Add --replace to " \
           "override." in warned.stderr
    cluster.fleetctl("destroy", "echo.service")
    cluster.fleetctl("start", "echo.service")
    assert cluster.fleetctl("list-unit-files", "--no-legend", "--fields", "hash").stdout.strip() != first_hash
    node = cluster.node_of(cluster.active_on("echo.service")[0])
    log = node.runtime / "journal" / "echo.service.log"
    cluster.wait_for(lambda: "second" in log.read_text(), 10, "new contents running")
    # --replace on a running unit: stopped, replaced, started again with the third contents.
    unit.write_text('[Service]\nExecStart=/bin/bash -c "while true; do echo third; sleep 1; done"\n')
    cluster.fleetctl("start", "--replace", "echo.service")
    node = cluster.node_of(cluster.active_on("echo.service")[0])
    log = node.runtime / "journal" / "echo.service.log"
    cluster.wait_for(lambda: "third" in log.read_text(), 10, "replaced contents running")

"""Failure behaviour, where fleet's users suffered: a machine killed, an etcd member lost, a machine cut
off from etcd, a short etcd hiccup. Real fleetd processes, a real 3-member etcd, real unit processes.

Times are measured and printed (run with -s to see them); the speed targets themselves are checked by
`python -m bench scheduler`, not asserted here. What is asserted is behaviour: units move, nothing
restarts when it should not, a cut-off machine keeps its units through the grace period and then
stops exactly the ones that moved.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from tests.integration.scheduler.conftest import FleetCluster, Node, write_unit

# Each unit records when it started and when its process had gone, with the machine it ran on (%m),
# in one file shared by every machine of the test (they all run on this host).
TRACED = ("[Service]\nExecStart=/bin/sh -c 'echo START %n %m $(date +%%s.%%N) >> {trace}; exec sleep 600'\n"
          "ExecStopPost=/bin/sh -c 'echo STOP %n %m $(date +%%s.%%N) >> {trace}'\n")


def main_pid(node: Node, unit: str) -> int | None:
    status = node.runtime / "status" / unit
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.strip().startswith("Main PID:"):
            return int(line.split()[2])
    return None


def leader_of(cluster: FleetCluster) -> str:
    out = subprocess.run(["etcdctl", "--endpoints", ",".join(cluster.etcd.endpoints), "get", "--print-value-only",
                          f"{cluster.prefix}lease/engine-leader"], capture_output=True, text=True, timeout=20).stdout
    return json.loads(out)["MachineID"] if out.strip() else ""


def trace_events(path) -> list[tuple[str, str, str, float]]:
    if not path.exists():
        return []
    return [(kind, unit, machine, float(stamp)) for kind, unit, machine, stamp in
            (line.split() for line in path.read_text().splitlines() if line.strip())]


def test_kill_9_moves_units_and_a_new_engine_leader_takes_over_at_default_ttl(fleet_cluster):
    cluster = fleet_cluster(3)  # no TTL configured: the defaults are what is measured
    for index in range(2):
        write_unit(cluster.workdir, f"web@{index}.service",
                   "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nConflicts=web@*.service\n")
    cluster.fleetctl("start", "web@0", "web@1")
    leader = cluster.wait_for(lambda: leader_of(cluster), 10, "an engine leader")
    victim = cluster.node_of(leader)
    unit = next((u for u, states in cluster.units().items() if states[0][0] == leader), None)
    if unit is None:
        # The leader is the one free machine. A unit without conflicts lands there (least loaded) and can
        # move to either survivor; a third web@ could not, both survivors already run one.
        write_unit(cluster.workdir, "solo.service", "[Service]\nExecStart=/bin/sleep 600\n")
        cluster.fleetctl("start", "solo.service")
        unit = "solo.service"
        cluster.wait_for(lambda: cluster.active_on(unit) == [leader], 15, f"{unit} active on the leader")
    pid = main_pid(victim, unit)
    assert pid is not None

    started = time.monotonic()
    cluster.kill(victim)
    moved = cluster.wait_for(lambda: [m for m in cluster.active_on(unit) if m != victim.machine_id], 30,
                             f"{unit} running elsewhere")
    failover = time.monotonic() - started
    new_leader = cluster.wait_for(lambda: (lambda m: m if m and m != victim.machine_id else "")(leader_of(cluster)),
                                  30, "a new engine leader")
    print(f"\nkill -9 of the leader's fleetd -> {unit} active on {moved[0][:8]} after {failover:.2f} s "
          f"(agent_ttl 5 s); new leader {new_leader[:8]}")
    assert new_leader in (n.machine_id for n in cluster.nodes if n is not victim)
    cluster.wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 5, "the killed machine's unit process gone")
    machines = cluster.fleetctl("list-machines", "--no-legend").stdout
    assert victim.short not in machines and len(machines.splitlines()) == 2


def test_losing_one_of_three_etcd_members_changes_nothing(fleet_cluster):
    cluster = fleet_cluster(3)
    for index in range(3):
        write_unit(cluster.workdir, f"steady{index}.service", "[Service]\nExecStart=/bin/sleep 600\n")
    cluster.fleetctl("start", "steady0", "steady1", "steady2")
    before = {unit: states[0][0] for unit, states in cluster.units().items()}
    pids = {unit: main_pid(cluster.node_of(machine), unit) for unit, machine in before.items()}
    etcd = cluster.etcd
    lost = etcd.leader_index()  # the worst member to lose: etcd must elect a new leader
    etcd.kill(lost)
    try:
        time.sleep(2 * 5 + 1)  # two lease TTLs: every lease had to be renewed through the other members
        after = {unit: states[0][0] for unit, states in cluster.units().items()}
        assert after == before
        assert {unit: main_pid(cluster.node_of(m), unit) for unit, m in after.items()} == pids  # no restart
        assert len(cluster.fleetctl("list-machines", "--no-legend").stdout.splitlines()) == 3
        assert all(states[0][1] == "active" for states in cluster.units().values())
        # The cluster still schedules.
        write_unit(cluster.workdir, "late.service", "[Service]\nExecStart=/bin/sleep 600\n")
        assert "launched on" in cluster.fleetctl("start", "late.service").stdout
        assert not any("lease has expired" in n.log() or "no longer the leader" in n.log() for n in cluster.nodes)
    finally:
        etcd.restart(lost)


def test_a_short_etcd_hiccup_on_one_machine_changes_nothing(fleet_cluster):
    cluster = fleet_cluster(2, ttl="4s", proxied=True)
    write_unit(cluster.workdir, "calm.service", "[Service]\nExecStart=/bin/sleep 600\n")
    cluster.fleetctl("start", "calm.service")
    node = cluster.node_of(cluster.active_on("calm.service")[0])
    pid = main_pid(node, "calm.service")
    node.cut()
    time.sleep(2.0)  # half the TTL: fleet (agent_ttl 30 s, heartbeat retries for TTL/3) restarted here
    node.heal()
    time.sleep(4.0)
    assert cluster.active_on("calm.service") == [node.machine_id]
    assert main_pid(node, "calm.service") == pid
    assert len(cluster.fleetctl("list-machines", "--no-legend").stdout.splitlines()) == 2
    assert "lease surely expired" not in node.log()


def test_a_machine_cut_off_from_etcd_keeps_its_units_for_the_grace_period_then_stops_those_that_moved(
        fleet_cluster, tmp_path):
    ttl = 4.0
    cluster = fleet_cluster(3, ttl="4s", proxied=True)
    trace = tmp_path / "trace"
    for index in range(2):
        write_unit(cluster.workdir, f"cg@{index}.service",
                   TRACED.format(trace=trace) + "[X-Fleet]\nConflicts=cg@*.service\n")
    write_unit(cluster.workdir, "everywhere.service", "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nGlobal=true\n")
    cluster.fleetctl("start", "cg@0", "cg@1", "everywhere.service")
    victim = cluster.node_of(cluster.active_on("cg@0.service")[0])
    write_unit(cluster.workdir, "pinned.service", f"[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\n"
                                                   f"MachineID={victim.machine_id}\n")
    cluster.fleetctl("start", "pinned.service")
    cluster.wait_for(lambda: len(cluster.active_on("everywhere.service")) == 3, 20, "the global unit everywhere")
    kept = {unit: main_pid(victim, unit) for unit in ("pinned.service", "everywhere.service", "cg@0.service")}

    cut_at = time.time()
    victim.cut()
    time.sleep(ttl / 2)
    assert main_pid(victim, "cg@0.service") == kept["cg@0.service"], "stopped during the grace period"

    def moved_and_stopped() -> bool:
        events = trace_events(trace)
        return (any(e[0] == "START" and e[1] == "cg@0.service" and e[2] != victim.machine_id for e in events)
                and any(e[0] == "STOP" and e[1] == "cg@0.service" and e[2] == victim.machine_id for e in events))
    cluster.wait_for(moved_and_stopped, 30, "cg@0 started elsewhere and stopped on the cut-off machine")
    events = trace_events(trace)
    started_elsewhere = next(e[3] for e in events if e[0] == "START" and e[1] == "cg@0.service"
                             and e[2] != victim.machine_id)
    stopped_here = next(e[3] for e in events if e[0] == "STOP" and e[1] == "cg@0.service"
                        and e[2] == victim.machine_id)
    overlap = stopped_here - started_elsewhere
    print(f"\ncut off at 0: cg@0 stopped on the cut-off machine at {stopped_here - cut_at:.2f} s, started elsewhere "
          f"at {started_elsewhere - cut_at:.2f} s; overlap {overlap:.2f} s (agent_ttl {ttl:.0f} s)")
    # It ran through the grace period (the lease outlives the last renewal by a full TTL), and the two
    # copies of the Conflicts group overlapped by far less than a lease period.
    assert stopped_here - cut_at > ttl * 2 / 3
    assert overlap < ttl / 2
    # What cannot move kept running on the cut-off machine, untouched.
    assert main_pid(victim, "pinned.service") == kept["pinned.service"]
    assert main_pid(victim, "everywhere.service") == kept["everywhere.service"]

    victim.heal()
    cluster.wait_for(lambda: len(cluster.fleetctl("list-machines", "--no-legend").stdout.splitlines()) == 3, 20,
                     "the machine back")
    time.sleep(3)
    assert main_pid(victim, "pinned.service") == kept["pinned.service"]
    assert cluster.active_on("pinned.service") == [victim.machine_id]
    assert victim.machine_id not in cluster.active_on("cg@0.service")
    starts = [e for e in trace_events(trace) if e[0] == "START" and e[1] == "cg@0.service"]
    assert len(starts) == 2, starts  # no third copy once it came back


def test_a_fleetd_restarted_within_the_ttl_takes_its_lease_back_and_keeps_its_units(fleet_cluster):
    cluster = fleet_cluster(2)
    write_unit(cluster.workdir, "home.service", "[Service]\nExecStart=/bin/sleep 600\n")
    cluster.fleetctl("start", "home.service")
    node = cluster.node_of(cluster.active_on("home.service")[0])
    cluster.kill(node)  # a crash: its unit process dies with it (process backend)
    cluster.start(node)
    cluster.wait_for(lambda: "took back lease" in node.log(), 20, "the lease taken back")
    # Same machine, same lease: the engine never saw it go, so the unit restarts where it was.
    cluster.wait_for(lambda: cluster.active_on("home.service") == [node.machine_id], 20, "home.service back home")
    assert "went away" not in "".join(n.log() for n in cluster.nodes)


def test_a_second_fleetd_with_the_same_machine_id_waits_for_the_first_to_go(fleet_cluster):
    """fleet's TestDetectMachineId: two machines with one /etc/machine-id must not both register."""
    cluster = fleet_cluster(1, ttl="2s")
    first = cluster.nodes[0]
    twin = cluster.add_node(ttl="2s", machine_id=first.machine_id, public_ip="10.99.0.77")
    cluster.wait_for(lambda: "is already registered by another fleetd" in twin.log(), 15, "the twin refused")
    machines = cluster.fleetctl("list-machines", "--no-legend", "--full").stdout
    assert machines.splitlines() == [f"{first.machine_id}\t10.99.0.1\t-"]
    cluster.kill(first)  # its lease expires: the twin may take the ID now
    cluster.wait_for(lambda: "10.99.0.77" in cluster.fleetctl("list-machines", "--no-legend").stdout, 20,
                     "the twin registered")

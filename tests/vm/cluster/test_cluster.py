"""Cluster acceptance: three blank VMs (two BIOS, one UEFI) to a working cluster, as `make demo` runs it.

node1 and node3 PXE-boot the live image and install unattended; node2 boots a rescue system and is installed
through `provisioner rescue` over SSH (the rescue path on a real VM), then marked installed through the admin
API. All reboot from disk, apply their cloud-configs; etcd forms a 3-member cluster through the server's
discovery service; fleetd joins on each; the guides' hello.service runs from the server's registry; web@1 and
web@2 land on different machines; powering off web@1's machine moves it; etcd keeps serving with 2 of 3.
Then the powered-off machine comes back, the server publishes version N+1 and all three update at once with
the etcd-lock reboot strategy: each downloads, verifies and writes it to its passive slot, and they reboot
one at a time, in the order of the reboot lock's holders, each coming back healthy on N+1.

Real components throughout: `provisioner serve` (full DHCP, HTTP, discovery, registry) in a netns with no
uplink, QEMU (TCG), the release built by the image fixture (cached), etcd 3.4, docker, ssh. On failure the serial logs, the
server log and its state are copied to build/test-logs/cluster/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioner.demo.boot_chain import ssh_argv
from provisioner.demo.cluster import ClusterConfig, ClusterDemo, ClusterEvent
from tests.integration.node.rebootlock_history import holder_sequence
from tests.vm.cluster.rolling_update import RollingUpdate, restore_powered_off, rolling_update, ssh

REPO = Path(__file__).resolve().parents[3]
NODE_STAGES = ("DHCP", "iPXE", "kernel", "live system", "rebooting", "cloud-config applied", "SSH ok")


def _keep_logs(demo: ClusterDemo) -> Path:
    target = REPO / "build" / "test-logs" / "cluster"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in demo.logs():
        shutil.copyfile(path, target / path.name)
    if demo.state_dir.exists():
        shutil.copytree(demo.state_dir, target / "state")
    for name, ip in demo.result.ips.items():
        journal = subprocess.run(ssh_argv(demo.config.netns, demo.key, ip,
                                          "sudo journalctl -b --no-pager -u etcd -u fleet -u docker -u containerd "
                                          "-u hello -u provisioner-cloudinit | tail -600"),
                                 capture_output=True, text=True, timeout=60)
        (target / f"{name}.journal.txt").write_text(journal.stdout + journal.stderr)
    return target


@pytest.mark.timeout(2700)   # the demo has its own per-stage bounds (ClusterConfig)
def test_three_blank_vms_become_a_cluster_that_survives_a_power_off(built_image, tmp_path):
    config = ClusterConfig(data_dir=REPO / "examples" / "cluster", release_dir=built_image.release_dir,
                           workdir=tmp_path / "cluster",
                           netns=f"cluster{os.getpid() % 100000}", accel="tcg")
    demo = ClusterDemo(config, keep=True)   # kept up until the logs are taken
    events: list[ClusterEvent] = []
    try:
        result = demo.run(on_event=lambda event: (events.append(event), print(event, flush=True)))
        _check(demo, result)
        print(f"cluster up in {result.total:.0f} s; failover {result.failover_seconds:.1f} s")
        restore_powered_off(demo)
        _check_rolling_update(demo, rolling_update(demo, built_image, tmp_path))
    except BaseException:
        print(f"cluster test logs kept in {_keep_logs(demo)}")
        raise
    finally:
        demo.stop()


def _check(demo: ClusterDemo, result) -> None:
    for node in demo.config.nodes:
        times = [result.at(node.name, stage) for stage in NODE_STAGES]
        assert None not in times, (node.name, [(e.node, e.stage) for e in result.events])
        assert times == sorted(times), (node.name, times)   # the stages came in order
        if node.via_rescue:
            assert result.at(node.name, "rescue: installed") is not None
        else:
            assert result.at(node.name, "installing 100%") is not None
    # The server's state: all three marked installed (node2 through the admin API after the rescue install).
    marks = demo.installed_marks()
    assert all(node.mac in marks for node in demo.config.nodes), marks
    state = demo.machines_state()
    rescued = next(n for n in demo.config.nodes if n.via_rescue)
    assert not [h for h in state[rescued.mac]["history"] if h["stage"] == "kernel" and
                h["at"] > marks[rescued.mac]], "the rescued machine booted the live image again"
    # etcd: 3 healthy members; fleet: 3 machines (each node's IP).
    assert result.etcd_health.count(" is healthy: ") == 3 and "cluster is healthy" in result.etcd_health
    for ip in result.ips.values():
        assert ip in result.machines, result.machines
    # Units: Conflicts kept web@1 and web@2 apart; hello printed from the busybox the registry served.
    assert result.placement["web@1.service"] != result.placement["web@2.service"], result.placement
    assert "Hello World" in result.journal
    # The failover: web@1 left the powered-off machine for a survivor; etcd degraded but serving.
    assert result.moved_to and result.moved_to != result.powered_off
    assert "cluster is degraded" in result.health_after


def _check_rolling_update(demo: ClusterDemo, update: RollingUpdate) -> None:
    print("reboot lock holders:", [value.holders for value in update.history], flush=True)
    assert update.initial.holders == (), update.initial
    assert max(len(value.holders) for value in update.history) == 1
    assert [update.machine_ids[holder] for holder in holder_sequence(update.history)] == update.rebooted
    print(f"cluster updated {update.version_from} -> {update.version_to}, one reboot at a time: "
          f"{update.total:.0f} s from the update's start to the lock's release by the last node", flush=True)
    for ip in demo.result.ips.values():
        journal = ssh(demo, ip, "sudo journalctl -b -u locksmithd --no-pager")
        assert "booted slot is marked successful: reboot lock released" in journal, journal[-2000:]
        status = json.loads(ssh(demo, ip, "sudo provisioner node update status --json"))
        assert status["booted"] == {"slot": "USR-B", "version": update.version_to}, (ip, status)

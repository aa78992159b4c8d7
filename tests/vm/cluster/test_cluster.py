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

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.core.commands import run
from provisioner.demo.boot_chain import ssh_argv
from provisioner.demo.cluster import ClusterConfig, ClusterDemo, ClusterEvent
from provisioner.node.update.rebootlock import Semaphore, semaphore_key
from tests.integration.node.rebootlock_history import holder_sequence
from tests.vm.update.releases import bumped, copy_release, derive_release, point_current

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
        _rolling_update(demo, built_image, tmp_path)
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


# What an operator's cloud-config would set (coreos.update.reboot-strategy), and a shorter longest lock
# retry than locksmith's 5 min, so the machines waiting for the lock notice a release within seconds.
UPDATE_SETUP = """set -e
mkdir -p /etc/coreos /run/systemd/system/locksmithd.service.d
printf 'REBOOT_STRATEGY=etcd-lock\\nGROUP=stable\\nSERVER={server}\\n' >> /etc/coreos/update.conf
printf '[Service]\\nEnvironment=LOCKSMITHD_RETRY_MAX=10\\n' > /run/systemd/system/locksmithd.service.d/30-test.conf
systemctl daemon-reload
systemctl restart locksmithd
"""


def _ssh(demo: ClusterDemo, ip: str, command: str, stdin: str | None = None) -> str:
    """`command`'s output; ssh's own failures (exit 255: a TCG guest under load can miss ssh's 5 s banner
    timeout just after boot) are retried for a minute."""
    deadline = time.monotonic() + 60
    while True:
        done = run(ssh_argv(demo.config.netns, demo.key, ip, command), input=stdin, timeout=60, check=False)
        if done.returncode == 0:
            return done.stdout
        assert done.returncode == 255 and time.monotonic() < deadline, \
            f"{ip}: {command}: exit {done.returncode}: {done.stderr.strip()[-500:]}"
        time.sleep(3)


def _lock_history(demo: ClusterDemo, endpoints: str, start: int) -> list[Semaphore]:
    """Every value of the reboot lock from revision `start` on (etcd's history, replayed by a watch)."""
    out = demo.lab(["timeout", "8", "etcdctl", "--endpoints", endpoints, "watch", f"--rev={start}",
                    semaphore_key()], check=False, timeout=30).stdout
    return [Semaphore.parse(line, semaphore_key()) for line in out.splitlines() if line.startswith("{")]


def _publish_update(demo: ClusterDemo, built_image, work: Path) -> tuple[str, str]:
    """(N, N+1): the built version and one derived from it (tests/vm/update/releases.py), served under
    /assets/updates/stable with `current` pointing at N+1."""
    channel = demo.work / "assets" / "updates" / "stable"
    channel.mkdir(parents=True)
    n = copy_release(built_image, channel)
    n1 = bumped(n, 1)
    derive_release(built_image, channel, n1, work)
    point_current(channel, n1)
    return n, n1


def _rolling_update(demo: ClusterDemo, built_image, work: Path) -> None:
    ips = demo.result.ips
    endpoints = ",".join(f"http://{ip}:2379" for ip in ips.values())
    victim = next(node for node in demo.nodes if node.spec.name == demo.result.powered_off)
    victim.boot_from_disk("3-back")
    demo._until("etcd healthy with every member again", lambda: demo.etcd_health(list(ips.values())).returncode == 0,
                300)
    n, n1 = _publish_update(demo, built_image, work)
    machine_ids = {}
    for name, ip in ips.items():
        _ssh(demo, ip, "sudo sh -s", UPDATE_SETUP.format(server=f"{demo.config.server_url}/assets/updates"))
        machine_ids[_ssh(demo, ip, "cat /etc/machine-id").strip()] = name
    for ip in ips.values():
        demo._until("locksmithd running with etcd-lock", lambda ip=ip: "STRATEGY=etcd-lock\nSTATE=running" in
                    _ssh(demo, ip, "cat /run/update-engine/coordinator.conf || true"), 120, 2)
    start = json.loads(demo.lab(["etcdctl", "--endpoints", endpoints, "get", semaphore_key(), "-w", "json"]).stdout)
    assert start.get("kvs"), "locksmithd did not create the reboot lock"
    initial = Semaphore.parse(base64.b64decode(start["kvs"][0]["value"]).decode(), semaphore_key())
    assert initial.holders == (), initial
    first = int(start["header"]["revision"]) + 1
    started = time.monotonic()
    for ip in ips.values():   # what update-engine.timer does, on all three at once
        _ssh(demo, ip, "sudo systemctl start --no-block update-engine.service")
    rebooted: list[str] = []
    deadline = time.monotonic() + 1500
    while len(rebooted) < len(ips):
        assert time.monotonic() < deadline, f"only {rebooted} rebooted"
        for node in demo.nodes:
            if node.spec.name not in rebooted and node.vm is not None and not node.vm.running():
                rebooted.append(node.spec.name)   # -no-reboot: the guest's reboot ended QEMU
                print(f"{node.spec.name} rebooted for the update", flush=True)
                node.boot_from_disk(f"{3 + len(rebooted)}-update")
        time.sleep(1)
    demo._until("the reboot lock free", lambda: "Available: 1" in demo.provisioner(
        "node", "reboot-lock", "status", "--endpoint", endpoints).stdout, 300, 2)
    history = [initial, *_lock_history(demo, endpoints, first)]
    print("reboot lock holders:", [value.holders for value in history], flush=True)
    assert max(len(value.holders) for value in history) == 1
    assert [machine_ids[holder] for holder in holder_sequence(history)] == rebooted
    print(f"cluster updated {n} -> {n1}, one reboot at a time: {time.monotonic() - started:.0f} s from the "
          f"update's start to the lock's release by the last node", flush=True)
    for ip in ips.values():
        journal = _ssh(demo, ip, "sudo journalctl -b -u locksmithd --no-pager")
        assert "booted slot is marked successful: reboot lock released" in journal, journal[-2000:]
        status = json.loads(_ssh(demo, ip, "sudo provisioner node update status --json"))
        assert status["booted"] == {"slot": "USR-B", "version": n1}, (ip, status)

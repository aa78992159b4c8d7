"""A rolling OS update of the running cluster demo, with the etcd-lock reboot strategy.

Shared by the cluster acceptance test (tests/vm/cluster/test_cluster.py), which checks what happened,
and the cluster update benchmark (bench/cluster_update.py), which records how long it took.

The server publishes version N+1 beside N (derived from the built image, tests/vm/update/releases.py);
each node gets the update settings an operator's cloud-config would write, then all three update agents
start at once: each downloads, verifies and writes N+1 to its passive slot, takes the reboot lock and
reboots; the lock is released by each node once its new slot is marked successful.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from provisioner.core.commands import run
from provisioner.demo.boot_chain import ssh_argv
from provisioner.demo.cluster import ClusterDemo
from provisioner.node.update.rebootlock import Semaphore, semaphore_key
from tests.vm.update.releases import bumped, copy_release, derive_release, point_current

# What an operator's cloud-config would set (coreos.update.reboot-strategy), and a shorter longest lock
# retry than locksmith's 5 min, so the machines waiting for the lock notice a release within seconds.
UPDATE_SETUP = """set -e
mkdir -p /etc/coreos /run/systemd/system/locksmithd.service.d
printf 'REBOOT_STRATEGY=etcd-lock\\nGROUP=stable\\nSERVER={server}\\n' >> /etc/coreos/update.conf
printf '[Service]\\nEnvironment=LOCKSMITHD_RETRY_MAX=10\\n' > /run/systemd/system/locksmithd.service.d/30-test.conf
systemctl daemon-reload
systemctl restart locksmithd
"""
DEADLINE = 1500.0   # seconds for all three to have rebooted


@dataclass
class HolderSpan:
    """One machine's turn with the reboot lock, in seconds since the update started (poll resolution)."""
    node: str
    acquired: float
    rebooted: float | None = None
    released: float | None = None


@dataclass
class RollingUpdate:
    version_from: str
    version_to: str
    payload_bytes: int
    initial: Semaphore                    # the lock before the agents started
    history: list[Semaphore]              # `initial`, then every value the lock took (etcd's history)
    machine_ids: dict[str, str]           # /etc/machine-id -> node name
    rebooted: list[str]                   # node names in the order their VMs went down
    spans: list[HolderSpan] = field(default_factory=list)
    total: float = 0.0                    # update start -> the last node's release of the lock


def ssh(demo: ClusterDemo, ip: str, command: str, stdin: str | None = None) -> str:
    """`command`'s output; ssh's own failures (exit 255: a TCG guest under load can miss ssh's 5 s banner
    timeout just after boot) are retried for a minute."""
    deadline = time.monotonic() + 60
    while True:
        done = run(ssh_argv(demo.config.netns, demo.key, ip, command), input=stdin, timeout=60, check=False)
        if done.returncode == 0:
            return done.stdout
        if done.returncode != 255 or time.monotonic() > deadline:
            raise AssertionError(f"{ip}: {command}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
        time.sleep(3)


def lock_history(demo: ClusterDemo, endpoints: str, start: int) -> list[Semaphore]:
    """Every value of the reboot lock from revision `start` on (etcd's history, replayed by a watch)."""
    out = demo.lab(["timeout", "8", "etcdctl", "--endpoints", endpoints, "watch", f"--rev={start}",
                    semaphore_key()], check=False, timeout=30).stdout
    return [Semaphore.parse(line, semaphore_key()) for line in out.splitlines() if line.startswith("{")]


def _locksmithd_ready(demo: ClusterDemo, ip: str) -> bool:
    return "STRATEGY=etcd-lock\nSTATE=running" in ssh(demo, ip, "cat /run/update-engine/coordinator.conf || true")


def _lock_now(demo: ClusterDemo, endpoints: str) -> tuple[Semaphore | None, int] | None:
    """(the lock's value or None when absent, etcd's revision); None when etcd did not answer (a member
    rebooting or a leader election while a node updates: the next poll sees it)."""
    done = demo.lab(["etcdctl", "--endpoints", endpoints, "--command-timeout=5s", "get", semaphore_key(), "-w",
                     "json"], timeout=30, check=False)
    try:
        answer = json.loads(done.stdout) if done.returncode == 0 else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or "header" not in answer:
        return None
    kvs = answer.get("kvs") or []
    value = Semaphore.parse(base64.b64decode(kvs[0]["value"]).decode(), semaphore_key()) if kvs else None
    return value, int(answer["header"]["revision"])


def publish_update(demo: ClusterDemo, built_image, work: Path) -> tuple[str, str, int]:
    """(N, N+1, payload bytes): the built version and one derived from it, served under
    /assets/updates/stable with `current` pointing at N+1."""
    channel = demo.work / "assets" / "updates" / "stable"
    channel.mkdir(parents=True)
    n = copy_release(built_image, channel)
    n1 = bumped(n, 1)
    derive_release(built_image, channel, n1, work)
    point_current(channel, n1)
    manifest = json.loads((channel / n1 / "update.json").read_text())
    return n, n1, sum(int(entry["size"]) for entry in manifest["files"].values())


def restore_powered_off(demo: ClusterDemo) -> None:
    """Boot the machine the demo powered off again, and wait for etcd to have every member back."""
    victim = next(node for node in demo.nodes if node.spec.name == demo.result.powered_off)
    victim.boot_from_disk("3-back")
    demo._until("etcd healthy with every member again",
                lambda: demo.etcd_health(list(demo.result.ips.values())).returncode == 0, 300)


def rolling_update(demo: ClusterDemo, built_image, work: Path, *, time_turns: bool = False) -> RollingUpdate:
    """Run the update on the demo's three (running, healthy) nodes; returns what happened and when.

    `time_turns` polls the lock every 2 s all along, for each holder's turn (the benchmark); otherwise etcd
    is asked only once every node has rebooted, until the lock is free (the holders come from etcd's
    history either way), so the test's etcd traffic during the reboots is the nodes' own."""
    ips = demo.result.ips
    endpoints = ",".join(f"http://{ip}:2379" for ip in ips.values())
    n, n1, payload = publish_update(demo, built_image, work)
    machine_ids = {}
    for name, ip in ips.items():
        ssh(demo, ip, "sudo sh -s", UPDATE_SETUP.format(server=f"{demo.config.server_url}/assets/updates"))
        machine_ids[ssh(demo, ip, "cat /etc/machine-id").strip()] = name
    for ip in ips.values():
        demo._until("locksmithd running with etcd-lock", partial(_locksmithd_ready, demo, ip), 120, 2)
    read = _lock_now(demo, endpoints)
    initial = read[0] if read else None
    if read is None or initial is None:
        raise AssertionError(f"locksmithd did not create the reboot lock (etcd answered: {read is not None})")
    revision = read[1]
    started = time.monotonic()
    for ip in ips.values():   # what update-engine.timer does, on all three at once
        ssh(demo, ip, "sudo systemctl start --no-block update-engine.service")
    rebooted: dict[str, float] = {}    # node -> when its VM went down
    spans: dict[str, HolderSpan] = {}
    holders: tuple[str, ...] = initial.holders
    last_poll = 0.0
    done = False   # every node rebooted and then the lock seen free
    while not done:
        now = time.monotonic() - started
        if now > DEADLINE:
            # Asked now: without time_turns `holders` is only read once every node has rebooted.
            read = _lock_now(demo, endpoints)
            held = ([machine_ids.get(h, h) for h in read[0].holders] if read[0] else []) if read else "?"
            raise AssertionError(f"after {DEADLINE:.0f} s: rebooted {list(rebooted)}, lock held by {held}")
        for node in demo.nodes:
            if node.spec.name not in rebooted and node.vm is not None and not node.vm.running():
                rebooted[node.spec.name] = now   # -no-reboot: the guest's reboot ended QEMU
                print(f"{node.spec.name} rebooted for the update at {now:.0f} s", flush=True)
                node.boot_from_disk(f"{3 + len(rebooted)}-update")
        all_rebooted = len(rebooted) == len(ips)
        if (time_turns or all_rebooted) and now - last_poll >= 2:
            last_poll = now
            read = _lock_now(demo, endpoints)
            if read is not None:
                current = read[0].holders if read[0] else ()
                for holder in set(current) - set(holders):
                    name = machine_ids.get(holder, holder)
                    spans[name] = HolderSpan(name, acquired=now)
                for holder in set(holders) - set(current):
                    name = machine_ids.get(holder, holder)
                    if name in spans:
                        spans[name].released = now
                holders = current
                done = all_rebooted and not current
        time.sleep(1)
    total = time.monotonic() - started
    for span in spans.values():
        span.rebooted = rebooted.get(span.node)
    history = [initial, *lock_history(demo, endpoints, revision + 1)]
    ordered = sorted(spans.values(), key=lambda span: span.acquired)
    return RollingUpdate(n, n1, payload, initial, history, machine_ids, list(rebooted), ordered, total)

"""The reboot semaphore on a real etcd 3.4 cluster: locksmithctl's commands, groups, and races between
machines that all want to reboot at once (never more holders than `max`)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from provisioner.node.update.rebootlock import HolderExists, LockError, RebootLock, Semaphore, semaphore_key
from provisioner.scheduler.etcd import EtcdClient
from tests.fixtures.etcd import EtcdCluster, module_etcd_cluster
from tests.integration.node.rebootlock_history import semaphore_history

PROVISIONER = [sys.executable, "-m", "provisioner.cli.main"]


etcd = module_etcd_cluster("etcd", size=3)


@pytest.fixture
def group(request) -> str:
    """A group of its own per test, so tests share the cluster but not a semaphore."""
    return f"t/{request.node.name}"


def cli(etcd: EtcdCluster, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*PROVISIONER, "node", "reboot-lock", *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "LOCKSMITHCTL_ENDPOINT": ",".join(etcd.endpoints),
                               **(env or {})})


def test_status_lock_unlock_set_max_as_locksmithctl(etcd, group):
    env = {"LOCKSMITHCTL_GROUP": group}
    first = cli(etcd, "status", env=env)
    assert (first.returncode, first.stdout) == (0, "Available: 1\nMax: 1\n\nMACHINE ID\n"), first.stderr
    assert cli(etcd, "lock", "m-one", env=env).returncode == 0
    refused = cli(etcd, "lock", "m-two", env=env)
    assert (refused.returncode, refused.stderr) == (1, "provisioner: error: semaphore is at 0\n")
    again = cli(etcd, "lock", "m-one", env=env)
    assert (again.returncode, again.stderr) == (1, "provisioner: error: holder exists\n")
    raised = cli(etcd, "set-max", "3", env=env)
    assert (raised.returncode, raised.stdout) == (0, "Old-Max: 1\nMax: 3\n")
    assert cli(etcd, "lock", "m-two", env=env).returncode == 0
    status = cli(etcd, "status", "--group", group)
    assert status.stdout == "Available: 1\nMax: 3\n\nMACHINE ID\nm-one\nm-two\n"
    # m-one never came back from its reboot: the operator frees its slot by hand
    assert cli(etcd, "unlock", "m-one", env=env).returncode == 0
    missing = cli(etcd, "unlock", "m-one", env=env)
    assert (missing.returncode, missing.stderr) == (1, "provisioner: error: holder does not exist\n")
    lowered = cli(etcd, "set-max", "0", env=env)
    assert lowered.stdout == "Old-Max: 3\nMax: 0\n"
    assert cli(etcd, "status", env=env).stdout == "Available: -1\nMax: 0\n\nMACHINE ID\nm-two\n"
    # the value is locksmith's JSON under locksmith's key
    stored = etcd.etcdctl("get", "--print-value-only", semaphore_key(group)).strip()
    assert stored == '{"semaphore":-1,"max":0,"holders":["m-two"]}'


def test_default_group_key_and_groups_are_separate(etcd, group):
    other = group + " other"
    assert cli(etcd, "lock", "m1", "--group", group).returncode == 0
    assert cli(etcd, "lock", "m1", "--group", other).returncode == 0
    assert cli(etcd, "status", "--group", other).stdout.endswith("MACHINE ID\nm1\n")
    keys = etcd.etcdctl("get", "--keys-only", "--prefix", "coreos.com/updateengine/rebootlock/groups/t")
    assert f"coreos.com/updateengine/rebootlock/groups/t%2F{group[2:]}+other/semaphore" in keys.split()
    # the default group: locksmith's own key
    assert cli(etcd, "status").returncode == 0
    assert etcd.etcdctl("get", "--keys-only", "coreos.com/updateengine/rebootlock/semaphore").strip() == \
        "coreos.com/updateengine/rebootlock/semaphore"


def test_a_bad_value_is_one_line_naming_the_key(etcd, group):
    etcd.etcdctl("put", semaphore_key(group), "{not json")
    result = cli(etcd, "status", "--group", group)
    assert result.returncode == 1
    assert result.stderr.startswith(f"provisioner: error: etcd key {semaphore_key(group)}: not a locksmith semaphore")
    assert result.stderr.count("\n") == 1


def test_processes_racing_for_the_lock_never_exceed_max(etcd, group):
    """Eight machines lock at once with max 3: three get it, five are told no slot is free."""
    assert cli(etcd, "set-max", "3", "--group", group).returncode == 0
    env = {"PATH": "/usr/bin:/bin", "LOCKSMITHCTL_ENDPOINT": ",".join(etcd.endpoints), "LOCKSMITHCTL_GROUP": group}
    racers = [subprocess.Popen([*PROVISIONER, "node", "reboot-lock", "lock", f"m{i}"], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(8)]
    outcomes = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in racers]
    winners = [f"m{i}" for i, (code, _) in enumerate(outcomes) if code == 0]
    assert len(winners) == 3, outcomes
    assert sorted(err for code, err in outcomes if code) == ["provisioner: error: semaphore is at 0\n"] * 5
    history = semaphore_history(etcd.endpoints, semaphore_key(group))
    assert history[-1] == Semaphore(0, 3, tuple(sorted(winners)))
    assert all(len(value.holders) <= value.max and value.semaphore + len(value.holders) == value.max
               for value in history[1:])


def test_threads_contending_lose_no_update(etcd, group):
    """Six clients lock and unlock 15 times each against max 2, all at once: every compare-and-swap that
    lost a race is retried, no write is lost, and no value ever had more than 2 holders."""
    RebootLock(EtcdClient(etcd.endpoints), group).set_max(2)
    start = threading.Barrier(6)
    failures: list[BaseException] = []

    def machine(index: int) -> None:
        lock = RebootLock(EtcdClient(etcd.endpoints, timeout=5.0), group)
        try:
            start.wait()
            done = 0
            while done < 15:
                try:
                    lock.lock(f"m{index}")
                except HolderExists:
                    raise
                except LockError:
                    continue   # no slot free: try again at once, to keep the pressure on
                lock.unlock(f"m{index}")
                done += 1
        except BaseException as exc:
            failures.append(exc)
        finally:
            lock.client.close()

    threads = [threading.Thread(target=machine, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures
    history = semaphore_history(etcd.endpoints, semaphore_key(group))
    # 1 creation + 1 set-max + 90 locks + 90 unlocks, each a separate write: none overwrote another
    assert len(history) == 2 + 6 * 15 * 2
    assert history[-1] == Semaphore(2, 2, ())
    assert max(len(value.holders) for value in history) == 2
    assert all(value.semaphore + len(value.holders) == value.max and value.semaphore >= 0 for value in history[1:])
    for before, after in zip(history[1:], history[2:], strict=False):
        assert len(set(before.holders) ^ set(after.holders)) == 1   # one holder in or out per write


def test_lock_works_with_a_member_down(etcd, group):
    etcd.kill(0)
    try:
        result = cli(etcd, "lock", "m1", "--group", group)
        assert result.returncode == 0, result.stderr
        assert cli(etcd, "status", "--group", group).stdout.endswith("MACHINE ID\nm1\n")
    finally:
        etcd.restart(0)


def test_locksmithctl_is_the_same_command(etcd, group):
    locksmithctl = Path(sys.executable).parent / "locksmithctl"
    result = subprocess.run([str(locksmithctl), "status", "--group", group], capture_output=True, text=True,
                            timeout=60, env={"PATH": "/usr/bin:/bin", "LOCKSMITHCTL_ENDPOINT": ",".join(etcd.endpoints)})
    assert (result.returncode, result.stdout) == (0, "Available: 1\nMax: 1\n\nMACHINE ID\n"), result.stderr

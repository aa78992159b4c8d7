"""Every value the reboot semaphore had, read back from etcd's history (each revision of the key)."""

from __future__ import annotations

from provisioner.node.update.rebootlock import Semaphore
from provisioner.scheduler.etcd import EtcdClient


def semaphore_history(endpoints: list[str], key: str) -> list[Semaphore]:
    """The key's values in order, one per write (etcd keeps them until a compaction, which tests never run)."""
    client = EtcdClient(endpoints, timeout=5.0)
    try:
        current = client.get(key)
        assert current is not None, f"{key} was never written"
        values = []
        last = 0
        for revision in range(current.create_revision, current.mod_revision + 1):
            kvs = client.range(key, revision=revision).kvs
            if kvs and kvs[0].mod_revision != last:
                last = kvs[0].mod_revision
                values.append(Semaphore.parse(kvs[0].value, key))
        return values
    finally:
        client.close()


def holder_sequence(history: list[Semaphore]) -> list[str]:
    """The machines in the order they took the lock."""
    taken = []
    for before, after in zip(history, history[1:], strict=False):
        taken += sorted(set(after.holders) - set(before.holders))
    return taken

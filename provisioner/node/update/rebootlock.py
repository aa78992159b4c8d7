"""locksmith's reboot semaphore, on etcd v3: the key and JSON of coreos/locksmith, so its users recognise it.

    coreos.com/updateengine/rebootlock/semaphore                          the default group
    coreos.com/updateengine/rebootlock/groups/<url-escaped>/semaphore     LOCKSMITHD_GROUP / --group
    {"semaphore": <free>, "max": <n>, "holders": ["<machine-id>", ...]}   created as 1/1/[] when absent

Each change reads the value and its mod_revision and writes the new value in a transaction that
succeeds only if the key is still at that revision (locksmith's compare-and-swap on ModifiedIndex,
v2 API); a lost race is read and tried again, so the holders never outnumber `max` whatever the
number of machines contending. locksmith used the v2 keys API, which etcd 3.4 serves only with
--enable-v2 (flatcar/Flatcar#1442); this speaks v3 through the scheduler's client.

Pure: `Semaphore` and its `lock`/`unlock`/`set_max` (locksmith's lock/semaphore.go). I/O: `RebootLock`.
One departure: locksmith checked "semaphore is at 0" before "holder exists", so a machine that already
held the lock could not lock again (coreos/locksmith#58); here a holder is told it holds the lock.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, replace

from provisioner.errors import ProvisionerError
from provisioner.scheduler.etcd import EtcdClient, absent, modified_at, put

log = logging.getLogger("provisioner.node.update.rebootlock")

KEY_PREFIX = "coreos.com/updateengine/rebootlock"


class LockError(ProvisionerError):
    """The semaphore refused a change (no slot free, not a holder) or its value is not locksmith's JSON."""


class HolderExists(LockError):
    """The machine already holds the lock (locksmith's ErrExist, "holder exists")."""


class NotHolder(LockError):
    """The machine does not hold the lock (locksmith's ErrNotExist, "holder does not exist")."""


def semaphore_key(group: str = "") -> str:
    """The etcd key of `group`'s semaphore (Go's url.QueryEscape of the group, as locksmith)."""
    if not group:
        return f"{KEY_PREFIX}/semaphore"
    return f"{KEY_PREFIX}/groups/{urllib.parse.quote_plus(group, safe='')}/semaphore"


@dataclass(frozen=True)
class Semaphore:
    semaphore: int = 1
    max: int = 1
    holders: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, key: str) -> Semaphore:
        """locksmith's JSON (holders may be null); raises LockError naming the key."""
        try:
            doc = json.loads(text)
            holders = doc.get("holders") or []
            if not isinstance(holders, list) or not all(isinstance(h, str) for h in holders):
                raise ValueError("holders is not a list of machine IDs")
            semaphore, maximum = doc["semaphore"], doc["max"]
            if not isinstance(semaphore, int) or not isinstance(maximum, int):
                raise ValueError("semaphore and max must be integers")
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise LockError(f"etcd key {key}: not a locksmith semaphore ({exc}): {text[:200]!r}") from None
        return cls(semaphore, maximum, tuple(holders))

    def to_json(self) -> str:
        # compact, as Go's json.Marshal writes it
        return json.dumps({"semaphore": self.semaphore, "max": self.max, "holders": list(self.holders)},
                          separators=(",", ":"))

    def lock(self, holder: str) -> Semaphore:
        """Take one slot for `holder`; raises HolderExists, LockError when none is free."""
        if holder in self.holders:
            raise HolderExists("holder exists")
        if self.semaphore <= 0:
            raise LockError(f"semaphore is at {self.semaphore}")
        return replace(self, semaphore=self.semaphore - 1, holders=tuple(sorted((*self.holders, holder))))

    def unlock(self, holder: str) -> Semaphore:
        """Give `holder`'s slot back; raises NotHolder."""
        if holder not in self.holders:
            raise NotHolder("holder does not exist")
        return replace(self, semaphore=self.semaphore + 1, holders=tuple(h for h in self.holders if h != holder))

    def set_max(self, maximum: int) -> Semaphore:
        """A new max; the free count moves by the same difference (it may go negative: holders stay)."""
        return replace(self, semaphore=self.semaphore + maximum - self.max, max=maximum)


class RebootLock:
    """The semaphore of one group on an etcd cluster."""

    def __init__(self, client: EtcdClient, group: str = ""):
        self.client = client
        self.key = semaphore_key(group)

    def read(self) -> tuple[Semaphore, int]:
        """The semaphore and its mod_revision, created as 1/1/[] first when absent. Raises EtcdError, LockError."""
        while True:
            kv = self.client.get(self.key)
            if kv is not None:
                return Semaphore.parse(kv.value, self.key), kv.mod_revision
            # Create only if still absent: another machine may be creating it at the same time.
            self.client.txn([absent(self.key)], [put(self.key, Semaphore().to_json())])

    def change(self, step: Callable[[Semaphore], Semaphore]) -> Semaphore:
        """Apply `step` as a compare-and-swap on the key's mod_revision, re-read after a lost race.

        Returns the new value; raises what `step` raises (LockError) and EtcdError."""
        while True:
            current, revision = self.read()
            new = step(current)
            if self.client.txn([modified_at(self.key, revision)], [put(self.key, new.to_json())]).succeeded:
                return new
            log.debug("%s changed under us (revision %d): reading it again", self.key, revision)

    def status(self) -> Semaphore:
        return self.read()[0]

    def lock(self, holder: str) -> Semaphore:
        return self.change(lambda s: s.lock(holder))

    def unlock(self, holder: str) -> Semaphore:
        return self.change(lambda s: s.unlock(holder))

    def set_max(self, maximum: int) -> tuple[Semaphore, Semaphore]:
        """(old, new)."""
        seen: list[Semaphore] = []

        def step(current: Semaphore) -> Semaphore:
            seen[:] = [current]
            return current.set_max(maximum)

        new = self.change(step)
        return seen[0], new

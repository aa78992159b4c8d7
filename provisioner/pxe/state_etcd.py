"""The server's state in etcd v3 (`provisioner serve --state-etcd URL,...`): several servers, one site.

Keys, all under `/provisioner/<site>/` (SiteKeys):

    installed/<mac>              {"at", "server"}: created by one transaction (create only), so a mark is set once
    secrets/<mac>/<sha256>       an issued boot secret (boot_secrets.IssuedSecret) on a lease outliving its TTL
    events/<ns>-<id>-<n>         a batch of boot events {"events": [{"mac", "stage", "at", "ip", "detail"}, ...]}
                                 in the order one server recorded them; detail.server names the server; the
                                 key is its first event's (created once: a batch lands once)
    forgotten/<mac>              {"at"}: the operator forgot the machine; its events up to then are not shown
    leases/<server id>           a full-DHCP server's bound leases {mac: {"ip", "expires", "server"}} (they stay per
                                 segment: published for the site's machine view only)
    servers/<server id>          a live server's base URL, on a lease it renews (SERVER_TTL): a server killed
                                 drops out of the list; the live image's hook is told the others (ipxe.py)
    discovery                    the discovery registry's dump (discovery/store.py)
    inventory                    the pushed data dir (inventory_etcd.py)

Each server answers from what it holds locally: the installed marks (a cache in `<state dir>/installed.json`)
and the machine view (machines.json), both loaded from etcd at start and kept current by one watch of the
site's prefix, which also brings the other servers' events. Boot events go to an outbox (`etcd-outbox.json`,
so a restart loses none) that a thread pushes in batches, one key per batch in one transaction that creates
it only if it is absent, so a batch pushed twice (an answer lost, a restart) lands once: a batch of up to
PUSH_BATCH events costs etcd one key and one watch event per watching server, not one each, and rides the
request of the secrets' and marks' group commit (txn_group.py).
The load, the push and the watch: state_sync.py.

When etcd does not answer, the server keeps booting what it knows (installed machines get their disk, from
the cache), keeps recording events (and the reports proven by a secret it mirrors) in the outbox, and refuses
what needs etcd to be true now: an installed mark, a new install's boot secret, the operator's actions, a
secret it has not seen (StateUnavailable, saying why). After a failure it does not ask etcd again for
RETRY_SECONDS, so a dead etcd costs each request nothing; the push thread catches up when etcd is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from provisioner.core.files import write_atomic
from provisioner.pxe.boot_secrets import IssuedSecret, check_secret, new_secret
from provisioner.pxe.events import Counters, count
from provisioner.pxe.installed import InstalledMachines
from provisioner.pxe.limits import MAX_MACHINES, RecentMap
from provisioner.pxe.machines import REFUSED, MachineRecord, MachineStates
from provisioner.pxe.state import MarkedInstalled, SecretCheck, StateUnavailable
from provisioner.pxe.txn_group import TxnGroup
from provisioner.scheduler.etcd import (
    EtcdClient,
    EtcdError,
    KeyValue,
    RequestCounter,
    Txn,
    absent,
    delete,
    exists,
    get,
    put,
)

log = logging.getLogger("provisioner.pxe.state_etcd")

T = TypeVar("T")
RETRY_SECONDS = 1.0
PUSH_INTERVAL = 0.2
PUSH_GATHER = 0.1         # seconds between pushes: at most ten batches a second
PUSH_BATCH = 100          # puts per transaction; etcd's default --max-txn-ops is 128
LEASE_REUSE = 300.0       # one lease for the secrets issued within this many seconds
SERVER_TTL = 10           # seconds a server that stopped renewing its lease stays listed
MAX_SITE_SERVERS = 4      # the other servers a machine is told of: the kernel command line is short (2 KiB)
REPORT_STAGES = ("install", "install-done", "install-error")   # the live installer's reports (reports.py)


class SiteKeys:
    def __init__(self, site: str):
        if not site or "/" in site:
            raise ValueError(f"site {site!r}: a non-empty name without '/'")
        self.root = f"/provisioner/{site}/"

    def installed(self, mac: str = "") -> str:
        return f"{self.root}installed/{mac}"

    def secrets(self, mac: str = "") -> str:
        return f"{self.root}secrets/{mac}/" if mac else f"{self.root}secrets/"

    def events(self, mac: str = "") -> str:
        """The prefix of the event batches; with a MAC, of that machine's events waiting in the outbox."""
        return f"{self.root}events/{mac}/" if mac else f"{self.root}events/"

    def forgotten(self, mac: str = "") -> str:
        return f"{self.root}forgotten/{mac}"

    def leases(self, server_id: str = "") -> str:
        return f"{self.root}leases/{server_id}"

    def servers(self, server_id: str = "") -> str:
        return f"{self.root}servers/{server_id}"

    @property
    def discovery(self) -> str:
        return f"{self.root}discovery"

    @property
    def inventory(self) -> str:
        return f"{self.root}inventory"


class EtcdSite:
    """The connection to one site's state for the event loop's calls, and the breaker that stops asking a
    dead etcd for RETRY_SECONDS."""

    def __init__(self, endpoints: Sequence[str], site: str, server: str, timeout: float = 1.0,
                 counter: RequestCounter | None = None):
        self._client = EtcdClient(endpoints, timeout, counter=counter)
        self._local = threading.local()   # a client per thread: a requests session is not shared
        self.keys = SiteKeys(site)
        self.server = server
        self.server_id = hashlib.sha256(server.encode()).hexdigest()[:8]
        self.down_until = 0.0
        self.reason = ""
        # The boot secrets' and installed marks' transactions: concurrent ones share a request.
        self.group = TxnGroup()

    @property
    def client(self) -> EtcdClient:
        """This thread's client."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._client.clone()
        return client

    def call(self, what: str, request: Callable[[EtcdClient], T]) -> T:
        """request(client), or StateUnavailable naming `what` was not done and why."""
        if time.monotonic() < self.down_until:
            raise StateUnavailable(f"etcd unavailable ({self.reason}): {what} not recorded")
        try:
            result = request(self.client)
        except EtcdError as exc:
            self.failed(str(exc))
            raise StateUnavailable(f"etcd unavailable ({exc}): {what} not recorded") from None
        self.down_until = 0.0
        return result

    def failed(self, reason: str) -> None:
        if not self.down_until:
            log.warning("state: %s", reason)
        self.down_until = time.monotonic() + RETRY_SECONDS
        self.reason = reason

    def answered(self) -> None:
        if self.down_until:
            log.info("state: etcd answers again")
        self.down_until = 0.0


class EtcdInstalledMarks:
    """The InstalledMarks interface (state.py): etcd is the truth, `cache` what boots are answered from."""

    def __init__(self, site: EtcdSite, cache: InstalledMachines, secrets_: EtcdBootSecrets, *,
                 writes_cache: bool = True):
        self.site = site
        self.cache = cache
        # False in an HTTP worker process: the main process writes the cache from its watch, a worker reads it
        # (refresh) and holds the marks it set itself in memory until then.
        self.writes_cache = writes_cache
        self.secrets = secrets_   # a new mark revokes the machine's boot secrets in the same transaction
        secrets_.on_marked = self.apply
        self._lock = threading.Lock()   # apply() runs on the state threads and the watch thread
        self._write_lock = threading.Lock()
        self._version = self._written = 0   # of the marks in memory, of those in the cache file

    def refresh(self, now: float) -> None:
        """The main process: nothing to do, the watch keeps the cache current. A worker: the file it writes."""
        if not self.writes_cache:
            with self._lock:
                self.cache.refresh(now)

    def is_installed(self, mac: str | None) -> bool:
        return self.cache.is_installed(mac)

    def mark(self, mac: str, now: float | None = None) -> bool:
        at = time.time() if now is None else now
        key = self.site.keys.installed(mac)
        value = json.dumps({"at": at, "server": self.site.server})
        revoke = delete(self.site.keys.secrets(mac), prefix=True)
        result = self.site.call(f"installed mark of {mac}", lambda client: self.site.group.run(
            client, mac, Txn((absent(key),), (put(key, value), revoke), (get(key),))))
        if result.succeeded:
            self.secrets.revoked(mac, by_mark=True)
        elif result.ranges and result.ranges[0]:
            at = mark_time(result.ranges[0][0].value)
        self.apply(mac, at)
        return result.succeeded

    def forget(self, mac: str) -> bool:
        key = self.site.keys.installed(mac)
        result = self.site.call(f"forgetting the installed mark of {mac}",
                                lambda client: client.txn([exists(key)], [delete(key)]))
        self.apply(mac, None)
        return result.succeeded

    def apply(self, mac: str, at: float | None) -> None:
        """One mark set (at) or gone (None), as etcd says."""
        with self._lock:
            macs = dict(self.cache.macs)
            if at is None:
                macs.pop(mac, None)
            else:
                macs[mac] = at
            self._store(macs)
        self._write_cache()

    def load(self, macs: dict[str, float]) -> None:
        with self._lock:
            self._store(macs)
        self._write_cache()

    def _store(self, macs: dict[str, float]) -> None:
        if macs != self.cache.macs:
            self.cache.macs = macs   # a new dict each time: the writer serialises a whole version
            self._version += 1

    def _write_cache(self) -> None:
        """The marks in memory to the cache file before the caller answers (a restart while etcd is away boots
        from it). Outside the marks' lock, and shared: concurrent marks wait for one write that holds them
        all instead of one write (two fsyncs) each, in turn."""
        if not self.writes_cache:
            return
        with self._write_lock:
            version = self._version
            if version == self._written:
                return
            try:
                self.cache.save()
            except OSError as exc:   # the cache only: etcd has the marks
                log.error("state: cannot write the installed cache %s: %s", self.cache.path, exc)
            self._written = version


def mark_time(value: str) -> float:
    try:
        return float(json.loads(value)["at"])
    except (ValueError, KeyError, TypeError):
        return 0.0


class EtcdBootSecrets:
    """The BootSecrets interface (state.py) in etcd: a secret issued by one server is good at every server.

    Every server mirrors the site's live secrets (loaded with the site, kept by the watch), so checking a
    report costs no request: only a secret the mirror does not know (issued a moment ago by another
    server, before the watch brought it) is looked up in etcd. While etcd is away the mirror still proves
    the secrets it holds, so installs in progress keep reporting (their reports wait in the outbox)."""

    def __init__(self, site: EtcdSite, ttl: float, counters: Counters | None = None):
        self.site = site
        self.ttl = ttl
        self.counters: Counters = {} if counters is None else counters
        self._known: RecentMap[str, dict[str, IssuedSecret]] = RecentMap(MAX_MACHINES)   # mac -> sha256 -> secret
        self._spent: RecentMap[str, bool] = RecentMap(1024)   # revoked by a mark's transaction, not yet revoke()d
        self.on_marked: Callable[[str, float], None] | None = None   # the installed cache's apply()
        self._lock = threading.Lock()   # the state threads and the watch thread change _known and the lease
        self._lease: tuple[int, float] = (0, float("-inf"))

    def _lease_id(self, client: EtcdClient, now: float) -> int:
        with self._lock:
            lease, granted = self._lease
            if not lease or now - granted >= LEASE_REUSE:
                lease = client.grant(int(self.ttl + LEASE_REUSE) + 1)
                self._lease = (lease, now)
            return lease

    def apply(self, mac: str, sha256: str, issued: IssuedSecret | None) -> None:
        """One secret issued (or gone: None), as etcd says."""
        with self._lock:
            known = dict(self._known.get(mac) or {})
            if issued is None:
                known.pop(sha256, None)
            else:
                known[sha256] = issued
            if known:
                self._known[mac] = known
            else:
                self._known.pop(mac, None)

    def reset(self) -> None:
        """Forget every mirrored secret (before reading them all again)."""
        with self._lock:
            self._known.clear()

    def issue(self, mac: str, ip: str | None, now: float) -> str:
        # No reuse of a secret issued a moment ago (the files' way with iPXE retrying its chain): every
        # install boot asks etcd, which alone knows whether another server has just marked the machine.
        secret, entry = new_secret(ip, now, self.ttl)
        key = self.site.keys.secrets(mac) + entry.sha256
        mark = self.site.keys.installed(mac)
        # Only for a machine not marked installed: this server's cache may not have the mark another
        # server set a moment ago, and a machine must not get two boot decisions.
        try:
            result = self.site.call(f"boot secret for {mac}", lambda client: self.site.group.run(client, mac, Txn(
                (absent(mark),), (put(key, json.dumps(entry.to_json()), self._lease_id(client, now)),), (get(mark),))))
        except StateUnavailable:
            with self._lock:
                self._lease = (0, float("-inf"))   # it may be what failed (etcd lost it)
            raise
        if not result.succeeded:
            if self.on_marked is not None and result.ranges and result.ranges[0]:
                self.on_marked(mac, mark_time(result.ranges[0][0].value))
            raise MarkedInstalled(mac)
        self.apply(mac, entry.sha256, entry)
        count(self.counters, "boot_secrets_issued")
        return secret

    def check(self, mac: str, presented: str | None, now: float) -> SecretCheck:
        held = self.check_held(mac, presented, now)
        if held is not None:
            return held
        kvs = self.site.call(f"check of {mac}'s boot secret",
                             lambda client: client.range(self.site.keys.secrets(mac), prefix=True).kvs)
        return check_secret([issued for issued in map(issued_secret, kvs) if issued is not None], presented, now)

    def check_held(self, mac: str, presented: str | None, now: float) -> SecretCheck | None:
        """The mirror's answer: a secret it holds (live or expired), no secret presented; None for the rest,
        which only etcd can tell (a secret issued by another server a moment ago, not yet watched)."""
        if not presented:
            return SecretCheck.MISSING
        known = check_secret(list((self._known.get(mac) or {}).values()), presented, now)
        return known if known in (SecretCheck.OK, SecretCheck.EXPIRED) else None

    def revoke(self, mac: str) -> None:
        if self._spent.pop(mac, None) is None:   # else the mark's transaction just did it
            self.site.call(f"revoking {mac}'s boot secrets",
                           lambda client: client.delete(self.site.keys.secrets(mac), prefix=True))
        self.revoked(mac)

    def revoked(self, mac: str, by_mark: bool = False) -> None:
        """`mac`'s secrets are gone from etcd (by_mark: an installed mark's transaction deleted them)."""
        with self._lock:
            self._known.pop(mac, None)
            if by_mark:
                self._spent[mac] = True


def issued_secret(kv: KeyValue) -> IssuedSecret | None:
    try:
        return IssuedSecret.from_json(json.loads(kv.value))
    except (ValueError, KeyError, TypeError):
        return None   # a damaged key proves nothing


class StateThreads:
    """The StateRunner (state.py) for etcd: each call on a pool thread, so the event loop keeps serving."""

    def __init__(self, threads: int = 32):
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="state")

    async def __call__(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class Outbox:
    """Writes not yet in etcd, oldest first, as (key, value); saved to `path` so a restart loses none.

    Thread-safe: the event loop adds, the push thread takes."""

    def __init__(self, path: Path | None):
        self.path = path
        self.lock = threading.Lock()
        self.items: list[tuple[str, str]] = []
        self.wakeup = threading.Event()
        self._dirty = False
        if path is not None:
            try:
                self.items = [(str(k), str(v)) for k, v in json.loads(path.read_text())["items"]]
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("state: ignoring unreadable %s: %s", path, exc)

    def add(self, key: str, value: str) -> None:
        with self.lock:
            self.items.append((key, value))
            self._dirty = True
        self.wakeup.set()

    def peek(self, limit: int) -> list[tuple[str, str]]:
        with self.lock:
            return self.items[:limit]

    def done(self, pushed: int) -> None:
        with self.lock:
            del self.items[:pushed]
            self._dirty = True

    def drop(self, prefix: str) -> None:
        with self.lock:
            self.items = [item for item in self.items if not item[0].startswith(prefix)]
            self._dirty = True

    def __len__(self) -> int:
        with self.lock:
            return len(self.items)

    def save(self) -> None:
        """Write the file when something changed; raises OSError."""
        with self.lock:
            if self.path is None or not self._dirty:
                return
            text = json.dumps({"items": self.items})
            self._dirty = False
        write_atomic(self.path, text + "\n", mode=0o600)


class EtcdMachineLog:
    """The MachineLog interface (state.py): the local machine view, each event also queued for etcd."""

    def __init__(self, site: EtcdSite, local: MachineStates, outbox: Outbox):
        self.site = site
        self.local = local
        self.outbox = outbox
        self._serial = itertools.count()

    @property
    def machines(self) -> Mapping[str, MachineRecord]:
        return self.local.machines

    def _queue(self, mac: str, stage: str, at: float, ip: str | None, detail: Mapping[str, Any]) -> None:
        key = f"{self.site.keys.events(mac)}{int(at * 1e9):019d}-{self.site.server_id}-{next(self._serial)}"
        self.outbox.add(key, json.dumps({"mac": mac, "stage": stage, "at": at, "ip": ip, "detail": dict(detail)}))
        if stage in REPORT_STAGES and self.site.down_until:
            # etcd is away and the machine was told "ok": the report is on disk before the answer goes.
            try:
                self.outbox.save()
            except OSError as exc:
                log.error("state: cannot write the outbox %s: %s", self.outbox.path, exc)

    def record(self, mac: str, stage: str, detail: dict | None = None, ip: str | None = None,
               now: float | None = None) -> MachineRecord:
        now = time.time() if now is None else now
        detail = {**(detail or {}), "server": self.site.server}
        record = self.local.record(mac, stage, detail, ip=ip, now=now)
        self._queue(mac, stage, now, ip, detail)
        return record

    def record_refusal(self, mac: str, detail: Mapping[str, Any], now: float | None = None) -> bool:
        now = time.time() if now is None else now
        detail = {**detail, "server": self.site.server}
        if not self.local.record_refusal(mac, detail, now):
            return False
        self._queue(mac, REFUSED, now, None, detail)
        return True

    def forget(self, mac: str, now: float | None = None) -> bool:
        """The machine's events up to now leave every server's view (a tombstone: the batches hold other
        machines' events too)."""
        at = time.time() if now is None else now
        key = self.site.keys.forgotten(mac)
        self.site.call(f"forgetting {mac}", lambda client: client.put(key, json.dumps({"at": at})))
        self.outbox.drop(self.site.keys.events(mac))
        return self.local.forget(mac)

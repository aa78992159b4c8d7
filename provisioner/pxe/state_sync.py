"""Keeping a server and the site's state in etcd in step (state_etcd.py): the load at start, the outbox's
push, the watch; and the site's machine view as `provisioner machines --state-etcd` reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from provisioner.pxe.boot_secrets import IssuedSecret
from provisioner.pxe.machines import REFUSED, MachineRecord, MachineStates
from provisioner.pxe.state_etcd import (
    MAX_SITE_SERVERS,
    PUSH_BATCH,
    PUSH_GATHER,
    PUSH_INTERVAL,
    RETRY_SECONDS,
    SERVER_TTL,
    EtcdBootSecrets,
    EtcdInstalledMarks,
    EtcdMachineLog,
    EtcdSite,
    SiteKeys,
    issued_secret,
    mark_time,
)
from provisioner.scheduler.etcd import EtcdClient, EtcdError, KeyValue, Txn, Watcher, WatchEvent, absent, get, put

log = logging.getLogger("provisioner.pxe.state_sync")


def replay(states: MachineStates, batches: Sequence[KeyValue], keys: SiteKeys,
           forgotten: Mapping[str, float] | None = None) -> int:
    """Record the events of etcd's batches (and of outbox items, one event each) into `states` in the order
    they happened, leaving out a forgotten machine's events up to its tombstone; returns how many were read
    (unreadable keys and events are skipped)."""
    parsed = []
    for kv in batches:
        try:
            raw = json.loads(kv.value)
            events = raw["events"] if "/" not in kv.key[len(keys.events()):] else [raw]
        except (ValueError, KeyError, TypeError):
            log.warning("state: skipping unreadable events %s", kv.key)
            continue
        for n, event in enumerate(events):
            try:
                parsed.append((float(event["at"]), kv.key, n, str(event["mac"]), str(event["stage"]),
                               dict(event.get("detail") or {}), event.get("ip")))
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("state: skipping an unreadable event in %s", kv.key)
    forgotten = forgotten or {}
    read = 0
    for at, _key, _n, mac, stage, detail, ip in sorted(parsed):
        read += 1
        if at <= forgotten.get(mac, float("-inf")):
            continue
        if stage == REFUSED:
            states.record_refusal(mac, detail, now=at)
        else:
            states.record(mac, stage, detail, ip=ip, now=at)
    return read


def holds_events(key: str, keys: SiteKeys) -> bool:
    """A batch key, or a key of one event each (`events/<mac>/...`, as servers before batching pushed them;
    replay reads both, so a site's older history and a server not yet upgraded stay in the view)."""
    return key.startswith(keys.events())


def batch_value(values: Sequence[str]) -> str:
    """The value of a batch key holding these outbox events (each a JSON object already; pure)."""
    return '{"events": [' + ", ".join(values) + "]}"


def forgotten_time(value: str) -> float:
    try:
        return float(json.loads(value)["at"])
    except (ValueError, KeyError, TypeError):
        return float("-inf")


class SiteServers:
    """The site's live servers (servers/<id> -> base URL) as this process last saw them. Replaced, never
    changed in place, so the event loop reads it without a lock while a watch thread applies events."""

    def __init__(self, own_url: str):
        self.own_url = own_url
        self.urls: dict[str, str] = {}

    def reset(self, kvs: Sequence[KeyValue]) -> None:
        self.urls = {kv.key: kv.value for kv in kvs}

    def apply(self, event: WatchEvent) -> None:
        key = event.kv.key
        self.urls = {**{k: v for k, v in self.urls.items() if k != key},
                     **({key: event.kv.value} if event.kind == "PUT" else {})}

    def others(self) -> list[str]:
        """The base URLs of the site's other live servers, at most MAX_SITE_SERVERS, in a stable order."""
        return sorted(url for url in self.urls.values() if url != self.own_url)[:MAX_SITE_SERVERS]


class SiteSync:
    """The threads that keep a server and etcd in step: one pushes the outbox and keeps this server listed
    under servers/ (a lease it renews), one watches the site's prefix (other servers' events, installed
    marks, the inventory, the live servers). `start()` first loads the site's state (or, when etcd does not
    answer, the push thread loads it once etcd is back). The discovery registry is read at that load only:
    each server serves its own copy, written back to etcd when it changes."""

    def __init__(self, site: EtcdSite, installed: EtcdInstalledMarks, log_: EtcdMachineLog,
                 secrets_: EtcdBootSecrets, on_inventory: Callable[[str], None] | None = None,
                 on_discovery: Callable[[str], None] | None = None):
        self.site = site
        self.installed = installed
        self.machine_log = log_
        self.secrets = secrets_
        self.on_inventory = on_inventory
        self.on_discovery = on_discovery
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = threading.get_ident()
        self.loaded = False
        self.forgotten: dict[str, float] = {}   # MAC -> when the operator forgot it (its tombstone)
        self.servers = SiteServers(site.server)
        self._presence = 0                      # this server's lease under servers/
        self._renew_at = 0.0
        self._stop = threading.Event()
        self._client = site.client.clone()
        self._watcher: Watcher | None = None
        self._thread = threading.Thread(target=self._push_loop, name="state-push", daemon=True)

    # ---------------------------------------------------------------- loading

    def load(self) -> bool:
        """Read the site's whole state once (one range) and start watching after it; False when etcd did not
        answer. Called on the event loop's thread before serving, else from the push thread via the loop."""
        keys = self.site.keys
        try:
            result = self._client.range(keys.root, prefix=True)
        except EtcdError as exc:
            self.site.failed(str(exc))
            return False
        marks: dict[str, float] = {}
        events = []
        self.servers.reset([kv for kv in result.kvs if kv.key.startswith(keys.servers())])
        for kv in result.kvs:
            if kv.key.startswith(keys.installed()):
                marks[kv.key[len(keys.installed()):]] = mark_time(kv.value)
            elif holds_events(kv.key, keys):
                events.append(kv)
            elif kv.key.startswith(keys.forgotten()):
                self.forgotten[kv.key[len(keys.forgotten()):]] = forgotten_time(kv.value)
            elif kv.key.startswith(keys.secrets()):
                self._secret(kv.key, issued_secret(kv))
            elif kv.key == keys.inventory and self.on_inventory is not None:
                self._call_soon(self.on_inventory, kv.value)
            elif kv.key == keys.discovery and self.on_discovery is not None:
                self._call_soon(self.on_discovery, kv.value)
        self._call_soon(self._rebuild, marks, events)
        self._watcher = Watcher(self._client.clone(), keys.root, result.revision + 1, self._on_watch,
                                name="state-watch").start()
        self.loaded = True
        log.info("state: loaded %d installed marks, %d events from etcd (site %s)", len(marks), len(events),
                 keys.root)
        return True

    def _rebuild(self, marks: dict[str, float], events: Sequence[KeyValue]) -> None:
        """The local view := etcd's, plus the events still waiting in the outbox (event loop thread)."""
        self.installed.load(marks)
        local = self.machine_log.local
        for mac in list(local.machines):
            local.forget(mac)
        waiting = [KeyValue(key, value, 0, 0) for key, value in self.machine_log.outbox.peek(len(
            self.machine_log.outbox)) if holds_events(key, self.site.keys)]
        replay(local, [*events, *waiting], self.site.keys, self.forgotten)

    def _secret(self, key: str, issued: IssuedSecret | None) -> None:
        apply_secret(self.secrets, self.site.keys, key, issued)

    def _call_soon(self, function: Callable[..., Any], *args: Any) -> None:
        if self.loop is None or threading.get_ident() == self._loop_thread:
            function(*args)
        else:
            self.loop.call_soon_threadsafe(function, *args)

    # ---------------------------------------------------------------- threads

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self._loop_thread = loop, threading.get_ident()
        self.load()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.machine_log.outbox.wakeup.set()
        if self._thread.ident is not None:   # loaded without start() (a one-off read) has no push thread
            self._thread.join(timeout=10)
        if self._watcher is not None:
            self._watcher.stop()
        if self._presence:   # off the list at once rather than after SERVER_TTL
            with contextlib.suppress(EtcdError):
                self._client.revoke(self._presence)
        self._client.close()

    def announce(self, now: float) -> None:
        """List this server under servers/ on a lease, renewed every third of SERVER_TTL (push thread). Raises
        EtcdError."""
        if self._presence and now < self._renew_at:
            return
        if not self._presence or self._client.keepalive(self._presence) <= 0:
            lease = self._client.grant(SERVER_TTL)
            self._client.put(self.site.keys.servers(self.site.server_id), self.site.server, lease)
            self._presence = lease
        self._renew_at = now + SERVER_TTL / 3

    def push_once(self) -> int:
        """Push the outbox's oldest writes: up to PUSH_BATCH events as one batch key, else up to PUSH_BATCH
        other puts in one transaction; how many outbox items went, 0 when none waited. Raises EtcdError."""
        outbox = self.machine_log.outbox
        waiting = outbox.peek(PUSH_BATCH)
        if not waiting:
            return 0
        events = self.site.keys.events()
        first_is_event = waiting[0][0].startswith(events)
        batch = list(itertools.takewhile(lambda item: item[0].startswith(events) == first_is_event, waiting))
        if not first_is_event:
            self._client.txn([], [put(key, value) for key, value in batch])
            outbox.done(len(batch))
            return len(batch)
        # The batch's key is its first event's: a push whose answer was lost, or that a restart repeats with
        # more events behind it, finds the batch there and takes only what it holds as done. In a storm it
        # rides the request of the boot secrets' and marks' group commit instead of costing one of its own.
        key = events + batch[0][0].rsplit("/", 1)[-1]
        result = self.site.group.run(self._client, key, Txn(
            (absent(key),), (put(key, batch_value([value for _, value in batch])),), (get(key),)))
        pushed = len(batch)
        if not result.succeeded and result.ranges and result.ranges[0]:
            try:
                pushed = len(json.loads(result.ranges[0][0].value)["events"])
            except (ValueError, KeyError, TypeError):
                pushed = 1   # a damaged batch under our key: its first event went, the rest go again
        outbox.done(pushed)
        return pushed

    def _push_loop(self) -> None:
        outbox = self.machine_log.outbox
        while not self._stop.is_set():
            outbox.wakeup.wait(PUSH_INTERVAL)
            outbox.wakeup.clear()
            try:
                if not self.loaded and not self.load():
                    self._stop.wait(RETRY_SECONDS)
                    continue
                self.announce(time.monotonic())
                pushed = 0
                while (batch := self.push_once()):
                    pushed += batch
                self.site.answered()
                if pushed:   # let the next events gather: a storm's events go in a few batches, not one each
                    self._stop.wait(PUSH_GATHER)
            except EtcdError as exc:
                self.site.failed(str(exc))
                self._stop.wait(RETRY_SECONDS)
            except Exception:   # the thread must live on whatever broke one push
                log.exception("state: push failed")
                self._stop.wait(RETRY_SECONDS)
        with contextlib.suppress(EtcdError):   # a clean stop pushes what is left, if etcd answers
            while self.push_once():
                pass

    def _on_watch(self, events: list[WatchEvent], revision: int) -> None:
        keys = self.site.keys
        if not events:   # etcd compacted past our revision: read everything again
            self.loaded = False
            if self._watcher is not None:
                self._watcher.cancel()
            self.machine_log.outbox.wakeup.set()
            return
        for event in events:
            key = event.kv.key
            if key.startswith(keys.servers()):
                self.servers.apply(event)
            elif key.startswith(keys.installed()):
                mac = key[len(keys.installed()):]
                at = mark_time(event.kv.value) if event.kind == "PUT" else None
                self._call_soon(self.installed.apply, mac, at)
            elif key.startswith(keys.secrets()):
                self._secret(key, issued_secret(event.kv) if event.kind == "PUT" else None)
            elif holds_events(key, keys):
                if event.kind == "PUT" and f"-{self.site.server_id}-" not in key[len(keys.events()):]:
                    self._call_soon(replay, self.machine_log.local, [event.kv], keys, self.forgotten)
            elif key.startswith(keys.forgotten()) and event.kind == "PUT":
                mac = key[len(keys.forgotten()):]
                self.forgotten[mac] = forgotten_time(event.kv.value)
                self._call_soon(self.machine_log.local.forget, mac)
            elif key == keys.inventory and event.kind == "PUT" and self.on_inventory is not None:
                self._call_soon(self.on_inventory, event.kv.value)


def apply_secret(secrets: EtcdBootSecrets, keys: SiteKeys, key: str, issued: IssuedSecret | None) -> None:
    """One secret key as etcd has it (issued) or gone (None), into the mirror."""
    mac, _, sha256 = key[len(keys.secrets()):].partition("/")
    secrets.apply(mac, sha256, issued)


class WorkerMirror:
    """An HTTP worker process's copy of the site's live boot secrets and live servers (the main process has
    SiteSync's): one range of each, then a watch of each prefix, so that a worker checks a report's secret
    as the main process does (without a request, and while etcd is away; a revocation within milliseconds)
    and its answers name the same other servers."""

    def __init__(self, site: EtcdSite, secrets_: EtcdBootSecrets):
        self.site = site
        self.secrets = secrets_
        self.servers = SiteServers(site.server)
        self._client = site.client.clone()
        self._watchers: list[Watcher] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-mirror", daemon=True)

    def start(self) -> WorkerMirror:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for watcher in self._drop_watchers():
            watcher.stop()
        self._client.close()

    def _drop_watchers(self) -> list[Watcher]:
        watchers, self._watchers = self._watchers, []
        return watchers

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._watchers:
                try:
                    self._load()
                except EtcdError as exc:
                    log.debug("state: worker mirror: %s", exc)
            self._stop.wait(RETRY_SECONDS)

    def _load(self) -> None:
        keys = self.site.keys
        secrets = self._client.range(keys.secrets(), prefix=True)
        servers = self._client.range(keys.servers(), prefix=True)
        self.secrets.reset()
        for kv in secrets.kvs:
            apply_secret(self.secrets, keys, kv.key, issued_secret(kv))
        self.servers.reset(servers.kvs)
        self._watchers = [
            Watcher(self._client.clone(), keys.secrets(), secrets.revision + 1, self._on_secrets,
                    name="secrets-watch").start(),
            Watcher(self._client.clone(), keys.servers(), servers.revision + 1, self._on_servers,
                    name="servers-watch").start()]

    def _compacted(self) -> None:
        """etcd compacted past a watch's revision: both are read again (by _run, off the watch's thread)."""
        for watcher in self._drop_watchers():
            watcher.cancel()

    def _on_secrets(self, events: list[WatchEvent], revision: int) -> None:
        if not events:
            self._compacted()
        for event in events:
            apply_secret(self.secrets, self.site.keys, event.kv.key,
                         issued_secret(event.kv) if event.kind == "PUT" else None)

    def _on_servers(self, events: list[WatchEvent], revision: int) -> None:
        if not events:
            self._compacted()
        for event in events:
            self.servers.apply(event)


def read_site(client: EtcdClient, site: str) -> tuple[dict[str, MachineRecord], dict[str, float]]:
    """Every machine of the site as its servers recorded it, and the installed marks (one range request).
    Raises EtcdError."""
    keys = SiteKeys(site)
    result = client.range(keys.root, prefix=True)
    marks = {kv.key[len(keys.installed()):]: mark_time(kv.value) for kv in result.kvs
             if kv.key.startswith(keys.installed())}
    forgotten = {kv.key[len(keys.forgotten()):]: forgotten_time(kv.value) for kv in result.kvs
                 if kv.key.startswith(keys.forgotten())}
    states = MachineStates(None, max_machines=1 << 30)
    replay(states, [kv for kv in result.kvs if holds_events(kv.key, keys)], keys, forgotten)
    apply_leases(states.machines, [kv for kv in result.kvs if kv.key.startswith(keys.leases())])
    return dict(states.machines), marks


def lease_document(leases: Mapping[str, Any], server: str) -> str:
    """A server's bound leases (dhcp_leases.LeaseRecord by MAC) as the value of its leases key (pure)."""
    return json.dumps({mac: {"ip": lease.ip, "expires": lease.expires, "server": server}
                       for mac, lease in sorted(leases.items()) if lease.state == "bound"}, sort_keys=True)


def apply_leases(machines: Mapping[str, MachineRecord], documents: Sequence[KeyValue]) -> None:
    """Give each known machine the address its newest published lease holds (pure apart from the records)."""
    newest: dict[str, tuple[float, str]] = {}
    for kv in documents:
        try:
            for mac, lease in json.loads(kv.value).items():
                if float(lease["expires"]) > newest.get(mac, (float("-inf"), ""))[0]:
                    newest[mac] = (float(lease["expires"]), str(lease["ip"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("state: skipping unreadable leases %s", kv.key)
    for mac, (_, ip) in newest.items():
        if mac in machines:
            machines[mac].ip = ip

"""The scheduler's etcd client against a real 3-member etcd 3.4: guarded writes, leases, member failover
(dead and silent members), watches that resume without losing an event, compaction."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from provisioner.scheduler import etcd
from tests.fixtures.etcd import module_etcd_cluster
from tests.fixtures.tcpproxy import TcpProxy


def retrying(call, timeout: float = 10):
    """Writes during an etcd election fail for a second or two; fleetd retries them, and so does a test."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except etcd.EtcdUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


cluster = module_etcd_cluster("cluster", size=3)


def test_guarded_writes_and_leases(cluster):
    client = etcd.EtcdClient(cluster.endpoints)
    assert client.txn([etcd.absent("/t/a")], [etcd.put("/t/a", "1")]).succeeded
    second = client.txn([etcd.absent("/t/a")], [etcd.put("/t/a", "2")], [etcd.get("/t/a")])
    assert not second.succeeded and second.ranges[0][0].value == "1"
    kv = client.get("/t/a")
    assert kv is not None
    assert not client.txn([etcd.modified_at("/t/a", kv.mod_revision + 1)], [etcd.delete("/t/a")]).succeeded
    assert client.txn([etcd.modified_at("/t/a", kv.mod_revision)], [etcd.delete("/t/a")]).succeeded
    revision = client.put("/t/p/1", "x")
    assert client.txn([etcd.unchanged_since("/t/p/", revision)], []).succeeded
    client.put("/t/p/2", "y")
    assert not client.txn([etcd.unchanged_since("/t/p/", revision)], []).succeeded
    lease = client.grant(2)
    client.put("/t/leased", "x", lease)
    assert client.get("/t/leased").lease == lease
    assert client.keepalive(lease) == 2
    time.sleep(3.2)  # 2 s TTL + etcd's 0.5 s expiry tick
    assert client.get("/t/leased") is None
    assert client.keepalive(lease) == 0 and client.time_to_live(lease) == -1
    with pytest.raises(etcd.EtcdError, match="too many operations in txn request"):
        client.txn([], [etcd.put(f"/t/k{i}", "x") for i in range(200)])


def test_a_dead_or_silent_member_costs_one_timeout_then_the_next_member_answers(cluster):
    proxies = [TcpProxy(("127.0.0.1", m.client_port)).start() for m in cluster.members]
    try:
        client = etcd.EtcdClient([p.url for p in proxies], timeout=0.5)
        client.put("/t/failover", "1")
        proxies[0].cut()  # silent: the request times out
        started = time.monotonic()
        assert client.get("/t/failover").value == "1"
        assert time.monotonic() - started < 3
        assert client.endpoints[client._current] != proxies[0].url
        proxies[1].stop()  # gone: refused at once
        assert client.put("/t/failover", "2") > 0
        proxies[2].cut()
        with pytest.raises(etcd.EtcdUnavailable, match="no member answered"):
            client.get("/t/failover")
    finally:
        for proxy in proxies:
            proxy.heal()
            if proxy._thread.is_alive():
                proxy.stop()


def test_a_lease_survives_the_loss_of_the_etcd_leader(cluster):
    client = etcd.EtcdClient(cluster.endpoints)
    lease = client.grant(3)
    client.put("/t/alive", "x", lease)
    leader = cluster.leader_index()
    cluster.kill(leader)
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:  # keep renewing through the election, as fleetd does
            # No leader for a moment: the next attempt goes to another member.
            with contextlib.suppress(etcd.EtcdUnavailable):
                assert client.keepalive(lease) > 0
            time.sleep(0.5)
        assert client.get("/t/alive") is not None
    finally:
        cluster.restart(leader)


def test_watch_resumes_after_its_member_dies_without_losing_events(cluster):
    client = etcd.EtcdClient(cluster.endpoints)
    seen: list[str] = []
    arrived = threading.Event()

    def on_events(events, revision):
        seen.extend(f"{e.kind} {e.kv.key}" for e in events)
        arrived.set()

    watcher = etcd.Watcher(client.clone(), "/w/", 0, on_events).start()
    try:
        time.sleep(0.3)
        client.put("/w/1", "a")
        assert arrived.wait(5)
        watched = watcher.client.endpoints[watcher.client._current]
        index = next(i for i, m in enumerate(cluster.members) if m.client_url == watched)
        cluster.kill(index)
        retrying(lambda: client.put("/w/2", "b"))  # written while the watcher has no stream
        retrying(lambda: client.delete("/w/1"))
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen == ["PUT /w/1", "PUT /w/2", "DELETE /w/1"]
        cluster.restart(index)
    finally:
        watcher.stop()


def test_watch_reports_compaction_so_the_owner_reads_everything_again(cluster):
    client = etcd.EtcdClient(cluster.endpoints)
    client.put("/c/x", "1")
    start = client.put("/c/x", "2")
    client.put("/c/x", "3")
    revision = client.put("/c/y", "4")
    cluster.etcdctl("compact", str(revision))
    batches: list[tuple[int, int]] = []
    watcher = etcd.Watcher(client.clone(), "/c/", start, lambda events, rev: batches.append((len(events), rev))).start()
    try:
        deadline = time.monotonic() + 5
        while not batches and time.monotonic() < deadline:
            time.sleep(0.05)
        assert batches and batches[0][0] == 0  # "read everything again"
        # It watches on from now: a write after it reconnected arrives as an event.
        deadline = time.monotonic() + 5
        while not any(count for count, _ in batches) and time.monotonic() < deadline:
            client.put("/c/z", "5")
            time.sleep(0.2)
        assert any(count == 1 for count, _ in batches[1:])
    finally:
        watcher.stop()

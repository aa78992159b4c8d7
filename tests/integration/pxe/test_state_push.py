"""The outbox's push to a real etcd (state_sync.SiteSync.push_once): events go as batch keys, a batch pushed
again (its answer lost, the server restarted before the outbox knew) lands once, and a forgotten machine's
events leave the site's view; an HTTP worker's mirror of the secrets. The two-server runs are in
test_state_etcd.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from aiohttp.test_utils import make_mocked_request

from provisioner.pxe.installed import InstalledMachines
from provisioner.pxe.machines import MachineStates
from provisioner.pxe.state import SecretCheck
from provisioner.pxe.state_etcd import EtcdBootSecrets, EtcdInstalledMarks, EtcdMachineLog, EtcdSite, Outbox
from provisioner.pxe.state_sync import SiteSync, WorkerMirror, read_site
from provisioner.pxe.writes import MachineWrites
from provisioner.scheduler.etcd import RequestCounter
from tests.fixtures.etcd import EtcdCluster
from tests.fixtures.polling import wait_until

A, B = "52:54:00:00:00:0a", "52:54:00:00:00:0b"


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    cluster = EtcdCluster.start(tmp_path_factory.mktemp("etcd"), size=1)
    yield cluster
    cluster.stop()


def server(etcd: EtcdCluster, site: str, counter: RequestCounter | None = None) -> SiteSync:
    state = EtcdSite(etcd.endpoints, site, "http://me", counter=counter)
    secrets = EtcdBootSecrets(state, 60.0)
    machine_log = EtcdMachineLog(state, MachineStates(None), Outbox(None))
    return SiteSync(state, EtcdInstalledMarks(state, InstalledMachines(None), secrets), machine_log, secrets)


def stages(etcd: EtcdCluster, site: str, mac: str) -> list[str]:
    machines, _ = read_site(server(etcd, site)._client, site)
    return [entry["stage"] for entry in machines[mac].history] if mac in machines else []


def test_a_batch_pushed_twice_lands_once_and_what_followed_it_goes_next(etcd):
    sync = server(etcd, "twice")
    outbox = sync.machine_log.outbox
    for n, stage in enumerate(("dhcp-offer", "ipxe-script", "install")):
        sync.machine_log.record(A, stage, now=100.0 + n)
    sent = outbox.peek(10)
    assert sync.push_once() == 3 and len(outbox) == 0
    before = etcd.etcdctl("get", "--prefix", "/provisioner/twice/events/", "--keys-only").split()
    # The answer was lost (or the server restarted from its saved outbox): the same events wait again,
    # with two more behind them.
    for key, value in sent:
        outbox.add(key, value)
    sync.machine_log.record(A, "install-done", now=104.0)
    sync.machine_log.record(B, "dhcp-offer", now=105.0)
    assert sync.push_once() == 3 and len(outbox) == 2     # found the batch there: only its 3 are done
    assert etcd.etcdctl("get", "--prefix", "/provisioner/twice/events/", "--keys-only").split() == before
    assert sync.push_once() == 2 and sync.push_once() == 0
    assert stages(etcd, "twice", A) == ["dhcp-offer", "ipxe-script", "install", "install-done"]
    assert stages(etcd, "twice", B) == ["dhcp-offer"]


def test_other_writes_go_as_plain_puts_in_the_order_they_were_queued(etcd):
    sync = server(etcd, "mixed")
    outbox = sync.machine_log.outbox
    sync.machine_log.record(A, "dhcp-offer", now=1.0)
    outbox.add(sync.site.keys.leases("s1"), "{}")
    outbox.add(sync.site.keys.discovery, "{}")
    sync.machine_log.record(A, "ipxe-script", now=2.0)
    assert [sync.push_once() for _ in range(4)] == [1, 2, 1, 0]
    assert etcd.etcdctl("get", sync.site.keys.discovery, "--print-value-only").strip() == "{}"
    assert stages(etcd, "mixed", A) == ["dhcp-offer", "ipxe-script"]


def test_events_pushed_one_key_each_by_an_older_server_are_in_the_view(etcd):
    """Before batching, servers pushed each event as its own key under events/<mac>/: a site's history from
    then, or from a server not yet upgraded, is read at load, in read_site and from the watch."""
    old = server(etcd, "older")
    keys = old.site.keys
    client = old._client

    def put_old(mac: str, stage: str, at: float, server_id: str) -> None:
        event = {"mac": mac, "stage": stage, "at": at, "ip": None, "detail": {"server": "http://old"}}
        client.put(f"{keys.events(mac)}{int(at * 1e9):019d}-{server_id}-0", json.dumps(event))

    put_old(A, "dhcp-offer", 1.0, "0ld0ld00")
    put_old(A, "ipxe-script", 2.0, "0ld0ld00")
    assert stages(etcd, "older", A) == ["dhcp-offer", "ipxe-script"]
    current = server(etcd, "older")
    assert current.load()
    try:
        assert [entry["stage"] for entry in current.machine_log.machines[A].history] == ["dhcp-offer", "ipxe-script"]
        put_old(B, "dhcp-offer", 3.0, "0ld0ld00")                       # while this server watches
        until(lambda: B in current.machine_log.machines)
    finally:
        current.stop()


def test_a_push_in_a_storm_rides_the_boot_secrets_request(etcd):
    counter = RequestCounter()
    sync = server(etcd, "rides", counter)
    sync.site.group.gather = 0.5
    sync.secrets.issue(A, None, time.time())   # a request (and the secrets' lease): the interval starts
    sync.machine_log.record(A, "ipxe-script", now=1.0)
    asked = counter.count
    pushing = threading.Thread(target=sync.push_once)
    pushing.start()
    sync.secrets.issue(B, None, time.time())
    pushing.join(timeout=10)
    assert counter.count - asked == 1, f"{counter.count - asked} requests for a push and a boot secret"
    assert stages(etcd, "rides", A) == ["ipxe-script"] and len(sync.machine_log.outbox) == 0


def test_a_write_whose_secret_the_mirror_holds_is_checked_on_the_loop_and_others_ask_etcd(etcd):
    sync = server(etcd, "held")
    secret = sync.secrets.issue(A, None, time.time())
    hops: list[str] = []

    async def runner(function, *args):
        hops.append(function.__name__)
        return function(*args)

    writes = MachineWrites(sync.installed, sync.secrets, lambda event: None, {}, run_state=runner)

    def refused(presented: str) -> int | None:
        request = make_mocked_request("POST", f"/report?mac={A}", headers={"Authorization": f"Bearer {presented}"})
        answer = asyncio.run(writes.refusal(request, A, "/report"))
        return None if answer is None else answer.status

    assert refused(secret) is None and hops == []
    assert refused("0" * len(secret)) == 403 and hops == ["check"]   # not in the mirror: etcd is asked


def test_a_forgotten_machine_leaves_the_view_and_comes_back_with_its_next_event(etcd):
    sync = server(etcd, "forget")
    sync.machine_log.record(A, "dhcp-offer", now=1.0)
    sync.machine_log.record(B, "dhcp-offer", now=1.5)
    assert sync.push_once() == 2
    assert sync.machine_log.forget(A, now=2.0)
    assert stages(etcd, "forget", A) == [] and stages(etcd, "forget", B) == ["dhcp-offer"]
    sync.machine_log.record(A, "ipxe-script", now=3.0)
    sync.push_once()
    assert stages(etcd, "forget", A) == ["ipxe-script"]


def test_a_workers_secrets_mirror_proves_another_process_secret_without_a_request_until_the_mark_revokes_it(etcd):
    main = server(etcd, "mirror")
    issued = main.secrets.issue(A, "10.0.0.5", time.time())
    counter = RequestCounter()
    worker_site = EtcdSite(etcd.endpoints, "mirror", "http://me", counter=counter)
    worker = EtcdBootSecrets(worker_site, 60.0)
    mirror = WorkerMirror(worker_site, worker).start()
    try:
        def proven_without_a_request() -> bool:   # without the mirror, every check asks etcd
            asked = counter.count
            return worker.check(A, issued, time.time()) == SecretCheck.OK and counter.count == asked

        until(proven_without_a_request)
        assert main.installed.mark(A)                  # the mark's transaction revokes the secrets
        until(lambda: worker.check(A, issued, time.time()) == SecretCheck.NONE_ISSUED)
    finally:
        mirror.stop()


def until(check, timeout: float = 10) -> None:
    wait_until("the condition", check, timeout, interval=0.05)

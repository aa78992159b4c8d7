"""Group commit against a real etcd (pxe/txn_group.py): concurrent boot secrets and installed marks share
requests, and a machine still gets one boot decision."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from provisioner.pxe.installed import InstalledMachines
from provisioner.pxe.state import MarkedInstalled
from provisioner.pxe.state_etcd import EtcdBootSecrets, EtcdInstalledMarks, EtcdSite
from provisioner.pxe.txn_group import TxnGroup
from provisioner.scheduler.etcd import EtcdClient, EtcdUnavailable, RequestCounter, Txn, absent, put
from tests.fixtures.etcd import EtcdCluster
from tests.fixtures.system import free_port

THREADS = 40


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    cluster = EtcdCluster.start(tmp_path_factory.mktemp("etcd"), size=1)
    yield cluster
    cluster.stop()


def state(etcd: EtcdCluster, site: str,
          counter: RequestCounter | None = None) -> tuple[EtcdSite, EtcdBootSecrets, EtcdInstalledMarks]:
    site_state = EtcdSite(etcd.endpoints, site, "http://me", counter=counter)
    secrets = EtcdBootSecrets(site_state, 60.0)
    return site_state, secrets, EtcdInstalledMarks(site_state, InstalledMachines(None), secrets)


def at_once(calls: list[Callable[[], object]]) -> list[object]:
    """Run every call on its own thread, released together; each one's result or exception."""
    start = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - the test looks at each outcome
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a transaction never returned"
    return results


def test_concurrent_boot_secrets_share_requests_and_all_land(etcd):
    counter = RequestCounter()
    site, secrets, _ = state(etcd, "group-secrets", counter)
    macs = [f"52:54:00:00:01:{n:02x}" for n in range(THREADS)]
    results = at_once([lambda mac=mac: secrets.issue(mac, None, 1000.0) for mac in macs])
    assert all(isinstance(secret, str) and secret for secret in results), results
    stored = EtcdClient(etcd.endpoints).range(site.keys.secrets(), prefix=True).kvs
    assert sorted(kv.key.split("/")[-2] for kv in stored) == sorted(macs)
    # The lease for the secrets is one more request.
    assert counter.count - 1 < THREADS / 2, f"{counter.count} etcd requests for {THREADS} boot secrets"


def test_marks_and_secrets_racing_for_one_machine_give_it_one_decision(etcd):
    """Ten marks and ten new boot secrets for the same machine at once: one mark is set, the others see it,
    and no secret survives (one issued before the mark is revoked by it, one after is refused)."""
    site, secrets, marks = state(etcd, "group-race")
    mac = "52:54:00:00:02:01"
    calls: list[Callable[[], object]] = []
    for _ in range(10):
        calls += [lambda: marks.mark(mac, 1000.0), lambda: secrets.issue(mac, None, 1000.0)]
    results = at_once(calls)
    marked = results[0::2]
    issued = results[1::2]
    assert marked.count(True) == 1 and marked.count(False) == 9, marked
    assert all(isinstance(outcome, (str, MarkedInstalled)) for outcome in issued), issued
    assert EtcdClient(etcd.endpoints).range(site.keys.secrets(mac), prefix=True).kvs == ()
    assert marks.is_installed(mac)


def test_every_transaction_of_a_failed_request_gets_the_failure():
    group = TxnGroup()
    client = EtcdClient([f"http://127.0.0.1:{free_port()}"], timeout=0.5)
    results = at_once([lambda n=n: group.run(client, str(n), Txn((absent(f"k{n}"),), (put(f"k{n}", "v"),)))
                       for n in range(10)])
    assert all(isinstance(outcome, EtcdUnavailable) for outcome in results), results


def test_a_lone_transaction_goes_at_once_and_those_within_the_gather_interval_share_the_next_request(etcd):
    counter = RequestCounter()
    client = EtcdClient(etcd.endpoints, counter=counter)
    group = TxnGroup(gather=0.6)

    def txn(name: str) -> Txn:
        return Txn((absent(f"/gather/{name}"),), (put(f"/gather/{name}", "v"),))

    started = time.monotonic()
    assert group.run(client, "first", txn("first")).succeeded
    assert time.monotonic() - started < 0.3, "a lone transaction waited for the interval"
    # Five more, each arriving well after the one before was answered, all within the interval.
    calls = []
    for n in range(5):
        def call(n: int = n, mine: EtcdClient = client.clone()) -> object:
            time.sleep(0.05 * n)
            return group.run(mine, str(n), txn(str(n)))
        calls.append(call)
    assert all(result.succeeded for result in at_once(calls))
    assert counter.count == 2, f"{counter.count} requests for 1 + 5 transactions"
    assert time.monotonic() - started >= 0.6

"""The etcd state backend's parts that need no etcd: keys, the event replay, the outbox, the inventory
document, the breaker against an address where nothing listens. tests/integration/pxe/test_state_etcd.py
runs the whole against a real 3-member etcd."""

from __future__ import annotations

import json

import pytest

from provisioner.errors import ConfigError
from provisioner.pxe.inventory_etcd import inventory_document, materialize
from provisioner.pxe.machines import MachineStates, machine_rows
from provisioner.pxe.state import StateUnavailable
from provisioner.pxe.state_etcd import EtcdSite, Outbox, SiteKeys
from provisioner.pxe.state_sync import batch_value, holds_events, replay
from provisioner.scheduler.etcd import KeyValue
from tests.fixtures.system import free_port

MAC = "52:54:00:00:00:01"


def batch(keys: SiteKeys, first_id: str, *events: dict) -> KeyValue:
    return KeyValue(keys.events() + first_id, batch_value([json.dumps({"mac": MAC, **e}) for e in events]), 1, 1)


def test_site_keys():
    keys = SiteKeys("rack1")
    assert keys.installed(MAC) == f"/provisioner/rack1/installed/{MAC}"
    assert keys.events(MAC) == f"/provisioner/rack1/events/{MAC}/" and keys.events() == "/provisioner/rack1/events/"
    assert keys.forgotten(MAC) == f"/provisioner/rack1/forgotten/{MAC}"
    assert keys.inventory == "/provisioner/rack1/inventory"
    assert holds_events(keys.events() + "0001-ab-0", keys) and holds_events(keys.events(MAC) + "0001-ab-0", keys)
    assert not holds_events(keys.installed(MAC), keys)
    for bad in ("", "a/b"):
        with pytest.raises(ValueError):
            SiteKeys(bad)


def test_replay_records_events_in_the_order_they_happened_with_their_server():
    keys = SiteKeys("s")
    states = MachineStates(None)
    count = replay(states, [
        batch(keys, "2-b-0", dict(stage="ipxe-script", at=2.0, ip="10.0.0.5", detail={"server": "http://b"}),
              dict(stage="refused", at=3.0, ip=None, detail={"server": "http://b", "path": "/report"}),
              dict(stage="no time")),
        batch(keys, "1-a-0", dict(stage="dhcp-offer", at=1.0, ip=None, detail={"server": "http://a"})),
        KeyValue(keys.events() + "4-a-0", "not json", 1, 1),
    ], keys)
    assert count == 3
    record = states.machines[MAC]
    assert [e["stage"] for e in record.history] == ["dhcp-offer", "ipxe-script", "refused"]
    assert record.last_stage == "ipxe-script" and record.ip == "10.0.0.5" and record.first_seen == 1.0
    assert machine_rows(states.machines, [MAC])[0]["servers"] == ["http://a", "http://b"]
    assert machine_rows(MachineStates(None).machines) == []


def test_replay_takes_an_outbox_item_as_one_event_and_leaves_out_what_was_forgotten():
    keys = SiteKeys("s")
    states = MachineStates(None)
    waiting = KeyValue(keys.events(MAC) + "5-a-1", json.dumps({"mac": MAC, "stage": "install", "at": 5.0}), 0, 0)
    replay(states, [batch(keys, "1-a-0", dict(stage="dhcp-offer", at=1.0), dict(stage="ipxe-script", at=4.0)),
                    waiting], keys, forgotten={MAC: 3.0})
    assert [e["stage"] for e in states.machines[MAC].history] == ["ipxe-script", "install"]


def test_outbox_keeps_what_is_not_pushed_across_a_restart(tmp_path):
    path = tmp_path / "etcd-outbox.json"
    outbox = Outbox(path)
    for n in range(3):
        outbox.add(f"/p/events/{MAC}/{n}", str(n))
    outbox.add("/p/events/other/0", "x")
    outbox.done(1)
    outbox.drop(f"/p/events/{MAC}/")    # forgotten before it went out
    outbox.save()
    again = Outbox(path)
    assert again.peek(10) == [("/p/events/other/0", "x")] and len(again) == 1
    path.write_text("{broken")
    assert len(Outbox(path)) == 0        # logged; the server starts


def test_the_breaker_refuses_with_the_reason_without_asking_again_at_once():
    site = EtcdSite([f"http://127.0.0.1:{free_port()}"], "s", "http://me", timeout=0.5)
    with pytest.raises(StateUnavailable) as first:
        site.call("installed mark of x", lambda client: client.get("/k"))
    assert "etcd unavailable" in first.value.strerror and "connection refused" in first.value.strerror
    assert first.value.strerror.endswith("installed mark of x not recorded")
    calls = []
    with pytest.raises(StateUnavailable):
        site.call("y", lambda client: calls.append(1))
    assert calls == []                    # within RETRY_SECONDS: not asked at all
    site.client.close()


def test_inventory_document_and_materialize(tmp_path):
    source = tmp_path / "data"
    (source / "profiles").mkdir(parents=True)
    (source / "groups").mkdir()
    (source / "profiles" / "p.yaml").write_text("id: p\nboot:\n  kernel: /k\n")
    (source / "groups" / "g.yaml").write_text("id: g\nprofile: p\n")
    (source / "groups" / ".gitkeep").write_text("")
    document = inventory_document(source, "me")
    assert sorted(json.loads(document)["files"]) == ["groups/g.yaml", "profiles/p.yaml"]
    target = tmp_path / "copy"
    (target / "groups").mkdir(parents=True)
    (target / "groups" / "old.yaml").write_text("id: old\nprofile: p\n")
    assert materialize(document, target) == 2
    assert sorted(p.name for p in (target / "groups").iterdir()) == ["g.yaml"]   # what was not pushed goes
    assert (target / "profiles" / "p.yaml").read_text() == "id: p\nboot:\n  kernel: /k\n"
    for bad in ('{"files": {"../x": ""}}', '{"files": {"groups/.hidden": ""}}', "[]"):
        with pytest.raises(ValueError, match="not an inventory document"):
            materialize(bad, target)
    with pytest.raises(ConfigError):
        inventory_document(tmp_path / "nowhere", "me")


def test_published_leases_give_the_site_view_each_machines_newest_address():
    from provisioner.pxe.dhcp_leases import LeaseRecord, LeaseState
    from provisioner.pxe.state_sync import apply_leases, lease_document

    keys = SiteKeys("s")
    a = lease_document({MAC: LeaseRecord(MAC, "10.0.0.5", 100.0),
                        "52:54:00:00:00:09": LeaseRecord("52:54:00:00:00:09", "10.0.0.9", 1.0,
                                                         state=LeaseState.OFFERED)}, "http://a")
    assert json.loads(a) == {MAC: {"ip": "10.0.0.5", "expires": 100.0, "server": "http://a"}}   # bound only
    b = lease_document({MAC: LeaseRecord(MAC, "10.1.0.7", 200.0)}, "http://b")
    states = MachineStates(None)
    states.record(MAC, "dhcp-ack", now=1.0)
    apply_leases(states.machines, [KeyValue(keys.leases("a"), a, 1, 1), KeyValue(keys.leases("b"), b, 1, 1),
                                   KeyValue(keys.leases("c"), "{bad", 1, 1)])
    assert states.machines[MAC].ip == "10.1.0.7"
    assert "52:54:00:00:00:09" not in states.machines

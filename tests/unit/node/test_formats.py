"""The files and drop-ins the applier writes, byte for byte against coreos-cloudinit v1.13.0's own test vectors
(system/{etcd,fleet,oem,flannel,update,env_file}_test.go) and its code (system/env.go, update-ssh-keys)."""

from __future__ import annotations

import pytest

from provisioner.cloudconfig.model import OEM, RebootStrategy, Update, parse
from provisioner.node.apply.coreos import generated_units, oem_release, update_conf, update_units
from provisioner.node.apply.environment import merge_env
from provisioner.node.apply.manage_etc_hosts import etc_hosts
from provisioner.node.systemd import UnitCommand


def drop_ins(document: str) -> dict[str, dict[str, str]]:
    """{unit: {drop-in name: content}} of the generated units (empty drop-ins left out, as processUnits does)."""
    config = parse("#cloud-config\n" + document, "test")
    return {unit.name: {d.name: d.content for d in unit.drop_ins if d.content}
            for unit in generated_units(config) if any(d.content for d in unit.drop_ins)}


def test_etcd_drop_in_is_in_struct_field_order_not_key_order():
    # TestEtcdUnits: DISCOVERY before NAME before PEER_BIND_ADDR, whatever the document's order.
    units = drop_ins("coreos:\n  etcd:\n    peer-bind-addr: 127.0.0.1:7002\n    name: node001\n"
                     "    discovery: http://disco.example.com/foobar\n")
    assert units["etcd.service"]["20-cloudinit.conf"] == (
        '[Service]\nEnvironment="ETCD_DISCOVERY=http://disco.example.com/foobar"\n'
        'Environment="ETCD_NAME=node001"\nEnvironment="ETCD_PEER_BIND_ADDR=127.0.0.1:7002"\n')


def test_fleet_drop_in_and_go_value_formatting():
    # TestFleetUnits, plus %v of bools (true), floats (2, 0.5) and ints; zero values are left out.
    units = drop_ins("coreos:\n  fleet:\n    public-ip: 12.34.56.78\n    engine-reconcile-interval: 2\n"
                     "    etcd_request_timeout: 0.5\n    verify-units: true\n    disable-engine: false\n"
                     "    token-limit: 0\n    verbosity: 2\n")
    assert units == {"fleet.service": {"20-cloudinit.conf": (
        '[Service]\nEnvironment="FLEET_ENGINE_RECONCILE_INTERVAL=2"\nEnvironment="FLEET_ETCD_REQUEST_TIMEOUT=0.5"\n'
        'Environment="FLEET_PUBLIC_IP=12.34.56.78"\nEnvironment="FLEET_VERBOSITY=2"\n'
        'Environment="FLEET_VERIFY_UNITS=true"\n')}}


def test_etcd2_gets_the_v2_api_drop_in_and_the_guides_keys():
    units = drop_ins("coreos:\n  etcd2:\n    discovery: http://10.0.0.1:8080/discovery/abc\n"
                     "    advertise-client-urls: http://10.0.0.5:2379\n    listen-client-urls: http://0.0.0.0:2379\n"
                     "    initial-advertise-peer-urls: http://10.0.0.5:2380\n    listen-peer-urls: http://10.0.0.5:2380\n")
    assert units == {"etcd2.service": {
        "10-enable-v2.conf": '[Service]\nEnvironment="ETCD_ENABLE_V2=true"\n',
        "20-cloudinit.conf": (
            '[Service]\nEnvironment="ETCD_ADVERTISE_CLIENT_URLS=http://10.0.0.5:2379"\n'
            'Environment="ETCD_DISCOVERY=http://10.0.0.1:8080/discovery/abc"\n'
            'Environment="ETCD_INITIAL_ADVERTISE_PEER_URLS=http://10.0.0.5:2380"\n'
            'Environment="ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379"\n'
            'Environment="ETCD_LISTEN_PEER_URLS=http://10.0.0.5:2380"\n')}}


def test_no_sections_no_drop_ins_and_every_service_unit_is_generated_in_order():
    assert drop_ins("hostname: x\n") == {}
    config = parse("#cloud-config\n", "t")
    assert [u.name for u in generated_units(config)] == ["etcd.service", "etcd2.service", "fleet.service",
                                                         "locksmithd.service"]
    assert all(u.runtime for u in generated_units(config))


def test_etcd_snapshot_count_keeps_etcd_0_4s_variable_name():
    assert drop_ins("coreos:\n  etcd:\n    snapshot-count: 5\n")["etcd.service"]["20-cloudinit.conf"] == \
        '[Service]\nEnvironment="ETCD_SNAPSHOTCOUNT=5"\n'


def test_oem_release():
    # TestOEMFile
    assert oem_release(OEM()) is None
    assert oem_release(OEM(id="rackspace", name="Rackspace Cloud Servers", version_id="168.0.0",
                           home_url="https://www.rackspace.com/cloud/servers/",
                           bug_report_url="https://github.com/coreos/coreos-overlay")) == (
        'ID=rackspace\nVERSION_ID=168.0.0\nNAME="Rackspace Cloud Servers"\n'
        'HOME_URL="https://www.rackspace.com/cloud/servers/"\n'
        'BUG_REPORT_URL="https://github.com/coreos/coreos-overlay"\n')


@pytest.mark.parametrize("update,base,expected", [
    # TestUpdateFile
    (Update(group="master", server="http://foo.com"), "", "GROUP=master\nSERVER=http://foo.com\n"),
    (Update(RebootStrategy.BEST_EFFORT), "", "REBOOT_STRATEGY=best-effort\n"),
    (Update(RebootStrategy.OFF), "", "REBOOT_STRATEGY=off\n"),
    (Update(RebootStrategy.ETCD_LOCK), "SERVER=https://example.com\nGROUP=thegroupc\nREBOOT_STRATEGY=awesome",
     "SERVER=https://example.com\nGROUP=thegroupc\nREBOOT_STRATEGY=etcd-lock\n"),
])
def test_update_conf(update, base, expected):
    assert update_conf(base, update) == expected
    assert update_conf(expected, update) == expected   # a second apply rewrites nothing


def test_update_units():
    # TestUpdateUnits
    assert update_units(Update()) == []
    (engine,) = update_units(Update(group="master", server="http://foo.com"))
    assert (engine.name, engine.command, engine.runtime) == ("update-engine.service", UnitCommand.RESTART, False)
    (lock,) = update_units(Update(RebootStrategy.ETCD_LOCK))
    assert (lock.name, lock.command, lock.runtime, lock.mask) == ("locksmithd.service", UnitCommand.RESTART, True,
                                                                  False)
    (off,) = update_units(Update(RebootStrategy.OFF))
    assert (off.command, off.mask, off.runtime) == (UnitCommand.STOP, True, True)


def test_flannel_options_env_has_no_final_newline():
    # TestFlannelFile: the variables joined by newlines, nothing after the last one.
    config = parse("#cloud-config\ncoreos:\n  flannel:\n    etcd_endpoints: http://12.34.56.78:4001\n"
                   "    etcd_prefix: /coreos.com/network/tenant1\n", "t")
    content = "\n".join(f"{k}={v}" for k, v in config.coreos.flannel.variables)
    assert content == "FLANNELD_ETCD_ENDPOINTS=http://12.34.56.78:4001\nFLANNELD_ETCD_PREFIX=/coreos.com/network/tenant1"


@pytest.mark.parametrize("old,expected", [
    # TestWriteEnvFile*: update in place, append new keys sorted, no final newline, DOS line endings, create.
    (b"# a file\nFOO=base\n\nBAR= hi there\n", b"# a file\nFOO=test\n\nBAR= hi there\nNEW=a value\n"),
    (b"# a file\nFOO=base\n\nBAR= hi there", b"# a file\nFOO=test\n\nBAR= hi there\nNEW=a value\n"),
    (b"# a file\r\nFOO=base\r\n\r\nBAR= hi there\r\n", b"# a file\nFOO=test\n\nBAR= hi there\nNEW=a value\n"),
    (b"", b"FOO=test\nNEW=a value\n"),
])
def test_environment_merge(old, expected):
    assert merge_env(old, {"FOO": "test", "NEW": "a value"}) == expected


def test_environment_merge_unchanged_is_identical():
    base = b"# a file\nFOO=base\n\nBAR= hi there\n"
    assert merge_env(base, {"FOO": "base"}) == base


def test_etc_hosts_localhost():
    assert etc_hosts("node1") == "127.0.0.1 node1\n"

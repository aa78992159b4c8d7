"""Pure helpers: TFTP negotiation, the root jail, iPXE scripts, discovery store, machine rows, dnsmasq config."""

from __future__ import annotations

import asyncio
import os

import pytest

from provisioner.discovery.store import DiscoveryStore, KeysError
from provisioner.errors import UsageError
from provisioner.pxe import ipxe, tftp
from provisioner.pxe.dnsmasq import dnsmasq_config
from provisioner.pxe.http import _boot_assets
from provisioner.pxe.jail import JailError, resolve_in_jail
from provisioner.pxe.machines import MachineStates, machine_rows, parse_neighbours
from provisioner.pxe.server import metrics_text, parse_addr


def test_blksize_is_clamped_and_bad_values_dropped():
    assert tftp.negotiate_options({"blksize": "99999", "tsize": "0"}, 1468) == {"blksize": "1468", "tsize": "0"}
    assert tftp.negotiate_options({"blksize": "2"}, 65464) == {"blksize": "8"}
    assert tftp.negotiate_options({"blksize": "x", "windowsize": "8", "tsize": "-1"}, 1468) == {}


def test_wrq_and_odd_requests():
    assert tftp.parse_request(b"\x00\x02a\0octet\0").opcode == tftp.OP_WRQ
    with pytest.raises(tftp.TftpRequestError, match="mode"):
        tftp.parse_request(b"\x00\x01a\0mail\0")
    with pytest.raises(tftp.TftpRequestError, match="NUL-terminated"):
        tftp.parse_request(b"\x00\x01abc")


@pytest.fixture
def root(tmp_path):
    base = tmp_path / "root"
    (base / "sub").mkdir(parents=True)
    (base / "sub" / "file").write_text("x")
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", base / "escape")
    os.symlink("sub/file", base / "inside")
    return base.resolve()


@pytest.mark.parametrize("name", ["../secret", "sub/../../secret", "escape", "/../secret", "a\0b", "..\\secret"])
def test_jail_refuses_escapes(root, name):
    with pytest.raises(JailError) as info:
        resolve_in_jail(root, name)
    assert info.value.denied


def test_jail_serves_files_and_inner_symlinks_and_maps_absolute_names_inside(root):
    assert resolve_in_jail(root, "sub/file").read_text() == "x"
    assert resolve_in_jail(root, "/sub/file").read_text() == "x"
    assert resolve_in_jail(root, "inside").read_text() == "x"
    with pytest.raises(JailError) as info:
        resolve_in_jail(root, "sub")
    assert not info.value.denied


def test_ipxe_scripts():
    boot = ipxe.boot_script("http://10.0.0.1:8080")
    assert boot.startswith("#!ipxe\n") and "http://10.0.0.1:8080/ipxe?uuid=${uuid}&mac=${mac:hexhyp}" in boot
    retry = ipxe.retry_script("no group matches mac=${evil}", "http://s/boot.ipxe")
    assert "${" not in retry.split("chain")[0] and retry.rstrip().endswith("chain --replace --autofree http://s/boot.ipxe")


def test_boot_assets_from_a_rendered_script():
    script = "#!ipxe\nkernel /assets/k.vmlinuz a=b\ninitrd --name x http://s:1/assets/i.gz\ninitrd http://other/i\nboot\n"
    assert _boot_assets(script, "http://s:1") == (("k.vmlinuz", "kernel"), ("i.gz", "initrd"))


def test_discovery_store_semantics():
    async def scenario():
        store = DiscoveryStore()
        token = store.new_token(2)
        base = f"/discovery/{token}"
        assert store.get(f"{base}/_config/size")["node"]["value"] == "2"
        status, body = store.put(f"{base}/aa", "n1=http://a:2380", prev_exist=False)
        assert status == 201 and body["action"] == "create"
        with pytest.raises(KeysError) as dup:
            store.put(f"{base}/aa", "again", prev_exist=False)
        assert dup.value.code == 105 and dup.value.status == 412
        waiter = asyncio.create_task(store.wait(base, store.index + 1, True, 5))
        await asyncio.sleep(0)
        store.put(f"{base}/bb", "n2=http://b:2380", prev_exist=False)
        event = await waiter
        assert event["node"]["key"] == f"{base}/bb"
        listing = store.get(base)["node"]["nodes"]
        assert [n["key"] for n in listing] == [f"{base}/aa", f"{base}/bb"]   # _config hidden
        with pytest.raises(KeysError) as missing:
            store.get("/discovery/nope")
        assert missing.value.code == 100
        copy = DiscoveryStore()
        copy.restore(store.dump())
        assert copy.get(base) == store.get(base)
        with pytest.raises(ValueError):
            store.new_token(0)
    asyncio.run(scenario())


def test_machine_states_map_ips_and_rows(tmp_path):
    states = MachineStates(tmp_path / "m.json")
    states.record("52:54:00:00:00:01", "dhcp-ack", {"ip": "10.0.0.5", "arch": "bios"}, now=10)
    states.record("52:54:00:00:00:01", "kernel", {}, ip="10.0.0.5", now=12)
    assert states.mac_for_ip("10.0.0.5") == "52:54:00:00:00:01"
    states.save()
    rows = machine_rows(MachineStates(tmp_path / "m.json").machines)
    assert rows[0]["last_stage"] == "kernel" and rows[0]["stages"] == ["dhcp-ack", "kernel"]
    arp = "IP address HW type Flags HW address Mask Device\n10.0.0.9 0x1 0x2 52:54:00:AB:CD:EF * br0\n" \
          "10.0.0.8 0x1 0x0 00:00:00:00:00:00 * br0\n"
    assert parse_neighbours(arp) == {"10.0.0.9": "52:54:00:ab:cd:ef"}
    text = metrics_text({'http_requests{path="/ipxe",code="200"}': 3, "tftp_bytes": 10}, states)
    assert 'provisioner_http_requests_total{path="/ipxe",code="200"} 3' in text
    assert 'provisioner_boot_events_total{stage="kernel"} 1' in text and "provisioner_tftp_bytes_total 10" in text


def test_parse_addr():
    assert parse_addr("127.0.0.1:8080", "--x") == ("127.0.0.1", 8080)
    assert parse_addr(":69", "--x") == ("0.0.0.0", 69)
    with pytest.raises(UsageError, match="--x"):
        parse_addr("8080", "--x")


def test_dnsmasq_config_modes():
    proxy = dnsmasq_config("http://s:8080", interface="eth1", proxy_network="10.9.0.0", dhcp_range=None,
                           tftp_root="/srv/tftp", static_leases={})
    assert "dhcp-range=10.9.0.0,proxy" in proxy and 'pxe-service=tag:ipxe,x86PC,"iPXE",http://s:8080/boot.ipxe' in proxy
    full = dnsmasq_config("http://s:8080", interface=None, proxy_network=None, dhcp_range="10.9.0.5,10.9.0.9",
                          tftp_root="/srv/tftp", static_leases={"52:54:00:00:00:01": "10.9.0.21"})
    assert "dhcp-boot=tag:ipxe,http://s:8080/boot.ipxe" in full and "dhcp-host=52:54:00:00:00:01,10.9.0.21" in full
    with pytest.raises(UsageError):
        dnsmasq_config("http://s", interface=None, proxy_network=None, dhcp_range=None, tftp_root="/", static_leases={})

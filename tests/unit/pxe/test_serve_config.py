"""`provisioner serve`'s options checked and resolved once into the frozen ServeConfig."""

from __future__ import annotations

import dataclasses

import pytest

from provisioner.errors import UsageError
from provisioner.pxe.serve_config import DhcpMode, EfiBinary, ListenAddress, ServeConfig, ServeOptions


@pytest.fixture
def options(tmp_path) -> ServeOptions:
    """HTTP only on loopback: nothing here needs an interface or root."""
    return ServeOptions(data_dir=tmp_path, interface=None, dhcp="off", dhcp_range=None, router=None, dns=(),
                        lease_time=3600, http_addr="127.0.0.1:8080", server_url=None, server_ip=None, tftp=True,
                        tftp_root=None, tftp_addr="127.0.0.1:69", efi_binary="ipxe.efi", chain_ipxe_roms=False,
                        http_workers=1, ipv6_ra=True, state_dir=None, assets_dir=None)


def test_listen_address():
    assert ListenAddress.parse("127.0.0.1:8080", "--x") == ListenAddress("127.0.0.1", 8080)
    assert ListenAddress.parse(":69", "--x") == ListenAddress("0.0.0.0", 69)
    assert str(ListenAddress("10.0.0.1", 69)) == "10.0.0.1:69"
    for bad in ("8080", "h:99999", "h:x"):
        with pytest.raises(UsageError, match="--x: .* is not HOST:PORT"):
            ListenAddress.parse(bad, "--x")


def test_http_only_on_loopback_resolves_defaults(options, tmp_path):
    config = ServeConfig.from_options(options)
    assert config.dhcp_mode is DhcpMode.OFF and config.efi_binary is EfiBinary.IPXE
    assert config.server_url == "http://127.0.0.1:8080" and config.server_ip == "127.0.0.1"
    assert (config.state_dir, config.assets_dir) == (tmp_path / "state", tmp_path / "assets")
    assert config.tftp_addr == ListenAddress("127.0.0.1", 69) and config.pool is None
    assert config.ipv6_ra is False                      # only ever with full DHCP
    wild = ServeConfig.from_options(dataclasses.replace(options, http_addr="0.0.0.0:80", server_url="http://p/"))
    assert wild.server_url == "http://p" and wild.server_ip is None


@pytest.mark.parametrize("change, message", [
    ({"dhcp": "full"}, "--dhcp: 'full' is not 'proxy' or 'off' (full DHCP: give --dhcp-range)"),
    ({"dhcp_range": "10.0.0.5,10.0.0.9"}, "--dhcp-range needs DHCP: drop --dhcp off"),
    ({"dhcp": "proxy"}, "--interface is required for DHCP"),
    ({"efi_binary": "ipxe.pxe"}, "--efi-binary: 'ipxe.pxe' is not ipxe.efi or snponly.efi"),
    ({"http_workers": 0}, "--http-workers: 0 is not between 1 and 64"),
    ({"http_addr": "0.0.0.0:8080"}, "--server-url is required when the server address is unknown"),
    ({"tftp_root": "/nonexistent"}, "--tftp-root /nonexistent: not a directory"),
    ({"admin_addr": "127.0.0.1:8080"}, "--admin-addr 127.0.0.1:8080: the admin API never shares the machine-facing"),
    ({"admin_addr": "0.0.0.0:8080"}, "the admin API never shares the machine-facing --http-addr 127.0.0.1:8080"),
    ({"admin_addr": "8081"}, "--admin-addr: '8081' is not HOST:PORT"),
    ({"admin_allow": ("10.0.5.0/33",)}, "--admin-allow: '10.0.5.0/33' is not an address or a network"),
    ({"boot_secret_ttl": 0}, "--boot-secret-ttl: 0 is not a positive number of seconds"),
])
def test_bad_options_are_one_line_naming_the_option(options, change, message):
    with pytest.raises(UsageError) as info:
        ServeConfig.from_options(dataclasses.replace(options, **change))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_admin_api_listens_on_loopback_by_default_and_allows_what_the_operator_adds(options):
    config = ServeConfig.from_options(options)
    assert config.admin_addr == ListenAddress("127.0.0.1", 8081)
    assert [str(n) for n in config.admin_allow] == ["127.0.0.0/8", "::1/128"]
    site = ServeConfig.from_options(dataclasses.replace(options, admin_addr="10.0.5.1:9000",
                                                        admin_allow=("10.0.5.7", "fd00::/64")))
    assert [str(n) for n in site.admin_allow][2:] == ["10.0.5.7/32", "fd00::/64"]


def test_a_missing_data_dir_is_named(options, tmp_path):
    with pytest.raises(UsageError, match="--data-dir .*missing: not a directory"):
        ServeConfig.from_options(dataclasses.replace(options, data_dir=tmp_path / "missing"))


def test_a_reserved_address_outside_the_served_network_is_left_out_with_a_warning(caplog):
    import ipaddress
    from pathlib import Path

    from provisioner.pxe.serve_config import static_leases_from_inventory

    examples = Path(__file__).resolve().parents[3] / "examples" / "cluster"
    on_segment = static_leases_from_inventory(examples, ipaddress.IPv4Network("10.99.0.0/24"))
    assert on_segment == {"52:54:00:00:00:01": "10.99.0.11", "52:54:00:00:00:02": "10.99.0.12",
                          "52:54:00:00:00:03": "10.99.0.13"}
    assert static_leases_from_inventory(examples, ipaddress.IPv4Network("10.98.0.0/24")) == {}
    assert "node1.yaml: metadata ip 10.99.0.11 is not in the served network 10.98.0.0/24" in caplog.text


def test_state_in_etcd_options(options):
    config = ServeConfig.from_options(dataclasses.replace(options, state_etcd="http://a:2379, http://b:2379/",
                                                          state_site="rack1", inventory_etcd=True))
    assert config.state_etcd == ("http://a:2379", "http://b:2379") and config.state_site == "rack1"
    assert config.inventory_etcd
    assert ServeConfig.from_options(dataclasses.replace(options, state_etcd="http://a:2379", http_workers=2)).http_workers == 2
    for changes, message in (({"state_etcd": "a:2379"}, "not an http"),
                             ({"inventory_etcd": True}, "--inventory-etcd needs --state-etcd"),
                             ({"state_etcd": "http://a:2379", "state_site": "a/b"}, "--state-site")):
        with pytest.raises(UsageError, match=message):
            ServeConfig.from_options(dataclasses.replace(options, **changes))

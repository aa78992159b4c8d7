"""`provisioner dnsmasq-config`: proxy and full-DHCP configurations."""

from __future__ import annotations

import pytest

from provisioner.errors import UsageError
from provisioner.pxe.dnsmasq import dnsmasq_config


def test_dnsmasq_config_modes():
    proxy = dnsmasq_config("http://s:8080", interface="eth1", proxy_network="10.9.0.0", dhcp_range=None,
                           tftp_root="/srv/tftp", static_leases={})
    assert "dhcp-range=10.9.0.0,proxy" in proxy and 'pxe-service=tag:ipxe,x86PC,"iPXE",http://s:8080/boot.ipxe' in proxy
    full = dnsmasq_config("http://s:8080", interface=None, proxy_network=None, dhcp_range="10.9.0.5,10.9.0.9",
                          tftp_root="/srv/tftp", static_leases={"52:54:00:00:00:01": "10.9.0.21"})
    assert "dhcp-boot=tag:ipxe,http://s:8080/boot.ipxe" in full and "dhcp-host=52:54:00:00:00:01,10.9.0.21" in full
    with pytest.raises(UsageError):
        dnsmasq_config("http://s", interface=None, proxy_network=None, dhcp_range=None, tftp_root="/", static_leases={})

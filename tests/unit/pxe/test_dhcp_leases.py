"""Full-DHCP leases: the allocator's preference order, the range check, the lease file."""

from __future__ import annotations

import ipaddress
import json

import pytest

from provisioner.errors import ConfigError, UsageError
from provisioner.pxe.dhcp_leases import LeaseRecord, LeaseState, LeaseStore, allocate, parse_dhcp_range

POOL = parse_dhcp_range("10.9.0.50,10.9.0.52", ipaddress.IPv4Network("10.9.0.0/24"), "10.9.0.1", ("10.9.0.1",), 600)


def test_allocation_prefers_static_then_previous_then_requested_then_lowest_free():
    now = 1000.0
    leases = {"aa": LeaseRecord("aa", "10.9.0.50", now + 100), "bb": LeaseRecord("bb", "10.9.0.51", now - 1)}
    assert allocate(leases, "cc", POOL, {"cc": "10.9.0.200"}, now) == "10.9.0.200"
    assert allocate(leases, "bb", POOL, {}, now) == "10.9.0.51"            # its expired lease, still free
    assert allocate(leases, "cc", POOL, {}, now, requested="10.9.0.52") == "10.9.0.52"
    assert allocate(leases, "cc", POOL, {}, now) == "10.9.0.52"            # lowest never-used address
    full = dict(leases, dd=LeaseRecord("dd", "10.9.0.52", now + 100))
    assert allocate(full, "cc", POOL, {}, now) == "10.9.0.51"              # reuse the expired one
    full["bb"] = LeaseRecord("bb", "10.9.0.51", now + 100)
    assert allocate(full, "cc", POOL, {}, now) is None                     # exhausted


def test_dhcp_range_is_checked_against_the_interface_network():
    with pytest.raises(UsageError, match="not in the interface's network"):
        parse_dhcp_range("10.8.0.5,10.8.0.9", ipaddress.IPv4Network("10.9.0.0/24"))
    with pytest.raises(UsageError, match="after end"):
        parse_dhcp_range("10.9.0.9,10.9.0.5", ipaddress.IPv4Network("10.9.0.0/24"))


def test_lease_file_survives_a_restart_and_a_bad_state_is_named(tmp_path):
    path = tmp_path / "leases.json"
    store = LeaseStore(path)
    store.put(LeaseRecord("52:54:00:00:00:01", "10.9.0.50", 99.0, "node1", LeaseState.BOUND))
    assert path.stat().st_mode & 0o777 == 0o600
    again = LeaseStore(path).leases["52:54:00:00:00:01"]
    assert again.state is LeaseState.BOUND and again.hostname == "node1"
    raw = json.loads(path.read_text())
    raw["leases"][0]["state"] = "stolen"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="malformed lease entry"):
        LeaseStore(path)

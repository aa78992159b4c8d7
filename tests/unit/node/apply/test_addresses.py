"""node/apply/addresses.py: $private_ipv4 and friends from the node itself or the server's /metadata."""


from __future__ import annotations

from provisioner.node.apply.addresses import (
    NodeAddresses,
    from_ip_json,
    metadata_url_for,
    parse_metadata,
    with_metadata,
)

LO = {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"], "link_type": "loopback",
      "address": "00:00:00:00:00:00", "addr_info": [{"family": "inet", "local": "127.0.0.1", "scope": "host"},
                                                    {"family": "inet6", "local": "::1", "scope": "host"}]}


def link(index, name, mac, *addresses, up=True):
    return {"ifindex": index, "ifname": name, "flags": ["BROADCAST", "UP", "LOWER_UP"] if up else ["BROADCAST"],
            "link_type": "ether", "address": mac, "addr_info": [
                {"family": "inet6" if ":" in a else "inet", "local": a,
                 "scope": "link" if a.startswith(("fe80", "169.254")) else "global"} for a in addresses]}


def test_default_route_interface_wins():
    links = [LO, link(2, "eth0", "52:54:00:00:00:01", "10.0.0.5", "fe80::1", "fd00::5"),
             link(3, "eth1", "52:54:00:00:00:02", "192.168.1.5")]
    found = from_ip_json([{"dst": "default", "dev": "eth1", "metric": 100}, {"dst": "default", "dev": "eth0",
                                                                            "metric": 10}], [], links)
    assert found == NodeAddresses("10.0.0.5", "10.0.0.5", "fd00::5", "fd00::5", "eth0", "52:54:00:00:00:01")


def test_without_default_route_the_first_up_interface_and_never_loopback():
    links = [LO, link(2, "eth0", "m0", "10.1.0.5", up=False), link(3, "eth1", "m1", "169.254.3.3"),
             link(4, "eth2", "m2", "10.2.0.5")]
    found = from_ip_json([], [], links)
    assert (found.private_ipv4, found.public_ipv4, found.interface, found.private_ipv6) == \
        ("10.2.0.5", "10.2.0.5", "eth2", "")
    assert from_ip_json([{"dev": "lo"}], [], [LO]) == NodeAddresses()


def test_metadata_overrides_and_public_falls_back_to_private():
    metadata = parse_metadata("HOSTNAME=node1\nPRIVATE_IPV4=10.9.0.5\nPUBLIC_IPV6=127.0.0.1\nnonsense\n")
    assert metadata == {"HOSTNAME": "node1", "PRIVATE_IPV4": "10.9.0.5", "PUBLIC_IPV6": "127.0.0.1"}
    found = with_metadata(NodeAddresses("10.0.0.5", "10.0.0.5"), metadata)
    assert (found.private_ipv4, found.public_ipv4, found.public_ipv6) == ("10.9.0.5", "10.9.0.5", "")
    assert with_metadata(found, {"PUBLIC_IPV4": "203.0.113.9"}).public_ipv4 == "203.0.113.9"
    assert metadata_url_for("http://s:8080/metadata", "52:54:00:00:00:01") == \
        "http://s:8080/metadata?mac=52-54-00-00-00-01"
    assert metadata_url_for("http://s/metadata?os=installed", "aa:bb") == "http://s/metadata?os=installed&mac=aa-bb"

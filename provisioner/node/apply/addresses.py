"""The values of `$private_ipv4`, `$public_ipv4`, `$private_ipv6`, `$public_ipv6` on a bare-metal node.

coreos-cloudinit took them from a cloud's metadata service, or from COREOS_* variables that
coreos-setup-environment wrote (reference/runtime.md §1.5). A bare-metal node finds them itself:
the address of the interface holding the default route, else of the first interface that is up and not
loopback; a loopback address is never used. `public` falls back to `private` (one network on bare
metal). The provisioning server's `/metadata?mac=<mac>` (matchbox's KEY=value lines; group metadata
`private_ipv4: ...` arrives as PRIVATE_IPV4=...) overrides them when the node is given its URL.

Pure: `from_ip_json`, `parse_metadata`, `with_metadata`; I/O: `detect` (`ip -j`), `fetch_metadata`.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace

from provisioner.core.commands import run
from provisioner.errors import NetworkError, ProvisionerError

METADATA_KEYS = {"private_ipv4": "PRIVATE_IPV4", "public_ipv4": "PUBLIC_IPV4",
                 "private_ipv6": "PRIVATE_IPV6", "public_ipv6": "PUBLIC_IPV6"}


@dataclass(frozen=True)
class NodeAddresses:
    private_ipv4: str = ""
    public_ipv4: str = ""
    private_ipv6: str = ""
    public_ipv6: str = ""
    interface: str = ""     # where private_ipv4 lives
    mac: str = ""           # its MAC, for the server's /metadata?mac=

    def values(self) -> dict[str, str]:
        """{'$private_ipv4': '10.0.0.5', ...} for cloudconfig.substitute ('' = unknown)."""
        return {f"${key}": getattr(self, key) for key in METADATA_KEYS}


def from_ip_json(routes4: list[dict], routes6: list[dict], links: list[dict]) -> NodeAddresses:
    """Addresses from `ip -j route show default`, `ip -j -6 route show default`, `ip -j addr show` (pure)."""
    by_name = {link.get("ifname", ""): link for link in links}
    v4_link = _pick_link(routes4, by_name, links, "inet")
    v6_link = _pick_link(routes6, by_name, links, "inet6")
    v4 = _address(v4_link, "inet") if v4_link else ""
    v6 = _address(v6_link, "inet6") if v6_link else ""
    return NodeAddresses(private_ipv4=v4, public_ipv4=v4, private_ipv6=v6, public_ipv6=v6,
                         interface=v4_link.get("ifname", "") if v4_link else "",
                         mac=v4_link.get("address", "") if v4_link else "")


def _pick_link(routes: list[dict], by_name: dict[str, dict], links: list[dict], family: str) -> dict | None:
    for route in sorted(routes, key=lambda r: r.get("metric", 0)):
        link = by_name.get(route.get("dev", ""))
        if link is not None and _address(link, family):
            return link
    for link in sorted(links, key=lambda item: item.get("ifindex", 0)):
        if link.get("link_type") != "loopback" and "UP" in link.get("flags", ()) and _address(link, family):
            return link
    return None


def _address(link: dict, family: str) -> str:
    for info in link.get("addr_info", ()):
        if info.get("family") != family or info.get("scope") != "global":
            continue
        try:
            address = ipaddress.ip_address(info.get("local", ""))
        except ValueError:
            continue
        if not address.is_loopback:
            return str(address)
    return ""


def detect() -> NodeAddresses:
    """The node's addresses from `ip -j` (iproute2). Raises ProvisionerError when ip fails."""
    def ip_json(*args: str) -> list[dict]:
        out = run(["ip", "-j", *args]).stdout.strip()
        try:
            return json.loads(out) if out else []
        except ValueError:
            raise ProvisionerError(f"ip -j {' '.join(args)}: not JSON: {out[:80]!r}") from None

    return from_ip_json(ip_json("route", "show", "default"), ip_json("-6", "route", "show", "default"),
                        ip_json("addr", "show"))


def parse_metadata(text: str) -> dict[str, str]:
    """matchbox's /metadata body: KEY=value lines (pure; lines without '=' are ignored)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            values[key.strip()] = value.strip()
    return values


def with_metadata(addresses: NodeAddresses, metadata: dict[str, str]) -> NodeAddresses:
    """Addresses with the server's PRIVATE_IPV4/PUBLIC_IPV4/... applied; a public one falls back to the
    (new) private one (pure). Loopback values from the server are ignored."""
    changes = {}
    for key, name in METADATA_KEYS.items():
        value = metadata.get(name, "")
        try:
            if value and not ipaddress.ip_address(value).is_loopback:
                changes[key] = value
        except ValueError:
            continue
    for family in ("ipv4", "ipv6"):
        if f"private_{family}" in changes and f"public_{family}" not in changes:
            changes[f"public_{family}"] = changes[f"private_{family}"]
    return replace(addresses, **changes)


def metadata_url_for(base: str, mac: str) -> str:
    """`base` with `mac=<aa-bb-..>` added to its query (pure)."""
    separator = "&" if urllib.parse.urlsplit(base).query else "?"
    return f"{base}{separator}mac={mac.replace(':', '-')}" if mac else base


def fetch_metadata(url: str, timeout: float = 10) -> dict[str, str]:
    """GET the server's metadata. Raises NetworkError naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return parse_metadata(response.read().decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise NetworkError(f"{url}: {getattr(exc, 'reason', exc)}") from None

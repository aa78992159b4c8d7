"""`provisioner dnsmasq-config`: a dnsmasq configuration for sites that keep their dnsmasq (pure).

Follows matchbox's reference setups (docs/network-setup.md): dnsmasq answers DHCP (full or
proxy) and serves the iPXE binaries over TFTP; machines running iPXE (user class "iPXE") are sent
to our /boot.ipxe, which breaks the PXE -> iPXE loop. In proxy mode dnsmasq appends ".0" to a
pxe-service basename, so the TFTP root needs undionly.kpxe.0 (our TFTP server answers both names).
"""

from __future__ import annotations

import ipaddress

from provisioner.errors import UsageError


def dnsmasq_config(server_url: str, *, interface: str | None, proxy_network: str | None,
                   dhcp_range: str | None, tftp_root: str, static_leases: dict[str, str],
                   lease_time: str = "1h") -> str:
    """The config text. Exactly one of proxy_network (e.g. 10.9.0.0) or dhcp_range (START,END)."""
    if bool(proxy_network) == bool(dhcp_range):
        raise UsageError("give exactly one of --proxy-network (proxyDHCP) or --dhcp-range (full DHCP)")
    boot = f"{server_url.rstrip('/')}/boot.ipxe"
    lines = [
        f"# dnsmasq configuration written by `provisioner dnsmasq-config` for {server_url}",
        "port=0                       # no DNS, only DHCP and TFTP",
    ]
    if interface:
        lines += [f"interface={interface}", "bind-interfaces"]
    lines += ["enable-tftp", f"tftp-root={tftp_root}", "dhcp-userclass=set:ipxe,iPXE"]
    if proxy_network:
        try:
            network = ipaddress.IPv4Address(proxy_network)
        except ValueError:
            raise UsageError(f"--proxy-network: {proxy_network!r} is not an IPv4 address") from None
        lines += [
            f"dhcp-range={network},proxy",
            'pxe-service=tag:#ipxe,x86PC,"PXE chainload to iPXE",undionly.kpxe',
            f'pxe-service=tag:ipxe,x86PC,"iPXE",{boot}',
            'pxe-service=tag:#ipxe,X86-64_EFI,"PXE chainload to iPXE UEFI",ipxe.efi',
            f'pxe-service=tag:ipxe,X86-64_EFI,"iPXE UEFI",{boot}',
        ]
    else:
        parts = [p.strip() for p in (dhcp_range or "").split(",")]
        try:
            start, end = (ipaddress.IPv4Address(p) for p in parts)
        except ValueError:
            raise UsageError(f"--dhcp-range: {dhcp_range!r} is not START,END") from None
        lines += [
            f"dhcp-range={start},{end},{lease_time}",
            "dhcp-match=set:bios,option:client-arch,0",
            "dhcp-match=set:efi64,option:client-arch,7",
            "dhcp-match=set:efi64,option:client-arch,9",
            "dhcp-boot=tag:bios,tag:!ipxe,undionly.kpxe",
            "dhcp-boot=tag:efi64,tag:!ipxe,ipxe.efi",
            f"dhcp-boot=tag:ipxe,{boot}",
        ]
        for mac, ip in sorted(static_leases.items()):
            lines.append(f"dhcp-host={mac},{ip}")
    return "\n".join(lines) + "\n"

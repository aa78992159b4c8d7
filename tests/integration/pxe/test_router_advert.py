"""Full DHCP answers IPv6 router solicitations with 'no router here' (iPXE stops waiting for one).

A client namespace on the lab bridge sends a real Router Solicitation from a raw ICMPv6 socket and
reads what comes back; in proxy mode the server must stay silent (the site has its own routers)."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.pxe.conftest import start_server, wait_ready

SOLICIT = r'''
import socket, struct, sys, time
sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
sock.settimeout(0.5)
index = socket.if_nametoindex("eth0")
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    try:
        sock.sendto(bytes((133, 0, 0, 0, 0, 0, 0, 0)), ("ff02::2", 0, 0, index))
    except OSError:          # link-local address still tentative (DAD)
        time.sleep(0.3)
        continue
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        try:
            packet, source = sock.recvfrom(2048)
        except socket.timeout:
            continue
        if packet[0] == 134:
            print(packet.hex(), source[0])
            sys.exit(0)
sys.exit(1)
'''


def solicit(netns: str, seconds: float) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", SOLICIT, str(seconds)],
                          capture_output=True, text=True, timeout=seconds + 20)


def test_full_dhcp_answers_a_router_solicitation_with_lifetime_zero(lab_net, tmp_path):
    client = lab_net.add_client_namespace(f"{lab_net.name}r", mac="52:54:00:00:00:66")
    server = start_server(tmp_path, "--interface", "br0", "--http-addr", "10.77.0.1:8080",
                          "--dhcp-range", "10.77.0.100,10.77.0.150", netns=lab_net.name)
    try:
        wait_ready(server)
        assert "ra: answering IPv6 router solicitations on br0" in server.log()
        done = solicit(client, 10)
        assert done.returncode == 0, f"no router advertisement: {done.stderr}\n{server.log()}"
        packet_hex, source = done.stdout.split()
        packet = bytes.fromhex(packet_hex)
        assert source.startswith("fe80:")                       # from the bridge's link-local address
        assert packet[4] == 0 and packet[5] == 0                # hop limit unspecified, no M/O flags
        assert packet[6:8] == b"\0\0"                           # router lifetime 0: not a default router
        assert packet[16:18] == bytes((1, 1)) and len(packet) == 24   # link address only, no prefix
    finally:
        assert server.stop() == 0


def test_proxy_mode_and_no_ipv6_ra_stay_silent(lab_net, tmp_path):
    client = lab_net.add_client_namespace(f"{lab_net.name}s", mac="52:54:00:00:00:67")
    for args in (("--interface", "br0"),
                 ("--interface", "br0", "--dhcp-range", "10.77.0.100,10.77.0.150", "--no-ipv6-ra")):
        server = start_server(tmp_path, *args, "--http-addr", "10.77.0.1:8080", netns=lab_net.name)
        try:
            wait_ready(server)
            assert "ra: answering" not in server.log()
            done = solicit(client, 4)
            assert done.returncode == 1, f"{args}: unexpected advertisement {done.stdout}"
        finally:
            assert server.stop() == 0

"""DHCP against a real client: busybox udhcpc in a namespace joined to the lab bridge.

The server runs inside the lab namespace bound to br0; the client in its own namespace on a veth.
Nothing leaves the namespaces (network-safety rule)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.integration.pxe.conftest import start_server, wait_ready

UDHCPC_SCRIPT = "#!/bin/sh\nenv | sort > \"$ENV_OUT.$1\"\n"
PXE_BIOS = ["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000", "-x", "0x5e:010201",
            "-x", "0x61:00" + "11" * 16]


def udhcpc(netns: str, tmp_path, *args: str, tries: int = 3) -> tuple[int, dict[str, str]]:
    """Run one udhcpc exchange; returns (exit code, env of the 'bound' script call)."""
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    out = tmp_path / "env"
    for old in tmp_path.glob("env.*"):
        old.unlink()
    proc = subprocess.run(["ip", "netns", "exec", netns, "env", f"ENV_OUT={out}", "busybox", "udhcpc", "-i", "eth0",
                           "-n", "-q", "-f", "-t", str(tries), "-T", "1", "-A", "1", "-s", str(script),
                           "-O", "43", "-O", "60", "-O", "97", *args],
                          capture_output=True, text=True, timeout=30)
    bound = out.with_name("env.bound")
    env = {}
    if bound.exists():
        env = dict(line.split("=", 1) for line in bound.read_text().splitlines() if "=" in line)
    return proc.returncode, env


def test_proxy_mode_answers_a_pxe_client_and_ignores_a_plain_one(lab_net, tmp_path):
    client = lab_net.add_client_namespace(f"{lab_net.name}c", mac="52:54:00:00:00:33")
    server = start_server(tmp_path, "--interface", "br0", "--http-addr", "10.77.0.1:8080", netns=lab_net.name)
    try:
        wait_ready(server)
        code, env = udhcpc(client, tmp_path, *PXE_BIOS)
        assert code == 0, server.log()
        assert env["siaddr"] == "10.77.0.1"
        assert env["boot_file"] == "undionly.kpxe"
        assert env["serverid"] == "10.77.0.1"
        assert env.get("ip", "0.0.0.0") == "0.0.0.0"           # proxyDHCP never assigns an address
        assert env["vendor"] == "PXEClient"                      # option 60 echoed (PXE 2.1)
        assert env["tftp"] == "10.77.0.1"                        # option 66 as well as siaddr
        assert env["opt43"] == "060108ff"                        # discovery control = boot the file
        assert env["opt97"] == "00" + "11" * 16                  # client GUID echoed (RFC 4578)

        # iPXE (user class "iPXE") is chained to the HTTP script instead: no PXE -> iPXE loop.
        code, env = udhcpc(client, tmp_path, *PXE_BIOS, "-x", "0x4d:69505845")
        assert code == 0 and env["boot_file"] == "http://10.77.0.1:8080/boot.ipxe"

        # x64 UEFI gets ipxe.efi and no option 43 (so it asks port 4011, as pixiecore does).
        code, env = udhcpc(client, tmp_path, "-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007")
        assert code == 0 and env["boot_file"] == "ipxe.efi" and "opt43" not in env

        # UEFI HTTP boot (arch 16) gets an HTTP URL and option 60 = HTTPClient.
        code, env = udhcpc(client, tmp_path, "-V", "HTTPClient:Arch:00016:UNDI:003000", "-x", "0x5d:0010")
        assert code == 0 and env["boot_file"] == "http://10.77.0.1:8080/boot/ipxe.efi"
        assert env["vendor"] == "HTTPClient"

        # A DHCP client that is not PXE gets no answer at all from a proxy.
        code, env = udhcpc(client, tmp_path, tries=2)
        assert code != 0 and not env
    finally:
        assert server.stop() == 0, server.log()
    machines = json.loads((server.state_dir / "machines.json").read_text())["machines"]
    record = next(m for m in machines if m["mac"] == "52:54:00:00:00:33")
    assert "dhcp-offer" in record["stages"] and record["arch"] == "efi-x64-http"


def test_full_mode_leases_addresses_keeps_them_across_restarts_and_honours_static_leases(lab_net, tmp_path):
    plain = lab_net.add_client_namespace(f"{lab_net.name}p", mac="52:54:00:00:00:44")
    args = ("--interface", "br0", "--http-addr", "10.77.0.1:8080", "--dhcp-range", "10.77.0.50,10.77.0.60",
            "--router", "10.77.0.1", "--dns", "10.77.0.1", "--lease-time", "600")
    server = start_server(tmp_path, *args, netns=lab_net.name)
    try:
        wait_ready(server)
        code, env = udhcpc(plain, tmp_path)
        assert code == 0, server.log()
        first_ip = env["ip"]
        assert first_ip.startswith("10.77.0.") and 50 <= int(first_ip.rsplit(".", 1)[1]) <= 60
        assert env["router"] == "10.77.0.1" and env["dns"].strip() == "10.77.0.1"
        assert env["lease"] == "600" and env["subnet"] == "255.255.255.0"
        assert "boot_file" not in env or not env["boot_file"]      # not PXE: no boot file
    finally:
        assert server.stop() == 0, server.log()
    leases = json.loads((server.state_dir / "leases.json").read_text())["leases"]
    assert [(lease["mac"], lease["ip"]) for lease in leases] == [("52:54:00:00:00:44", first_ip)]

    # Restart: the same client gets the same address back; the inventory's node1 gets its static IP.
    node1 = lab_net.add_client_namespace(f"{lab_net.name}n", mac="52:54:00:00:00:01")
    server = start_server(tmp_path, *args, netns=lab_net.name)
    try:
        wait_ready(server)
        code, env = udhcpc(plain, tmp_path)
        assert code == 0 and env["ip"] == first_ip
        code, env = udhcpc(node1, tmp_path, *PXE_BIOS)
        assert code == 0 and env["ip"] == "10.77.0.21" and env["boot_file"] == "undionly.kpxe"
    finally:
        assert server.stop() == 0, server.log()


def test_full_dhcp_is_refused_without_an_interface_and_proxy_needs_one(tmp_path):
    from tests.integration.pxe.conftest import DATA_DIR

    proc = subprocess.run([sys.executable, "-m", "provisioner.cli.main", "serve", "--data-dir", str(DATA_DIR), "--dhcp-range", "10.0.0.5,10.0.0.9"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("provisioner: error: --interface is required for DHCP")


GARBAGE_SENDER = r"""
import random, socket, sys
rng = random.Random(5)
valid = bytes.fromhex(sys.argv[1])
packets = [b"", b"\x01", valid[:100], valid[:239], valid[:-40], valid + rng.randbytes(5000), rng.randbytes(8000)]
packets += [rng.randbytes(rng.randrange(1, 700)) for _ in range(300)]
packets += [valid[:i] + rng.randbytes(4) + valid[i + 4:] for i in range(0, 236, 4)]   # header fuzz, cookie kept
packets += [valid[:240] + rng.randbytes(rng.randrange(1, 60)) for _ in range(100)]     # option soup
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
sock.bind(("0.0.0.0", 68))
for p in packets:
    sock.sendto(p, ("255.255.255.255", 67))
    sock.sendto(p, ("10.77.0.1", 4011))
sock.settimeout(2)
replies = 0
try:
    while True:
        sock.recvfrom(4096)
        replies += 1
except socket.timeout:
    pass
print(len(packets), replies)
"""


def test_garbage_on_the_wire_gets_no_reply_and_the_server_keeps_serving(lab_net, tmp_path):
    from provisioner.pxe import dhcp_packet as wire

    client = lab_net.add_client_namespace(f"{lab_net.name}g", mac="52:54:00:00:00:55")
    subprocess.run(["ip", "-n", client, "addr", "add", "10.77.0.8/24", "dev", "eth0"], check=True)
    server = start_server(tmp_path, "--interface", "br0", "--http-addr", "10.77.0.1:8080", netns=lab_net.name)
    # A well-formed frame to mutate: a BOOTREPLY (op 2), which a server must never answer either.
    valid = wire.encode_packet(wire.DhcpPacket(op=wire.BOOTREPLY, xid=9, chaddr=bytes.fromhex("525400000055"),
                                               options={53: b"\x02", 60: b"PXEClient", 93: b"\x00\x00"}))
    try:
        wait_ready(server)
        proc = subprocess.run(["ip", "netns", "exec", client, sys.executable, "-c", GARBAGE_SENDER, valid.hex()],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        sent, replies = map(int, proc.stdout.split())
        assert sent > 400 and replies == 0
        metrics = subprocess.run(["ip", "netns", "exec", client, sys.executable, "-c",
                                  "import urllib.request; print(urllib.request.urlopen("
                                  "'http://10.77.0.1:8080/metrics', timeout=10).read().decode())"],
                                 capture_output=True, text=True, timeout=60).stdout
        malformed = next(line for line in metrics.splitlines() if line.startswith("provisioner_dhcp_malformed_total"))
        assert int(malformed.split()[1]) > 300      # the garbage did reach the server, and was dropped
        subprocess.run(["ip", "-n", client, "addr", "flush", "dev", "eth0"], check=True)
        code, env = udhcpc(client, tmp_path, *PXE_BIOS)
        assert code == 0 and env["boot_file"] == "undionly.kpxe"
        assert server.process.poll() is None
    finally:
        assert server.stop() == 0, server.log()

"""OS update in QEMU (TCG) through `provisioner serve`: a node on N updates itself to N+1 and boots the
other slot; a broken N+2 boots once, falls back to N+1 and is recorded failed (never tried again); a
downgrade is refused. The release tree is served under /assets/release/ in a lab namespace (no uplink);
the node gets GROUP/SERVER from its cloud-config (coreos.update), whose restart of update-engine.service
runs the agent at boot, as on CoreOS; locksmithd (strategy `reboot`) reboots the node when the agent
leaves its marker."""

from __future__ import annotations

import json
import os
import time

from provisioner.lab.netns import LabNetwork
from provisioner.lab.qemu import QemuVM, TapNic, VMConfig
from tests.integration.pxe.conftest import start_server, wait_ready
from tests.vm.image.helpers import GiB, disk_copy, grubenv, make_key, put_on_root, slot_marked, ssh_in_netns, table
from tests.vm.update.releases import bumped, copy_release, derive_release, point_current

CIDR, SERVER_IP = "10.76.0.1/24", "10.76.0.1"
MAC = "52:54:00:00:17:01"
BOOT_TIMEOUT = 600
USER_DATA = """#cloud-config
hostname: node-update
ssh_authorized_keys:
  - {key}
coreos:
  update:
    group: stable
    server: http://{server}:8080/assets/release
    reboot-strategy: reboot
"""


def wait_for_checks(path, done, timeout: float = 60) -> list[dict]:
    """The node's update-check entries in the server's machines.json (written a few seconds late)."""
    deadline = time.monotonic() + timeout
    while True:
        machines = json.loads(path.read_text())["machines"] if path.exists() else []
        checks = [e for m in machines if m["mac"] == MAC for e in m["history"] if e["stage"] == "update-check"]
        if done(checks) or time.monotonic() > deadline:
            return checks
        time.sleep(1)


def test_update_fallback_and_downgrade(built_image, tmp_path):
    key, public = make_key(tmp_path)
    disk = disk_copy(built_image.raw_image, tmp_path / "disk.img", 6 * GiB)
    put_on_root(disk, {"/var/lib/coreos-install/user_data": USER_DATA.format(key=public, server=SERVER_IP)})
    channel = tmp_path / "assets/release/stable"
    channel.mkdir(parents=True)
    n = copy_release(built_image, channel)
    n1, n2 = bumped(n, 1), bumped(n, 2)
    derive_release(built_image, channel, n1, tmp_path)
    derive_release(built_image, channel, n2, tmp_path, broken=True)
    point_current(channel, n1)

    netns = f"upd{os.getpid() % 10000}"
    net = LabNetwork.create(netns, CIDR)
    server = None
    try:
        net.add_tap("tap0")
        server = start_server(tmp_path, "--interface", "br0", "--http-addr", f"{SERVER_IP}:8080", "--dhcp-range",
                              "10.76.0.100,10.76.0.150", "--assets-dir", str(tmp_path / "assets"), netns=netns)
        wait_ready(server)

        def vm(name: str) -> QemuVM:
            return QemuVM(VMConfig(name=name, workdir=tmp_path, memory_mib=1024, cpus=2, disk=disk, boot="c",
                                   nic=TapNic(netns=netns, tap="tap0", mac=MAC)))

        def node(command: str, timeout: float = 180) -> str:
            leases = json.loads((server.state_dir / "leases.json").read_text())
            ip = next(lease["ip"] for lease in leases["leases"] if lease["mac"] == MAC)
            return ssh_in_netns(netns, ip, key, command, timeout)

        def status() -> dict:
            return json.loads(node("sudo provisioner node update status --json"))

        def apply_in_background() -> None:
            """`apply` as update-engine.service runs it: locksmithd reboots the node once it is written."""
            node("sudo systemd-run -p StandardOutput=journal+console /usr/bin/provisioner node update apply")

        # 1. N boots from USR-A; its cloud-config restarts update-engine.service, which installs N+1 in
        #    USR-B; locksmithd sees the marker and reboots (QEMU runs with -no-reboot: it exits).
        with vm("n") as first:
            first.wait_for_serial(slot_marked("A"), BOOT_TIMEOUT)
            first.wait_for_serial(rf"{n1} written to USR-B: reboot to use it", BOOT_TIMEOUT)
            first.process.wait(timeout=300)
        parts = {p["name"]: p for p in table(disk)["partitions"]}
        assert parts["USR-B"].get("attrs") == "GUID:49,52"   # priority 2, tries 1, not successful
        assert parts["USR-A"].get("attrs") == "GUID:48,56"   # priority 1, successful: the fallback
        assert grubenv(disk)["usr_b_tries"] == "1"

        # 2. GRUB tries USR-B once; the healthy node marks it; the channel has nothing newer.
        with vm("n1") as second:
            second.wait_for_serial(r"provisioner: booting USR-B", 240)
            second.wait_for_serial(slot_marked("B"), BOOT_TIMEOUT)
            second.wait_for_serial(rf"{n1} is the channel's current version", BOOT_TIMEOUT)
            doc = status()
            assert doc["booted"] == {"slot": "USR-B", "version": n1}
            assert doc["passive"] == {"slot": "USR-A", "version": n}
            assert doc["slots"]["b"]["successful"] and doc["failed_versions"] == []
            # 3. N+2 (signed, but its USR does not mount) goes into USR-A; locksmithd reboots.
            point_current(channel, n2)
            apply_in_background()
            second.wait_for_serial(rf"{n2} written to USR-A: reboot to use it", BOOT_TIMEOUT)
            second.process.wait(timeout=300)
        with vm("n2") as third:
            third.wait_for_serial(r"provisioner: booting USR-A", 240)
            third.wait_for_serial(r"provisioner-initrd: FAILED: USR .* does not mount", 240)
            third.process.wait(timeout=60)

        # 4. GRUB falls back to USR-B (N+1); the agent records N+2 failed and does not try it again.
        with vm("n1-again") as fourth:
            fourth.wait_for_serial(r"provisioner: booting USR-B", 240)
            fourth.wait_for_serial(slot_marked("B"), BOOT_TIMEOUT)
            fourth.wait_for_serial(rf"{n2} fell back before on this machine: not tried again", BOOT_TIMEOUT)
            doc = status()
            assert doc["booted"] == {"slot": "USR-B", "version": n1}
            assert doc["failed_versions"] == [n2] and doc["state"] == "IDLE" and doc["need_reboot"] is None
            assert doc["slots"]["a"] == {"priority": 2, "tries": 0, "successful": False}
            # 5. The channel goes back to N: refused, naming both versions; nothing is written.
            point_current(channel, n)
            refused = node("sudo provisioner node update check 2>&1; echo exit=$?")
            assert f"refusing to downgrade: the channel offers {n}, older than the booted {n1}" in refused
            assert "exit=1" in refused
            assert status()["slots"]["b"]["successful"]
            node("sudo systemd-run --on-active=1 systemctl poweroff")
            fourth.process.wait(timeout=180)
        parts = {p["name"]: p for p in table(disk)["partitions"]}
        assert parts["USR-B"].get("attrs") == "GUID:48,56"   # priority 1, successful: the slot in use
        # The server saw each check: the node's last one, from N+1 in USR-B, with N+2 failed.
        checks = wait_for_checks(server.state_dir / "machines.json", lambda c: c and c[-1]["offered"] == n)
        assert checks[-1]["booted"] == n1 and checks[-1]["slot"] == "USR-B" and checks[-1]["failed"] == n2
    finally:
        if server is not None:
            server.stop()
        net.destroy()

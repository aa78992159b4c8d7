"""QEMU boots the built image (TCG): BIOS and UEFI from disk, the A/B fallback under Secure Boot, and PXE
kernel+initrd diskless; SSH with a key given by cloud-config (disk boots: restricted user networking forwarded to
127.0.0.1; the diskless boot: a lab namespace with `provisioner serve`)."""

from __future__ import annotations

import json
import os
import time

from provisioner.disk.layout import MAGIC_DISK_GUID, BootAttributes
from provisioner.image.esp import get_file, put_files
from provisioner.lab.netns import LabNetwork
from provisioner.lab.qemu import QemuVM, TapNic, UserNic, VMConfig
from tests.fixtures.system import free_port
from tests.integration.pxe.conftest import start_server, wait_ready
from tests.vm.image.helpers import (
    GiB,
    disk_copy,
    grubenv,
    make_key,
    part,
    put_on_root,
    set_slots,
    slot_marked,
    ssh,
    ssh_in_netns,
    table,
    user_data,
)

BOOTED = slot_marked("A")
BOOT_TIMEOUT = 420


def _vm(tmp_path, name, port, **kwargs) -> QemuVM:
    return QemuVM(VMConfig(name=name, workdir=tmp_path, memory_mib=kwargs.pop("memory_mib", 1024), cpus=2,
                           nic=UserNic(hostfwd={port: 22}), **kwargs))


def _check_booted_disk(port, key, firmware, hostname):
    """What a disk boot must show: cloud-config applied, /usr ro from USR-A, / on p9,
    ROOT grown to the 6 GiB disk, backup GPT at the disk end, disk GUID randomised."""
    assert ssh(port, key, "hostname").strip() == hostname
    usr = ssh(port, key, "findmnt -n -o SOURCE,FSTYPE,OPTIONS /usr").split()
    assert usr[0] == "/dev/vda3" and usr[1] == "squashfs" and usr[2].split(",")[0] == "ro"
    assert ssh(port, key, "findmnt -n -o SOURCE /").strip() == "/dev/vda9"
    root_bytes = int(ssh(port, key, "sudo blockdev --getsize64 /dev/vda9"))
    fs_bytes = int(ssh(port, key, "df -B1 --output=size / | tail -1"))
    gpt = json.loads(ssh(port, key, "sudo sfdisk --json /dev/vda"))["partitiontable"]
    efi = ssh(port, key, "test -d /sys/firmware/efi && echo uefi || echo bios").strip()
    ssh(port, key, "sudo sync")
    assert efi == firmware
    assert root_bytes > 3.5 * GiB and fs_bytes > 3 * GiB  # from 1 GiB in the image to the 6 GiB disk end
    assert gpt["lastlba"] == 6 * GiB // 512 - 34
    assert gpt["id"].upper() != MAGIC_DISK_GUID


def _disk_preferring_a_corrupt_usr_b(built_image, tmp_path, hostname):
    """(key, disk): an image copy where an "update" made USR-B (garbage) the preferred slot with one try."""
    key, public = make_key(tmp_path)
    disk = disk_copy(built_image.raw_image, tmp_path / "disk.img", 6 * GiB)
    put_on_root(disk, {"/var/lib/coreos-install/user_data": user_data(public, hostname)})
    set_slots(disk, {"a": BootAttributes(1, 0, True), "b": BootAttributes(2, 1, False)})
    usr_b = part(disk, "USR-B")
    with open(disk, "r+b") as handle:
        handle.seek(usr_b["start"] * 512)
        handle.write(b"\xde\xad\xbe\xef" * (1 << 18))
    return key, disk


def test_uefi_boot_from_disk(built_image, tmp_path):
    key, public = make_key(tmp_path)
    disk = disk_copy(built_image.raw_image, tmp_path / "disk.img", 6 * GiB)
    put_on_root(disk, {"/var/lib/coreos-install/user_data": user_data(public, "node-uefi")})
    port = free_port()
    with _vm(tmp_path, "uefi", port, disk=disk, firmware="uefi") as vm:
        vm.wait_for_serial(BOOTED, BOOT_TIMEOUT)
        _check_booted_disk(port, key, "uefi", "node-uefi")


def test_bios_boot_from_disk(built_image, tmp_path):
    """BIOS boot of the disk image. GRUB's fallback from a USR-B that does not mount is proven under BIOS by
    the update test (tests/vm/update, an agent-written broken N+2) and under Secure Boot below."""
    key, public = make_key(tmp_path)
    disk = disk_copy(built_image.raw_image, tmp_path / "disk.img", 6 * GiB)
    put_on_root(disk, {"/var/lib/coreos-install/user_data": user_data(public, "node-bios")})
    port = free_port()
    with _vm(tmp_path, "bios", port, disk=disk) as vm:
        vm.wait_for_serial(r"provisioner: booting USR-A", 120)
        vm.wait_for_serial(BOOTED, BOOT_TIMEOUT)
        _check_booted_disk(port, key, "bios", "node-bios")
    parts = {p["name"]: p for p in table(disk)["partitions"]}
    assert parts["USR-A"].get("attrs") == "GUID:48,56"  # priority 1, successful
    assert grubenv(disk)["usr_a_successful"] == "1"


def test_secure_boot_enforcing_with_ab_fallback_and_a_tampered_kernel_refused(built_image, tmp_path):
    """UEFI with Secure Boot enforcing and Microsoft's keys (OVMF_CODE_4M.secboot.fd + OVMF_VARS_4M.ms.fd),
    as servers ship: the ESP's signed chain (shim -> Debian's GRUB -> Debian's kernel) boots; the A/B
    fallback works there too (USR-B garbage, preferred, one try); a kernel changed by one byte is refused."""
    key, disk = _disk_preferring_a_corrupt_usr_b(built_image, tmp_path, "node-sb")
    port = free_port()
    with _vm(tmp_path, "sb-b", port, disk=disk, firmware="uefi", secure_boot=True) as first:
        first.wait_for_serial(r"provisioner: booting USR-B", 240)
        first.wait_for_serial(r"provisioner-initrd: FAILED: USR .* does not mount", 240)
        first.process.wait(timeout=60)
    with _vm(tmp_path, "sb-a", port, disk=disk, firmware="uefi", secure_boot=True) as second:
        second.wait_for_serial(r"provisioner: booting USR-A", 240)
        second.wait_for_serial(BOOTED, BOOT_TIMEOUT)
        assert "SecureBoot enabled" in ssh(port, key, "mokutil --sb-state")
        _check_booted_disk(port, key, "uefi", "node-sb")
        assert "Secure boot enabled" in ssh(port, key, "sudo dmesg")  # the kernel saw it too
        ssh(port, key, "sudo systemctl poweroff || true")
        second.process.wait(timeout=180)
    assert grubenv(disk)["usr_a_successful"] == "1" and grubenv(disk)["usr_b_tries"] == "0"

    esp = f"{disk}@@{part(disk, 'EFI-SYSTEM')['start'] * 512}"
    kernel = bytearray(get_file(esp, "/flatcar/vmlinuz-a"))
    kernel[len(kernel) // 2] ^= 0x01
    put_files(esp, {"/flatcar/vmlinuz-a": bytes(kernel)})
    with _vm(tmp_path, "sb-tampered", port, disk=disk, firmware="uefi", secure_boot=True) as third:
        third.wait_for_serial(r"provisioner: booting USR-A", 240)
        third.wait_for_serial(r"bad shim signature", 120)
        time.sleep(5)
        assert "Linux version" not in third.serial_text()


def test_pxe_kernel_and_initrd_boot_diskless(built_image, tmp_path):
    """The PXE kernel + initrd without a disk, on a lab bridge (no uplink): `provisioner serve` gives the
    address (full DHCP) and the cloud-config (/assets/), the live system runs from RAM."""
    key, public = make_key(tmp_path)
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "cc.yml").write_text(user_data(public, "node-pxe"))
    netns, mac = f"imgpxe{os.getpid() % 10000}", "52:54:00:00:07:07"
    net = LabNetwork.create(netns, "10.75.0.1/24")
    server = None
    try:
        net.add_tap("tap0")
        server = start_server(tmp_path, "--interface", "br0", "--http-addr", "10.75.0.1:8080", "--dhcp-range",
                              "10.75.0.100,10.75.0.150", "--assets-dir", str(assets), netns=netns)
        wait_ready(server)
        append = ("console=ttyS0,115200n8 cloud-config-url=http://10.75.0.1:8080/assets/cc.yml "
                  'provisioner.run="/bin/echo PXE-HOOK-RAN"')
        with QemuVM(VMConfig(name="pxe", workdir=tmp_path, memory_mib=2048, cpus=2, kernel=built_image.pxe_kernel,
                             initrd=built_image.pxe_initrd, append=append,
                             nic=TapNic(netns=netns, tap="tap0", mac=mac))) as vm:
            vm.wait_for_serial(r"provisioner-initrd: live system", 180)
            vm.wait_for_serial(r"applied cloud-config-url=http://10.75.0.1:8080/assets/cc.yml: \d+ module\(s\) ok, "
                               r"0 failed", BOOT_TIMEOUT)
            vm.wait_for_serial(r"PXE-HOOK-RAN", 120)
            leases = json.loads((server.state_dir / "leases.json").read_text())
            ip = next(lease["ip"] for lease in leases["leases"] if lease["mac"] == mac)
            assert ssh_in_netns(netns, ip, key, "findmnt -n -o FSTYPE /").strip() == "tmpfs"
            assert ssh_in_netns(netns, ip, key, "findmnt -n -o FSTYPE /usr").strip() == "squashfs"
            assert ssh_in_netns(netns, ip, key, "hostname").strip() == "node-pxe"
            assert "vda" not in ssh_in_netns(netns, ip, key, "cat /proc/partitions")
    finally:
        if server is not None:
            server.stop()
        net.destroy()

"""Helpers of the image VM tests: image copies, a user_data on ROOT, SSH into the guest, A/B slots."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from provisioner.demo.boot_chain import ssh_argv
from provisioner.disk.layout import BootAttributes, encode_boot_attributes
from provisioner.image.esp import get_file, put_files
from provisioner.node.slots import SLOTS, decode_grubenv, encode_grubenv, env_from_attributes
from provisioner.node.update.boot_success import PROG as BOOT_SUCCESS

GiB = 1 << 30


def slot_marked(slot: str = "A") -> str:
    """The console line (a regex) of provisioner-boot-success marking USR-<slot> of /dev/vda successful."""
    return rf"{BOOT_SUCCESS}: USR-{slot} \(/dev/vda\) marked successful"


def table(image: Path) -> dict:
    out = subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["partitiontable"]


def part(image: Path, label: str) -> dict:
    return next(p for p in table(image)["partitions"] if p["name"] == label)


def disk_copy(raw: Path, target: Path, size: int) -> Path:
    """A sparse copy of the image on a disk of `size` bytes (bigger than the image: ROOT must grow)."""
    subprocess.run(["cp", "--sparse=always", str(raw), str(target)], check=True)
    with open(target, "r+b") as handle:
        handle.truncate(size)
    return target


def put_on_root(image: Path, files: dict[str, str]) -> None:
    """Write files into ROOT (ext4) of an image copy, as `provisioner install -c` does."""
    put_on_partition(image, "ROOT", files)


def put_on_partition(image: Path, label: str, files: dict[str, str]) -> None:
    """Write files into the filesystem of partition `label` (ROOT ext4, OEM btrfs) of an image copy."""
    p = part(image, label)
    loop = subprocess.run(["losetup", "-f", "--show", "-o", str(p["start"] * 512), "--sizelimit",
                           str(p["size"] * 512), str(image)], capture_output=True, text=True, check=True).stdout.strip()
    mnt = image.parent / f"{label.lower()}-mnt"
    mnt.mkdir(exist_ok=True)
    try:
        subprocess.run(["mount", loop, str(mnt)], check=True)
        try:
            for name, text in files.items():
                path = mnt / name.lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


def user_data(public_key: str, hostname: str) -> str:
    return f"#cloud-config\nhostname: {hostname}\nssh_authorized_keys:\n  - {public_key}\n"


def make_key(directory: Path) -> tuple[Path, str]:
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key, key.with_suffix(".pub").read_text().strip()


def ssh(port: int, key: Path, command: str, timeout: float = 120) -> str:
    """Run command as core@127.0.0.1:port, retrying until sshd answers; returns stdout."""
    argv = ["ssh", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no", "-o",
            "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "BatchMode=yes", "-o",
            "LogLevel=ERROR", "core@127.0.0.1", command]
    return _ssh_until_it_answers(argv, command, timeout)


def ssh_in_netns(netns: str, ip: str, key: Path, command: str, timeout: float = 120) -> str:
    """Run command as core@ip from inside the lab namespace, retrying until sshd answers; returns stdout."""
    return _ssh_until_it_answers(ssh_argv(netns, key, ip, command), command, timeout)


def _ssh_until_it_answers(argv: list[str], command: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if result.returncode == 0:
            return result.stdout
        if result.returncode != 255 or time.monotonic() > deadline:
            raise AssertionError(f"ssh {command!r}: exit {result.returncode}: {result.stderr.strip()}")
        time.sleep(3)


def set_slots(image: Path, slots: dict[str, BootAttributes]) -> None:
    """Set the A/B bits in an image copy the way an updater does: GPT bits and the GRUB env mirror."""
    argv = ["sgdisk"]
    for slot in SLOTS:
        if slot.key in slots:
            argv.append(f"--attributes={slot.number}:=:{encode_boot_attributes(slots[slot.key]):016x}")
    subprocess.run([*argv, str(image)], check=True, capture_output=True)
    esp = f"{image}@@{part(image, 'EFI-SYSTEM')['start'] * 512}"
    put_files(esp, {"/grub/grubenv": encode_grubenv(env_from_attributes(slots))})


def grubenv(image: Path) -> dict[str, str]:
    return decode_grubenv(get_file(f"{image}@@{part(image, 'EFI-SYSTEM')['start'] * 512}", "/grub/grubenv"))



"""A/B USR slots: the GPT priority/tries/successful bits and their mirror in GRUB's environment block.

Debian's GRUB has no `gptprio` module (coreos/grub has it), so grub.cfg reads the bits from
`/grub/grubenv` on the ESP as usr_a_priority/usr_a_tries/usr_a_successful (and usr_b_...), picks a
slot the way gptprio.next does, and counts its tries down in that file. The GPT stays the record
an updater or `provisioner install` reads; `mark-success` (provisioner-boot-success.service, once
multi-user is reached) copies GRUB's counts back into the GPT, marks the booted slot successful
and rewrites the environment block from the GPT.

Pure: grubenv encode/decode, `after_successful_boot`. I/O: `mark_success` (the GPT read through
disk/gpt.py, sgdisk, a temporary mount of the ESP) and
`python3 -m provisioner.node.slots mark-success|show`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from provisioner.core.commands import run
from provisioner.core.entry import run_main
from provisioner.disk.blockdev import partition_path
from provisioner.disk.gpt import GptTable, Partition, read_gpt
from provisioner.disk.layout import (
    TYPE_EFI,
    USR_A,
    USR_A_PARTUUID,
    USR_B,
    USR_B_PARTUUID,
    BootAttributes,
    encode_boot_attributes,
)
from provisioner.errors import CommandError, DiskError, ProvisionerError, UsageError
from provisioner.node.kernel_cmdline import KernelCmdline, read_kernel_cmdline

PROG = "provisioner-slots"

GRUBENV_SIZE = 1024  # GRUB_ENVBLK_DEFCFG size: grub-editenv makes exactly 1 KiB
GRUBENV_HEADER = b"# GRUB Environment Block\n"
GRUBENV_PATH = "grub/grubenv"  # on the ESP


@dataclass(frozen=True)
class Slot:
    key: str  # "a" or "b": vmlinuz-<key>, usr_<key>_* in grubenv
    label: str
    number: int
    partuuid: str


SLOTS = (Slot("a", "USR-A", USR_A, USR_A_PARTUUID), Slot("b", "USR-B", USR_B, USR_B_PARTUUID))


def slot_by_partuuid(partuuid: str) -> Slot | None:
    for slot in SLOTS:
        if slot.partuuid.lower() == partuuid.lower():
            return slot
    return None


# -- grubenv (pure) ---------------------------------------------------------------------------------

def encode_grubenv(values: dict[str, str]) -> bytes:
    """GRUB's 1 KiB environment block; raises ValueError when the values do not fit."""
    body = GRUBENV_HEADER
    for key, value in values.items():
        escaped = str(value).replace("\\", "\\\\").replace("\n", "\\\n")
        body += f"{key}={escaped}\n".encode()
    if len(body) > GRUBENV_SIZE:
        raise ValueError(f"grubenv: {len(body)} bytes do not fit in {GRUBENV_SIZE}")
    return body + b"#" * (GRUBENV_SIZE - len(body))


def decode_grubenv(block: bytes) -> dict[str, str]:
    """Parse an environment block; raises ValueError when the header is missing."""
    if not block.startswith(GRUBENV_HEADER):
        raise ValueError("not a GRUB environment block (header missing)")
    values: dict[str, str] = {}
    for line in block[len(GRUBENV_HEADER):].decode("utf-8", "replace").split("\n"):
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key] = value.replace("\\\\", "\\")
    return values


def env_from_attributes(attributes: dict[str, BootAttributes]) -> dict[str, str]:
    env: dict[str, str] = {}
    for slot in SLOTS:
        boot = attributes.get(slot.key, BootAttributes())
        env[f"usr_{slot.key}_priority"] = str(boot.priority)
        env[f"usr_{slot.key}_tries"] = str(boot.tries)
        env[f"usr_{slot.key}_successful"] = "1" if boot.successful else "0"
    return env


def _int(env: dict[str, str], key: str, default: int) -> int:
    try:
        return max(0, min(15, int(env[key])))
    except (KeyError, ValueError):
        return default


def after_successful_boot(gpt: dict[str, BootAttributes], env: dict[str, str],
                          booted: str) -> dict[str, BootAttributes]:
    """New GPT bits after slot `booted` reached multi-user.

    Tries left come from GRUB's environment (GRUB counts down there, never in the GPT);
    priority and successful stay as the GPT says; the booted slot becomes successful."""
    result = {}
    for slot in SLOTS:
        boot = gpt.get(slot.key, BootAttributes())
        boot = replace(boot, tries=min(boot.tries, _int(env, f"usr_{slot.key}_tries", boot.tries)))
        if slot.key == booted:
            boot = replace(boot, successful=True, tries=0)
        result[slot.key] = boot
    return result


# -- I/O --------------------------------------------------------------------------------------------

def slot_partitions(table: GptTable) -> dict[str, Partition]:
    """{slot key: its GPT entry} for the USR slots present in `table`."""
    found = {}
    for part in table.entries:
        slot = slot_by_partuuid(part.partuuid)
        if slot is not None:
            found[slot.key] = part
    return found


def write_slot_attributes(disk: str, table: GptTable, new: dict[str, BootAttributes]) -> None:
    """Write the priority/tries/successful bits of the slots in `new` (other bits kept)."""
    current = slot_partitions(table)
    argv = ["sgdisk"]
    for slot in SLOTS:
        if slot.key in new and slot.key in current:
            raw = current[slot.key].attributes
            argv.append(f"--attributes={slot.number}:=:{encode_boot_attributes(new[slot.key], raw):016x}")
    if len(argv) > 1:
        run([*argv, disk])


def booted_partuuid(cmdline: KernelCmdline) -> str | None:
    """The PARTUUID in `mount.usr=PARTUUID=...` of a kernel command line, else None (a live boot)."""
    usr = cmdline.get("mount.usr") or ""
    return usr[len("PARTUUID="):] if usr.startswith("PARTUUID=") else None


def disks() -> list[str]:
    """Whole disks the kernel knows (no partitions, loop, ram or rom devices)."""
    found = []
    for name in sorted(os.listdir("/sys/block")):
        if name.startswith(("loop", "ram", "sr", "zram", "dm-", "md")):
            continue
        found.append(f"/dev/{name}")
    return found


def find_slot_disk(partuuid: str) -> tuple[str, GptTable]:
    """(disk, its GPT) of the disk holding the partition with this PARTUUID; raises DiskError."""
    unreadable = []
    for disk in disks():
        try:
            table = read_gpt(disk)
        except ProvisionerError as exc:
            unreadable.append(f"{disk}: {' '.join(str(exc).split())[-120:]}")
            continue
        if any(part.partuuid.lower() == partuuid.lower() for part in table.entries):
            return disk, table
    hint = f" (could not read {'; '.join(unreadable)})" if unreadable else ""
    if unreadable and os.geteuid() != 0:
        hint += " (run it as root)"
    raise DiskError(f"no disk has a partition with PARTUUID {partuuid}{hint}")


def _esp_node(disk: str, table: GptTable) -> str:
    for part in table.entries:
        if part.type_guid == TYPE_EFI:
            return partition_path(disk, part.number)
    raise DiskError(f"{disk}: no EFI-SYSTEM partition to hold the GRUB environment")


def _mount_esp(node: str, mnt: str, options: str) -> None:
    """Mount the ESP, retrying: right after the first-boot table rewrite, udev may still be
    re-creating the partition nodes. Raises CommandError with mount's whole message."""
    run(["modprobe", "-q", "vfat"], check=False)
    for attempt in range(10):
        try:
            run(["mount", "-t", "vfat", "-o", options, node, mnt])
            return
        except CommandError as exc:
            if attempt == 9:
                raise CommandError(exc.argv, exc.returncode, stderr=" ".join(exc.stderr.split())) from None
            time.sleep(1)


@contextlib.contextmanager
def esp_directory(disk: str, table: GptTable, options: str = "rw") -> Iterator[Path]:
    """The ESP's root directory: where it is already mounted (systemd-gpt-auto-generator mounts
    it on /boot), else a temporary mount under /run."""
    node = _esp_node(disk, table)
    mounted = run(["findmnt", "-n", "-o", "TARGET", "--source", node], check=False).stdout.split()
    if mounted:
        yield Path(mounted[0])
        return
    with tempfile.TemporaryDirectory(prefix="esp-", dir="/run") as mnt:
        _mount_esp(node, mnt, options)
        try:
            yield Path(mnt)
        finally:
            run(["umount", mnt])


def write_grubenv_on_esp(disk: str, table: GptTable, env: dict[str, str]) -> None:
    """Rewrite grub/grubenv on the disk's ESP (vfat)."""
    with esp_directory(disk, table) as esp:
        path = esp / GRUBENV_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(encode_grubenv(env))
            handle.flush()
            os.fsync(handle.fileno())


def read_grubenv_on_esp(disk: str, table: GptTable) -> dict[str, str]:
    with esp_directory(disk, table, "ro") as esp:
        try:
            return decode_grubenv((esp / GRUBENV_PATH).read_bytes())
        except (OSError, ValueError):
            return {}


def mark_success(cmdline: KernelCmdline) -> str:
    """Mark the booted slot successful (GPT and grubenv); returns a one-line report."""
    partuuid = booted_partuuid(cmdline)
    if partuuid is None:
        return "not booted from a USR slot (live system): nothing to mark"
    slot = slot_by_partuuid(partuuid)
    if slot is None:
        return f"booted from PARTUUID {partuuid}, which is no A/B slot: nothing to mark"
    disk, table = find_slot_disk(partuuid)
    env = read_grubenv_on_esp(disk, table)
    bits = {key: part.boot for key, part in slot_partitions(table).items()}
    new = after_successful_boot(bits, env, slot.key)
    write_slot_attributes(disk, table, new)
    write_grubenv_on_esp(disk, table, env_from_attributes(new))
    return f"{slot.label} ({disk}) marked successful"


def booted_slot_successful(cmdline: KernelCmdline) -> bool:
    """Whether the GPT marks the slot this system booted from successful. A live system (or a /usr that
    is no A/B slot) has no slot to wait for: True. Raises DiskError when the slot's disk is not found."""
    partuuid = booted_partuuid(cmdline)
    slot = slot_by_partuuid(partuuid) if partuuid else None
    if partuuid is None or slot is None:
        return True
    _, table = find_slot_disk(partuuid)
    return slot_partitions(table)[slot.key].boot.successful


def show(cmdline: KernelCmdline) -> None:
    """Print the slots' GPT bits and GRUB's environment block (stdout)."""
    disk, table = find_slot_disk(booted_partuuid(cmdline) or USR_A_PARTUUID)
    for key, part in sorted(slot_partitions(table).items()):
        bits = part.boot
        print(f"usr_{key}: priority={bits.priority} tries={bits.tries} successful={int(bits.successful)}")
    print(json.dumps(read_grubenv_on_esp(disk, table), sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def body() -> None:
        if args == ["mark-success"]:
            print(f"{PROG}: {mark_success(read_kernel_cmdline())}", flush=True)
        elif args == ["show"]:
            show(read_kernel_cmdline())
        else:
            raise UsageError("usage: python3 -m provisioner.node.slots mark-success|show")

    return run_main(PROG, body)


if __name__ == "__main__":
    sys.exit(main())

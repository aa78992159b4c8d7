"""Writing the passive USR slot and flipping its boot bits, in the order that keeps a machine bootable.

1. The passive slot is made unbootable first (priority 0, tries 0, successful 0; GPT and GRUB's
   grubenv mirror): a write that fails or is cut off half way can never be booted.
2. The verified USR image is written to the partition and read back (SHA-256 of the written bytes).
3. Its kernel and initrd go to the ESP as vmlinuz-<slot>, initrd-<slot> (a temporary name, fsync, rename).
4. Only then the slot gets priority above the running one, tries 1, successful 0 — as Flatcar's
   postinst does with `cgpt add -S0 -T1` + `cgpt prioritize` (reference/updates.md §2.6) — and
   grubenv is rewritten from the GPT. GRUB boots it once; provisioner-boot-success marks it successful
   when the node is healthy, or the next boot falls back to the running slot.

The running slot's bits are left as they are, except its priority, which goes below the new slot's.
Pure: `disabled`, `activated`, `current_bits`. I/O: `write_update` and its steps.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from provisioner.core.files import fsync_path
from provisioner.disk.blockdev import partition_path
from provisioner.disk.gpt import GptTable, read_gpt
from provisioner.disk.layout import BootAttributes
from provisioner.errors import DiskError, VerifyError
from provisioner.node.slots import (
    SLOTS,
    Slot,
    env_from_attributes,
    esp_directory,
    read_grubenv_on_esp,
    slot_partitions,
    write_grubenv_on_esp,
    write_slot_attributes,
)
from provisioner.node.update.manifest import PayloadFile
from provisioner.node.update.payload import CHUNK, sha256_of

log = logging.getLogger("provisioner.node.update")

NEW_PRIORITY, OLD_PRIORITY = 2, 1
KERNEL_DIR = "flatcar"   # on the ESP, as grub.cfg reads it


def other_slot(slot: Slot) -> Slot:
    return next(s for s in SLOTS if s.key != slot.key)


def current_bits(gpt: dict[str, BootAttributes], env: dict[str, str]) -> dict[str, BootAttributes]:
    """The slots' bits as GRUB sees them: GRUB counts tries down in grubenv only, so the lower count wins."""
    bits = {}
    for slot in SLOTS:
        boot = gpt.get(slot.key, BootAttributes())
        try:
            tries = min(boot.tries, max(0, int(env[f"usr_{slot.key}_tries"])))
        except (KeyError, ValueError):
            tries = boot.tries
        bits[slot.key] = replace(boot, tries=tries)
    return bits


def disabled(bits: dict[str, BootAttributes], target: str) -> dict[str, BootAttributes]:
    """Step 1: the target slot can no longer be chosen by GRUB (pure)."""
    return {**bits, target: BootAttributes(priority=0, tries=0, successful=False)}


def activated(bits: dict[str, BootAttributes], target: str) -> dict[str, BootAttributes]:
    """Step 4: the target slot is tried once, before the running one, which stays the fallback (pure)."""
    result = dict(bits)
    for key, boot in bits.items():
        if key != target:
            result[key] = replace(boot, priority=OLD_PRIORITY)
    result[target] = BootAttributes(priority=NEW_PRIORITY, tries=1, successful=False)
    return result


def set_bits(disk: str, bits: dict[str, BootAttributes]) -> GptTable:
    """Write `bits` to the GPT (other attribute bits kept) and GRUB's mirror; returns the table re-read."""
    write_slot_attributes(disk, read_gpt(disk), bits)
    table = read_gpt(disk)
    write_grubenv_on_esp(disk, table, env_from_attributes(bits))
    return table


def write_usr(partition: str, source: Path, expected: PayloadFile) -> None:
    """Copy the verified USR image onto `partition` and read it back; raises DiskError/VerifyError."""
    size = os.path.getsize(source)
    if size != expected.size:
        raise VerifyError(f"{source}: {size} bytes, the manifest says {expected.size}")
    with open(partition, "rb") as probe:
        capacity = probe.seek(0, os.SEEK_END)
    if size > capacity:
        raise DiskError(f"{partition}: {capacity} bytes, too small for the {size}-byte USR image")
    with open(source, "rb") as src, open(partition, "r+b", buffering=0) as dst:
        while chunk := src.read(CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[dst.write(view):]
        os.fsync(dst.fileno())
    # Drop the cached pages so the read-back sees the device, not what we just wrote into the cache.
    with open(partition, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    written = sha256_of(Path(partition), size)
    if written != expected.sha256:
        raise VerifyError(f"{partition}: the written USR image reads back with sha256 {written[:16]}..., "
                          f"not {expected.sha256[:16]}...")


def write_boot_files(esp: Path, slot: Slot, kernel: Path, initrd: Path) -> None:
    directory = esp / KERNEL_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for source, name in ((kernel, f"vmlinuz-{slot.key}"), (initrd, f"initrd-{slot.key}")):
        temporary = directory / f"{name}.new"
        # Remove the old file first: a 128 MiB ESP may not hold two kernels and initrds of each slot
        # (flatcar/Flatcar#1850: a full /boot failed updates and left partial files behind).
        (directory / name).unlink(missing_ok=True)
        with open(source, "rb") as src, open(temporary, "wb") as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(temporary, directory / name)
    fsync_path(directory)


def write_update(disk: str, target: Slot, usr: Path, usr_expected: PayloadFile, kernel: Path, initrd: Path) -> None:
    """Steps 1-4 of the module docstring on `disk` (the booted disk); raises DiskError/VerifyError/CommandError.

    On any failure after step 1 the target slot stays unbootable and the running slot is untouched."""
    table = read_gpt(disk)
    env = read_grubenv_on_esp(disk, table)
    bits = current_bits({key: part.boot for key, part in slot_partitions(table).items()}, env)
    log.info("update: disabling %s before writing it", target.label)
    set_bits(disk, disabled(bits, target.key))
    log.info("update: writing %s (%d bytes)", target.label, usr_expected.size)
    write_usr(partition_path(disk, target.number), usr, usr_expected)
    table = read_gpt(disk)
    with esp_directory(disk, table) as esp:
        write_boot_files(esp, target, kernel, initrd)
    log.info("update: %s gets priority %d, 1 try", target.label, NEW_PRIORITY)
    set_bits(disk, activated(disabled(bits, target.key), target.key))

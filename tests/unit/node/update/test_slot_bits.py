"""The A/B attribute transitions of an update, written with sgdisk onto a sparse image file and read
back with disk/gpt.py (both GPT copies, other attribute bits kept)."""

import hashlib
import subprocess

import pytest

from provisioner.disk.gpt import read_gpt
from provisioner.disk.layout import BootAttributes
from provisioner.errors import VerifyError
from provisioner.image.partition_table import image_partition_table, sgdisk_argv
from provisioner.node.slots import SLOTS, slot_partitions, write_slot_attributes
from provisioner.node.update.manifest import PayloadFile
from provisioner.node.update.slot_writer import activated, current_bits, disabled, other_slot, write_usr

A, B = SLOTS
SIZES = {"EFI-SYSTEM": 2, "BIOS-BOOT": 1, "USR-A": 4, "USR-B": 4, "OEM": 1, "OEM-CONFIG": 1, "ROOT": 2}


@pytest.fixture
def disk(tmp_path):
    table = image_partition_table(SIZES)
    path = tmp_path / "disk.img"
    with open(path, "wb") as handle:
        handle.truncate(table.total_sectors * 512)
    subprocess.run(sgdisk_argv(table, str(path)), check=True, capture_output=True)
    # a bit outside the boot fields that an update must keep (bit 2: legacy BIOS bootable)
    subprocess.run(["sgdisk", "--attributes=4:set:2", str(path)], check=True, capture_output=True)
    return str(path)


def bits(disk):
    return {key: part.boot for key, part in slot_partitions(read_gpt(disk)).items()}


def test_image_starts_on_a(disk):
    assert bits(disk) == {"a": BootAttributes(1, 0, True), "b": BootAttributes(0, 0, False)}


def test_update_of_b_then_of_a(disk):
    start = bits(disk)
    write_slot_attributes(disk, read_gpt(disk), disabled(start, "b"))
    assert bits(disk)["b"] == BootAttributes(0, 0, False)
    assert bits(disk)["a"] == start["a"]             # the running slot is untouched while B is written
    write_slot_attributes(disk, read_gpt(disk), activated(disabled(start, "b"), "b"))
    assert bits(disk) == {"a": BootAttributes(1, 0, True), "b": BootAttributes(2, 1, False)}
    table = read_gpt(disk)
    assert next(p for p in table.entries if p.number == 4).attributes & 0b100   # the other bit survived
    # B booted and was marked successful; the next update goes to A, which is disabled first
    after_boot = {"a": BootAttributes(1, 0, True), "b": BootAttributes(2, 0, True)}
    write_slot_attributes(disk, read_gpt(disk), after_boot)
    write_slot_attributes(disk, read_gpt(disk), disabled(after_boot, "a"))
    assert bits(disk) == {"a": BootAttributes(0, 0, False), "b": BootAttributes(2, 0, True)}
    write_slot_attributes(disk, read_gpt(disk), activated(disabled(after_boot, "a"), "a"))
    assert bits(disk) == {"a": BootAttributes(2, 1, False), "b": BootAttributes(1, 0, True)}
    assert read_gpt(disk).valid


def test_grubs_count_wins_over_the_gpt():
    gpt = {"a": BootAttributes(1, 0, True), "b": BootAttributes(2, 1, False)}
    assert current_bits(gpt, {"usr_b_tries": "0"})["b"] == BootAttributes(2, 0, False)
    assert current_bits(gpt, {"usr_b_tries": "junk"})["b"] == BootAttributes(2, 1, False)
    assert other_slot(A) == B and other_slot(B) == A


def test_failed_write_leaves_the_slot_disabled(disk, tmp_path):
    start = bits(disk)
    write_slot_attributes(disk, read_gpt(disk), disabled(start, "b"))
    partition = tmp_path / "usr-b.part"
    partition.write_bytes(b"\0" * (1 << 20))
    source = tmp_path / "usr.img"
    source.write_bytes(b"u" * 4096)
    wrong = PayloadFile("usr.img", 4096, "0" * 64)
    with pytest.raises(VerifyError, match="reads back with sha256"):
        write_usr(str(partition), source, wrong)
    assert bits(disk)["b"] == BootAttributes(0, 0, False)   # never activated: GRUB cannot choose it


def test_write_usr_reads_back(tmp_path):
    partition = tmp_path / "usr-b.part"
    partition.write_bytes(b"\xff" * (1 << 20))
    source = tmp_path / "usr.img"
    data = b"squashfs" * 10000
    source.write_bytes(data)
    write_usr(str(partition), source, PayloadFile("usr.img", len(data), hashlib.sha256(data).hexdigest()))
    assert partition.read_bytes()[:len(data)] == data
    too_big = tmp_path / "big.img"
    too_big.write_bytes(b"x" * (2 << 20))
    with pytest.raises(Exception, match="too small"):
        write_usr(str(partition), too_big, PayloadFile("big.img", 2 << 20, "0" * 64))

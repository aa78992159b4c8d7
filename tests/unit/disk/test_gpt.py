"""provisioner.disk.gpt against tables written by the real sgdisk on plain files."""

from __future__ import annotations

import subprocess

import pytest

from provisioner.disk import gpt, layout
from provisioner.errors import DiskError

MiB = 1 << 20


def _sgdisk(path, *args):
    subprocess.run(["sgdisk", *args, str(path)], check=True, capture_output=True)


@pytest.fixture
def coreos_table(tmp_path):
    path = tmp_path / "disk.img"
    with open(path, "wb") as handle:
        handle.truncate(64 * MiB)
    _sgdisk(
        path,
        "--zap-all",
        f"--disk-guid={layout.MAGIC_DISK_GUID}",
        "--new=1:2048:+8M", f"--typecode=1:{layout.TYPE_EFI}", "--change-name=1:EFI-SYSTEM",
        "--new=3:0:+8M", f"--typecode=3:{layout.TYPE_USR}", "--change-name=3:USR-A",
        f"--partition-guid=3:{layout.USR_A_PARTUUID}", "--attributes=3:=:0x0101000000000000",
        "--new=9:0:0", f"--typecode=9:{layout.TYPE_RESIZE}", "--change-name=9:ROOT",
    )
    return path


def test_reads_what_sgdisk_wrote(coreos_table):
    table = gpt.read_gpt(str(coreos_table))
    assert table.valid and table.problems == ()
    assert table.disk_guid == layout.MAGIC_DISK_GUID
    assert [e.number for e in table.entries] == [1, 3, 9]
    usr = table.entry(3)
    assert usr.name == "USR-A"
    assert usr.type_guid == layout.TYPE_USR
    assert usr.partuuid == layout.USR_A_PARTUUID
    assert usr.boot == layout.BootAttributes(priority=1, tries=0, successful=True)
    assert table.entry(1).start == 2048 and table.entry(1).sectors == 8 * MiB // 512
    assert table.by_name("ROOT").type_guid == layout.TYPE_RESIZE
    assert table.mbr.protective and not table.mbr.hybrid
    assert table.backup.my_lba == 64 * MiB // 512 - 1


def test_corrupt_primary_falls_back_to_backup(coreos_table):
    with open(coreos_table, "r+b") as handle:
        handle.seek(512 + 40)  # inside the primary header: breaks its CRC
        handle.write(b"\xff")
    table = gpt.read_gpt(str(coreos_table))
    assert not table.primary.valid and table.backup.valid
    assert any("CRC32" in p for p in table.problems)
    assert [e.number for e in table.entries] == [1, 3, 9]


def test_corrupt_entry_array_is_detected(coreos_table):
    with open(coreos_table, "r+b") as handle:
        handle.seek(2 * 512 + 56)  # the name of entry 1 in the primary array
        handle.write(b"X")
    table = gpt.read_gpt(str(coreos_table))
    assert any("entry array CRC32" in p for p in table.primary.problems)
    assert table.backup.valid and table.entry(1).name == "EFI-SYSTEM"


def test_zeroed_headers_mean_no_gpt(coreos_table):
    with open(coreos_table, "r+b") as handle:
        handle.seek(512)
        handle.write(b"\0" * 512)
        handle.seek(64 * MiB - 512)
        handle.write(b"\0" * 512)
    table = gpt.read_gpt(str(coreos_table), require_valid=False)
    assert not table.valid and table.primary is None and table.backup is None
    with pytest.raises(DiskError, match="no valid GPT"):
        gpt.read_gpt(str(coreos_table))


def test_image_on_a_larger_disk_keeps_backup_mid_disk(coreos_table):
    with open(coreos_table, "r+b") as handle:
        handle.truncate(128 * MiB)
    table = gpt.read_gpt(str(coreos_table))
    assert table.valid and table.backup.valid and table.backup.my_lba == 64 * MiB // 512 - 1
    assert any("not at the disk end" in p for p in table.problems)


def test_guid_round_trip():
    text = layout.TYPE_EFI
    # Mixed endian: the first three fields are stored little-endian (UEFI spec appendix A).
    raw = bytes.fromhex("2873 2AC1 1FF8 D211 BA4B 00A0C93EC93B")
    assert gpt.guid_from_bytes(raw) == text


def test_missing_file_is_a_disk_error(tmp_path):
    with pytest.raises(DiskError, match="cannot read"):
        gpt.read_gpt(str(tmp_path / "absent"))

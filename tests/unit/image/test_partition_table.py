from provisioner.disk import layout
from provisioner.image.partition_table import DISK_ALIGNMENT, PART_ALIGNMENT, image_partition_table, sgdisk_argv
from provisioner.image.recipe import load_recipe


def test_table_follows_the_coreos_layout():
    table = image_partition_table(load_recipe().partitions_mib)
    assert [p.number for p in table.partitions] == [1, 2, 3, 4, 6, 7, 9]
    assert [p.label for p in table.partitions] == ["EFI-SYSTEM", "BIOS-BOOT", "USR-A", "USR-B", "OEM",
                                                  "OEM-CONFIG", "ROOT"]
    assert table.by_label("USR-A").partuuid == layout.USR_A_PARTUUID
    assert table.by_label("USR-B").partuuid == layout.USR_B_PARTUUID
    assert table.by_label("ROOT").type_guid == layout.TYPE_RESIZE
    assert table.disk_guid == layout.MAGIC_DISK_GUID


def test_alignment_and_no_overlap():
    table = image_partition_table({"EFI-SYSTEM": 128, "BIOS-BOOT": 2, "USR-A": 1024, "USR-B": 1024, "OEM": 128,
                                   "OEM-CONFIG": 64, "ROOT": 1024})
    assert table.partitions[0].start == 4096
    previous_end = 0
    for part in table.partitions:
        assert part.start % PART_ALIGNMENT == 0
        assert part.start > previous_end
        previous_end = part.end
    assert table.total_sectors % DISK_ALIGNMENT == 0
    assert table.total_sectors - 1 - previous_end >= 33  # room for the backup GPT


def test_flatcar_ab_bits():
    table = image_partition_table(load_recipe().partitions_mib)
    a = layout.decode_boot_attributes(table.by_label("USR-A").attributes)
    b = layout.decode_boot_attributes(table.by_label("USR-B").attributes)
    assert (a.priority, a.tries, a.successful) == (1, 0, True)
    assert (b.priority, b.tries, b.successful) == (0, 0, False)


def test_sgdisk_argv_sets_guids_and_bits():
    table = image_partition_table(load_recipe().partitions_mib)
    argv = sgdisk_argv(table, "disk.img")
    assert argv[-1] == "disk.img"
    assert f"--partition-guid=3:{layout.USR_A_PARTUUID}" in argv
    assert "--attributes=3:set:48" in argv and "--attributes=3:set:56" in argv
    assert not any(a.startswith("--attributes=4:") for a in argv)
    assert f"--disk-guid={layout.MAGIC_DISK_GUID}" in argv

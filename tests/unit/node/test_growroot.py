"""First boot on a disk (pure parts)."""

from provisioner.node.growroot import first_boot_actions


def test_first_boot_actions():
    assert first_boot_actions("/dev/vda9", "00000000-0000-0000-0000-000000000001") == ["grow", "randomize-disk-guid"]
    assert first_boot_actions("/dev/vda9", "5B1D1A6E-0000-4000-8000-000000000000") == ["grow"]
    assert first_boot_actions("tmpfs", None) == []

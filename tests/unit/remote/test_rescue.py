"""The rescue mode's pure steps: installer argv, disk selection, request checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.errors import ConfigError, DiskError, UsageError
from provisioner.remote.rescue import RescueRequest, check_request, installer_argv, select_disk
from tests.unit.remote.rescue_facts import RAID_ROWS, host_facts


def test_installer_argv_replaces_local_paths():
    request = RescueRequest(disk="/dev/sda", installer_args=("-C", "stable", "-b", "http://m/stable"),
                            cloud_config=Path("node1.yaml"))
    argv = installer_argv(request, "/dev/sda", {"cloud_config": "/tmp/r/cloud-config.yaml"})
    assert argv == ["-d", "/dev/sda", "-C", "stable", "-b", "http://m/stable",
                    "-c", "/tmp/r/cloud-config.yaml", "--progress", "json", "--yes"]


def test_select_disk_explicit_unknown_and_partition():

    facts = host_facts(RAID_ROWS)
    assert select_disk(facts, RescueRequest(disk="/dev/nvme0n1"))[0].path == "/dev/nvme0n1"
    assert select_disk(facts, RescueRequest(disk="/dev/sda"), "/dev/sdb")[0].path == "/dev/sdb"
    with pytest.raises(DiskError, match=r"/dev/sda1 is a partition on rescue; give the whole disk \(/dev/sda\)"):
        select_disk(facts, RescueRequest(disk="/dev/sda1"))
    with pytest.raises(DiskError, match=r"/dev/sdz: no such disk on rescue \(disks: /dev/sda, /dev/sdb"):
        select_disk(facts, RescueRequest(disk="/dev/sdz"))
    chosen, auto = select_disk(facts, RescueRequest(disk="auto"))
    assert (chosen.path, auto) == ("/dev/nvme0n1", True)


def test_check_request_refuses_before_connecting(tmp_path):

    with pytest.raises(UsageError, match="--push needs -f IMAGE"):
        check_request(RescueRequest(push=True))
    image = tmp_path / "i.bin.zst"
    image.write_bytes(b"")
    with pytest.raises(UsageError, match="-b/-C/-V make no sense"):
        check_request(RescueRequest(push=True, image=image, installer_args=("-b", "http://x")))
    with pytest.raises(ConfigError, match="nope.yaml: no such file \\(given as -c\\)"):
        check_request(RescueRequest(cloud_config=tmp_path / "nope.yaml"))

"""The built image and release directory, checked field by field against the CoreOS layout and the
release-directory contract (docs/install.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from provisioner.disk import layout
from provisioner.disk.gpt import read_gpt
from provisioner.image.build import BuildOptions, build_image
from provisioner.image.esp import get_file
from provisioner.image.partition_table import PART_ALIGNMENT, image_partition_table
from provisioner.image.recipe import DEFAULT_RECIPE_DIR, load_recipe
from provisioner.image.release import parse_version_txt, sha512_file
from provisioner.node.slots import decode_grubenv

REPO = Path(__file__).resolve().parents[3]
NAME = "provisioner_production"


def _table(image: Path) -> dict:
    return json.loads(subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True,
                                     check=True).stdout)["partitiontable"]


def _probe(image: Path, offset: int) -> dict:
    out = subprocess.run(["blkid", "-p", "-o", "export", "-O", str(offset), str(image)],
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_partition_table_field_by_field(built_image):
    table = _table(built_image.raw_image)
    assert table["label"] == "gpt"
    assert table["id"].upper() == layout.MAGIC_DISK_GUID
    parts = {int(p["node"].rsplit("bin", 1)[1]): p for p in table["partitions"]}
    assert sorted(parts) == [1, 2, 3, 4, 6, 7, 9]  # 5 and 8 absent
    for spec in layout.COREOS_LAYOUT:
        part = parts[spec.number]
        assert part["type"].upper() == spec.type_guid, spec.label
        assert part["name"] == spec.label
        assert part["start"] % PART_ALIGNMENT == 0, spec.label
        if spec.partuuid:
            assert part["uuid"].upper() == spec.partuuid
    ours = read_gpt(str(built_image.raw_image))   # sgdisk wrote the bits, tests/unit/disk/test_gpt checks the reader
    a, b = ours.entry(layout.USR_A).boot, ours.entry(layout.USR_B).boot
    assert (a.priority, a.tries, a.successful) == (1, 0, True)
    assert (b.priority, b.tries, b.successful) == (0, 0, False)
    expected = image_partition_table(load_recipe().partitions_mib)
    assert os.path.getsize(built_image.raw_image) == expected.size_bytes
    assert table["lastlba"] == expected.total_sectors - 34  # backup GPT at the image end


def test_filesystems(built_image):
    table = _table(built_image.raw_image)
    parts = {p["name"]: p for p in table["partitions"]}

    def probe(label):
        return _probe(built_image.raw_image, parts[label]["start"] * 512)

    assert probe("EFI-SYSTEM")["TYPE"] == "vfat" and probe("EFI-SYSTEM")["LABEL"] == "EFI-SYSTEM"
    assert probe("ROOT")["TYPE"] == "ext4" and probe("ROOT")["LABEL"] == "ROOT"
    assert probe("OEM")["TYPE"] == "btrfs" and probe("OEM")["LABEL"] == "OEM"
    assert probe("USR-A")["TYPE"] == "squashfs"
    assert "TYPE" not in probe("USR-B")  # empty until an update writes it


def test_esp_holds_grub_and_both_kernels(built_image):
    table = _table(built_image.raw_image)
    esp = f"{built_image.raw_image}@@{table['partitions'][0]['start'] * 512}"
    listing = subprocess.run(["mdir", "-/", "-b", "-i", esp, "::/"], capture_output=True, text=True, check=True).stdout
    for name in ("::/EFI/BOOT/BOOTX64.EFI", "::/grub/grub.cfg", "::/grub/grubenv", "::/flatcar/vmlinuz-a",
                 "::/flatcar/vmlinuz-b", "::/flatcar/initrd-a"):
        assert name in listing, listing
    env = decode_grubenv(get_file(esp, "/grub/grubenv"))
    assert env["usr_a_priority"] == "1" and env["usr_a_successful"] == "1" and env["usr_b_priority"] == "0"
    with open(built_image.raw_image, "rb") as handle:
        assert handle.read(512)[510:] == b"\x55\xaa"  # boot.img in the protective MBR


def test_usr_is_the_os_and_root_state_is_in_the_factory(built_image, tmp_path):
    listing = subprocess.run(["unsquashfs", "-l", "-d", "", str(built_image.usr_image)], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    names = set(listing)
    for path in ("/lib/systemd/systemd", "/sbin/sgdisk", "/bin/etcd", "/bin/python3",
                 "/lib/python3/dist-packages/provisioner/node/slots.py",
                 "/share/factory/etc/systemd/system/multi-user.target.wants/provisioner-disk.service",
                 "/share/factory/etc/systemd/system/multi-user.target.wants/provisioner-cloudinit.service",
                 "/share/provisioner/release-key.asc", "/lib/systemd/system/provisioner-hook.service",
                 # `provisioner node ...`: the console script, the node commands, Debian's typer
                 "/bin/provisioner", "/lib/python3/dist-packages/provisioner/cli/node_cmd.py",
                 "/lib/python3/dist-packages/provisioner/cloudconfig/model.py",
                 "/lib/python3/dist-packages/typer/main.py", "/lib/systemd/system/etcd2.service",
                 # the scheduler: fleetd's unit and fleetctl (paramiko for its ssh/status/journal)
                 "/lib/systemd/system/fleet.service", "/bin/fleetctl",
                 "/lib/python3/dist-packages/provisioner/scheduler/daemon.py",
                 "/lib/python3/dist-packages/paramiko"):
        assert path in names, path
    assert not any(n.startswith("/share/man/") or n.startswith("/share/locale/de") for n in names)
    assert not any("/share/factory/etc/ssh/ssh_host_" in n for n in names)  # made on each machine
    # The server side stays off the image: no other commands, no pxe, no rich/aiohttp.
    site = "/lib/python3/dist-packages"
    for absent in (f"{site}/provisioner/cli/serve_cmd.py", f"{site}/provisioner/pxe", f"{site}/rich",
                   f"{site}/aiohttp"):
        assert absent not in names, absent


def test_docker_is_in_the_image_and_starts_on_demand(built_image, tmp_path):
    """docker.io from Debian: the CLI where the guides call it, docker.socket enabled, dockerd and
    containerd not started at boot, the binaries dockerd never runs left out, core in the docker group."""
    names = set(subprocess.run(["unsquashfs", "-l", "-d", "", str(built_image.usr_image)], capture_output=True,
                               text=True, check=True).stdout.splitlines())
    for path in ("/bin/docker", "/sbin/dockerd", "/bin/containerd", "/bin/containerd-shim-runc-v2", "/sbin/runc",
                 "/sbin/apparmor_parser", "/lib/systemd/system/docker.socket",
                 "/share/factory/etc/systemd/system/sockets.target.wants/docker.socket",
                 "/share/factory/etc/systemd/system/apparmor.service"):   # masked: dockerd loads its profile
        assert path in names, path
    for path in ("/bin/ctr", "/bin/dnet", "/sbin/ovrouter", "/bin/containerd-shim",
                 "/share/factory/etc/systemd/system/multi-user.target.wants/docker.service",
                 "/share/factory/etc/systemd/system/multi-user.target.wants/containerd.service"):
        assert path not in names, path
    subprocess.run(["unsquashfs", "-q", "-d", str(tmp_path / "etc"), str(built_image.usr_image),
                    "/share/factory/etc/group"], check=True, capture_output=True)
    groups = (tmp_path / "etc/share/factory/etc/group").read_text()
    docker = next(line for line in groups.splitlines() if line.startswith("docker:"))
    assert docker.rsplit(":", 1)[1].split(",") == ["core"], docker


def test_release_directory_contract(built_image, tmp_path):
    base, release = built_image.base_dir, built_image.release_dir
    assert os.readlink(base / "current") == built_image.version
    version = parse_version_txt((base / "current" / "version.txt").read_text())
    assert version["FLATCAR_VERSION"] == version["PROVISIONER_VERSION"] == built_image.version
    keyring = tmp_path / "release.gpg"
    subprocess.run(["gpg", "--batch", "--yes", "--dearmor", "-o", str(keyring), str(base / "release-key.asc")],
                   check=True, capture_output=True)
    for name in (f"{NAME}_image.bin.bz2", f"{NAME}_image.bin.zst", f"{NAME}_pxe.vmlinuz", f"{NAME}_pxe_image.cpio.gz"):
        path = release / name
        digests = (release / (name + ".DIGESTS")).read_text().splitlines()
        assert f"{sha512_file(path)}  {name}" in digests
        verify = subprocess.run(["gpgv", "--keyring", str(keyring), str(release / (name + ".sig")), str(path)],
                                capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr
    bmap = ET.parse(release / f"{NAME}_image.bin.bmap").getroot()
    assert int(bmap.findtext("ImageSize")) == os.path.getsize(built_image.raw_image)
    assert int(bmap.findtext("MappedBlocksCount")) < int(bmap.findtext("BlocksCount"))
    decompressed = subprocess.run(["zstd", "-dc", str(release / f"{NAME}_image.bin.zst")], capture_output=True,
                                  check=True).stdout
    assert len(decompressed) == os.path.getsize(built_image.raw_image)


def test_budgets_reported_and_met(built_image):
    rows = {row["budget"]: row for row in built_image.budgets}
    assert rows["compressed image (.bz2)"]["ok"] and rows["PXE initrd"]["ok"]
    assert rows["compressed image (.bz2)"]["limit"] == 400 and rows["PXE initrd"]["limit"] == 250


def test_second_build_is_a_cache_hit(built_image):
    again = build_image(BuildOptions(output=REPO / "build/release", work=REPO / "build/image"))
    assert again.cached and again.release_dir == built_image.release_dir


def test_missing_package_fails_in_one_line_and_publishes_nothing(built_image, tmp_path):
    recipe = tmp_path / "recipe"
    shutil.copytree(DEFAULT_RECIPE_DIR, recipe)
    text = (recipe / "recipe.yaml").read_text().replace("    - sudo\n", "    - sudo\n    - nosuch-package-xyz\n")
    (recipe / "recipe.yaml").write_text(text)
    out = tmp_path / "release"
    result = subprocess.run([str(REPO / ".venv/bin/provisioner"), "image", "build", "--recipe", str(recipe),
                             "--output", str(out), "--work", str(tmp_path / "work"),
                             "--apt-cache", "/var/cache/provisioner/apt"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("provisioner: error: image build step 'mmdebstrap' failed")
    assert "nosuch-package-xyz" in lines[0]
    assert not (out / "stable" / "current").exists()
    assert not any((out / "stable").glob("*")) if (out / "stable").exists() else True

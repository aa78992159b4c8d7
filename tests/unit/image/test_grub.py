import struct
import subprocess

import pytest

from provisioner.errors import ImageBuildError
from provisioner.image.grub import GRUB_PC_DIR, bios_boot_sectors, render_grub_cfg, signed_efi_files
from provisioner.image.recipe import load_recipe
from provisioner.node.slots import SLOTS


def _cfg() -> str:
    recipe = load_recipe()
    return render_grub_cfg(recipe.file("grub.cfg.j2"), os_name=recipe.os_name, cmdline=recipe.kernel_cmdline)


def test_grub_cfg_passes_grub_script_check(tmp_path):
    path = tmp_path / "grub.cfg"
    path.write_text(_cfg())
    result = subprocess.run(["grub-script-check", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grub_cfg_maps_partuuids_to_kernels():
    cfg = _cfg()
    for slot in SLOTS:
        assert f"set usr_partuuid={slot.partuuid}" in cfg
        assert f"vmlinuz-{slot.key}" in cfg
        assert f"count_down_{slot.key}" in cfg
        assert f'save_env usr_{slot.key}_tries' in cfg
    assert "root=LABEL=ROOT" in cfg and "mount.usr=PARTUUID=$usr_partuuid" in cfg
    assert 'if [ "$usr_a_tries" = 1 ]; then set usr_a_tries=0' in cfg


def test_bios_boot_sectors_patch_the_documented_offsets():
    boot = bytes(range(256)) * 2
    mbr = bytearray(512)
    mbr[0x1BE:0x1CE] = b"\x00\x00\x02\x00\xee" + b"\xff" * 11  # protective MBR entry
    mbr[0x1FE:0x200] = b"\x55\xaa"
    core = b"C" * 1500
    sector0, core_out = bios_boot_sectors(boot, core, bytes(mbr), 4196352)
    assert sector0[0x1B8:0x1FE] == bytes(mbr[0x1B8:0x1FE])
    assert struct.unpack("<Q", sector0[0x5C:0x64])[0] == 4196352
    assert sector0[0x66:0x68] == b"\x90\x90"
    assert len(core_out) == 1536
    assert struct.unpack("<QHH", core_out[0x1F4:0x200]) == (4196353, 2, 0x820)


def test_real_boot_img_keeps_its_signature():
    boot = (GRUB_PC_DIR / "boot.img").read_bytes()
    mbr = bytearray(512)
    mbr[0x1FE:0x200] = b"\x55\xaa"
    sector0, _ = bios_boot_sectors(boot, b"x" * 1024, bytes(mbr), 2048)
    assert sector0[0x1FE:0x200] == b"\x55\xaa"
    assert sector0[:0x5C] == boot[:0x5C]


def test_signed_efi_files_name_the_missing_binary_and_the_recipe_field(tmp_path):
    debs = tmp_path / "debs"
    debs.mkdir()
    with pytest.raises(ImageBuildError, match=r"usr/lib/shim/shimx64.efi.signed is not in .*debian.efi_packages"):
        signed_efi_files(debs, tmp_path / "x")


"""GRUB for the image: grub.cfg from images/<recipe>/grub.cfg.j2, BIOS core.img in BIOS-BOOT, and the
signed UEFI chain on the ESP.

BIOS: nothing is mounted; grub-mkimage builds core.img from the build host's GRUB modules
(grub-pc-bin) with the prefix `(,gpt1)/grub` (the ESP of the disk GRUB was loaded from); boot.img
goes into the protective MBR's code area and core.img into the BIOS-BOOT partition, as
grub-bios-setup does (see install_bios_boot).

UEFI: Debian's signed chain, so the same ESP boots with Secure Boot on or off: shim (signed by
Microsoft's UEFI CA) as /EFI/BOOT/BOOTX64.EFI, which loads grubx64.efi (Debian's monolithic GRUB,
signed by Debian) from its own directory, and MokManager beside them. That GRUB cannot load modules
or take another prefix: its built-in configuration reads $prefix/grub.cfg with the prefix
/EFI/debian on the partition it was loaded from, so /EFI/debian/grub.cfg points it at the same
/grub/grub.cfg (and grubenv) that BIOS uses. GRUB then verifies the kernel through shim: Debian's
kernel is signed by Debian, whose CA shim carries.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import jinja2

from provisioner.core.commands import require_tool, run
from provisioner.errors import ImageBuildError
from provisioner.node.slots import SLOTS

GRUB_PC_DIR = Path("/usr/lib/grub/i386-pc")
PREFIX = "(,gpt1)/grub"
# ESP path -> where the file is inside the extracted efi_packages (shim-signed, shim-helpers-amd64-signed,
# grub-efi-amd64-signed).
SIGNED_EFI_FILES = {
    "/EFI/BOOT/BOOTX64.EFI": "usr/lib/shim/shimx64.efi.signed",
    "/EFI/BOOT/mmx64.efi": "usr/lib/shim/mmx64.efi.signed",
    "/EFI/BOOT/grubx64.efi": "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
}
# Read by the signed GRUB (its built-in prefix is /EFI/debian); $root is the ESP it was loaded from.
SIGNED_GRUB_BRIDGE = b"set prefix=($root)/grub\nsource $prefix/grub.cfg\n"

COMMON_MODULES = [
    "part_gpt", "fat", "btrfs", "ext2", "normal", "linux", "configfile", "search", "search_label",
    "search_fs_uuid", "search_fs_file", "loadenv", "test", "echo", "serial", "terminal", "sleep",
    "reboot", "halt", "true", "gzio", "minicmd",
]
BIOS_MODULES = ["biosdisk", *COMMON_MODULES]


def render_grub_cfg(template: Path, *, os_name: str, cmdline: str, timeout: int = 1) -> str:
    """grub.cfg text; raises ImageBuildError naming the template on an undefined variable."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             loader=jinja2.FileSystemLoader(str(template.parent)))
    try:
        return env.get_template(template.name).render(
            slots=SLOTS, os_name=os_name, cmdline=cmdline, timeout=timeout)
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        raise ImageBuildError(f"{template}{':' + str(line) if line else ''}: {exc}") from None


def _check_module_dir(directory: Path, package: str) -> None:
    if not (directory / "moddep.lst").exists():
        raise ImageBuildError(f"grub: {directory} is missing: install the Debian package '{package}'")


def make_bios_core_image(workdir: Path) -> Path:
    """BIOS core.img built with grub-mkimage."""
    require_tool("grub-mkimage")
    _check_module_dir(GRUB_PC_DIR, "grub-pc-bin")
    workdir.mkdir(parents=True, exist_ok=True)
    core = workdir / "core.img"
    run(["grub-mkimage", "-O", "i386-pc", "-d", str(GRUB_PC_DIR), "-p", PREFIX, "-o", str(core), *BIOS_MODULES])
    return core


def signed_efi_files(debs_dir: Path, workdir: Path) -> dict[str, Path | bytes]:
    """The ESP files of the signed UEFI chain, unpacked from the .debs in debs_dir (dpkg-deb -x, no
    maintainer script runs); raises ImageBuildError naming a missing file and the package to list."""
    require_tool("dpkg-deb")
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for deb in sorted(debs_dir.glob("*.deb")):
        run(["dpkg-deb", "-x", str(deb), str(workdir)])
    files: dict[str, Path | bytes] = {"/EFI/debian/grub.cfg": SIGNED_GRUB_BRIDGE}
    for dest, inside in SIGNED_EFI_FILES.items():
        source = workdir / inside
        if not source.is_file():
            raise ImageBuildError(f"grub: /{inside} is not in {debs_dir}: list shim-signed, "
                                  "shim-helpers-amd64-signed and grub-efi-amd64-signed in debian.efi_packages")
        files[dest] = source
    return files


def bios_boot_sectors(boot_img: bytes, core_img: bytes, mbr: bytes, core_sector: int) -> tuple[bytes, bytes]:
    """(new sector 0, core.img to write at core_sector): what grub-bios-setup writes (pure).

    Layout from GRUB's include/grub/i386/pc/boot.h and util/setup.c: boot.img keeps the disk's
    own partition table area (0x1b8-0x1fe: disk signature and the protective MBR entry), gets the
    LBA of core.img's first sector at KERNEL_SECTOR (0x5c, 64-bit LE), and NOPs out the floppy
    drive check at 0x66 (a hard disk install). core.img's first sector (diskboot.img) ends with a
    12-byte blocklist {start LBA u64, sectors u16, segment u16} telling it where the rest is: the
    sectors right after it, loaded at segment 0x820 (GRUB_BOOT_I386_PC_KERNEL_SEG 0x800 + 512/16).
    Raises ValueError on malformed input."""
    if len(boot_img) != 512 or len(mbr) != 512:
        raise ValueError("boot.img and the MBR must be 512 bytes")
    sector = bytearray(boot_img)
    sector[0x1B8:0x1FE] = mbr[0x1B8:0x1FE]
    sector[0x5C:0x64] = struct.pack("<Q", core_sector)
    sector[0x66:0x68] = b"\x90\x90"
    core = bytearray(core_img) + bytes(-len(core_img) % 512)
    sectors = len(core) // 512
    if sectors < 2 or sectors - 1 > 0xFFFF:
        raise ValueError(f"core.img of {sectors} sectors cannot be described by one blocklist entry")
    core[0x200 - 12:0x200] = struct.pack("<QHH", core_sector + 1, sectors - 1, 0x820)
    return bytes(sector), bytes(core)


def install_bios_boot(image: Path, core: Path, bios_boot_start: int, bios_boot_sectors_count: int) -> None:
    """boot.img into the MBR code area and core.img into BIOS-BOOT of `image` (a GPT disk file).

    grub-bios-setup would do this too, but it insists on guessing a "root device" from the
    directory holding the images, which fails on a build host whose disk GRUB cannot open (a
    container or a VM without that node); the few bytes it writes are set here instead.
    Raises ImageBuildError when core.img does not fit BIOS-BOOT."""
    core_img = core.read_bytes()
    if len(core_img) > bios_boot_sectors_count * 512:
        raise ImageBuildError(f"grub: core.img ({len(core_img)} bytes) does not fit BIOS-BOOT")
    with open(image, "r+b") as handle:
        mbr = handle.read(512)
        sector0, core_data = bios_boot_sectors((GRUB_PC_DIR / "boot.img").read_bytes(), core_img, mbr,
                                               bios_boot_start)
        handle.seek(0)
        handle.write(sector0)
        handle.seek(bios_boot_start * 512)
        handle.write(core_data)

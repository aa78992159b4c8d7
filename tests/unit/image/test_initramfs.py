import gzip
import subprocess

import pytest

from provisioner.errors import ImageBuildError
from provisioner.image.initramfs import Entry, cpio_chunks, module_load_order, module_name, write_initrd

MODULES_DEP = """\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/scsi/sd_mod.ko.xz: kernel/drivers/scsi/scsi_mod.ko.xz
kernel/drivers/scsi/scsi_mod.ko.xz:
"""


def test_module_name_normalises():
    assert module_name("kernel/drivers/scsi/sd_mod.ko.xz") == "sd_mod"
    assert module_name("kernel/fs/fat/vfat.ko") == "vfat"
    assert module_name("x/crc32c-intel.ko") == "crc32c_intel"


def test_dependencies_come_first_each_once():
    order = module_load_order(["virtio_blk", "ext4", "sd-mod", "ext4"], MODULES_DEP)
    assert order.index("kernel/drivers/virtio/virtio_ring.ko") < order.index("kernel/drivers/block/virtio_blk.ko")
    for dep in ("kernel/lib/crc16.ko", "kernel/fs/mbcache.ko", "kernel/fs/jbd2/jbd2.ko"):
        assert order.index(dep) < order.index("kernel/fs/ext4/ext4.ko")
    assert order.index("kernel/drivers/scsi/scsi_mod.ko.xz") < order.index("kernel/drivers/scsi/sd_mod.ko.xz")
    assert len(order) == len(set(order)) == 8


def test_builtin_modules_are_skipped():
    assert module_load_order(["loop"], MODULES_DEP, "kernel/drivers/block/loop.ko\n") == []


def test_unknown_module_is_an_error():
    with pytest.raises(ImageBuildError, match="'nosuchmod' is neither in modules.dep nor built in"):
        module_load_order(["nosuchmod"], MODULES_DEP)


def test_cpio_is_read_back_by_gnu_cpio(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 5001)
    entries = [Entry.directory("bin"), Entry.file("bin/hello", b"hi\n", 0o755), Entry.symlink("sh", "bin/hello"),
               Entry("data/big.bin", 0o100644, source=big)]
    entries.insert(3, Entry.directory("data"))
    archive = write_initrd(entries, tmp_path / "initrd.gz")
    listing = subprocess.run(["cpio", "-itv"], input=gzip.decompress(archive.read_bytes()),
                             capture_output=True, check=True).stdout.decode()
    assert "bin/hello" in listing and "sh -> bin/hello" in listing and "data/big.bin" in listing
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=gzip.decompress(archive.read_bytes()), cwd=out, check=True)
    assert (out / "bin/hello").read_bytes() == b"hi\n"
    assert (out / "data/big.bin").read_bytes() == big.read_bytes()
    assert (out / "sh").is_symlink()


def test_newc_records_are_4_byte_aligned():
    data = b"".join(cpio_chunks([Entry.file("a", b"123")]))
    assert data.startswith(b"070701")
    assert len(data) % 4 == 0
    assert b"TRAILER!!!" in data

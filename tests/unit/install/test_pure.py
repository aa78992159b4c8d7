"""Pure parts of the installer: options, version.txt, DIGESTS, armour, bmap, format magic,
writer geometry, layout checks, and the zipapp's stdlib-only / Python 3.9 promise."""

from __future__ import annotations

import ast
import base64
import hashlib
import re
import sys
from pathlib import Path

import pytest

from provisioner.disk import gpt, layout
from provisioner.errors import ConfigError, UsageError, VerifyError
from provisioner.install import bmap as bmap_mod
from provisioner.install import decompress, installer, options, postinstall, verify, writer
from provisioner.install.zipapp import MODULES, PACKAGE_ROOT

# ---- options ---------------------------------------------------------------------------------------


def test_flatcar_letters_and_long_forms_parse_the_same():
    short = options.parse_install_args(["-d", "/dev/sda", "-C", "stable", "-b", "http://h/r/", "-c", "n.yaml",
                                        "-i", "c.ign", "-k", "k.asc", "-n", "-o", "packet"])
    long = options.parse_install_args(["--device", "/dev/sda", "--channel", "stable", "--base-url", "http://h/r/",
                                       "--cloud-config", "n.yaml", "--ignition", "c.ign", "--key", "k.asc",
                                       "--copy-network", "--oem", "packet"])
    assert short == long
    assert short.version == "current" and short.base_url == "http://h/r"
    assert short.image_name == "provisioner_production_packet_image.bin"


def test_y_is_flatcars_dry_run_and_yes_skips_the_prompt():
    dry = options.parse_install_args(["-d", "/dev/sda", "-f", "img.bin", "-y"])
    assert dry.dry_run and not dry.yes
    yes = options.parse_install_args(["-d", "/dev/sda", "-f", "img.bin", "--yes"])
    assert yes.yes and not yes.dry_run


def test_version_given_as_a_channel_means_current():
    opts = options.parse_install_args(["-d", "/dev/sda", "-V", "beta", "-b", "http://h"])
    assert (opts.version, opts.channel) == ("current", "beta")
    assert options.parse_install_args(["-d", "x", "-V", "1234.5.0", "-b", "http://h"]).version == "1234.5.0"


@pytest.mark.parametrize("argv, message", [
    (["-f", "x"], "-d DEVICE is required"),
    (["-d", "x"], "-b URL) or a local image"),
    (["-d", "x", "-f", "a", "-b", "http://h"], "exclude each other"),
    (["-d", "x", "-f", "a", "-s"], "not supported"),
    (["-d", "x", "-f", "a", "-C", "nightly"], "not a channel"),
    (["-d", "x", "-f", "a", "--bogus"], "unrecognized arguments"),
])
def test_bad_command_lines_are_usage_errors(argv, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        options.parse_install_args(argv)


# ---- version.txt, DIGESTS, armour -----------------------------------------------------------------


def test_version_txt_prefers_our_key_and_flatcar_for_flatcar_images():
    text = "PROVISIONER_VERSION=1.2.3\nFLATCAR_VERSION=3510.2.0\n"
    assert installer.parse_version_txt(text, "provisioner_production_image.bin", "v") == "1.2.3"
    assert installer.parse_version_txt(text, "flatcar_production_image.bin", "v") == "3510.2.0"
    with pytest.raises(ConfigError, match="version.txt: no"):
        installer.parse_version_txt("X=1\n", "provisioner_production_image.bin", "version.txt")


def test_digests_pick_the_sha512_line_for_our_file():
    sha1 = "a" * 40
    sha512 = "B" * 128
    text = f"# MD5 HASH\n{'c' * 32}  img.bin.bz2\n# SHA1 HASH\n{sha1}  img.bin.bz2\n# SHA512 HASH\n{sha512}  img.bin.bz2\n"
    assert verify.digest_from_digests(text, "img.bin.bz2") == sha512.lower()
    with pytest.raises(VerifyError, match="no sha512 digest for other.bin"):
        verify.digest_from_digests(text, "other.bin")


def test_dearmor_round_trip():
    payload = bytes(range(200))
    armoured = ("-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: test\n\n"
                + base64.b64encode(payload).decode() + "\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n")
    assert verify.dearmor(armoured.encode()) == payload
    assert verify.dearmor(payload) == payload
    with pytest.raises(VerifyError, match="unterminated"):
        verify.dearmor(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\nabc\n")


def test_digest_check_reports_a_mismatch():
    good = verify.DigestCheck(hashlib.sha512(b"data").hexdigest(), "img")
    good.update(b"da")
    good.update(b"ta")
    good.finish()
    bad = verify.DigestCheck("00" * 64, "img")
    bad.update(b"data")
    with pytest.raises(VerifyError, match="img: sha512 mismatch"):
        bad.finish()


# ---- bmap -------------------------------------------------------------------------------------------

BMAP = """<?xml version="1.0" ?>
<bmap version="2.0">
    <ImageSize> 40960 </ImageSize>
    <BlockSize> 4096 </BlockSize>
    <BlocksCount> 10 </BlocksCount>
    <MappedBlocksCount> 4 </MappedBlocksCount>
    <ChecksumType> sha256 </ChecksumType>
    <BmapFileChecksum> {zero} </BmapFileChecksum>
    <BlockMap>
        <Range chksum="{a}"> 0-1 </Range>
        <Range chksum="{b}"> 5 </Range>
        <Range chksum="{c}"> 8-8 </Range>
    </BlockMap>
</bmap>
"""


def _bmap_bytes() -> bytes:
    sums = {k: hashlib.sha256(k.encode()).hexdigest() for k in "abc"}
    text = BMAP.format(zero="0" * 64, **sums)
    checksum = hashlib.sha256(text.encode()).hexdigest()
    return text.replace("0" * 64, checksum, 1).encode()


def test_bmap_parses_ranges_and_holes():
    parsed = bmap_mod.parse_bmap(_bmap_bytes())
    assert [(r.start, r.end) for r in parsed.ranges] == [(0, 8192), (20480, 24576), (32768, 36864)]
    assert parsed.mapped_bytes == 4 * 4096
    assert parsed.unmapped() == [(8192, 20480), (24576, 32768), (36864, 40960)]
    assert parsed.checksum_type == "sha256"


def test_bmap_self_checksum_is_enforced():
    data = _bmap_bytes().replace(b"> 5 <", b"> 6 <")
    with pytest.raises(VerifyError, match="own checksum"):
        bmap_mod.parse_bmap(data, "x.bmap")


def test_bmap_rejects_garbage():
    with pytest.raises(VerifyError, match="x.bmap: not valid XML"):
        bmap_mod.parse_bmap(b"<bmap", "x.bmap")


# ---- decompression magic, writer geometry -----------------------------------------------------------


@pytest.mark.parametrize("head, fmt", [
    (b"BZh91AY&SY", "bz2"), (b"\xfd7zXZ\x00\x00", "xz"), (b"\x28\xb5\x2f\xfd\x04", "zst"),
    (b"\x1f\x8b\x08", "gz"), (b"\x00" * 16, "raw"), (b"EFI PART", "raw"),
])
def test_format_is_detected_by_magic_bytes(head, fmt):
    assert decompress.detect_format(head) == fmt


def test_subtract_and_held_regions():
    assert writer.subtract([(0, 100)], [(10, 20), (50, 60)]) == [(0, 10), (20, 50), (60, 100)]
    assert writer.subtract([(0, 10)], [(0, 10)]) == []
    size = 88 << 20
    head, tail = writer.held_regions(size)
    assert head == (0, 20480)
    assert tail[1] == size and tail[0] % 4096 == 0 and size - tail[0] >= 33 * 512


def test_image_size_comes_from_the_primary_header(tmp_path):
    import subprocess

    path = tmp_path / "img"
    with open(path, "wb") as handle:
        handle.truncate(8 << 20)
    subprocess.run(["sgdisk", "-n", "1:2048:+1M", str(path)], check=True, capture_output=True)
    head = path.read_bytes()[:20480]
    assert writer.image_size_from_head(head, "img") == 8 << 20
    with pytest.raises(VerifyError, match="not a disk image"):
        writer.image_size_from_head(bytes(20480), "img")


# ---- layout checks ----------------------------------------------------------------------------------


def _entry(number, name, type_guid, partuuid="11111111-2222-3333-4444-555555555555"):
    return gpt.GptEntry(number, type_guid, partuuid, 4096 * number, 4096 * number + 100, 0, name)


def _table(*entries):
    mbr = gpt.ProtectiveMbr(True, (0xEE,), True, False)
    return gpt.GptTable(512, 1 << 30, mbr, None, None, tuple(entries))


def test_coreos_layout_check():
    good = _table(_entry(3, "USR-A", layout.TYPE_USR, layout.USR_A_PARTUUID),
                  _entry(4, "USR-B", layout.TYPE_USR, layout.USR_B_PARTUUID),
                  _entry(9, "ROOT", layout.TYPE_RESIZE))
    assert postinstall.check_layout(good) == []
    bad = _table(_entry(3, "USR-A", layout.TYPE_USR), _entry(9, "DATA", layout.TYPE_LINUX_DATA))
    problems = postinstall.check_layout(bad)
    assert any("PARTUUID" in p for p in problems)
    assert any("no partition 4" in p for p in problems)
    assert any("'DATA'" in p for p in problems)
    assert postinstall.compare_tables(good, bad)


# ---- the zipapp promise: stdlib only, Python 3.9 syntax ----------------------------------------------


def _zipapp_sources():
    return [PACKAGE_ROOT / rel for rel in MODULES] + sorted((PACKAGE_ROOT / "install").glob("*.py"))


def test_zipapp_modules_are_python39_and_stdlib_only():
    stdlib = set(sys.stdlib_module_names)
    for path in _zipapp_sources():
        source = path.read_text()
        tree = ast.parse(source, str(path), feature_version=(3, 9))
        if path.name != "__init__.py":
            assert "from __future__ import annotations" in source, f"{path}: needs the __future__ import for 3.9"
        for node in ast.walk(tree):
            assert not isinstance(node, getattr(ast, "Match", ())), f"{path}: match statement"
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top == "provisioner":
                    rel = name.replace(".", "/")
                    allowed = {str(Path("provisioner") / m).removesuffix(".py").removesuffix("/__init__")
                               for m in MODULES} | {"provisioner/install"}
                    assert rel in allowed or rel.startswith("provisioner/install"), f"{path}: imports {name}"
                elif top != "zstandard":  # optional, imported inside a try
                    assert top in stdlib, f"{path}: imports non-stdlib {name}"

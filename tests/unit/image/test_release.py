import hashlib
import os
from pathlib import Path

from provisioner.image.recipe import load_recipe
from provisioner.image.release import digests_text, parse_version_txt, publish, staging_dir, version_txt
from provisioner.image.rootfs import first_error_line, mmdebstrap_argv


def test_version_txt_is_readable_by_flatcar_install():
    values = parse_version_txt(version_txt("1.2.3", "abc"))
    assert values["FLATCAR_VERSION"] == "1.2.3" and values["PROVISIONER_VERSION"] == "1.2.3"


def test_digests_are_sha512sum_format(tmp_path):
    path = tmp_path / "x.bin.bz2"
    path.write_bytes(b"data")
    lines = digests_text(path).splitlines()
    assert lines[0].startswith("#")
    assert lines[1] == f"{hashlib.sha512(b'data').hexdigest()}  x.bin.bz2"
    bmap = tmp_path / "x.bin.bmap"
    bmap.write_bytes(b"<bmap/>")
    lines = digests_text(path, bmap).splitlines()
    assert lines[1:] == [f"{hashlib.sha512(b'data').hexdigest()}  x.bin.bz2",
                         f"{hashlib.sha512(b'<bmap/>').hexdigest()}  x.bin.bmap"]


def test_publish_replaces_version_and_moves_current(tmp_path):
    base = tmp_path / "stable"
    base.mkdir()
    for version in ("1.0.0", "1.0.1", "1.0.1"):
        staging = staging_dir(base, version)
        (staging / "version.txt").write_text(version_txt(version, "x"))
        publish(base, staging, version, b"KEY")
    assert os.readlink(base / "current") == "1.0.1"
    assert (base / "current" / "version.txt").exists()
    assert (base / "release-key.asc").read_bytes() == b"KEY"
    assert sorted(p.name for p in base.iterdir()) == ["1.0.0", "1.0.1", "current", "release-key.asc"]


def test_mmdebstrap_uses_host_sources_and_the_deb_cache():
    recipe = load_recipe()
    argv = mmdebstrap_argv(recipe, "bookworm", ["/etc/apt/sources.list.d/debian.sources"], Path("/t"), Path("/c"))
    assert argv[-3:] == ["bookworm", "/t", "/etc/apt/sources.list.d/debian.sources"]
    assert "--setup-hook=sync-in /c /var/cache/apt/archives/" in argv
    assert "--customize-hook=sync-out /var/cache/apt/archives /c" in argv
    assert not any("://" in a for a in argv)
    download = next(a for a in argv if "apt-get download" in a)
    assert download.startswith("--customize-hook=") and 'chroot "$1"' in download
    assert all(name in download for name in recipe.efi_packages)
    assert argv.index(download) > argv.index("--customize-hook=sync-out /var/cache/apt/archives /c")


def test_first_error_line_prefers_apts_reason():
    stderr = ("I: running apt-get update...\nE: Unable to locate package nosuchpkg\n"
              "E: apt-get --yes install failed\nE: mmdebstrap failed\n")
    assert first_error_line(stderr) == "E: Unable to locate package nosuchpkg"


def test_compress_makes_bz2_and_a_framed_zst_both_tools_read(tmp_path):
    import subprocess

    from provisioner.image.release import compress
    from provisioner.install.zstdframes import is_framed

    raw = tmp_path / "img.bin"
    with open(raw, "wb") as handle:           # 9 MiB sparse with data at both ends: three frames
        handle.write(os.urandom(4096))
        handle.seek(9 << 20)
        handle.write(b"end")
    (tmp_path / "out").mkdir()
    bz2, zst = compress(raw, tmp_path / "out")
    assert is_framed(zst.read_bytes()[:64])
    for path, tool in ((zst, "zstd"), (bz2, "lbzip2")):
        out = subprocess.run([tool, "-d", "-c", str(path)], capture_output=True, check=True).stdout
        assert hashlib.sha256(out).digest() == hashlib.sha256(raw.read_bytes()).digest(), tool

"""A download that breaks resumes at a mirror (`--mirror`, the other boot servers of a site): from the same
byte with a Range request, only for a file of the same size, and the installer's checks still cover every
byte of the mixture. Real HTTP servers on 127.0.0.1; the first one stops listening after the cut, as a
killed server would."""

from __future__ import annotations

import shutil

from .conftest import run_install
from .test_install import DISK, _one_line_error, assert_installed, assert_no_valid_gpt

CUT = 4000   # the .zst is ~10 KiB


def _mirror_copy(release, tmp_path, change=None, fmt="zst"):
    """A copy of the release dir, its image in `fmt` changed by change(bytearray) when given."""
    mirror = tmp_path / "mirror"
    shutil.copytree(release.base, mirror, symlinks=True)
    if change is not None:
        target = mirror / release.version / release.files[fmt].name
        data = bytearray(target.read_bytes())
        change(data)
        target.write_bytes(bytes(data))
    return mirror


def _install_through_a_dying_server(device, http_release, serve_dir, mirror_dir, *args: str):
    base, control = http_release
    control.cut_after, control.gone_after_cut = CUT, True
    mirror, mirrored = serve_dir(mirror_dir)
    proc = run_install("-d", device, "-C", "stable", "-b", base, "--mirror", mirror, "--yes", "--retries", "3",
                       *args)
    return proc, mirrored


def test_a_download_cut_by_a_dying_server_resumes_at_the_mirror(loop_disk, release, http_release, serve_dir,
                                                               tmp_path):
    device = loop_disk(DISK)
    proc, mirrored = _install_through_a_dying_server(device, http_release, serve_dir, _mirror_copy(release, tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert mirrored.range_requests == [f"bytes={CUT}-"]            # the rest only, from the mirror
    assert f"at byte {CUT}; resuming from http://127.0.0.1:" in proc.stderr
    assert_installed(device, release)


def test_a_mirror_whose_bytes_differ_fails_the_sha512_and_wipes(installed_disk, release, http_release,
                                                                 serve_dir, tmp_path):
    """The raw image without its bmap: no compressor's checksum and no block map, only the signed sha512 sees
    the byte the mirror changed (zstd's own frame checksum would find it first otherwise)."""
    def flip(data: bytearray) -> None:
        data[len(data) // 2] ^= 0xFF

    proc, mirrored = _install_through_a_dying_server(installed_disk, http_release, serve_dir,
                                                     _mirror_copy(release, tmp_path, flip, "raw"),
                                                     "--format", "raw", "--no-bmap")
    assert mirrored.range_requests == [f"bytes={CUT}-"]
    assert proc.returncode == 1, proc.stderr
    _one_line_error(proc, "sha512 mismatch", "wiped")
    assert_no_valid_gpt(installed_disk)


def test_a_mirror_with_another_size_is_refused(installed_disk, release, http_release, serve_dir, tmp_path):
    proc, _ = _install_through_a_dying_server(installed_disk, http_release, serve_dir,
                                              _mirror_copy(release, tmp_path, lambda data: data.extend(b"x")))
    assert proc.returncode == 1, proc.stderr
    _one_line_error(proc, "not the same file")
    assert_no_valid_gpt(installed_disk)


def test_a_mirror_needs_a_base_url_and_is_a_url(release):
    proc = run_install("-d", "/dev/null", "-f", str(release.files["zst"]), "--mirror", "http://m/stable")
    assert proc.returncode == 2 and "--mirror needs -b" in proc.stderr
    proc = run_install("-d", "/dev/null", "-b", "http://s/stable", "--mirror", "m/stable")
    assert proc.returncode == 2 and "--mirror 'm/stable': not an http(s) URL" in proc.stderr

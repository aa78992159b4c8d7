"""A download that breaks resumes at a mirror (`--mirror`, the other boot servers of a site): from the same
byte with a Range request, only for a file of the same size, and the installer's checks still cover every
byte of the mixture. Real HTTP servers on 127.0.0.1; the first one stops listening after the cut, as a
killed server would. A server dead before the install starts costs one refused connection: everything,
the cloud-config on that server included, comes from the mirror; a 404 is final."""

from __future__ import annotations

import logging
import shutil

from provisioner.install.source import Fetcher

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


def _site_copy(release, tmp_path, cloud: bytes):
    """A boot server's directory: the release under stable/, the node's cloud-config at /cloud-config."""
    site = tmp_path / "site"
    shutil.copytree(release.base, site / "stable", symlinks=True)
    (site / "cloud-config").write_bytes(cloud)
    return site


def test_a_server_dead_from_the_start_the_install_and_its_cloud_config_come_from_the_mirror(
        loop_disk, release, dead_url, serve_dir, tmp_path):
    cloud = b"#cloud-config\nhostname: from-the-mirror\n"
    mirror, mirrored = serve_dir(_site_copy(release, tmp_path, cloud))
    query = "/cloud-config?mac=52:54:00:00:00:01&boot_secret=s3cret"
    device = loop_disk(DISK)
    proc = run_install("-d", device, "-C", "stable", "-b", f"{dead_url}/stable", "--mirror", f"{mirror}/stable",
                       "-c", dead_url + query, "--yes", "--retries", "3")
    assert proc.returncode == 0, proc.stderr
    assert_installed(device, release, cloud_config=cloud)
    assert mirrored.gets[0] == query                         # the cloud-config, same path and query
    # One failover; the mirror is asked first from then on (every HEAD and GET went there).
    failovers = [line for line in proc.stderr.splitlines() if "refused" in line]
    assert len(failovers) == 1 and f"{dead_url}{query}: " in failovers[0], proc.stderr
    assert f"resuming from {mirror}{query}" in failovers[0]
    assert any(path.endswith(".zst") for path in mirrored.heads) and mirrored.range_requests == []


def test_a_dead_server_is_asked_once_then_the_mirror_first(dead_url, serve_dir, tmp_path, caplog):
    (tmp_path / "stable").mkdir()
    for name in ("a", "b"):
        (tmp_path / "stable" / name).write_bytes(b"x" * 10)
    mirror, mirrored = serve_dir(tmp_path)
    fetcher = Fetcher(retries=3, base_url=f"{dead_url}/stable", mirrors=[f"{mirror}/stable"])
    with caplog.at_level(logging.WARNING, logger="provisioner.install.source"):
        assert fetcher.exists(f"{dead_url}/stable/a")
        assert fetcher.size(f"{dead_url}/stable/b") == 10
        assert fetcher.read_bytes(f"{dead_url}/stable/a") == b"x" * 10
    assert mirrored.heads == ["/stable/a", "/stable/b"] and mirrored.gets == ["/stable/a"]
    assert [record.getMessage().split("; ")[1] for record in caplog.records] == [f"trying {mirror}/stable/a"]


def test_a_404_at_the_first_server_is_final(http_release, serve_dir, release, tmp_path):
    base, control = http_release
    only_at_the_mirror = tmp_path / "mirror" / "only-here"
    only_at_the_mirror.parent.mkdir()
    only_at_the_mirror.write_bytes(b"x")
    mirror, mirrored = serve_dir(only_at_the_mirror.parent)
    fetcher = Fetcher(retries=3, base_url=base, mirrors=[mirror])
    assert not fetcher.exists(f"{base}/only-here")
    assert control.heads == ["/only-here"] and mirrored.heads == []

"""The installer end to end, as root, on loop devices, through the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner.disk import gpt, layout
from provisioner.disk.blockdev import reread_partitions
from provisioner.node.hook import hook_commands
from provisioner.node.kernel_cmdline import KernelCmdline
from tests.fixtures.coreos_image import compress, sign, write_digests

from .conftest import REPO, install_argv, run_install

MiB = 1 << 20
DISK = 160 * MiB   # as installed_disk (conftest.py)


def _table(path) -> gpt.GptTable:
    return gpt.read_gpt(str(path), require_valid=False)


def assert_no_valid_gpt(device: str) -> None:
    table = _table(device)
    assert not table.valid, f"{device} still has a valid GPT: {table.entries}"


def assert_installed(device: str, release, *, cloud_config: bytes | None = None) -> None:
    """GPT equals the image's, filesystems fsck clean, known files identical."""
    disk, image = _table(device), _table(release.image.path)
    assert disk.valid and image.valid
    assert disk.entries == image.entries
    assert disk.disk_guid == layout.MAGIC_DISK_GUID
    assert disk.entry(layout.USR_A).boot.successful
    reread_partitions(device, gpt.partition_layout(disk.entries))
    for number in (layout.USR_A, layout.OEM, layout.ROOT):
        fsck = subprocess.run(["e2fsck", "-fn", f"{device}p{number}"], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    for rel, data in release.image.root_files.items():
        assert _debugfs_cat(f"{device}p9", rel) == data
    for rel, data in release.image.usr_files.items():
        assert _debugfs_cat(f"{device}p3", rel) == data
    if cloud_config is not None:
        for rel in ("var/lib/coreos-install/user_data", "var/lib/flatcar-install/user_data"):
            assert _debugfs_cat(f"{device}p9", rel) == cloud_config


def _debugfs_cat(device: str, rel: str) -> bytes:
    out = subprocess.run(["debugfs", "-R", f"cat /{rel}", device], capture_output=True)
    return out.stdout


def _digest(device: str, length: int) -> str:
    with open(device, "rb") as handle:
        return hashlib.sha256(handle.read(length)).hexdigest()


def _one_line_error(proc, *needles: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "no error printed"
    last = lines[-1]
    assert last.startswith("provisioner: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in last, last
    return last


# ---- success paths -------------------------------------------------------------------------------

def test_http_install_with_resume_after_a_cut(loop_disk, release, http_release, tmp_path):
    base, control = http_release
    control.cut_after = 4000  # the .zst is ~10 KiB: cut it mid-way, once
    device = loop_disk(DISK)
    cloud = b"#cloud-config\nhostname: node1\n"
    ignition = b'{"ignition": {"version": "3.3.0"}}'
    (tmp_path / "node1.yaml").write_bytes(cloud)
    (tmp_path / "config.ign").write_bytes(ignition)
    proc = run_install("-d", device, "-C", "stable", "-b", base, "-c", str(tmp_path / "node1.yaml"),
                       "-i", str(tmp_path / "config.ign"), "--yes", "--progress", "json")
    assert proc.returncode == 0, proc.stderr
    assert control.range_requests == ["bytes=4000-"]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "done"
    assert {"verify", "progress"} <= {e["event"] for e in events}
    last = [e for e in events if e["event"] == "progress"][-1]   # bmap install: the share of real data
    assert last["mapped"] > 0 and last["written"] == last["mapped"] and last["bytes"] == last["total"]
    done = events[-1]["summary"]
    assert done["version"] == release.version and done["format"] == "zst" and done["signer"]
    assert_installed(device, release, cloud_config=cloud)
    assert _debugfs_cat(f"{device}p6", "config.ign") == ignition


@pytest.mark.parametrize("fmt", ["zst", "zst1", "bz2", "xz", "gz", "raw"])
def test_local_file_every_format_is_byte_identical(loop_disk, release, fmt):
    device = loop_disk(DISK)
    with open(device, "r+b") as handle:  # old data everywhere: holes must be zeroed, not left
        handle.write(b"\xa5" * DISK)
    bmap = ["--bmap", str(release.image.bmap)] if fmt == "zst1" else []  # .zst1 is not a known suffix
    proc = run_install("-d", device, "-f", str(release.files[fmt]), "--yes", "--progress", "json", *bmap)
    assert proc.returncode == 0, proc.stderr
    size = release.image.size
    with open(release.image.path, "rb") as image:
        assert _digest(device, size) == hashlib.sha256(image.read()).hexdigest()
    summary = json.loads(proc.stdout.splitlines()[-1])["summary"]
    assert summary["zeroed"] > 0 and summary["format"] == fmt.rstrip("1")
    if fmt == "zst":
        assert "holes skipped" in summary["decompressor"]


def test_without_bmap_zero_chunks_are_zeroed(loop_disk, release):
    device = loop_disk(DISK)
    with open(device, "r+b") as handle:
        handle.write(b"\x5a" * DISK)
    proc = run_install("-d", device, "-f", str(release.files["bz2"]), "--no-bmap", "--yes", "--no-direct-io")
    assert proc.returncode == 0, proc.stderr
    with open(release.image.path, "rb") as image:
        assert _digest(device, release.image.size) == hashlib.sha256(image.read()).hexdigest()


def test_unattended_install_from_the_kernel_command_line(loop_disk, release, http_release):
    """The live image's hook (node/hook.py) turns `provisioner.install="..."` into the installer run."""
    base, _ = http_release
    (release.base / "node2.yaml").write_bytes(b"#cloud-config\nhostname: node2\n")
    device = loop_disk(DISK)
    cmdline = KernelCmdline.parse(f'console=ttyS0 provisioner.install="-d {device} -b {base} '
                                  f'-c {base}/node2.yaml --format bz2" provisioner.after=none\n')
    (argv,), after = hook_commands(cmdline, release_key=str(release.key.public_key))
    assert after is None
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["summary"]["format"] == "bz2"
    assert_installed(device, release, cloud_config=b"#cloud-config\nhostname: node2\n")


def test_network_units_are_copied_without_clobbering(loop_disk, release, tmp_path):
    units = tmp_path / "network"
    units.mkdir()
    (units / "10-eth0.network").write_text("[Match]\nName=eth0\n[Network]\nDHCP=yes\n")
    device = loop_disk(DISK)
    proc = run_install("-d", device, "-f", str(release.files["zst"]), "-n", "--network-dir", str(units), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert _debugfs_cat(f"{device}p9", "etc/systemd/network/10-eth0.network").startswith(b"[Match]")


def test_download_only_saves_verified_files(release, http_release, tmp_path):
    base, _ = http_release
    proc = run_install("-D", "-b", base, "--format", "bz2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    name = release.image_name + ".bz2"
    assert (tmp_path / name).read_bytes() == release.files["bz2"].read_bytes()
    assert (tmp_path / (name + ".sig")).exists() and (tmp_path / (release.image_name + ".bmap")).exists()


def test_without_yes_and_without_a_terminal_nothing_is_written(loop_disk, release):
    device = loop_disk(DISK)
    proc = run_install("-d", device, "-f", str(release.files["zst"]))
    assert proc.returncode == 2
    _one_line_error(proc, "--yes")
    assert not _table(device).valid


def test_image_file_as_target_and_dry_run(release, tmp_path):
    target = tmp_path / "target.img"
    with open(target, "wb") as handle:
        handle.truncate(DISK)
    dry = run_install("-d", str(target), "-f", str(release.files["zst"]), "-y")
    assert dry.returncode == 0 and "block map:" in dry.stdout
    assert not _table(target).valid  # -y is flatcar's dry run: nothing written
    proc = run_install("-d", str(target), "-f", str(release.files["zst"]), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert _table(target).entries == _table(release.image.path).entries


def test_zipapp_runs_standalone_without_site_packages(loop_disk, release, tmp_path):
    from provisioner.install.zipapp import build_zipapp

    pyz = build_zipapp(tmp_path / "installer.pyz")
    device = loop_disk(DISK)
    with open(device, "r+b") as handle:  # old data everywhere: holes must be zeroed, not left
        handle.write(b"\xa5" * DISK)
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(pyz), "-d", device, "-f", str(release.files["zst"]),  # no zstandard here: the zstd tool path
         "--yes", "--progress", "json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout.splitlines()[-1])
    assert done["event"] == "done"
    # the tool (one per core, up to two), fed mapped frames
    assert re.search(r"zstd( x2)? \(framed: holes skipped\)$", done["summary"]["decompressor"])
    with open(release.image.path, "rb") as image:
        assert _digest(device, release.image.size) == hashlib.sha256(image.read()).hexdigest()


# ---- failures leave no valid GPT -----------------------------------------------------------------

def _tampered_release(release, tmp_path, mutate, *, resign=True, redigest=True) -> Path:
    """A copy of the .zst (and its .sig/.DIGESTS/.bmap) after `mutate(raw_image_bytes_or_path)`."""
    work = tmp_path / "tampered"
    work.mkdir()
    name = release.files["zst"].name
    target = work / name
    mutate(target)
    shutil.copyfile(release.image.bmap, work / (release.image_name + ".bmap"))
    if redigest:
        write_digests(target)
    else:
        shutil.copyfile(str(release.files["zst"]) + ".DIGESTS", str(target) + ".DIGESTS")
    if resign:
        sign(release.key, target)
    else:
        shutil.copyfile(str(release.files["zst"]) + ".sig", str(target) + ".sig")
    shutil.copyfile(release.key.public_key, work / "release-key.asc")
    return target


def test_corrupt_image_data_fails_bmap_check_and_wipes(installed_disk, release, tmp_path):
    def mutate(target):
        raw = bytearray(release.image.path.read_bytes())
        start = release.image.starts[layout.ROOT]
        raw[start + 1024 + 100] ^= 0xFF  # inside the ext4 superblock: a mapped block
        (tmp_path / "bad.bin").write_bytes(raw)
        compress(tmp_path / "bad.bin", "zst", target)

    image = _tampered_release(release, tmp_path, mutate)  # validly signed, but not what the bmap says
    proc = run_install("-d", installed_disk, "-f", str(image), "--yes")
    assert proc.returncode == 1
    _one_line_error(proc, "bmap checksum mismatch", "wiped")
    assert_no_valid_gpt(installed_disk)


def test_wrong_digest_fails_and_wipes(installed_disk, release, tmp_path):
    image = _tampered_release(release, tmp_path, lambda t: shutil.copyfile(release.files["zst"], t))
    Path(str(image) + ".DIGESTS").write_text(f"# SHA512 HASH\n{'ab' * 64}  {image.name}\n")
    proc = run_install("-d", installed_disk, "-f", str(image), "--yes")
    assert proc.returncode == 1
    _one_line_error(proc, "sha512 mismatch", "wiped")
    assert_no_valid_gpt(installed_disk)


def test_bad_signature_fails_and_wipes(installed_disk, release, other_key, tmp_path):
    image = _tampered_release(release, tmp_path, lambda t: shutil.copyfile(release.files["zst"], t))
    sign(other_key, image)  # a good signature, by a key we do not trust
    proc = run_install("-d", installed_disk, "-f", str(image), "--yes")
    assert proc.returncode == 1
    _one_line_error(proc, "signature verification failed", "wiped")
    assert_no_valid_gpt(installed_disk)


def _manifest_release(release, tmp_path, key, *, bmap_line=True) -> Path:
    """A copy of the .zst with only a signed DIGESTS manifest (no whole-image .sig), signed by `key`."""
    work = tmp_path / "manifest"
    work.mkdir()
    target = work / release.files["zst"].name
    shutil.copyfile(release.files["zst"], target)
    bmap = work / (release.image_name + ".bmap")
    shutil.copyfile(release.image.bmap, bmap)
    sign(key, write_digests(target, *([bmap] if bmap_line else [])))
    shutil.copyfile(release.key.public_key, work / "release-key.asc")
    return target


def test_signed_manifest_alone_is_enough(loop_disk, release, tmp_path):
    image = _manifest_release(release, tmp_path, release.key)
    device = loop_disk(DISK)
    dry = run_install("-d", device, "-f", str(image), "-y")
    assert "DIGESTS.sig (signed sha512 manifest)" in dry.stdout, dry.stdout
    proc = run_install("-d", device, "-f", str(image), "--yes", "--progress", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["summary"]["signer"]
    assert_installed(device, release)


def test_manifest_signed_by_an_unknown_key_fails_before_writing(installed_disk, release, other_key, tmp_path):
    image = _manifest_release(release, tmp_path, other_key)
    proc = run_install("-d", installed_disk, "-f", str(image), "--yes")
    assert proc.returncode == 1
    _one_line_error(proc, "DIGESTS: OpenPGP signature verification failed")
    assert _table(installed_disk).valid  # refused before the first write: the old install is intact


def test_bmap_not_matching_the_signed_manifest_fails_before_writing(installed_disk, release, tmp_path):
    image = _manifest_release(release, tmp_path, release.key)
    bmap = image.parent / (release.image_name + ".bmap")
    bmap.write_text(bmap.read_text().replace("</bmap>", "<!-- edited --></bmap>"))
    proc = run_install("-d", installed_disk, "-f", str(image), "--yes")
    assert proc.returncode == 1
    _one_line_error(proc, ".bmap: sha512 differs from the signed manifest")
    assert _table(installed_disk).valid


def test_image_not_matching_the_signed_manifest_fails_and_wipes(installed_disk, release, tmp_path):
    image = _manifest_release(release, tmp_path, release.key)
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF
    image.write_bytes(data)
    proc = run_install("-d", installed_disk, "-f", str(image), "--yes")
    assert proc.returncode == 1
    _one_line_error(proc, "wiped")
    assert_no_valid_gpt(installed_disk)


def test_truncated_stream_fails_and_wipes(installed_disk, release, tmp_path):
    def mutate(target):
        data = release.files["zst"].read_bytes()
        target.write_bytes(data[: len(data) * 2 // 3])

    image = _tampered_release(release, tmp_path, mutate)  # digest and signature match the truncated file
    proc = run_install("-d", installed_disk, "-f", str(image), "--yes")
    assert proc.returncode == 1
    _one_line_error(proc, "wiped")
    assert_no_valid_gpt(installed_disk)


def test_unsigned_local_image_needs_the_explicit_flag(loop_disk, release, tmp_path):
    image = tmp_path / release.files["zst"].name
    shutil.copyfile(release.files["zst"], image)
    device = loop_disk(DISK)
    proc = run_install("-d", device, "-f", str(image), "--yes")
    assert proc.returncode == 1
    _one_line_error(proc, ".sig: not found", "--no-sig-verify")
    assert not _table(device).valid and _digest(device, MiB) == hashlib.sha256(bytes(MiB)).hexdigest()
    proc = run_install("-d", device, "-f", str(image), "--yes", "--no-sig-verify")
    assert proc.returncode == 0, proc.stderr


def test_kill_9_mid_write_then_rerun_succeeds(installed_disk, big_release, http_big_release):
    base, control = http_big_release
    control.stall_after = big_release.files["zst"].stat().st_size // 2  # the writer stops mid-image
    device = installed_disk
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(install_argv("-d", device, "-b", base, "--yes", "--progress", "json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until writing began (the "start" event + a write)
            line = proc.stdout.readline()
            if '"progress"' in line or not line:
                break
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        control.release_stall.set()
    assert proc.returncode == -signal.SIGKILL
    assert_no_valid_gpt(device)  # identifiable state: the old table is gone, the new one not yet written
    again = run_install("-d", device, "-b", base, "--yes")
    assert again.returncode == 0, again.stderr
    assert_installed(device, big_release)


# ---- refusals: one line, nothing written ---------------------------------------------------------

def test_mounted_disk_is_refused(installed_disk, release, tmp_path):
    reread_partitions(installed_disk)
    point = tmp_path / "mnt"
    point.mkdir()
    subprocess.run(["mount", f"{installed_disk}p9", str(point)], check=True)
    try:
        before = _digest(installed_disk, 2 * MiB)
        proc = run_install("-d", installed_disk, "-f", str(release.files["zst"]), "--yes")
        assert proc.returncode == 1
        _one_line_error(proc, "mounted on", "--force", "nothing written")
        assert _digest(installed_disk, 2 * MiB) == before
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_too_small_disk_is_refused(loop_disk, release):
    device = loop_disk(48 * MiB)
    proc = run_install("-d", device, "-f", str(release.files["zst"]), "--yes")
    assert proc.returncode == 1
    _one_line_error(proc, "smaller than the image", "nothing written")
    assert _digest(device, MiB) == hashlib.sha256(bytes(MiB)).hexdigest()


def test_partition_path_is_refused(installed_disk, release):
    reread_partitions(installed_disk)
    before = _digest(installed_disk, 2 * MiB)
    proc = run_install("-d", f"{installed_disk}p9", "-f", str(release.files["zst"]), "--yes")
    assert proc.returncode == 1
    _one_line_error(proc, "is a partition", installed_disk)
    assert _digest(installed_disk, 2 * MiB) == before


def test_4kn_disk_gets_a_clear_answer(tmp_path, release, root_required):
    backing = tmp_path / "4kn.img"
    with open(backing, "wb") as handle:
        handle.truncate(DISK)
    device = subprocess.run(["losetup", "--find", "--show", "--sector-size", "4096", str(backing)],
                            check=True, capture_output=True, text=True).stdout.strip()
    try:
        proc = run_install("-d", device, "-f", str(release.files["zst"]), "--yes")
        assert proc.returncode == 1
        _one_line_error(proc, "4096-byte logical sectors", "nothing written")
    finally:
        subprocess.run(["losetup", "-d", device], check=True)


def test_usage_errors_exit_2(release):
    proc = run_install("-f", str(release.files["zst"]), "--yes")
    assert proc.returncode == 2
    _one_line_error(proc, "-d DEVICE is required")
    proc = run_install("-d", "/dev/null", "-f", "x", "-b", "http://127.0.0.1:9/", "--yes")
    assert proc.returncode == 2
    _one_line_error(proc, "-b and -f exclude each other")

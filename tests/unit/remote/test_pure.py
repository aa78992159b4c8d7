"""Pure parts of the rescue mode: targets, host-key decisions, disk choice, RAID stop plans, progress."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from provisioner.errors import ConfigError, DiskError, UsageError
from provisioner.remote import inspect
from provisioner.remote.hostkeys import HostKeyPolicy, decide, fingerprint, known_hosts_name, normalize_pin
from provisioner.remote.progress import describe, parse_event
from provisioner.remote.push import installer_args, release_files
from provisioner.remote.rescue import RescueRequest, installer_argv
from provisioner.remote.target import load_ssh_config, parse_target, resolve

GB = 1_000_000_000


# ---- targets and ssh config -------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("root@203.0.113.10", ("root", "203.0.113.10", None)),
    ("kimsufi-1", (None, "kimsufi-1", None)),
    ("host:2222", (None, "host", 2222)),
    ("admin@[2001:db8::1]:22", ("admin", "2001:db8::1", 22)),
    ("2001:db8::1", (None, "2001:db8::1", None)),
])
def test_parse_target(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["@host", "host:0", "host:http", "root@"])
def test_parse_target_rejects(text):
    with pytest.raises(UsageError):
        parse_target(text)


def test_resolve_uses_ssh_config_and_command_line_wins(tmp_path):
    config = tmp_path / "config"
    config.write_text("Host kimsufi-1\n  HostName 198.51.100.7\n  Port 2222\n  User admin\n"
                      "  IdentityFile ~/.ssh/kimsufi\n  ProxyJump bastion\n"
                      "Host bastion\n  HostName 192.0.2.1\n  User jump\n")
    target = resolve("kimsufi-1", config=load_ssh_config(str(config)))
    assert (target.endpoint.hostname, target.endpoint.port, target.endpoint.user) == ("198.51.100.7", 2222, "admin")
    assert target.endpoint.identity_files[0].endswith("/.ssh/kimsufi")
    assert [(j.hostname, j.port, j.user) for j in target.jumps] == [("192.0.2.1", 22, "jump")]
    override = resolve("root@kimsufi-1", config=load_ssh_config(str(config)), port=22, identities=("/k",))
    assert (override.endpoint.user, override.endpoint.port, override.endpoint.identity_files) == ("root", 22, ("/k",))
    plain = resolve("203.0.113.10", config=load_ssh_config(str(config)))
    assert (str(plain.endpoint), plain.jumps) == ("root@203.0.113.10", ())


def test_explicit_missing_ssh_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such ssh config"):
        load_ssh_config(str(tmp_path / "nope"))


# ---- host keys ---------------------------------------------------------------------------------

BLOB = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))  # SSH wire form of a key
FP = fingerprint(BLOB)


def test_fingerprint_is_openssh_form():
    assert "SHA256:" + base64.b64encode(hashlib.sha256(BLOB).digest()).decode().rstrip("=") == FP
    assert len(FP) == 7 + 43
    assert normalize_pin(FP) == FP and normalize_pin(FP + "=") == FP
    for bad in ("MD5:aa:bb", "SHA256:short", "a" * 50):
        with pytest.raises(UsageError):
            normalize_pin(bad)


def test_known_hosts_name():
    assert known_hosts_name("h", 22) == "h" and known_hosts_name("h", 2222) == "[h]:2222"


def test_decide_policies():
    other = "SHA256:" + "B" * 43
    known = HostKeyPolicy()
    assert decide(known, "h", "ssh-ed25519", FP, {"ssh-ed25519": FP}).accept
    changed = decide(known, "h", "ssh-ed25519", other, {"ssh-ed25519": FP})
    assert not changed.accept and "CHANGED" in changed.reason and "ssh-keygen -R" in changed.reason
    unknown = decide(known, "h", "ssh-ed25519", FP, {})
    assert not unknown.accept and f"--host-key {FP}" in unknown.reason
    tofu = decide(HostKeyPolicy(accept_new=True), "h", "ssh-ed25519", FP, {})
    assert tofu.accept and tofu.record
    # accept-new never accepts a changed key (OpenSSH StrictHostKeyChecking=accept-new).
    assert not decide(HostKeyPolicy(accept_new=True), "h", "ssh-ed25519", other, {"ssh-ed25519": FP}).accept
    pinned = HostKeyPolicy(pin=FP)
    assert decide(pinned, "h", "ssh-ed25519", FP, {"ssh-ed25519": other}).accept  # the pin wins
    assert not decide(pinned, "h", "ssh-ed25519", other, {}).accept


# ---- inspect: busy disks, disk choice, stop plans ------------------------------------------------

def _facts(rows, mounts=(), swaps=(), holders=None):
    return inspect.parse_facts({
        "hostname": "rescue", "kernel": "6.1", "python": [3, 9, 2], "python_path": "/usr/bin/python3",
        "euid": 0, "lsblk": {"blockdevices": rows}, "mounts": [list(m) + ["ext4"] for m in mounts],
        "swaps": list(swaps), "holders": holders or {}, "memory": {"MemTotal": 8 << 30, "MemAvailable": 7 << 30},
        "tools": {"lsblk": "/bin/lsblk", "mdadm": None},
    })


def _disk(name, size, children=(), type_="disk", ro=False):
    return {"name": name, "path": f"/dev/{name}", "type": type_, "size": size, "ro": ro,
            "children": list(children)}


# The OVH/Hetzner case: the old install's RAID1 (sda1+sdb1) auto-assembled as md0, LVM on top.
RAID_ROWS = [
    _disk("sda", 2000 * GB, [dict(_disk("sda1", 2000 * GB, [dict(_disk("md0", 2000 * GB, [
        _disk("vg0-root", 100 * GB, type_="lvm")], type_="raid1"))], type_="part"))]),
    _disk("sdb", 2000 * GB, [dict(_disk("sdb1", 2000 * GB, [dict(_disk("md0", 2000 * GB, [
        _disk("vg0-root", 100 * GB, type_="lvm")], type_="raid1"))], type_="part"))]),
    _disk("nvme0n1", 480 * GB),
    _disk("sdc", 8 * GB),  # too small (flatcar-install -s: larger than 10 GB)
    _disk("loop0", 300 * 1 << 20, type_="loop"),
    _disk("sr0", 700 * 1 << 20, type_="rom", ro=True),
]


def test_choose_disk_smallest_unused_over_10gb():
    choice = inspect.choose_disk(_facts(RAID_ROWS))
    assert choice.disk.path == "/dev/nvme0n1"
    assert any(r.startswith("/dev/sda: busy (/dev/md0 (raid1) is built on /dev/sda)") for r in choice.rejected)
    assert any(r.startswith("/dev/sdc: 7.5 GiB is not larger") or r.startswith("/dev/sdc:") for r in choice.rejected)


def test_choose_disk_ties_go_to_the_first_name_and_types_filter():
    rows = [_disk("sdb", 20 * GB), _disk("sda", 20 * GB), _disk("loop3", 12 * GB, type_="loop")]
    assert inspect.choose_disk(_facts(rows)).disk.path == "/dev/sda"
    assert inspect.choose_disk(_facts(rows), types=("disk", "loop")).disk.path == "/dev/loop3"
    assert inspect.choose_disk(_facts(rows), min_size=1, types=("loop",)).disk.path == "/dev/loop3"


def test_choose_disk_none_left_names_each_reason():
    rows = [_disk("vda", 50 * GB, [_disk("vda1", 50 * GB, type_="part")])]
    with pytest.raises(DiskError, match=r"/dev/vda: busy \(/dev/vda1 is mounted on /\)"):
        inspect.choose_disk(_facts(rows, mounts=[("/dev/vda1", "/")]))


def test_busy_reasons_mounts_swap_holders():
    rows = [_disk("sda", 100 * GB, [_disk("sda1", 1 * GB, type_="part"), _disk("sda2", 99 * GB, type_="part")])]
    facts = _facts(rows, mounts=[("/dev/sda2", "/mnt")], swaps=["/dev/sda1"], holders={"sda2": ["dm-3"]})
    assert inspect.busy_reasons(facts, facts.disk("/dev/sda")) == [
        "/dev/sda1 is in use as swap", "/dev/sda2 is mounted on /mnt", "/dev/dm-3 holds sda2"]


def test_stop_plan_topmost_first_then_zero_superblocks():
    facts = _facts(RAID_ROWS)
    assert inspect.stop_plan(facts, facts.disk("/dev/sda")) == [
        ["dmsetup", "remove", "vg0-root"],
        ["mdadm", "--stop", "/dev/md0"],
        ["mdadm", "--zero-superblock", "/dev/sda1"],
    ]


def test_stop_plan_refuses_mounted():
    rows = [_disk("sda", 100 * GB, [_disk("sda1", 100 * GB, [_disk("md0", 100 * GB, type_="raid1")], "part")])]
    facts = _facts(rows, mounts=[("/dev/md0", "/srv")])
    with pytest.raises(DiskError, match="/dev/md0 is mounted on /srv; unmount it first"):
        inspect.stop_plan(facts, facts.disk("/dev/sda"))


def test_report_names_choice_and_python():
    text = inspect.format_report(_facts(RAID_ROWS))
    assert "python3: 3.9.2" in text and "--disk auto would choose /dev/nvme0n1" in text
    assert "tools missing: mdadm" in text


# ---- progress, push, installer argv --------------------------------------------------------------

def test_parse_event_and_describe():
    event = parse_event('{"event": "progress", "bytes": 50, "total": 200, "stage": "writing"}')
    assert event["bytes"] == 50 and describe(event) == "writing 50 B / 200 B (25 %)"
    assert parse_event("Success!") is None and parse_event('{"event": "bogus"}') is None
    assert parse_event("{broken") is None
    done = {"event": "done", "stage": "install", "bytes": 30, "total": 136, "message": "installed 1.2.3"}
    assert describe(done) == "done: installed 1.2.3"


def test_release_files_for_push(tmp_path):
    image = tmp_path / "provisioner_production_image.bin.zst"
    image.write_bytes(b"x")
    (tmp_path / "provisioner_production_image.bin.zst.sig").write_bytes(b"s")
    (tmp_path / "provisioner_production_image.bin.bmap").write_text("<bmap/>")
    name, fmt, files = release_files(image)
    assert (name, fmt) == ("provisioner_production_image.bin", "zst")
    assert sorted(files) == ["/pushed/provisioner_production_image.bin.bmap",
                             "/pushed/provisioner_production_image.bin.zst",
                             "/pushed/provisioner_production_image.bin.zst.sig"]
    raw = tmp_path / "disk.bin"
    raw.write_bytes(b"r")
    assert release_files(raw)[:2] == ("disk.bin", "raw")
    assert installer_args("http://127.0.0.1:5", name, fmt) == [
        "-b", "http://127.0.0.1:5", "-V", "pushed", "--image-name", name, "--format", "zst"]


def test_installer_argv_replaces_local_paths():
    request = RescueRequest(disk="/dev/sda", installer_args=("-C", "stable", "-b", "http://m/stable"),
                            cloud_config=Path("node1.yaml"))
    argv = installer_argv(request, "/dev/sda", {"cloud_config": "/tmp/r/cloud-config.yaml"}, "/tmp/r/i.pyz")
    assert argv == ["python3", "/tmp/r/i.pyz", "-d", "/dev/sda", "-C", "stable", "-b", "http://m/stable",
                    "-c", "/tmp/r/cloud-config.yaml", "--progress", "json", "--yes"]


def test_progress_bar_without_terminal_prints_each_tenth_once():
    import io

    from provisioner.remote.progress import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar({"event": "start", "stage": "download", "bytes": 0, "total": 0})
    for done in range(0, 101, 5):
        bar({"event": "progress", "stage": "write", "bytes": done, "total": 100})
    bar({"event": "done", "stage": "done", "bytes": 100, "total": 100})
    lines = stream.getvalue().splitlines()
    assert lines[0] == "remote: download"
    assert [line for line in lines if line.startswith("remote: write")] == [
        f"remote: write {n} B / 100 B ({n} %)" for n in range(0, 101, 10)]
    assert lines[-1] == "remote: done 100 B / 100 B (100 %)"


def test_known_hosts_record_appends_a_line(tmp_path):
    import paramiko

    from provisioner.remote.hostkeys import load_known_hosts, record_host_key, recorded_fingerprints

    path = tmp_path / "ssh" / "known_hosts"
    path.parent.mkdir()
    path.write_text("# operator's comment, kept\nother.example ssh-ed25519 " + base64.b64encode(BLOB).decode())
    key = paramiko.Ed25519Key(data=BLOB)
    record_host_key(path, "[127.0.0.1]:2222", key)
    lines = path.read_text().splitlines()
    assert lines[0] == "# operator's comment, kept" and lines[2].startswith("[127.0.0.1]:2222 ssh-ed25519 ")
    assert recorded_fingerprints(load_known_hosts(path), "[127.0.0.1]:2222") == {"ssh-ed25519": FP}


def test_select_disk_explicit_unknown_and_partition():
    from provisioner.remote.rescue import select_disk

    facts = _facts(RAID_ROWS)
    assert select_disk(facts, RescueRequest(disk="/dev/nvme0n1"))[0].path == "/dev/nvme0n1"
    assert select_disk(facts, RescueRequest(disk="/dev/sda"), "/dev/sdb")[0].path == "/dev/sdb"
    with pytest.raises(DiskError, match=r"/dev/sda1 is a partition on rescue; give the whole disk \(/dev/sda\)"):
        select_disk(facts, RescueRequest(disk="/dev/sda1"))
    with pytest.raises(DiskError, match=r"/dev/sdz: no such disk on rescue \(disks: /dev/sda, /dev/sdb"):
        select_disk(facts, RescueRequest(disk="/dev/sdz"))
    chosen, auto = select_disk(facts, RescueRequest(disk="auto"))
    assert (chosen.path, auto) == ("/dev/nvme0n1", True)


def test_check_request_refuses_before_connecting(tmp_path):
    from provisioner.remote.rescue import check_request

    with pytest.raises(UsageError, match="--push needs -f IMAGE"):
        check_request(RescueRequest(push=True))
    image = tmp_path / "i.bin.zst"
    image.write_bytes(b"")
    with pytest.raises(UsageError, match="-b/-C/-V make no sense"):
        check_request(RescueRequest(push=True, image=image, installer_args=("-b", "http://x")))
    with pytest.raises(ConfigError, match="nope.yaml: no such file \\(given as -c\\)"):
        check_request(RescueRequest(cloud_config=tmp_path / "nope.yaml"))

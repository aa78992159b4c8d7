"""Host-key decisions, fingerprints and known_hosts records."""

from __future__ import annotations

import base64
import hashlib

import paramiko
import pytest

from provisioner.errors import UsageError
from provisioner.remote.hostkeys import (
    HostKeyPolicy,
    decide,
    fingerprint,
    known_hosts_name,
    load_known_hosts,
    normalize_pin,
    record_host_key,
    recorded_fingerprints,
)

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


def test_known_hosts_record_appends_a_line(tmp_path):

    path = tmp_path / "ssh" / "known_hosts"
    path.parent.mkdir()
    path.write_text("# operator's comment, kept\nother.example ssh-ed25519 " + base64.b64encode(BLOB).decode())
    key = paramiko.Ed25519Key(data=BLOB)
    record_host_key(path, "[127.0.0.1]:2222", key)
    lines = path.read_text().splitlines()
    assert lines[0] == "# operator's comment, kept" and lines[2].startswith("[127.0.0.1]:2222 ssh-ed25519 ")
    assert recorded_fingerprints(load_known_hosts(path), "[127.0.0.1]:2222") == {"ssh-ed25519": FP}

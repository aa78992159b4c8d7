"""Per-boot secrets (provisioner/pxe/boot_secrets.py): the pure check, and the files under the state dir."""

from __future__ import annotations

import json
import os
import time

import pytest

from provisioner.pxe import boot_secrets
from provisioner.pxe.boot_secrets import (
    BootSecretFiles,
    IssuedSecret,
    check_secret,
    presented_secret,
    secret_digest,
)
from provisioner.pxe.state import SecretCheck

MAC, OTHER = "52:54:00:00:00:01", "52:54:00:00:00:02"
NOW = time.time()   # prune compares with the files' mtimes: real time


def test_check_names_each_way_a_secret_fails():
    live = [IssuedSecret(secret_digest("a" * 32), NOW, NOW + 60, "10.0.0.5")]
    assert check_secret(live, "a" * 32, NOW + 1) is SecretCheck.OK
    assert check_secret(live, None, NOW) is SecretCheck.MISSING
    assert check_secret(live, "", NOW) is SecretCheck.MISSING
    assert check_secret(live, "b" * 32, NOW) is SecretCheck.WRONG
    assert check_secret(live, "a" * 32, NOW + 60) is SecretCheck.EXPIRED
    assert check_secret([], "a" * 32, NOW) is SecretCheck.NONE_ISSUED
    assert check_secret(live, "a" * 5000, NOW) is SecretCheck.WRONG


def test_the_header_is_read_first_then_the_query_parameter():
    assert presented_secret("Bearer abc", "zzz") == "abc"
    assert presented_secret("bearer  abc ", None) == "abc"
    assert presented_secret("Basic abc", "q") == "q"
    assert presented_secret("Bearer", None) is None
    assert presented_secret(None, None) is None and presented_secret(None, "") is None


def test_issued_secrets_are_stored_hashed_per_mac_and_survive_a_restart(tmp_path):
    folder = tmp_path / "boot-secrets"
    store = BootSecretFiles(folder, ttl=600)
    secret = store.issue(MAC, "10.0.0.5", NOW)
    assert len(secret) == 32 and int(secret, 16) >= 0
    path = folder / "52-54-00-00-00-01.json"
    assert secret not in path.read_text() and secret_digest(secret) in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600 and folder.stat().st_mode & 0o777 == 0o700
    restarted = BootSecretFiles(folder, ttl=600)
    assert restarted.check(MAC, secret, NOW + 10) is SecretCheck.OK
    assert restarted.check(OTHER, secret, NOW + 10) is SecretCheck.NONE_ISSUED     # another machine's secret
    other = restarted.issue(OTHER, "10.0.0.6", NOW)
    assert restarted.check(MAC, other, NOW) is SecretCheck.WRONG
    assert restarted.check(MAC, secret, NOW + 600) is SecretCheck.EXPIRED
    restarted.revoke(MAC)                                                          # the install is done
    assert store.check(MAC, secret, NOW + 10) is SecretCheck.NONE_ISSUED
    assert store.counters == {"boot_secrets_issued": 1}


def test_a_retry_from_the_same_address_is_the_same_boot_and_each_mac_keeps_a_few(tmp_path):
    store = BootSecretFiles(tmp_path, ttl=600)
    first = store.issue(MAC, "10.0.0.5", NOW)
    assert store.issue(MAC, "10.0.0.5", NOW + 1) == first                     # iPXE asking again
    later = [store.issue(MAC, "10.0.0.5", NOW + 20 * n) for n in range(1, 5)]   # four more boots
    assert len(set(later)) == 4 and first not in later
    assert store.check(MAC, first, NOW + 90) is SecretCheck.WRONG               # pushed out: PER_MAC live
    assert all(store.check(MAC, s, NOW + 90) is SecretCheck.OK for s in later)
    stranger = store.issue(MAC, "10.0.0.66", NOW + 81)                           # another address: another boot
    assert stranger != later[-1]


def test_a_damaged_file_proves_nothing_and_is_replaced(tmp_path):
    store = BootSecretFiles(tmp_path, ttl=600)
    (tmp_path / "52-54-00-00-00-01.json").write_text("{not json")
    assert store.check(MAC, "a" * 32, NOW) is SecretCheck.NONE_ISSUED
    secret = store.issue(MAC, None, NOW)
    assert store.check(MAC, secret, NOW) is SecretCheck.OK


def test_prune_drops_expired_files_and_keeps_at_most_max_macs(tmp_path):
    now = time.time()
    store = BootSecretFiles(tmp_path, ttl=100, max_macs=3)
    macs = [f"52:54:00:00:01:{i:02x}" for i in range(5)]
    for age, mac in zip((500, 50, 40, 30, 20), macs, strict=True):
        store.issue(mac, None, now - age)
        path = tmp_path / f"{mac.replace(':', '-')}.json"
        os.utime(path, (now - age, now - age))
    store.prune(now)
    left = sorted(p.name for p in tmp_path.glob("*.json"))
    assert left == ["52-54-00-00-01-02.json", "52-54-00-00-01-03.json", "52-54-00-00-01-04.json"]
    assert store.counters["boot_secrets_dropped"] == 1        # the expired one is not a drop


def test_issue_prunes_when_the_bound_is_passed(tmp_path, monkeypatch):
    monkeypatch.setattr(boot_secrets, "REUSE_SECONDS", 0)
    now = time.time()
    store = BootSecretFiles(tmp_path, ttl=600, max_macs=2)
    for i in range(6):
        store.issue(f"52:54:00:00:02:{i:02x}", None, now + i)
    assert len(list(tmp_path.glob("*.json"))) <= 3
    assert json.loads((tmp_path / "52-54-00-00-02-05.json").read_text())["mac"] == "52:54:00:00:02:05"


@pytest.mark.parametrize("bad", ["", "a b", "a\nchain http://evil", "${x}"])
def test_a_secret_iPXE_would_expand_is_never_put_in_a_script(bad):
    from provisioner.pxe import ipxe

    with pytest.raises(ValueError):
        ipxe.with_secret_setting("#!ipxe\nboot\n", bad)

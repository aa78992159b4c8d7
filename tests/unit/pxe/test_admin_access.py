"""The admin API's token and address rules (provisioner/pxe/admin_access.py): pure checks and the token file."""

from __future__ import annotations

import ipaddress

import pytest

from provisioner.errors import ConfigError, UsageError
from provisioner.pxe.admin_access import (
    LOOPBACK,
    TokenFile,
    address_allowed,
    admin_request,
    ensure_token,
    new_token,
    read_token,
    token_matches,
)


def test_only_a_bearer_header_with_the_token_matches():
    assert token_matches("s3cret", "Bearer s3cret") and token_matches("s3cret", "bearer  s3cret ")
    for header in (None, "", "Bearer", "Bearer s3cre", "Basic s3cret", "s3cret", "Bearer s3cret2"):
        assert not token_matches("s3cret", header), header


def test_allowed_addresses_are_loopback_and_what_the_operator_adds():
    site = (*LOOPBACK, ipaddress.ip_network("10.0.5.0/24"))
    assert address_allowed("127.0.0.1", LOOPBACK) and address_allowed("::1", LOOPBACK)
    assert address_allowed("::ffff:127.0.0.1", LOOPBACK)               # IPv4-mapped
    assert not address_allowed("10.0.5.7", LOOPBACK) and address_allowed("10.0.5.7", site)
    assert not address_allowed("10.0.6.7", site)
    assert not address_allowed(None, site) and not address_allowed("not-an-ip", site)


def test_the_token_is_created_once_0600_and_a_rotation_is_picked_up(tmp_path):
    tokens = ensure_token(tmp_path)
    first = tokens.current()
    assert len(first) >= 40 and (tmp_path / "admin-token").stat().st_mode & 0o777 == 0o600
    assert ensure_token(tmp_path).current() == first                       # a restart keeps it
    new_token(tmp_path)
    assert tokens.current() not in ("", first)


def test_a_token_others_can_read_or_an_empty_one_is_refused(tmp_path):
    path = new_token(tmp_path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0644 lets others read the admin token"):
        read_token(path)
    path.chmod(0o600)
    path.write_text("\n")
    with pytest.raises(ConfigError, match="empty admin token"):
        TokenFile(path).current()


def test_the_client_names_what_is_missing(tmp_path):
    with pytest.raises(UsageError, match="admin.json: missing: no `provisioner serve` has run"):
        admin_request(tmp_path, "GET", "/machines")

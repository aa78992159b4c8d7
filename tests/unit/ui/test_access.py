"""Who may open the pages (provisioner/ui/access.py)."""

from provisioner.ui.access import needs_login, session_valid, session_value


def test_loopback_opens_without_the_token_other_addresses_need_it():
    assert not needs_login("127.0.0.1") and not needs_login("::1") and not needs_login("::ffff:127.0.0.1")
    assert needs_login("10.77.0.1") and needs_login(None) and needs_login("garbage")


def test_the_session_is_a_keyed_hash_of_the_token_and_ends_with_a_rotation():
    cookie = session_value("token-1")
    assert "token-1" not in cookie and len(cookie) == 64
    assert session_valid("token-1", cookie)
    assert not session_valid("token-2", cookie)          # rotated
    assert not session_valid("token-1", None) and not session_valid("token-1", "") and not session_valid("token-1", "x")

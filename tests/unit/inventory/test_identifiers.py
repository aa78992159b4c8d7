"""MAC spellings normalised to one form; an optional request parameter that is no MAC becomes None."""

from __future__ import annotations

from provisioner.inventory.identifiers import normalize_mac_or_none


def test_optional_mac_is_normalised_and_garbage_or_missing_is_none():
    assert normalize_mac_or_none("52-54-00-AA-bb-cc") == "52:54:00:aa:bb:cc"
    assert normalize_mac_or_none("zz") is None
    assert normalize_mac_or_none("") is None and normalize_mac_or_none(None) is None

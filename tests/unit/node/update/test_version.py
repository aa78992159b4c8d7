import pytest

from provisioner.node.update.version import VersionError, is_newer, parse_version, refuse_downgrade


@pytest.mark.parametrize(("older", "newer"), [
    ("0.1.0", "0.2.0"), ("0.9.9", "0.10.0"), ("1.2", "1.2.1"), ("2.0.0-rc1", "2.0.0"),
    ("2.0.0-rc1", "2.0.0-rc2"), ("2.0.0-1", "2.0.0-rc"), ("3374.2.0", "3374.2.1"),
])
def test_order(older, newer):
    assert is_newer(newer, older)
    assert not is_newer(older, newer)


def test_same_version_is_not_newer():
    assert not is_newer("1.0.0", "1.0.0")
    assert not is_newer("1.0", "1.0.0")


def test_downgrade_is_refused_naming_both():
    with pytest.raises(VersionError) as info:
        refuse_downgrade("0.1.0", "0.2.0")
    assert str(info.value) == "refusing to downgrade: the channel offers 0.1.0, older than the booted 0.2.0"
    refuse_downgrade("0.2.0", "0.2.0")
    refuse_downgrade("0.3.0", "0.2.0")


@pytest.mark.parametrize("text", ["", "v1.0", "1..0", "latest", "1.0-", "1.2.3.4.5.6.7.8.9"])
def test_bad_versions_name_the_field(text):
    with pytest.raises(VersionError, match="offered version"):
        parse_version(text, "offered version")

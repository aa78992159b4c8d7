import pytest

from provisioner.core.sizes import REST, GiB, MiB, align_up, format_size, parse_size


@pytest.mark.parametrize("text, expected", [
    ("100G", 100 * GiB), ("100GiB", 100 * GiB), ("100gb", 100 * GiB), ("512MiB", 512 * MiB),
    ("512M", 512 * MiB), ("4096", 4096), ("1.5G", 3 * GiB // 2), ("2T", 2 << 40), (" 8 KiB ", 8192),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


def test_parse_size_rest_only_when_allowed():
    assert parse_size("rest", allow_rest=True) == REST
    with pytest.raises(ValueError, match="'rest' is not a size"):
        parse_size("rest")


@pytest.mark.parametrize("bad", ["", "G", "-1G", "10X", "1.3", "ten"])
def test_parse_size_rejects_with_the_text(bad):
    with pytest.raises(ValueError) as info:
        parse_size(bad)
    assert repr(bad) in str(info.value)


def test_format_and_align():
    assert format_size(3 * GiB // 2) == "1.5 GiB"
    assert format_size(2 * MiB) == "2 MiB"
    assert align_up(1, MiB) == MiB and align_up(MiB, MiB) == MiB

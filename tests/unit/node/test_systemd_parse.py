import pytest

from provisioner.node.systemd import SystemdError, parse_show


def test_show_blocks_split_on_blank_lines_and_keep_empty_values():
    text = "Id=a.service\nStatusText=\nDescription=x=y\n\nId=b.service\nStatusText=ok\n"
    assert parse_show(text, 2) == [{"Id": "a.service", "StatusText": "", "Description": "x=y"},
                                  {"Id": "b.service", "StatusText": "ok"}]


def test_show_block_count_mismatch_is_an_error():
    with pytest.raises(SystemdError, match="expected 3 unit block"):
        parse_show("Id=a\n\nId=b\n", 3)

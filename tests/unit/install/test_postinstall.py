"""The CoreOS layout check and the table comparison after writing (pure)."""

from __future__ import annotations

from provisioner.disk import gpt, layout
from provisioner.install import postinstall


def _entry(number, name, type_guid, partuuid="11111111-2222-3333-4444-555555555555"):
    return gpt.Partition(number, 4096 * number, 4096 * number + 100, type_guid, partuuid, name)


def _table(*entries):
    mbr = gpt.ProtectiveMbr(True, (0xEE,), True, False)
    return gpt.GptTable(512, 1 << 30, mbr, None, None, tuple(entries))


def test_coreos_layout_check():
    good = _table(_entry(3, "USR-A", layout.TYPE_USR, layout.USR_A_PARTUUID),
                  _entry(4, "USR-B", layout.TYPE_USR, layout.USR_B_PARTUUID),
                  _entry(9, "ROOT", layout.TYPE_RESIZE))
    assert postinstall.check_layout(good) == []
    bad = _table(_entry(3, "USR-A", layout.TYPE_USR), _entry(9, "DATA", layout.TYPE_LINUX_DATA))
    problems = postinstall.check_layout(bad)
    assert any("PARTUUID" in p for p in problems)
    assert any("no partition 4" in p for p in problems)
    assert any("'DATA'" in p for p in problems)
    assert postinstall.compare_tables(good, bad)

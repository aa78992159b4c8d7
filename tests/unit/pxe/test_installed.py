"""The os=installed switch (provisioner/pxe/installed.py): pure rules and the state file."""

from __future__ import annotations

import json

from provisioner.pxe.installed import InstalledMachines, rewritten_query, with_installed_label


def test_label_added_only_for_installed_machines_without_an_explicit_os():
    params = {"mac": "52:54:00:00:00:01"}
    assert with_installed_label(params, installed=False) is None
    assert with_installed_label(params, installed=True) == {"mac": "52:54:00:00:00:01", "os": "installed"}
    assert with_installed_label({**params, "os": "live"}, installed=True) is None


def test_rewritten_query_keeps_colons_readable():
    assert rewritten_query({"mac": "52:54:00:00:00:01", "os": "installed"}) == "mac=52:54:00:00:00:01&os=installed"


def test_marks_persist_and_are_seen_by_a_second_reader(tmp_path):
    path = tmp_path / "installed.json"
    writer, reader = InstalledMachines(path), InstalledMachines(path)
    assert writer.mark("52:54:00:00:00:01", now=5.0) is True
    assert writer.mark("52:54:00:00:00:01") is False
    assert json.loads(path.read_text()) == {"installed": {"52:54:00:00:00:01": 5.0}}
    reader.refresh(now=1e9)
    assert reader.is_installed("52:54:00:00:00:01")
    assert writer.forget("52:54:00:00:00:01") and not writer.forget("52:54:00:00:00:01")
    reader.refresh(now=2e9)
    assert not reader.is_installed("52:54:00:00:00:01")

"""The step journal: atomic saves, reload, history on finish, the state-dir rule and the fault hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from provisioner.core.sizes import GiB
from provisioner.disk import journal as journal_mod
from provisioner.disk import plan as planner
from provisioner.disk.journal import Journal
from provisioner.errors import DiskError
from tests.unit.disk.test_resize_plan import coreos_table, ext4


def make_journal(tmp_path):
    table = coreos_table()
    plan = planner.plan_shrink_root(table, ext4(2 * GiB), GiB)
    return table, plan, Journal.start(tmp_path, table, plan, "/dev/sdz")


def test_start_mark_load_finish(tmp_path):
    table, plan, journal = make_journal(tmp_path)
    assert journal.path == tmp_path / table.disk_guid / "job" / "journal.json"
    journal.mark_done("backup-gpt")
    journal.backup_path.write_bytes(b"gpt")
    journal.undo_path("shrink-fs").write_bytes(b"undo")
    loaded = Journal.load(tmp_path, table.disk_guid.lower())
    assert loaded.plan == plan and loaded.done == ["backup-gpt"]
    assert loaded.table_before == table.partitions
    assert not list(journal.directory.glob("*.tmp"))
    history = loaded.finish()
    assert history.parent == tmp_path / table.disk_guid / "history"
    assert (history / "gpt-before.bin").read_bytes() == b"gpt"
    assert (history / "steps.log").read_text() == "backup-gpt\n"
    assert json.loads((history / "journal.json").read_text())["plan"]["key"] == plan.key
    assert sorted(p.name for p in history.iterdir()) == ["gpt-before.bin", "journal.json", "steps.log"]  # no undo
    assert not journal.directory.exists()  # the job moved in one rename: nothing half-moved is left
    assert Journal.load(tmp_path, table.disk_guid) is None


def test_start_clears_what_an_unwritten_journal_left(tmp_path):
    table, _plan, journal = make_journal(tmp_path)
    journal.path.unlink()  # killed after the backup, before journal.json was durable
    journal.backup_path.write_bytes(b"stale")
    journal.undo_path("shrink-fs").write_bytes(b"stale")
    assert Journal.load(tmp_path, table.disk_guid) is None
    again = Journal.start(tmp_path, table, planner.plan_shrink_root(table, ext4(2 * GiB), GiB), "/dev/sdz")
    assert sorted(p.name for p in again.directory.iterdir()) == ["journal.json"]


def test_torn_last_step_line_is_ignored(tmp_path):
    table, _plan, journal = make_journal(tmp_path)
    journal.steps_path.write_text("backup-gpt\ncheck-fs\nshrink-")
    assert Journal.load(tmp_path, table.disk_guid).done == ["backup-gpt", "check-fs"]


def test_damaged_journal_is_one_clear_error(tmp_path):
    table, _plan, journal = make_journal(tmp_path)
    journal.path.write_text("{not json")
    with pytest.raises(DiskError, match="damaged disk journal"):
        Journal.load(tmp_path, table.disk_guid)


def test_state_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(journal_mod.STATE_ENV, raising=False)
    assert str(journal_mod.state_dir()) == journal_mod.DEFAULT_STATE_DIR
    monkeypatch.setenv(journal_mod.STATE_ENV, str(tmp_path))
    assert journal_mod.state_dir() == tmp_path
    assert str(journal_mod.state_dir("/x")) == "/x"


def test_fault_hook_kills_only_at_the_named_moment():
    code = (
        "from provisioner.disk.journal import fault_point\n"
        "fault_point('before', 'write-table')\n"
        "print('alive')\n"
        "fault_point('after', 'write-table')\n"
        "print('not reached')\n"
    )
    env = dict(os.environ, PROVISIONER_FAULT="after:write-table")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == -9 and result.stdout == "alive\n"

"""What the operator's pages show (provisioner/ui/view.py), from records and the examples' inventory."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.inventory import load_inventory
from provisioner.pxe.machines import MachineStates
from provisioner.ui import view

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "cluster"
MAC = "52:54:00:00:00:01"


@pytest.fixture(scope="module")
def inventory():
    return load_inventory(EXAMPLES)


@pytest.mark.parametrize(("stage", "installed", "step"), [
    (None, False, "unseen"), ("dhcp-offer", False, "dhcp"), ("dhcp-boot-server", False, "dhcp"),
    ("tftp-done", False, "tftp"), ("boot-script", False, "ipxe"), ("ipxe-script", False, "ipxe"),
    ("http-boot", False, "ipxe"), ("initrd", False, "kernel"), ("cloud-config", False, "kernel"),
    ("cloud-config-refused", False, "kernel"), ("install", False, "installing"),
    ("install-error", False, "install-failed"), ("install-done", False, "installed"), ("installed", True, "installed"),
    ("ipxe-script", True, "disk"), ("cloud-config", True, "disk"), ("boot-script", True, "ipxe"),
    ("dhcp-ack", True, "dhcp"), ("reinstall", False, "reinstall"), ("something-new", False, "other"),
])
def test_the_last_stage_becomes_the_step_of_the_boot(stage, installed, step):
    assert view.boot_step(stage, installed) == step
    assert step in view.STAGE_LABELS


def test_every_recorded_stage_has_a_step():
    from provisioner.pxe.machines import STAGE_ORDER

    assert all(view.boot_step(stage, False) != "other" for stage in STAGE_ORDER)


def test_rows_list_the_inventory_and_what_was_seen_with_group_hostname_and_progress(inventory):
    states = MachineStates(None)
    states.record(MAC, "dhcp-offer", {"arch": "efi-x64"}, now=100.0)
    states.record(MAC, "install", {"event": "progress", "percent": 40}, ip="10.0.0.5", now=101.0)
    states.record("52:54:00:00:00:99", "dhcp-offer", {"arch": "bios"}, now=102.0)   # in no group
    states.record("ip:10.0.0.7", "tftp", now=103.0)                                  # known only by address
    rows = view.rows(states.machines, lambda mac: False, inventory)
    assert [r.mac for r in rows] == ["52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03",
                                     "52:54:00:00:00:99", "ip:10.0.0.7"]
    first = rows[0]
    assert (first.hostname, first.group, first.profile, first.stage, first.percent, first.ip, first.firmware) == (
        "node1", "node1-install", "install", "installing", 40, "10.0.0.5", "UEFI")
    assert first.last_seen == "1970-01-01 00:01:41" and first.dom_id == "m-52-54-00-00-00-01"
    assert (rows[1].stage, rows[1].last_seen, rows[1].ip) == ("unseen", None, None)
    assert (rows[3].group, rows[3].firmware) == (None, "BIOS")
    assert rows[4].dom_id == "m-ip-10-0-0-7" and rows[4].group is None


def test_an_installed_machine_gets_the_installed_group(inventory):
    row = view.row(MAC, None, True, inventory)
    assert (row.group, row.profile, row.installed) == ("node1", "installed", True)


def test_filters_by_stage_and_group(inventory):
    rows = view.rows({}, lambda mac: mac == MAC, inventory)
    assert [r.mac for r in rows if view.keep(r, "unseen", "node1")] == [MAC]
    assert [r.mac for r in rows if view.keep(r, "", "node2-install")] == ["52:54:00:00:00:02"]
    assert len([r for r in rows if view.keep(r, "", "")]) == 3
    assert not [r for r in rows if view.keep(r, "dhcp", "")]


def test_why_a_group_every_candidate_with_its_selectors(inventory):
    found = view.candidates(inventory, view.machine_query(MAC, False))
    assert [(c.group, c.matches, c.chosen) for c in found] == [("node1", False, False), ("node1-install", True, True)]
    assert found[0].selectors == (("mac", MAC, MAC), ("os", "installed", None))
    installed = view.candidates(inventory, view.machine_query(MAC, True))
    assert [(c.group, c.matches, c.chosen) for c in installed] == [("node1", True, True),
                                                                   ("node1-install", True, False)]
    assert view.machine_query("ip:10.0.0.7", False) is None


def test_timeline_is_newest_first_with_refusals_and_install_reports():
    history = [{"at": 0.0, "stage": "dhcp-offer", "arch": "bios"},
               {"at": 1.0, "stage": "install", "event": "progress", "percent": 30},
               {"at": 2.0, "stage": "refused", "path": "/report", "from": "10.0.0.66"}]
    entries = view.timeline(history)
    assert [(e.stage, e.step) for e in entries] == [("refused", "refused"), ("install", "installing"),
                                                    ("dhcp-offer", "dhcp")]
    assert entries[0].detail == "path=/report, from=10.0.0.66" and entries[2].at == "1970-01-01 00:00:00"
    assert [e.stage for e in view.install_reports(history)] == ["install"]
    assert view.install_percent(history) == 30 and view.install_percent(history[:1]) is None

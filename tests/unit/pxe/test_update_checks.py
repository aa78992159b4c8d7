from pathlib import Path

from provisioner.pxe.machines import MachineStates, machine_rows
from provisioner.pxe.update_checks import STAGE, check_detail, update_summary


def test_only_a_manifest_is_an_update_check():
    served = Path("/srv/assets/release/stable/0.3.0/update.json")
    query = {"booted": "0.2.0", "slot": "USR-B", "state": "IDLE", "failed": "0.1.5,0.3.0", "other": "x"}
    assert check_detail(served, query) == {"offered": "0.3.0", "booted": "0.2.0", "slot": "USR-B",
                                           "state": "IDLE", "failed": "0.1.5,0.3.0"}
    assert check_detail(Path("/srv/assets/release/stable/0.3.0/x_usr.squashfs"), query) is None


def test_values_are_cut_to_short_tokens():
    detail = check_detail(Path("/a/1.0.0/update.json"), {"booted": "<script>1.0" + "9" * 200, "slot": ""})
    assert detail == {"offered": "1.0.0", "booted": ("script1.0" + "9" * 200)[:80]}


def test_machines_show_the_last_update_check(tmp_path):
    states = MachineStates(tmp_path / "machines.json")
    mac = "52:54:00:00:17:01"
    states.record(mac, "dhcp-ack", {"ip": "10.0.0.5"})
    assert machine_rows(states.machines)[0]["update"] is None
    states.record(mac, STAGE, {"offered": "0.3.0", "booted": "0.2.0", "slot": "USR-A", "state": "IDLE"})
    states.record(mac, STAGE, {"offered": "0.3.0", "booted": "0.2.0", "slot": "USR-B",
                               "state": "UPDATED_NEED_REBOOT", "failed": "0.3.0"})
    row = machine_rows(states.machines)[0]
    assert row["update"] == "0.2.0 (USR-B), offered 0.3.0, UPDATED_NEED_REBOOT, failed 0.3.0"
    assert STAGE in row["stages"]
    assert update_summary([]) is None

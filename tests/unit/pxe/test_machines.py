"""Machine state: records per MAC, IPs mapped to MACs, the rows `provisioner machines` prints."""

from __future__ import annotations

from provisioner.pxe.machines import HISTORY, MachineStates, machine_rows, parse_neighbours


def test_machine_states_map_ips_and_rows(tmp_path):
    states = MachineStates(tmp_path / "m.json")
    states.record("52:54:00:00:00:01", "dhcp-ack", {"ip": "10.0.0.5", "arch": "bios"}, now=10)
    states.record("52:54:00:00:00:01", "kernel", {}, ip="10.0.0.5", now=12)
    assert states.mac_for_ip("10.0.0.5") == "52:54:00:00:00:01"
    states.save()
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o600
    rows = machine_rows(MachineStates(tmp_path / "m.json").machines)
    assert rows[0]["last_stage"] == "kernel" and rows[0]["stages"] == ["dhcp-ack", "kernel"]


def test_neighbour_table_skips_incomplete_entries():
    arp = "IP address HW type Flags HW address Mask Device\n10.0.0.9 0x1 0x2 52:54:00:AB:CD:EF * br0\n" \
          "10.0.0.8 0x1 0x0 00:00:00:00:00:00 * br0\n"
    assert parse_neighbours(arp) == {"10.0.0.9": "52:54:00:ab:cd:ef"}


def test_at_most_max_machines_the_one_seen_longest_ago_goes_first():
    states = MachineStates(None, max_machines=2)
    states.record("52:54:00:00:00:01", "dhcp-ack", {"ip": "10.0.0.1"}, now=1)
    states.record("52:54:00:00:00:02", "dhcp-ack", {"ip": "10.0.0.2"}, now=2)
    states.record("52:54:00:00:00:01", "kernel", {}, now=3)            # seen again: kept
    states.record("52:54:00:00:00:03", "dhcp-ack", {}, now=4)
    assert list(states.machines) == ["52:54:00:00:00:01", "52:54:00:00:00:03"]
    assert states.machines.dropped == 1


def test_history_is_bounded_and_counts_what_it_drops():
    states = MachineStates(None)
    for n in range(HISTORY + 5):
        states.record("52:54:00:00:00:01", "install", {"percent": n}, now=n)
    assert len(states.machines["52:54:00:00:00:01"].history) == HISTORY and states.history_dropped == 5


def test_a_refusal_goes_into_a_known_machines_history_only(tmp_path):
    states = MachineStates(tmp_path / "m.json")
    states.record("52:54:00:00:00:01", "installed", {}, ip="10.0.0.5", now=10)
    assert states.record_refusal("52:54:00:00:00:01", {"path": "/report", "reason": "no boot secret",
                                                       "from": "10.0.0.66"}, now=20)
    record = states.machines["52:54:00:00:00:01"]
    assert (record.last_stage, record.last_seen, record.ip) == ("installed", 10, "10.0.0.5")
    assert record.history[-1] == {"at": 20, "stage": "refused", "path": "/report", "reason": "no boot secret",
                                  "from": "10.0.0.66"}
    assert states.mac_for_ip("10.0.0.66") is None
    assert not states.record_refusal("52:54:00:00:00:09", {"path": "/report"})   # never seen: no record made
    assert "52:54:00:00:00:09" not in states.machines and states.refusals_unknown == 1
    assert states.forget("52:54:00:00:00:01") and not states.forget("52:54:00:00:00:01")
    assert states.ip_to_mac == {}

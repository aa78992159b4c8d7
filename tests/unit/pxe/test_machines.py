"""Machine state: records per MAC, IPs mapped to MACs, the rows `provisioner machines` prints."""

from __future__ import annotations

from provisioner.pxe.machines import MachineStates, machine_rows, parse_neighbours


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

"""The boot server's own logic: one place records every service's events; the /metrics text."""

from __future__ import annotations

from provisioner.pxe.events import BootEvent, EventSource
from provisioner.pxe.machines import MachineStates
from provisioner.pxe.serve_config import DhcpMode, ListenAddress, ServeConfig
from provisioner.pxe.server import BootServer, metrics_text


def test_metrics_text_names_requests_boot_events_and_counters(tmp_path):
    states = MachineStates(None)
    states.record("52:54:00:00:00:01", "kernel", {}, now=12)
    text = metrics_text({'http_requests{path="/ipxe",code="200"}': 3, "tftp_bytes": 10,
                         'boot_secret_refused{path="/report",reason="wrong"}': 2}, states, {"tftp_bytes": 5})
    assert 'provisioner_http_requests_total{path="/ipxe",code="200"} 3' in text
    assert 'provisioner_boot_events_total{stage="kernel"} 1' in text and "provisioner_tftp_bytes_total 15" in text
    assert 'provisioner_boot_secret_refused_total{path="/report",reason="wrong"} 2' in text
    for limit in ("machines_dropped", "history_dropped", "refused_unknown_mac"):
        assert f"# TYPE provisioner_{limit}_total counter\nprovisioner_{limit}_total 0" in text
    assert text.count("# TYPE provisioner_http_requests_total counter") == 1
    assert "provisioner_machines 1" in text


def test_events_are_recorded_under_the_mac_or_the_mac_learned_for_the_address(tmp_path):
    server = BootServer(ServeConfig(data_dir=tmp_path, state_dir=tmp_path / "state", assets_dir=None,
                                    http_addr=ListenAddress("127.0.0.1", 0), server_url="http://s",
                                    dhcp_mode=DhcpMode.OFF))
    mac = "52:54:00:00:00:01"
    server.record_event(BootEvent(stage="dhcp-ack", source=EventSource.DHCP, mac=mac, detail={"ip": "10.0.0.5"}))
    server.record_event(BootEvent(stage="tftp-done", source=EventSource.TFTP, ip="10.0.0.5",
                                  detail={"file": "undionly.kpxe.0", "bytes": 9}))
    server.record_event(BootEvent(stage="kernel", source=EventSource.HTTP, ip="10.0.0.99"))
    record = server.states.machines[mac]
    assert [h["stage"] for h in record.history] == ["dhcp-ack", "tftp-done"]
    assert record.history[1]["file"] == "undionly.kpxe.0" and mac in server.ipxe_loaded
    assert server.states.machines["ip:10.0.0.99"].last_stage == "kernel"
    # A refused write (from any process) lands in the named machine's history and nowhere else.
    server.record_event(BootEvent(stage="refused", source=EventSource.HTTP, mac=mac, ip="10.0.0.66",
                                  detail={"path": "/report", "reason": "no boot secret", "from": "10.0.0.66"}))
    assert record.history[-1]["stage"] == "refused" and record.last_stage == "tftp-done"
    assert server.states.mac_for_ip("10.0.0.66") != mac

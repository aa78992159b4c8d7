"""A second host on the boot network forges every write that could change what a machine boots.

A lab namespace (bridge, no uplink) holds `provisioner serve` (examples/cluster) and three hosts: the
machines (10.77.0.20, scripted: they fetch their scripts, report and mark themselves installed as the
live image does), a forger (10.77.0.66) and the operator (10.77.0.30, the one address allowed on the
admin API besides loopback). The forger tries, with no secret, another machine's secret and an expired
one: an error report (which once made an installed machine install again), an installed mark for a
machine being installed, the installed system's gated config, and a reinstall by every route.
All are refused, and the machines' installed marks, live secrets and next boot scripts stay as they were.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from tests.integration.pxe.conftest import start_server, wait_ready
from tests.integration.pxe.machine_client import bearer, boot_secret, from_namespace

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples" / "cluster"
SERVER = "http://10.77.0.1:8080"
ADMIN = "http://10.77.0.1:8081"
INSTALLED, INSTALLING, EXPIRING = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"
TTL = 6.0   # long enough for the machines' own flow on a busy host, short enough to wait for
ERROR = json.dumps({"event": "error", "stage": "write", "message": "forged"})
START = json.dumps({"event": "start", "stage": "source"})


def _host(lab_net, name: str, address: str) -> str:
    namespace = lab_net.add_client_namespace(f"{name}{os.getpid() % 10000}")
    subprocess.run(["ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0"], check=True)
    return namespace



def _state(state_dir: Path) -> dict[str, bytes]:
    """What decides a machine's next boot: the installed marks and the live secrets, byte for byte."""
    files = [state_dir / "installed.json", *sorted((state_dir / "boot-secrets").glob("*.json"))]
    return {path.name: path.read_bytes() for path in files}


def test_forged_writes_from_another_host_change_nothing(lab_net, tmp_path):
    machines = _host(lab_net, "pxm", "10.77.0.20")
    forger = _host(lab_net, "pxf", "10.77.0.66")
    operator = _host(lab_net, "pxo", "10.77.0.30")
    server = start_server(tmp_path, "--dhcp", "off", "--no-tftp", "--http-addr", "10.77.0.1:8080",
                          "--admin-addr", "10.77.0.1:8081", "--admin-allow", "10.77.0.30",
                          "--boot-secret-ttl", str(TTL), data_dir=EXAMPLES, netns=lab_net.name)
    try:
        wait_ready(server)
        # The machines boot: install scripts, each with its secret; one machine installs to the end, one
        # boots while the forger is at work, one boot's secret expires.
        issued = time.monotonic()
        scripts = from_namespace(machines, *(("GET", f"{SERVER}/ipxe?mac={mac}", {}, None) for mac in (EXPIRING, INSTALLED)))
        expiring, installed = (boot_secret(text) for _, text in scripts)
        assert from_namespace(machines, ("POST", f"{SERVER}/report?mac={INSTALLED}", bearer(installed), START),
                         ("POST", f"{SERVER}/installed?mac={INSTALLED}", bearer(installed), None)) == [
            (200, "ok\n"), (200, f"{INSTALLED} installed\n")]
        time.sleep(max(0.0, TTL + 0.3 - (time.monotonic() - issued)))   # `expiring` has expired now
        installing = boot_secret(from_namespace(machines, ("GET", f"{SERVER}/ipxe?mac={INSTALLING}", {}, None))[0][1])
        assert None not in (expiring, installed, installing) and len({expiring, installed, installing}) == 3
        before = _state(server.state_dir)
        next_boot = from_namespace(machines, ("GET", f"{SERVER}/ipxe?mac={INSTALLED}", {}, None))
        assert "exit 1" in next_boot[0][1].splitlines()
        token = (server.state_dir / "admin-token").read_text().strip()

        forged = []
        for secret in (None, installing, installed, expiring):   # none, another machine's, spent, expired
            forged += [("POST", f"{SERVER}/report?mac={INSTALLED}", bearer(secret), ERROR),
                       ("GET", f"{SERVER}/cloud-config?mac={INSTALLED}&os=installed&boot_secret={secret}", {}, None)]
            if secret != installing:                             # that one is the machine's own, live
                forged += [("POST", f"{SERVER}/installed?mac={INSTALLING}", bearer(secret), None)]
        forged += [("POST", f"{SERVER}/report?mac={EXPIRING}", bearer(expiring), ERROR),
                   ("POST", f"{SERVER}/installed?mac={EXPIRING}", bearer(expiring), None)]
        answers = from_namespace(forger, *forged)
        assert all(status == 403 for status, _ in answers), answers
        reasons = {text.split(": ", 1)[1].strip() for _, text in answers}
        assert reasons == {"no boot secret", "boot secret does not match", "no live boot secret for this MAC",
                           "boot secret expired"}
        # A reinstall by every route a forger could try: none exists on the machine-facing port, and the
        # admin API refuses the address even with the operator's token.
        assert [status for status, _ in from_namespace(
            forger, ("DELETE", f"{SERVER}/installed?mac={INSTALLED}", {}, None),
            ("POST", f"{SERVER}/machines/{INSTALLED}/reinstall", {}, None),
            ("POST", f"{ADMIN}/machines/{INSTALLED}/reinstall", {}, None),
            ("POST", f"{ADMIN}/machines/{INSTALLED}/reinstall", bearer(token), None),
            ("GET", f"{ADMIN}/ui/", {}, None), ("GET", f"{ADMIN}/ui/login", {}, None),   # nor the pages
            ("GET", f"{SERVER}/ipxe?mac={INSTALLED}", {}, None))] == [405, 404, 403, 403, 403, 403, 200]

        assert _state(server.state_dir) == before
        assert from_namespace(machines, ("GET", f"{SERVER}/ipxe?mac={INSTALLED}", {}, None)) == next_boot
        assert from_namespace(machines, ("POST", f"{SERVER}/report?mac={INSTALLING}", bearer(installing), START)) == [
            (200, "ok\n")]                                   # the machine being installed is not disturbed

        # The operator: allowed address, but still the token.
        assert [status for status, _ in from_namespace(
            operator, ("POST", f"{ADMIN}/machines/{INSTALLED}/reinstall", {}, None),
            ("POST", f"{ADMIN}/machines/{INSTALLED}/reinstall", bearer(installed), None),
            ("POST", f"{ADMIN}/machines/{INSTALLED}/reinstall", bearer(token), None))] == [401, 401, 200]
        assert "kernel " in from_namespace(machines, ("GET", f"{SERVER}/ipxe?mac={INSTALLED}", {}, None))[0][1]
    finally:
        assert server.stop() == 0, server.log()
    record = next(m for m in json.loads((server.state_dir / "machines.json").read_text())["machines"]
                  if m["mac"] == INSTALLED)
    refused = [h for h in record["history"] if h["stage"] == "refused"]
    assert len(refused) == 8 and {h["from"] for h in refused} == {"10.77.0.66"}   # 4 reports, 4 config fetches
    assert record["ip"] == "10.77.0.20"                  # the forger's address is not the machine's
    assert "Traceback" not in server.log()

"""The os=installed switch over real HTTP: `provisioner serve` with examples/cluster on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.system import free_port
from tests.integration.pxe.conftest import start_server, wait_http

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "cluster"
MAC = "52:54:00:00:00:01"


@pytest.fixture
def cluster_server(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, "--dhcp", "off", "--no-tftp", "--http-addr", f"127.0.0.1:{port}",
                          data_dir=EXAMPLES, url=url)
    try:
        wait_http(url, server.process, server.log_path)
        yield server
    finally:
        assert server.stop() == 0, server.log()


def _get(url: str, method: str = "GET") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_installer_config_fetch_switches_the_machine_to_the_installed_profile(cluster_server):
    url = cluster_server.url
    assert "kernel " in _get(f"{url}/ipxe?mac={MAC}")[1]                        # install profile
    status, body = _get(f"{url}/cloud-config?mac=52-54-00-00-00-01&os=installed")
    assert status == 200 and body.startswith("#cloud-config") and "hostname: node1\n" in body
    script = _get(f"{url}/ipxe?mac={MAC}")[1]
    assert "exit 1" in script.splitlines() and "kernel " not in script          # installed: local disk
    assert "kernel " in _get(f"{url}/ipxe?mac=52:54:00:00:00:02")[1]            # other machines unchanged
    marks = json.loads((cluster_server.state_dir / "installed.json").read_text())["installed"]
    assert list(marks) == [MAC]
    assert _get(f"{url}/installed?mac={MAC}", "DELETE") == (200, f"{MAC} will be installed again on its next boot\n")
    assert "kernel " in _get(f"{url}/ipxe?mac={MAC}")[1]


def test_post_marks_installed_and_a_bad_mac_is_refused(cluster_server):
    url = cluster_server.url
    assert _get(f"{url}/installed?mac=52-54-00-00-00-03", "POST") == (200, "52:54:00:00:00:03 installed\n")
    assert "exit 1" in _get(f"{url}/ipxe?mac=52:54:00:00:00:03")[1].splitlines()
    assert _get(f"{url}/installed?mac=nope", "POST") == (400, "/installed: give ?mac=<MAC address>\n")

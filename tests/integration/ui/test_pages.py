"""The operator's pages in real headless Chromium, while a scripted machine boots in a lab namespace.

`provisioner serve` (examples/cluster, proxyDHCP + TFTP + HTTP on the lab bridge, the admin address
on every address of its namespace) and Chromium both run in the lab namespace; Chromium is driven
over its DevTools pipe (tests/fixtures/chromium.py). The machine, node1's MAC in a namespace of its
own, does what firmware, iPXE and the live installer do: busybox udhcpc (PXE), busybox tftp, its
script and kernel over HTTP, install reports and the installed mark with its boot's secret. The one
table page, opened once, follows it through every stage without a reload. Screenshots: build/ui/.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.fixtures.chromium import Chromium, Page
from tests.integration.pxe.conftest import start_server, wait_ready
from tests.integration.pxe.machine_client import bearer, boot_secret, from_namespace
from tests.integration.pxe.test_dhcp import PXE_BIOS, udhcpc

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples" / "cluster"
SHOTS = REPO / "build" / "ui"
MAC, ROW = "52:54:00:00:00:01", "m-52-54-00-00-00-01"
SERVER = "http://10.77.0.1:8080"
KERNEL = "release/stable/current/provisioner_production_pxe.vmlinuz"   # examples/cluster's install profile
LOOPBACK_UI, REMOTE_UI = "http://127.0.0.1:8081/ui/", "http://10.77.0.1:8081/ui/"



def _report(event: str, **counts: int) -> str:
    return json.dumps({"event": event, "stage": "write", **counts})


def _stage(page: Page, stage: str) -> None:
    """The row shows `stage` (pushed by the server: the page is never reloaded)."""
    page.wait_for(f"document.getElementById('{ROW}')?.dataset.stage == '{stage}'")


def _installed(state_dir: Path) -> bool:
    path = state_dir / "installed.json"
    return path.exists() and MAC in json.loads(path.read_text())["installed"]


def test_the_pages_follow_a_boot_live_and_reinstall_needs_the_token(lab_net, tmp_path):
    machine = lab_net.add_client_namespace(f"{lab_net.name}m", mac=MAC)
    assets = tmp_path / "assets"
    (assets / KERNEL).parent.mkdir(parents=True)
    (assets / KERNEL).write_bytes(b"not a kernel\n" * 100)
    server = start_server(tmp_path, "--interface", "br0", "--http-addr", "10.77.0.1:8080", "--admin-addr",
                          "0.0.0.0:8081", "--admin-allow", "10.77.0.1", "--assets-dir", str(assets),
                          data_dir=EXAMPLES, netns=lab_net.name)
    try:
        wait_ready(server)
        with Chromium(tmp_path / "chromium", prefix=("ip", "netns", "exec", lab_net.name)) as browser:
            page = browser.new_page()
            page.goto(LOOPBACK_UI)   # loopback: no token asked
            rows = page.evaluate("[...document.querySelectorAll('#machines tbody tr')].map(r => r.id + ' ' + r.dataset.stage)")
            assert rows == [f"{ROW} unseen", "m-52-54-00-00-00-02 unseen", "m-52-54-00-00-00-03 unseen"]
            assert "node2" in page.evaluate("document.getElementById('m-52-54-00-00-00-02').textContent")
            page.evaluate("window.sameDocument = true")

            code, env = udhcpc(machine, tmp_path, *PXE_BIOS)
            assert code == 0 and env["boot_file"] == "undionly.kpxe", server.log()
            _stage(page, "dhcp")
            assert "BIOS" in page.evaluate(f"document.getElementById('{ROW}').textContent")
            subprocess.run(["ip", "-n", machine, "addr", "add", "10.77.0.21/24", "dev", "eth0"], check=True)
            subprocess.run(["ip", "netns", "exec", machine, "busybox", "tftp", "-g", "-r", "undionly.kpxe", "-l",
                            str(tmp_path / "undionly.kpxe"), "10.77.0.1"], check=True, timeout=30)
            _stage(page, "tftp")
            status, script = from_namespace(machine, ("GET", f"{SERVER}/ipxe?mac={MAC}", {}, None))[0]
            secret = boot_secret(script)
            assert status == 200 and secret, script
            _stage(page, "ipxe")
            assert from_namespace(machine, ("GET", f"{SERVER}/assets/{KERNEL}", {}, None))[0][0] == 200
            _stage(page, "kernel")
            assert from_namespace(machine, ("POST", f"{SERVER}/report?mac={MAC}", bearer(secret), _report("start")),
                             ("POST", f"{SERVER}/report?mac={MAC}", bearer(secret),
                              _report("progress", bytes=40, total=100)))[1][0] == 200
            _stage(page, "installing")
            page.wait_for(f"document.querySelector('#{ROW} progress')?.value == 40")
            page.screenshot(SHOTS / "machines-installing.png", width=1230, height=340)   # docs/ui-machines.png
            assert [status for status, _ in from_namespace(
                machine, ("POST", f"{SERVER}/report?mac={MAC}", bearer(secret), _report("done")),
                ("POST", f"{SERVER}/installed?mac={MAC}", bearer(secret), None))] == [200, 200]
            _stage(page, "installed")
            assert "exit 1" in from_namespace(machine, ("GET", f"{SERVER}/ipxe?mac={MAC}", {}, None))[0][1]
            _stage(page, "disk")
            assert page.evaluate("window.sameDocument") is True   # every change came live, no reload
            assert "node1 / installed" in " ".join(
                page.evaluate(f"document.getElementById('{ROW}').textContent").split())
            page.screenshot(SHOTS / "machines.png")

            phone = browser.new_page(width=390, height=844, mobile=True)
            phone.goto(LOOPBACK_UI)
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390   # no sideways scrolling
            phone.screenshot(SHOTS / "machines-phone.png")
            phone.goto(f"{LOOPBACK_UI}?stage=unseen&group=")   # the filters are a plain GET form
            assert phone.evaluate("[...document.querySelectorAll('#machines tbody tr')].map(r => r.id)") == [
                "m-52-54-00-00-00-02", "m-52-54-00-00-00-03"]
            assert phone.evaluate("document.querySelector('select[name=stage]').value") == "unseen"

            # The machine's page: timeline, why its group, what it is served now, its reports.
            page.goto(f"{LOOPBACK_UI}machines/{MAC}")
            timeline = page.evaluate("[...document.querySelectorAll('#timeline tbody tr td:nth-child(2)')]"
                                     ".map(td => td.textContent)")
            assert timeline[0] == "ipxe-script" and {"dhcp-offer", "tftp-done", "kernel", "install-done",
                                                     "installed"} <= set(timeline)
            assert page.evaluate("document.querySelector('#candidates tr.chosen th').textContent") == "node1"
            assert "exit 1" in page.evaluate("document.getElementById('ipxe').textContent")
            cloud = page.evaluate("document.getElementById('cloud').textContent")
            assert cloud.startswith("#cloud-config") and "hostname: node1\n" in cloud
            assert "valid" in page.evaluate("document.getElementById('validator').textContent")
            assert "percent=40" in page.evaluate("document.getElementById('reports').textContent")
            page.screenshot(SHOTS / "machine.png")

            # Reinstall: the button goes to the admin API; without the token it is refused.
            def reinstall(token: str) -> str:
                page.evaluate("document.getElementById('reinstall-result').dataset.status = ''")
                page.evaluate("document.getElementById('reinstall').click()")
                assert page.evaluate("document.getElementById('reinstall-dialog').open") is True
                page.evaluate(f"document.getElementById('token').value = {json.dumps(token)}")
                page.evaluate("document.getElementById('confirm').click()")
                return page.wait_for("document.getElementById('reinstall-result').dataset.status")

            page.evaluate("document.getElementById('reinstall').click()")    # asked, then cancelled: nothing sent
            page.evaluate("document.querySelector('#reinstall-form button[value=cancel]').click()")
            assert page.evaluate("document.getElementById('reinstall-dialog').open") is False
            assert page.evaluate("document.getElementById('reinstall-result').textContent") == ""
            assert reinstall("") == "401" and _installed(server.state_dir)
            assert reinstall("not-the-token") == "401" and _installed(server.state_dir)
            token = (server.state_dir / "admin-token").read_text().strip()
            assert reinstall(token) == "200" and not _installed(server.state_dir)
            _stage(page, "reinstall")   # the page's own row, live too, and its timeline
            page.wait_for("document.querySelector('#timeline tbody td:nth-child(2)').textContent == 'reinstall'")
            assert "kernel " in from_namespace(machine, ("GET", f"{SERVER}/ipxe?mac={MAC}", {}, None))[0][1]

            # From an address other than loopback (allowed with --admin-allow), the token once.
            page.goto(REMOTE_UI)
            assert page.evaluate("location.pathname") == "/ui/login"
            page.evaluate("document.getElementById('login-token').value = 'wrong'")
            page.evaluate("window.__leaving = true; document.getElementById('login').submit()")
            page.wait_for("!window.__leaving && document.readyState == 'complete'")
            assert "not the admin token" in page.evaluate("document.body.textContent")
            page.evaluate(f"document.getElementById('login-token').value = {json.dumps(token)}")
            page.evaluate("window.__leaving = true; document.getElementById('login').submit()")
            page.wait_for("!window.__leaving && document.readyState == 'complete'")
            assert page.evaluate("location.href") == REMOTE_UI
            page.goto(f"{REMOTE_UI}machines/{MAC}")   # asked once: the session holds
            assert page.evaluate("location.pathname") == f"/ui/machines/{MAC}"
    finally:
        assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log()

"""The HTTP side of a real `provisioner serve`: matchbox paths, assets (Range, HEAD), traversal,
unknown machines, live reload of the data dir, metrics, machine state and the CLI around it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.fixtures.system import free_port
from tests.integration.pxe.conftest import DATA_DIR, loopback_server, wait_http
from tests.integration.pxe.machine_client import bearer, boot_secret


def get(url: str, headers: dict | None = None, method: str = "GET", body: bytes | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method, data=body)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "provisioner.cli.main", *args], capture_output=True, text=True,
                          timeout=60)


def test_matchbox_paths(http_server):
    url = http_server.url
    status, _, body = get(f"{url}/boot.ipxe")
    assert status == 200 and body.startswith(b"#!ipxe") and f"{url}/ipxe?uuid=".encode() in body
    status, _, body = get(f"{url}/ipxe?mac=52-54-00-00-00-01&uuid=&hostname=&arch=x86_64")
    assert status == 200
    lines = body.decode().splitlines()
    assert lines[1].startswith("set boot_secret ") and len(lines[1].split()[2]) == 32    # this boot's own
    assert lines[:1] + lines[2:] == [
        "#!ipxe",
        f"kernel /assets/testkernel.vmlinuz initrd=initrd.cpio.gz console=ttyS0 panic=-1 "
        f"cloud-config-url={url}/cloud-config?mac=${{mac:hexhyp}} provisioner.boot_secret=${{boot_secret}}",
        "initrd /assets/initrd.cpio.gz", "boot"]
    for path in ("cloud-config", "cloud"):
        status, _, body = get(f"{url}/{path}?mac=52:54:00:00:00:01")
        assert status == 200 and body == b"#cloud-config\nhostname: node1\n"
    assert get(f"{url}/generic?mac=52:54:00:00:00:09")[2] == f"hello anonymous from {url}\n".encode()
    status, _, body = get(f"{url}/metadata?mac=52:54:00:00:00:01")
    assert status == 200 and b"IP=10.77.0.21\n" in body and b"HOSTNAME=node1\n" in body
    status, _, body = get(f"{url}/ignition?mac=52:54:00:00:00:01")
    assert status == 404 and b"no ignition template" in body
    status, _, body = get(f"{url}/cloud-config?mac=not-a-mac")
    assert status == 400 and b"not a MAC address" in body


def test_assets_range_head_and_traversal(http_server):
    url = http_server.url
    (http_server.assets / "big.bin").write_bytes(bytes(range(256)) * 4096)
    status, headers, body = get(f"{url}/assets/big.bin", {"Range": "bytes=1000-1009"})
    assert status == 206 and body == (bytes(range(256)) * 4096)[1000:1010]
    assert headers["Content-Range"] == "bytes 1000-1009/1048576"
    # Whole files and ranges that span several of the mmap slices the server writes, and an empty file.
    large = bytes(range(251)) * 12_000   # ~2.9 MiB: three slices, the last one partial
    (http_server.assets / "large.bin").write_bytes(large)
    status, _, body = get(f"{url}/assets/large.bin")
    assert status == 200 and body == large
    status, _, body = get(f"{url}/assets/large.bin", {"Range": "bytes=1048000-2100000"})
    assert status == 206 and body == large[1048000:2100001]
    (http_server.assets / "empty.bin").write_bytes(b"")
    assert get(f"{url}/assets/empty.bin")[::2] == (200, b"")
    status, headers, body = get(f"{url}/assets/big.bin", method="HEAD")
    assert status == 200 and headers["Content-Length"] == "1048576" and body == b""
    (http_server.assets / "link").symlink_to("/etc/passwd")
    for path in ("../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "..%2f..%2fetc%2fpasswd", "link",
                 "big.bin%00.txt", "/etc/passwd"):
        status, _, body = get(f"{url}/assets/{path}")
        assert status in (400, 403, 404), (path, status)
        assert b"root:" not in body
    assert get(f"{url}/assets/hello.txt")[2] == b"tiny asset for tests\n"
    assert get(f"{url}/boot/undionly.kpxe")[2] == open("/usr/lib/ipxe/undionly.kpxe", "rb").read()
    assert get(f"{url}/boot/..%2f..%2fetc%2fpasswd")[0] == 404


def test_unknown_machine_gets_a_retry_script_and_a_data_dir_change_is_picked_up(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data)
    (data / "groups" / "default.yaml").unlink()
    with loopback_server(tmp_path, "--no-tftp", data_dir=data) as server:
        url = server.url
        status, _, body = get(f"{url}/ipxe?mac=52-54-00-00-00-99")
        text = body.decode()
        assert status == 200 and text.startswith("#!ipxe\n")
        assert "echo provisioner: no group matches" in text and "mac=52:54:00:00:00:99" in text
        assert f"chain --replace --autofree {url}/boot.ipxe" in text
        assert get(f"{url}/cloud-config?mac=52-54-00-00-00-99")[0] == 404
        # Add a default group: within ~1 s the cached answer is replaced.
        shutil.copyfile(DATA_DIR / "groups" / "default.yaml", data / "groups" / "default.yaml")
        deadline = time.monotonic() + 10
        while b"kernel /assets/testkernel.vmlinuz" not in get(f"{url}/ipxe?mac=52-54-00-00-00-99")[2]:
            assert time.monotonic() < deadline, "data dir change not picked up within 10 s"
            time.sleep(0.3)
        # A broken edit keeps the last good inventory serving, and /healthz says it is stale.
        (data / "groups" / "broken.yaml").write_text("id: [unclosed\n")
        deadline = time.monotonic() + 10
        while b"stale" not in get(f"{url}/healthz")[2]:
            assert time.monotonic() < deadline, "broken data dir not reported within 10 s"
            time.sleep(0.3)
        assert b"kernel /assets/" in get(f"{url}/ipxe?mac=52-54-00-00-00-98")[2]


def test_metrics_machine_state_and_clean_sigterm(http_server):
    url = http_server.url
    get(f"{url}/ipxe?mac=52:54:00:00:00:01")
    get(f"{url}/cloud-config?mac=52:54:00:00:00:01")
    status, _, body = get(f"{url}/metrics")
    text = body.decode()
    assert status == 200
    assert 'provisioner_http_requests_total{path="/ipxe",code="200"} 1' in text
    assert 'provisioner_boot_events_total{stage="cloud-config"} 1' in text
    assert http_server.stop() == 0                      # SIGTERM: clean exit, state flushed
    assert "serve: stopped" in http_server.log()
    proc = cli("machines", "--state-dir", str(http_server.state_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["machines"]
    row = next(r for r in rows if r["mac"] == "52:54:00:00:00:01")
    assert row["last_stage"] == "cloud-config" and row["stages"] == ["ipxe-script", "cloud-config"]
    table = cli("machines", "--state-dir", str(http_server.state_dir))
    assert "52:54:00:00:00:01" in table.stdout and "cloud-config" in table.stdout


def test_json_logs_and_one_line_errors(tmp_path):
    port = free_port()
    argv = [sys.executable, "-m", "provisioner.cli.main", "--log-format", "json", "-v", "serve", "--data-dir",
            str(DATA_DIR), "--dhcp", "off", "--no-tftp", "--http-addr", f"127.0.0.1:{port}",
            "--state-dir", str(tmp_path / "s")]
    with open(tmp_path / "json.log", "wb") as log:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{port}", process, tmp_path / "json.log")
        # The port is taken now: a second server fails with one clear line, no traceback.
        busy = cli("serve", "--data-dir", str(DATA_DIR), "--dhcp", "off", "--no-tftp",
                   "--http-addr", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "s2"))
        assert busy.returncode == 1
        assert busy.stderr.strip().splitlines()[-1].startswith(f"provisioner: error: http: cannot listen on 127.0.0.1:{port}")
        assert "Traceback" not in busy.stderr
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0
    lines = [json.loads(line) for line in (tmp_path / "json.log").read_text().splitlines() if line.strip()]
    assert any("serve: ready" in json.dumps(line) for line in lines), lines
    bad = cli("serve", "--data-dir", str(tmp_path / "missing"), "--dhcp", "off")
    assert bad.returncode == 2 and "--data-dir" in bad.stderr


def test_dnsmasq_config_is_accepted_by_dnsmasq(tmp_path):
    if shutil.which("dnsmasq") is None:
        pytest.fail("dnsmasq not found: install dnsmasq (make setup)")
    for mode in (["--proxy-network", "10.77.0.0"], ["--dhcp-range", "10.77.0.50,10.77.0.90"]):
        proc = cli("dnsmasq-config", "--data-dir", str(DATA_DIR), "--server-url", "http://10.77.0.1:8080",
                   "--tftp-root", str(tmp_path), *mode)
        assert proc.returncode == 0, proc.stderr
        conf = tmp_path / "dnsmasq.conf"
        conf.write_text(proc.stdout)
        check = subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0 and "syntax check OK" in check.stderr, check.stderr
    assert "dhcp-host=52:54:00:00:00:01,10.77.0.21" in proc.stdout


def test_http_workers_share_the_socket_and_report_to_the_main_process(tmp_path):
    with loopback_server(tmp_path, "--no-tftp", "--http-workers", "3") as server:
        url = server.url
        for i in range(60):     # spread over the processes by the kernel's accept queue
            assert get(f"{url}/ipxe?mac=52:54:00:00:01:{i:02x}")[0] == 200
        # Discovery through whichever process accepts: one registry, in the main process.
        token_url = get(f"{url}/discovery/new?size=2")[2].decode()
        for _ in range(6):
            status, headers, body = get(token_url)
            assert status == 200 and "X-Etcd-Index" in headers and json.loads(body)["node"]["dir"]
        deadline = time.monotonic() + 10
        while True:
            metrics = get(f"{url}/metrics")[2].decode()
            if 'provisioner_http_requests_total{path="/ipxe",code="200"} 60' in metrics:
                break
            assert time.monotonic() < deadline, metrics
            time.sleep(0.3)
        assert 'provisioner_boot_events_total{stage="ipxe-script"} 60' in metrics
        # Boot secrets and the os=installed switch are files: whichever process issued the secret, any
        # process accepts it, and the mark holds in every process once any of them records it.
        # (A process hands an address that asks again the secret it issued a moment ago: at most one each.)
        secrets = {boot_secret(get(f"{url}/ipxe?mac=52:54:00:00:01:05")[2].decode()) for _ in range(6)}
        assert None not in secrets and 1 <= len(secrets) <= 3
        for secret in secrets:
            for _ in range(3):
                assert get(f"{url}/report?mac=52:54:00:00:01:05", bearer(secret), "POST",
                           b'{"event": "start"}')[0] == 200
        assert get(f"{url}/installed?mac=52:54:00:00:01:05", bearer(secrets.pop()), method="POST")[0] == 200
        time.sleep(1.2)
        for _ in range(8):
            assert b"REQUEST_QUERY_OS=installed" in get(f"{url}/metadata?mac=52:54:00:00:01:05")[2]
        assert "3 worker processes share the listening socket" in server.log()
        children = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True)
        worker_pids = [int(pid) for pid in children.stdout.split()]
        assert len(worker_pids) == 2
    machines = json.loads((server.state_dir / "machines.json").read_text())["machines"]
    assert sum(1 for m in machines if m["mac"].startswith("52:54:00:00:01:")) == 60
    for pid in worker_pids:      # SIGTERM to the main process ends the workers too
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()

"""PXE boot server benchmark, all in one run, against peers on the same machine:

1. /ipxe hot path: wrk -t2 -c50 -d10s on loopback, 3 rounds, each: matchbox v0.9.0 (when MATCHBOX_BIN names
   its binary), ours with 1 and 2 HTTP processes, and a bare aiohttp handler returning a constant with 1
   and 2 processes (the ceiling), all on matchbox's etcd3-install example and the query iPXE sends.
2. HTTP assets: a 30 MB initrd, wrk -t2 -c8 -d8s, ours (1 and 2 processes) vs nginx (2 workers;
   target: within 1.2x).
3. TFTP: 200 downloads of undionly.kpxe (blksize 1468, 20 at a time) in a lab netns, ours vs
   `dnsmasq --enable-tftp` (target: within 2x).
4. Boot storm: 200 simulated clients, 50 at a time, each proxyDHCP + TFTP undionly.kpxe + HTTP
   script + 30 MB initrd, in a lab netns, bounded by a deadline.

Needs root (network namespaces). Everything stays on loopback or inside the lab namespace.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from provisioner.lab.netns import LabNetwork

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "tests" / "integration" / "pxe" / "data"
IPXE = Path("/usr/lib/ipxe/undionly.kpxe")
INITRD_SIZE = 30 * 1024 * 1024
WRK_IPXE = ["wrk", "-t2", "-c50", "-d10s"]
WRK_ASSET = ["wrk", "-t2", "-c8", "-d8s"]
# matchbox's own example (v0.7.1's etcd3-install, as in the selection conformance suite): the same files
# feed both servers, and an unmarked machine asking as iPXE does gets the install profile from both.
MATCHBOX_DATA = ROOT.parent / "shared" / "conformance" / "matchbox-select" / "etcd3-install"
IPXE_QUERY = "uuid=8d2b4e5a-3c1f-4e8a-9b7d-2f6e1a0c9d34&mac=52-54-00-a1-9c-ae&domain=&hostname=&serial="
SCRIPT_ROUNDS = 3


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wrk_field(pattern: str, out: str) -> re.Match[str]:
    found = re.search(pattern, out)
    if found is None:
        raise RuntimeError(f"wrk printed no {pattern!r}: {out[-500:]}")
    return found


def _wrk(argv: list[str], url: str) -> dict:
    out = subprocess.run([*argv, "--latency", url], capture_output=True, text=True, timeout=60, check=True).stdout
    reqs = float(_wrk_field(r"Requests/sec:\s+([\d.]+)", out).group(1))
    transfer = _wrk_field(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", out)
    scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[transfer.group(2)]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)] if p99 else None
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests_per_s": round(reqs), "bytes_per_s": round(float(transfer.group(1)) * scale),
            "p99_ms": p99_ms, "non_2xx": int(errors.group(1)) if errors else 0}


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _serve(work: Path, *args: str, netns: str | None = None, data_dir: Path = DATA_DIR) -> subprocess.Popen:
    argv = [sys.executable, "-m", "provisioner.cli.main", "-v", "serve", "--data-dir", str(data_dir),
            "--assets-dir", str(work / "assets"), "--state-dir", str(work / "state"), *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "ab"),
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _assets(work: Path) -> None:
    assets = work / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    cached = ROOT / "build" / "bench" / "initrd-30M.bin"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(os.urandom(INITRD_SIZE))
    shutil.copyfile(cached, assets / "initrd-30M.bin")
    shutil.copyfile(IPXE, assets / "undionly.kpxe")


def _ipxe_answer(url: str) -> str:
    """The /ipxe answer as the peer would send it: our per-boot secret (a line and a kernel argument that
    matchbox has no equivalent of) taken out, so the rest must be byte for byte the same."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    lines = [line for line in text.splitlines(keepends=True) if not line.startswith("set boot_secret ")]
    return "".join(lines).replace(" provisioner.boot_secret=${boot_secret}", "")


def _script_round(work: Path, matchbox: str | None) -> dict:
    """One round of the /ipxe hot path: matchbox, ours with 1 and 2 processes, the bare aiohttp ceiling."""
    results: dict = {}
    url_path = f"/ipxe?{IPXE_QUERY}"
    if matchbox:
        port = _free_port()
        peer = subprocess.Popen([matchbox, "-address", f"127.0.0.1:{port}", "-data-path", str(MATCHBOX_DATA),
                                 "-assets-path", str(work / "assets"), "-log-level", "error"],
                                stdout=subprocess.DEVNULL, stderr=open(work / "matchbox.log", "ab"))
        try:
            _wait_http(f"http://127.0.0.1:{port}{url_path}")
            results["matchbox_answer"] = _ipxe_answer(f"http://127.0.0.1:{port}{url_path}")
            results["matchbox"] = _wrk(WRK_IPXE, f"http://127.0.0.1:{port}{url_path}")
        finally:
            _stop(peer)
    for workers in (1, 2):
        port = _free_port()
        server = _serve(work, "--dhcp", "off", "--no-tftp", "--http-addr", f"127.0.0.1:{port}",
                        "--http-workers", str(workers), "--admin-addr", "127.0.0.1:0", data_dir=MATCHBOX_DATA)
        try:
            _wait_http(f"http://127.0.0.1:{port}/healthz")
            time.sleep(1.0)   # let the workers start
            results["ours_answer"] = _ipxe_answer(f"http://127.0.0.1:{port}{url_path}")
            results[f"ours_workers_{workers}"] = _wrk(WRK_IPXE, f"http://127.0.0.1:{port}{url_path}")
        finally:
            _stop(server)
    for processes in (1, 2):
        port = _free_port()
        ceiling = subprocess.Popen([sys.executable, "-m", "bench.http_ceiling", str(port), str(processes)],
                                   cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            _wait_http(f"http://127.0.0.1:{port}/ipxe")
            time.sleep(0.5)
            results[f"ceiling_processes_{processes}"] = _wrk(WRK_IPXE, f"http://127.0.0.1:{port}/ipxe")
        finally:
            _stop(ceiling)
    return results


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def bench_script(work: Path) -> dict:
    """/ipxe hot path, SCRIPT_ROUNDS rounds; the ratio vs matchbox is taken within each round."""
    matchbox = os.environ.get("MATCHBOX_BIN")
    rounds = []
    for _ in range(SCRIPT_ROUNDS):
        rounds.append(_script_round(work, matchbox))
    same = all(r["ours_answer"] == r.get("matchbox_answer", r["ours_answer"]) for r in rounds)
    summary: dict = {"tool": " ".join(WRK_IPXE), "query": IPXE_QUERY, "data_dir": "matchbox's etcd3-install example",
                     "rounds": [{k: v for k, v in r.items() if not k.endswith("_answer")} for r in rounds]}
    for key in ("ours_workers_1", "ours_workers_2", "ceiling_processes_1", "ceiling_processes_2", "matchbox"):
        if key in rounds[0]:
            summary[f"{key}_median_requests_per_s"] = round(_median([r[key]["requests_per_s"] for r in rounds]))
            summary[f"{key}_worst_p99_ms"] = max(r[key]["p99_ms"] or 0 for r in rounds)
    if matchbox:
        ratios = [r["ours_workers_2"]["requests_per_s"] / r["matchbox"]["requests_per_s"] for r in rounds]
        summary["ours_workers_2_over_matchbox"] = [round(x, 2) for x in ratios]
        summary["ours_workers_2_over_matchbox_median"] = round(_median(ratios), 2)
        summary["same_answer_as_matchbox"] = same
        summary["matchbox"] = "v0.9.0 built from source (MATCHBOX_BIN)"
    else:
        summary["matchbox"] = "not run (set MATCHBOX_BIN to a matchbox v0.9.0 binary)"
    summary["ours_workers_2_over_ceiling_processes_2"] = round(
        summary["ours_workers_2_median_requests_per_s"] / summary["ceiling_processes_2_median_requests_per_s"], 2)
    return summary


def bench_assets(work: Path) -> dict:
    ours_asset: dict = {}
    for workers in (1, 2):
        port = _free_port()
        server = _serve(work, "--dhcp", "off", "--no-tftp", "--http-addr", f"127.0.0.1:{port}",
                        "--http-workers", str(workers), "--admin-addr", "127.0.0.1:0")
        try:
            _wait_http(f"http://127.0.0.1:{port}/healthz")
            time.sleep(1.0)   # let the workers start
            ours_asset[workers] = _wrk(WRK_ASSET, f"http://127.0.0.1:{port}/assets/initrd-30M.bin")
        finally:
            _stop(server)
    nginx_port = _free_port()
    conf = work / "nginx.conf"
    conf.write_text(f"""user root; daemon off; worker_processes 2; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on;
  server {{ listen 127.0.0.1:{nginx_port}; location /assets/ {{ alias {work}/assets/; }} }} }}
""")
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _wait_http(f"http://127.0.0.1:{nginx_port}/assets/undionly.kpxe")
        nginx_asset = _wrk(WRK_ASSET, f"http://127.0.0.1:{nginx_port}/assets/initrd-30M.bin")
    finally:
        _stop(nginx)
    return {"assets_30M": {"ours_workers_1": ours_asset[1], "ours_workers_2": ours_asset[2], "nginx": nginx_asset,
                           "tool": " ".join(WRK_ASSET),
                           "nginx_over_ours_workers_1":
                                round(nginx_asset["bytes_per_s"] / max(ours_asset[1]["bytes_per_s"], 1), 2),
                           "nginx_over_ours_workers_2":
                                round(nginx_asset["bytes_per_s"] / max(ours_asset[2]["bytes_per_s"], 1), 2)}}


def _storm(net: LabNetwork, client_ns: str, *args: str) -> dict:
    argv = ["ip", "netns", "exec", client_ns, sys.executable, "-m", "bench.pxe_storm", "--server", net.server_ip,
            "--tftp-size", str(IPXE.stat().st_size), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=400, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if proc.returncode != 0:
        raise RuntimeError(f"storm client failed: {proc.stderr[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _wait_ready(work: Path, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "serve: ready" in (work / "serve.log").read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"serve exited: {(work / 'serve.log').read_text()[-1500:]}")
        time.sleep(0.2)
    raise RuntimeError("serve not ready")


def bench_netns(work: Path) -> dict:
    results: dict = {}
    with LabNetwork.create("pxebench", "10.78.0.1/24") as net:
        client = net.add_client_namespace("pxebenchc")
        net.run(["true"])
        subprocess.run(["ip", "-n", client, "addr", "add", "10.78.0.9/24", "dev", "eth0"], check=True)
        tftp_args = ("--steps", "tftp", "--clients", "200", "--concurrency", "20", "--deadline", "120")

        (work / "serve.log").write_text("")
        server = _serve(work, "--interface", "br0", "--http-addr", "10.78.0.1:8080", "--http-workers", "2",
                        netns=net.name)
        try:
            _wait_ready(work, server)
            ours = _storm(net, client, *tftp_args)
            storm = _storm(net, client, "--steps", "dhcp,tftp,script,initrd", "--clients", "200",
                           "--concurrency", "50", "--deadline", "240")
        finally:
            _stop(server)
        tftp_root = work / "dnsmasq-tftp"
        tftp_root.mkdir(exist_ok=True)
        shutil.copyfile(IPXE, tftp_root / "undionly.kpxe")
        dnsmasq = net.popen(["dnsmasq", "--no-daemon", "--port=0", "--enable-tftp", f"--tftp-root={tftp_root}",
                             "--listen-address=10.78.0.1", "--bind-interfaces", "--tftp-max=200",
                             f"--pid-file={work / 'dnsmasq.pid'}", "--log-facility=-"],
                            stdout=subprocess.DEVNULL, stderr=open(work / "dnsmasq.log", "wb"))
        try:
            time.sleep(1.0)
            theirs = _storm(net, client, *tftp_args)
        finally:
            _stop(dnsmasq)
    size = IPXE.stat().st_size
    results["tftp_200x_undionly"] = {
        "ours": ours, "dnsmasq": theirs, "file_bytes": size,
        "ours_over_dnsmasq_time": round(ours["wall_seconds"] / max(theirs["wall_seconds"], 1e-6), 2),
        "ours_mb_per_s": round(200 * size / ours["wall_seconds"] / 1e6, 1),
        "dnsmasq_mb_per_s": round(200 * size / theirs["wall_seconds"] / 1e6, 1),
    }
    results["boot_storm_200"] = storm
    return results


def main() -> dict:
    if os.geteuid() != 0:
        raise RuntimeError("bench pxe needs root (network namespaces)")
    if not MATCHBOX_DATA.is_dir():
        raise RuntimeError(f"{MATCHBOX_DATA}: missing (the shared conformance data beside the checkout)")
    for tool in ("wrk", "nginx", "dnsmasq"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found (make setup installs it)")
    with tempfile.TemporaryDirectory(prefix="bench-pxe-") as tmp:
        work = Path(tmp)
        _assets(work)
        result: dict = {"machine": f"{os.cpu_count()} cores"}
        result["ipxe_script"] = bench_script(work)
        result.update(bench_assets(work))
        result.update(bench_netns(work))
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))

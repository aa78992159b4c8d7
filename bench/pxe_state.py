"""The boot server's state in etcd vs in files: a boot storm against each, in the same run.

Setup, in a lab netns (bridge, no uplink): `provisioner serve` in proxy-DHCP mode, its state either in
files (the default) or in a real 3-member etcd 3.4 on the namespace's loopback (`--state-etcd`; data on
tmpfs, see main()); then
the same with two servers sharing that etcd. Each run: 200 scripted machines (bench/pxe_storm.py), 50 at
a time, each with an address of its own: proxyDHCP DISCOVER -> /ipxe (an install script: a boot secret
is issued) -> POST /report x2 and POST /installed with that secret (to the other server when there are
two) -> /ipxe again (now the installed answer). Rounds alternate file/etcd so load drift hits both.

Reported: boots per second (200 / wall time), p50/p95 of the script fetch and of the install's writes,
etcd requests per boot (the server's own count, provisioner_etcd_requests_total, the watch included),
and CPU per boot of the servers, of the three etcd members and of the simulated machines (all on this
machine's 2 cores here).
Target: the etcd backend within 20 % of the file backend (rate ratio >= 0.8).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.pxe_storm import storm_data_dir
from provisioner.lab.netns import LabNetwork
from tests.fixtures.etcd import EtcdCluster

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
NET = "10.79.0"
IPS = (f"{NET}.1", f"{NET}.2")
CLIENTS, CONCURRENCY, ROUNDS = 200, 50, 3


def _serve(net: LabNetwork, work: Path, data_dir: Path, ip: str, *args: str) -> subprocess.Popen:
    work.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "provisioner.cli.main", "serve", "--data-dir", str(data_dir),
            "--state-dir", str(work / "state"), "--interface", "br0", "--server-ip", ip, "--http-addr", f"{ip}:8080",
            "--tftp-addr", f"{ip}:69", "--admin-addr", "127.0.0.1:0", *args]
    return net.popen(argv, stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "ab"), env=ENV, cwd=ROOT)


def _ready(net: LabNetwork, url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with {process.returncode}")
        if net.run(["curl", "-sf", f"{url}/healthz"], check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


def _etcd_requests(net: LabNetwork, url: str) -> int:
    text = net.run(["curl", "-sf", f"{url}/metrics"]).stdout
    found = re.search(r"^provisioner_etcd_requests_total (\d+)$", text, re.M)
    return int(found.group(1)) if found else 0


def _cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (`ip netns exec` execs: a Popen's pid is the program's)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (the storm's simulated machines)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _storm(client_ns: str, servers: tuple[str, ...], first: int) -> dict:
    proc = subprocess.run(["ip", "netns", "exec", client_ns, sys.executable, "-m", "bench.pxe_storm",
                           "--server", IPS[0], "--http-servers", ",".join(servers), "--clients", str(CLIENTS),
                           "--first-client", str(first), "--concurrency", str(CONCURRENCY),
                           "--steps", "dhcp,script,install", "--deadline", "240", "--source-ips", f"{NET}.10-250"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    if proc.returncode != 0:
        raise RuntimeError(f"storm client failed: {proc.stderr[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run(net: LabNetwork, client_ns: str, work: Path, data_dir: Path, servers: tuple[str, ...], first: int,
         etcd: EtcdCluster | None) -> dict:
    state = ("--state-etcd", ",".join(etcd.endpoints), "--state-site", f"bench{first}") if etcd else ()
    processes = [_serve(net, work / f"s{first}-{ip}", data_dir, ip, *state) for ip in servers]
    try:
        for ip, process in zip(servers, processes, strict=True):
            _ready(net, f"http://{ip}:8080", process)
        members = [m.process.pid for m in etcd.members if m.process is not None] if etcd else []
        before = sum(_etcd_requests(net, f"http://{ip}:8080") for ip in servers)
        cpu_before = (_cpu([p.pid for p in processes]), _cpu(members))
        clients_before = _children_cpu()
        result = _storm(client_ns, servers, first)
        result["client_cpu_ms_per_boot"] = round((_children_cpu() - clients_before) * 1000 / CLIENTS, 2)
        time.sleep(1.0)   # the outbox's last push
        after = sum(_etcd_requests(net, f"http://{ip}:8080") for ip in servers)
        cpu_after = (_cpu([p.pid for p in processes]), _cpu(members))
    finally:
        for process in processes:
            _stop(process)
    result["boots_per_s"] = round(CLIENTS / result["wall_seconds"], 1)
    result["server_cpu_ms_per_boot"] = round((cpu_after[0] - cpu_before[0]) * 1000 / CLIENTS, 2)
    result["etcd_cpu_ms_per_boot"] = round((cpu_after[1] - cpu_before[1]) * 1000 / CLIENTS, 2)
    if etcd:
        result["etcd_requests_per_boot"] = round((after - before) / CLIENTS, 2)
    return result


def _median(runs: list[dict], key: str) -> float:
    return round(statistics.median(run[key] for run in runs), 2)


def main() -> dict:
    if os.geteuid() != 0:
        raise RuntimeError("bench pxe_state needs root (network namespaces)")
    runs: dict[str, list[dict]] = {"files": [], "etcd": [], "etcd_two_servers": []}
    with tempfile.TemporaryDirectory(prefix="bench-pxe-state-") as tmp, \
            LabNetwork.create("pxestate", f"{IPS[0]}/24") as net:
        work = Path(tmp)
        data_dir = storm_data_dir(work / "data")
        net.ip("addr", "add", f"{IPS[1]}/24", "dev", "br0")
        client = net.add_client_namespace("pxestatec")
        subprocess.run(["ip", "-n", client, "-batch", "-"], check=True, text=True,
                       input="".join(f"addr add {NET}.{n}/24 dev eth0\n" for n in range(10, 251)))
        # etcd's data on tmpfs, as in bench/scheduler.py: on a site its members have disks (and CPUs) of their
        # own; here three members share one disk with everything else, and their fsyncs would be what is measured.
        etcd_dir = Path(tempfile.mkdtemp(prefix="bench-pxe-state-etcd-", dir="/dev/shm"))
        etcd = EtcdCluster.start(etcd_dir, size=3, netns=net.name)
        try:
            first = 0
            for _ in range(ROUNDS):
                for name, servers, cluster in (("files", IPS[:1], None), ("etcd", IPS[:1], etcd),
                                               ("etcd_two_servers", IPS, etcd)):
                    runs[name].append(_run(net, client, work, data_dir, servers, first, cluster))
                    first += CLIENTS
        finally:
            etcd.stop()
            shutil.rmtree(etcd_dir, ignore_errors=True)
    summary = {name: {"boots_per_s": _median(r, "boots_per_s"), "script_p50_ms": _median(r, "script_p50_ms"),
                      "script_p95_ms": _median(r, "script_p95_ms"), "install_p50_ms": _median(r, "install_p50_ms"),
                      "install_p95_ms": _median(r, "install_p95_ms"),
                      "server_cpu_ms_per_boot": _median(r, "server_cpu_ms_per_boot"),
                      "etcd_cpu_ms_per_boot": _median(r, "etcd_cpu_ms_per_boot"),
                      "client_cpu_ms_per_boot": _median(r, "client_cpu_ms_per_boot"),
                      "failures": sum(run["failures"] for run in r)} for name, r in runs.items()}
    for name in ("etcd", "etcd_two_servers"):
        summary[name]["etcd_requests_per_boot"] = _median(runs[name], "etcd_requests_per_boot")
    return {"machine": f"{os.cpu_count()} cores", "clients": CLIENTS, "concurrency": CONCURRENCY, "rounds": ROUNDS,
            "summary": summary, "runs": runs,
            "etcd_over_files_rate": round(summary["etcd"]["boots_per_s"] / summary["files"]["boots_per_s"], 2),
            "etcd_over_files_install_p50": round(summary["etcd"]["install_p50_ms"]
                                                 / summary["files"]["install_p50_ms"], 2)}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))

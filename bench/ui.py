"""What the operator's pages cost the machines: the boot storm with 50 open pages against the same storm
with none, on a server that knows 1,000 machines (target: rate and latency within 10 %).

The server and the storm are bench/pxe.py's (`provisioner serve --http-workers 2` in a lab netns,
bench/pxe_storm.py: 200 simulated clients, 50 at a time, proxyDHCP + TFTP + /ipxe + 30 MB initrd).
The pages are bench/ui_pages.py in the server's namespace: each loads /ui/ (1,000+ rows) and reads
/ui/events throughout, as a browser tab does. The pages run at nice 19: they stand for browsers on
the operators' desks, and their own CPU on this 2-core host is not the server's cost (real tabs would
add more); the server still renders, queues and writes every update to every page. Rounds alternate
(none, pages, pages, none, ...) so drift in the host's speed falls on both sides; medians are compared.

Then, with the pages open and no storm, 20 machines fetch their script one by one: how long after each
boot event the first page has the machine's row (the target is a second).

Needs root (network namespaces). Everything stays inside the lab namespace.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import pxe
from provisioner.lab.netns import LabNetwork
from provisioner.pxe.machines import MachineStates

ROOT = Path(__file__).resolve().parents[1]
MACHINES = 1000
PAGES = 50
ORDER = ("none", "pages", "pages", "none") * 5   # 10 storms each, the host's drift shared
STORM = ("--steps", "dhcp,tftp,script,initrd", "--clients", "200", "--concurrency", "50", "--deadline", "240")
ADMIN = "http://127.0.0.1:8081"   # inside the server's namespace


def seed_state(state_dir: Path, count: int = MACHINES) -> None:
    """`count` machines that booted as far as their kernel, already in machines.json."""
    states = MachineStates(state_dir / "machines.json")
    now = time.time() - 3600
    for i in range(count):
        mac = f"52:54:02:00:{i >> 8:02x}:{i & 0xFF:02x}"
        ip = f"10.80.{i >> 8}.{i & 0xFF}"
        for step, stage in enumerate(("dhcp-offer", "dhcp-ack", "tftp-done", "ipxe-script", "kernel")):
            states.record(mac, stage, {"arch": "bios"} if stage.startswith("dhcp") else None, ip=ip,
                          now=now + i + step)
    states.save()


def open_pages(netns: str) -> subprocess.Popen:
    # nice: the pages stand for browsers on the operators' desks, not on the boot server's two cores; the
    # server still renders, queues and sends every update (its own cost is what is compared).
    process = subprocess.Popen(["nice", "-n", "19", "ip", "netns", "exec", netns, sys.executable, "-m",
                                "bench.ui_pages", "--url", ADMIN, "--pages", str(PAGES)], stdout=subprocess.PIPE,
                               text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != "ready":
        process.kill()
        raise RuntimeError(f"the pages did not open: {line!r}")
    return process


def close_pages(process: subprocess.Popen) -> dict:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    return json.loads(out.strip().splitlines()[-1])


def update_delays(net: LabNetwork, client: str, count: int = 20) -> dict:
    """How long after a boot event an open page has the machine's row: `count` machines each fetch their
    script once (curl in the client namespace; the server records the event before it answers)."""
    pages = open_pages(net.name)
    done: dict[str, float] = {}
    try:
        for i in range(count):
            mac = f"52-54-03-00-00-{i:02x}"
            subprocess.run(["ip", "netns", "exec", client, "curl", "-sf", "-o", "/dev/null",
                            f"http://{net.server_ip}:8080/ipxe?mac={mac}"], check=True, timeout=30)
            done[f"m-{mac}"] = time.time()
            time.sleep(0.37)   # not a multiple of the update interval: the events land all over it
        time.sleep(2.0)        # the last row's update
    finally:
        received = close_pages(pages)["first_sent"]
    delays = sorted(received[row] - at for row, at in done.items() if row in received)
    return {"machines": count, "rows_received": len(delays), "p50_ms": round(statistics.median(delays) * 1000),
            "max_ms": round(max(delays) * 1000), "min_ms": round(min(delays) * 1000)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (the server's main process: DHCP, TFTP, events, the UI)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ui_counters(netns: str) -> dict[str, int]:
    """The server's provisioner_ui_* counters (live.py), from /metrics inside the namespace."""
    text = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sf", "http://10.79.0.1:8080/metrics"],
                          capture_output=True, text=True, timeout=30, check=True).stdout
    found = {}
    for line in text.splitlines():
        if line.startswith("provisioner_ui_"):
            name, value = line.split()
            found[name] = int(value)
    return found


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def summary(runs: list[dict]) -> dict:
    keys = ("wall_seconds", "server_main_cpu_seconds", "dhcp_p50_ms", "dhcp_p95_ms", "tftp_p50_ms", "tftp_p95_ms",
            "script_p50_ms", "script_p95_ms", "initrd_p50_ms", "initrd_p95_ms")
    result: dict = {key: _median(runs, key) for key in keys}
    result["spread"] = {key: [min(run[key] for run in runs), max(run[key] for run in runs)]
                        for key in ("wall_seconds", "tftp_p50_ms", "dhcp_p50_ms", "script_p50_ms")}
    result["clients_per_s"] = round(runs[0]["clients"] / result["wall_seconds"], 1)
    result["failures"] = sum(run["failures"] for run in runs)
    return result


def main() -> dict:
    if os.geteuid() != 0:
        raise RuntimeError("bench ui needs root (network namespaces)")
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        work = Path(tmp)
        pxe._assets(work)
        seed_state(work / "state")
        runs: dict[str, list[dict]] = {"none": [], "pages": []}
        pages_seen: list[dict] = []
        with LabNetwork.create("uibench", "10.79.0.1/24") as net:
            client = net.add_client_namespace("uibenchc")
            subprocess.run(["ip", "-n", client, "addr", "add", "10.79.0.9/24", "dev", "eth0"], check=True)
            (work / "serve.log").write_text("")
            server = pxe._serve(work, "--interface", "br0", "--http-addr", "10.79.0.1:8080", "--http-workers", "2",
                                "--admin-addr", "127.0.0.1:8081", netns=net.name)
            try:
                pxe._wait_ready(work, server)
                pxe._storm(net, client, *STORM)   # warm-up: caches, ARP, the storm's 200 machines known
                for mode in ORDER:
                    pages = open_pages(net.name) if mode == "pages" else None
                    try:
                        before, ui_before = cpu_seconds(server.pid), ui_counters(net.name)
                        run = pxe._storm(net, client, *STORM)
                        run["server_main_cpu_seconds"] = round(cpu_seconds(server.pid) - before, 2)
                        ui_after = ui_counters(net.name)
                        run["ui"] = {name: value - ui_before.get(name, 0) for name, value in ui_after.items()}
                        runs[mode].append(run)
                    finally:
                        if pages is not None:
                            pages_seen.append(close_pages(pages))
                delays = update_delays(net, client)
            finally:
                pxe._stop(server)
        none, with_pages = summary(runs["none"]), summary(runs["pages"])
        ratios = {f"{key}_pages_over_none": round(with_pages[key] / max(none[key], 1e-9), 3)
                  for key in none if key not in ("failures", "spread")}
        return {"machines_in_state": MACHINES + 200, "pages": PAGES, "order": list(ORDER), "storm": " ".join(STORM),
                "no_pages": none, "with_pages": with_pages, "ratios": ratios, "boot_event_to_page": delays,
                "target": "rate and latencies with pages within 10 % of without",
                "pages_received": pages_seen, "runs": runs, "machine": f"{os.cpu_count()} cores"}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))

"""Render + validate cloud-config and iPXE for 10,000 generated machines.

Generates a data dir with one group per machine (MAC selector + metadata, like examples/cluster),
then renders every machine's iPXE script and cloud-config (validated with the coreos-cloudinit rules)
through the same Renderer the server uses. Reports machines/second on 1 and 2 worker processes and
the peak RSS for 1,000 vs 10,000 machines (memory should not grow with what was rendered, only
with the inventory itself). Peer, in the same run: the bare minimum a renderer must do — Jinja2
render plus a libyaml `safe_load` of each cloud-config, no validation — so the ratio shows what
validation costs.
"""

from __future__ import annotations

import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from provisioner.inventory import MachineQuery, load_inventory
from provisioner.render import Renderer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "cluster"
MACHINES = 10_000


def mac_of(index: int) -> str:
    return f"52:54:01:{index >> 16 & 0xFF:02x}:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"


def generate_data_dir(root: Path, machines: int) -> None:
    for folder in ("profiles", "cloud", "groups"):
        (root / folder).mkdir(parents=True)
    shutil.copy(EXAMPLES / "profiles" / "install.yaml", root / "profiles")
    (root / "profiles" / "installed.yaml").write_text(
        "id: installed\nboot:\n  kernel: /assets/k\n  args: [console=ttyS0]\ncloud_id: node.yaml.j2\n")
    shutil.copy(EXAMPLES / "cloud" / "node.yaml.j2", root / "cloud")
    shutil.copy(EXAMPLES / "cloud" / "live.yaml.j2", root / "cloud")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBXKH0Ll1ImY0+0i0g7FYKYQ7Lbl9ODCUC3ZC1Z4xx2C operator@example"
    for index in range(machines):
        (root / "groups" / f"m{index}.yaml").write_text(
            f"id: m{index}\nprofile: installed\nselector:\n  mac: '{mac_of(index)}'\n"
            f"metadata:\n  hostname: m{index}\n  cluster_token: bench\n  fleet_metadata: rack={index % 40}\n"
            f"  ssh_authorized_keys: ['{key}']\n")


# The renderer workers use: built once in the parent, inherited by fork (the server does the same).
_RENDERER: Renderer | None = None


def _render_range(args: tuple[int, int, bool]) -> int:
    start, stop, validate = args
    renderer = _RENDERER
    assert renderer is not None, "built in the parent before the workers fork"
    template = renderer.templates.environment.get_template("cloud/node.yaml.j2")
    for index in range(start, stop):
        query = MachineQuery(mac=mac_of(index))
        renderer.ipxe(query)
        if validate:
            renderer.cloud_config(query)
        else:  # the peer: render and parse only
            yaml.load(template.render(renderer.context(query)), Loader=yaml.CSafeLoader)
    return stop - start


def _timed(machines: int, workers: int, validate: bool) -> float:
    """Machines/second rendering `machines` machines on `workers` forked processes."""
    chunks = [(i * machines // workers, (i + 1) * machines // workers, validate) for i in range(workers)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_render_range, [(0, 1, validate)] * workers)  # warm up: templates compiled per process
        start = time.perf_counter()
        done = sum(pool.map(_render_range, chunks))
        return done / (time.perf_counter() - start)


def _peak_rss_mib(data_dir: Path, machines: int) -> float:
    """Peak RSS of a fresh process that loads the inventory and renders `machines` machines."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_render_and_measure, (str(data_dir), machines))


def _render_and_measure(data_dir: str, machines: int) -> float:
    global _RENDERER
    _RENDERER = Renderer(load_inventory(data_dir), server_url="http://10.0.0.1:8080")
    _render_range((0, machines, True))
    # VmHWM, not ru_maxrss: Linux carries the forking parent's peak into a spawned child's ru_maxrss.
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "small"
        generate_data_dir(big, MACHINES)
        generate_data_dir(small, MACHINES // 10)
        global _RENDERER
        start = time.perf_counter()
        _RENDERER = Renderer(load_inventory(big), server_url="http://10.0.0.1:8080")
        load_seconds = time.perf_counter() - start
        result = {
            "machines": MACHINES,
            "inventory_load_seconds": round(load_seconds, 2),
            "ours_1_worker_machines_per_s": round(_timed(MACHINES, 1, True)),
            "ours_2_workers_machines_per_s": round(_timed(MACHINES, 2, True)),
            "peer_render_and_parse_2_workers_machines_per_s": round(_timed(MACHINES, 2, False)),
            "peak_rss_mib_1000_machines": round(_peak_rss_mib(small, MACHINES // 10), 1),
            "peak_rss_mib_10000_machines": round(_peak_rss_mib(big, MACHINES), 1),
        }
    result["ratio_ours_vs_peer"] = round(result["ours_2_workers_machines_per_s"]
                                        / result["peer_render_and_parse_2_workers_machines_per_s"], 2)
    result["target_machines_per_s"] = 5000
    for key, value in result.items():
        print(f"  {key}: {value}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()

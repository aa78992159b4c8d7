"""Registry benchmark: pulls through `provisioner serve --registry-addr` vs from a docker-registry
started by hand, and the image size the container runtime adds.

1. Pulls. A ~50 MB image (two 25 MiB layers of random bytes, so gzip cannot shrink them) is imported
   into a data dir. The same storage is served by (a) `provisioner serve --registry-addr` (the registry
   as its supervised child) and (b) `docker-registry serve` with the minimal config an operator would
   write, both inside a lab namespace. "Nodes" are client namespaces on the lab bridge (veth, no uplink)
   running `skopeo copy docker://... dir:` (a real registry client: manifest, then blobs, digests
   verified). One node, then 3 nodes at once; one unmeasured pull from each first (page cache, TCP),
   then 7 rounds, order alternating; medians and the ratio server/direct (the server is not in the
   data path, so it should be ~1.0).
2. Image size. The image recipe built a second time without the runtime (docker.io, containerd, runc,
   apparmor and their units) in its own cached work dir; the differences in USR squashfs, compressed
   disk image and PXE initrd are the MiB the runtime adds.

Needs root (namespaces, image build). `python -m bench registry`; under `flock /tmp/provisioner-heavy.lock`.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from provisioner.core.commands import terminate
from provisioner.image.build import BuildOptions, build_image
from provisioner.image.recipe import DEFAULT_RECIPE_DIR
from provisioner.lab.netns import LabNetwork
from provisioner.registry.names import ImageName
from provisioner.registry.offline_images import image_config, layer_tar, oci_architecture, write_oci_layout

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "tests" / "integration" / "pxe" / "data"
WORK = ROOT / "build" / "bench-registry"
NETNS, CIDR, SERVER_IP = "benchreg", "10.78.0.1/24", "10.78.0.1"
SERVE_HTTP, SERVE_REGISTRY, DIRECT_REGISTRY = 8080, 5000, 5001
LAYER_BYTES = 25 << 20
IMAGE = ImageName("bench/pull", "50mb")
ROUNDS = 7
RUNTIME_PACKAGES = ("docker.io", "containerd", "runc", "apparmor")
RUNTIME_UNITS = ("docker.socket", "docker.service", "containerd.service")


def _cli(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "provisioner.cli.main", *args], cwd=ROOT, check=True,
                          capture_output=True, text=True, timeout=600).stdout


def _prepare_data_dir() -> tuple[Path, int]:
    """A data dir (the test inventory) whose registry holds the ~50 MB image; returns it and the image bytes."""
    data = WORK / "data"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(DATA_DIR, data)
    rng = random.Random(0)
    layers = [layer_tar({"data": 0o755}, {f"data/blob{i}": (0o644, rng.randbytes(LAYER_BYTES))}, {}) for i in range(2)]
    diff_ids = [f"sha256:{hashlib.sha256(tar).hexdigest()}" for tar in layers]
    config = image_config(oci_architecture(), diff_ids, {"Cmd": ["sh"]}, ["bench layer 0", "bench layer 1"])
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        write_oci_layout(Path(tmp) / "layout", IMAGE, config, layers)
        _cli("registry", "import", "-D", str(data), str(Path(tmp) / "layout"))
    listed = json.loads(_cli("registry", "list", "-D", str(data), "--json"))["images"]
    size = next(image["size"] for image in listed if image["repository"] == IMAGE.repository)
    return data, size


def _pull(net: LabNetwork, clients: list[str], port: int) -> float:
    """Seconds until every client has pulled the image (all at once), each into a fresh directory."""
    for client in clients:
        shutil.rmtree(WORK / f"pulled-{client}", ignore_errors=True)
    argvs = [["ip", "netns", "exec", client, "skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
              f"docker://{SERVER_IP}:{port}/{IMAGE}", f"dir:{WORK / f'pulled-{client}'}"] for client in clients]
    start = time.monotonic()
    processes = [subprocess.Popen(argv, stderr=subprocess.PIPE) for argv in argvs]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        if process.returncode != 0:
            raise RuntimeError(f"skopeo pull failed: {stderr.decode().strip()}")
    return time.monotonic() - start


def _pulls(data: Path) -> dict:
    net = LabNetwork.create(NETNS, CIDR)
    processes: list[subprocess.Popen] = []
    try:
        clients = []
        for index in range(3):
            client = net.add_client_namespace(f"{NETNS}{index}")
            subprocess.run(["ip", "-n", client, "addr", "add", f"10.78.0.{10 + index}/24", "dev", "eth0"], check=True)
            clients.append(client)
        serve_log = open(WORK / "servers.log", "wb")  # noqa: SIM115 (the child writes it until the end)
        processes.append(net.popen([sys.executable, "-m", "provisioner.cli.main", "-v", "serve", "-D", str(data),
                                    "--state-dir", str(WORK / "state"), "--dhcp", "off", "--no-tftp",
                                    "--http-addr", f"{SERVER_IP}:{SERVE_HTTP}",
                                    "--registry-addr", f"{SERVER_IP}:{SERVE_REGISTRY}"],
                                   stdout=serve_log, stderr=serve_log, cwd=ROOT))
        direct_config = WORK / "direct.yml"
        direct_config.write_text(yaml.safe_dump({
            "version": 0.1, "storage": {"filesystem": {"rootdirectory": str(data / "registry")}},
            "http": {"addr": f"{SERVER_IP}:{DIRECT_REGISTRY}"}}))
        processes.append(net.popen(["docker-registry", "serve", str(direct_config)], stdout=subprocess.DEVNULL,
                                   stderr=serve_log))
        for port in (SERVE_REGISTRY, DIRECT_REGISTRY):
            net.run(["curl", "-sf", "--retry", "50", "--retry-delay", "1", "--retry-connrefused", "-o", "/dev/null",
                     f"http://{SERVER_IP}:{port}/v2/"], timeout=90)
        samples: dict[str, list[float]] = {f"{mode}_{n}": [] for mode in ("server", "direct") for n in (1, 3)}
        for port in (SERVE_REGISTRY, DIRECT_REGISTRY):
            _pull(net, clients, port)
        for round_index in range(ROUNDS):
            modes = [("server", SERVE_REGISTRY), ("direct", DIRECT_REGISTRY)]
            for mode, port in modes if round_index % 2 == 0 else modes[::-1]:
                for count in (1, 3):
                    samples[f"{mode}_{count}"].append(_pull(net, clients[:count], port))
    finally:
        for process in processes:
            terminate(process, 15)
        net.destroy()
    medians = {key: round(statistics.median(values), 3) for key, values in samples.items()}
    return {
        "samples_s": {key: [round(v, 3) for v in values] for key, values in samples.items()},
        "median_s": medians,
        "ratio_server_vs_direct": {str(n): round(medians[f"server_{n}"] / medians[f"direct_{n}"], 3) for n in (1, 3)},
    }


def _recipe_without_runtime(target: Path) -> Path:
    """A copy of the image recipe without the container runtime (packages and units)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(DEFAULT_RECIPE_DIR, target)
    recipe = yaml.safe_load((target / "recipe.yaml").read_text())
    recipe["debian"]["packages"] = [p for p in recipe["debian"]["packages"] if p not in RUNTIME_PACKAGES]
    for key in ("enable_units", "disable_units"):
        recipe[key] = [unit for unit in recipe[key] if unit not in RUNTIME_UNITS]
    (target / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return target


def _image_sizes() -> dict:
    mib = 1 << 20
    with_runtime = build_image(BuildOptions(output=ROOT / "build/release", work=ROOT / "build/image"))
    without = build_image(BuildOptions(output=WORK / "release-noruntime", work=WORK / "image-noruntime",
                                       recipe_dir=_recipe_without_runtime(WORK / "recipe-noruntime")))
    sizes = {}
    for name, result in (("with_runtime", with_runtime), ("without_runtime", without)):
        sizes[name] = {key: round(value / mib, 1) for key, value in result.sizes.items()}
        sizes[name]["usr_squashfs"] = round(result.usr_image.stat().st_size / mib, 1)
    added = {key: round(sizes["with_runtime"][key] - sizes["without_runtime"][key], 1) for key in sizes["with_runtime"]}
    return {"sizes_mib": sizes, "added_by_runtime_mib": added, "budgets": with_runtime.budgets}


def main() -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    data, image_bytes = _prepare_data_dir()
    result = {"image_bytes": image_bytes, "pulls": _pulls(data)}
    result.update(_image_sizes())
    return result

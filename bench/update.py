"""Benchmark: applying an OS update (download + verify + write the passive USR slot) vs `dd` of the
same USR image onto the same partition.

The built release (build/release/stable/current, `make image`) is served by a plain HTTP server on
127.0.0.1 (`python3 -m http.server`, a separate process). The disk: a sparse file in the image's own
partition table (image_partition_table, 1 GiB slots); USR-B is a loop device at the partition's offset.
Each round, on that loop device:

- ours: the agent's own steps (provisioner/node/update): fetch update.json + .sig and verify it
  against the release key (gpgv), download the USR image, kernel and initrd to a temporary directory
  with size + SHA-256 + signature checked while streaming, set USR-B unbootable in the GPT (sgdisk on the disk file),
  write the USR image with fsync and read it back (SHA-256 of the written bytes, page cache dropped),
  then set USR-B priority 2 / tries 1 (sgdisk). Not timed: the kernel/initrd copy to the ESP and
  grubenv (vfat, which this host cannot mount; a few MB).
- dd: `dd if=<the USR image, already local> of=<USR-B> bs=1M conv=fsync`: the device's own write, no
  download, no verification.

Rounds alternate the order. Results: bench/results/update.json, docs/benchmarks.md "update".
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHANNEL = REPO / "build" / "release" / "stable"
ROUNDS = int(os.environ.get("BENCH_UPDATE_ROUNDS", "3"))


def sh(*argv, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def make_disk(directory: Path) -> tuple[str, str]:
    """(disk image, loop device over its USR-B): a sparse file in the image's own partition table; the
    GPT is written on the file (sgdisk re-reads a loop device's table, which drops this host's user-space
    partition nodes), USR-B is a loop device with the partition's offset and size."""
    sys.path.insert(0, str(REPO))
    from provisioner.image.partition_table import image_partition_table, sgdisk_argv
    from provisioner.image.recipe import load_recipe

    table = image_partition_table(load_recipe().partitions_mib)
    image = directory / "disk.img"
    with open(image, "wb") as handle:
        handle.truncate(table.total_sectors * 512)
    sh(*sgdisk_argv(table, str(image)))
    usr_b = table.by_label("USR-B")
    loop = sh("losetup", "--find", "--show", "--offset", usr_b.start * 512, "--sizelimit", usr_b.size_bytes,
              image).stdout.strip()
    return str(image), loop


def serve(directory: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                                "--directory", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("http.server did not start")


def ours(server: str, disk: str, node: str, key: bytes, work: Path) -> float:
    from provisioner.disk.gpt import read_gpt
    from provisioner.node.slots import slot_partitions, write_slot_attributes
    from provisioner.node.update import payload
    from provisioner.node.update.manifest import parse_manifest
    from provisioner.node.update.slot_writer import activated, disabled, write_usr

    start = time.monotonic()
    url = f"{server}/stable/current/update.json"
    data = payload.fetch_small(url)
    payload.verify_signed(data, payload.fetch_small(url + ".sig"), key, work, url)
    manifest = parse_manifest(data, url)
    files = {}
    for part, expected in manifest.files.items():
        file_url = manifest.file_url(server, part)
        files[part] = payload.download_verified(file_url, expected, payload.fetch_small(file_url + ".sig"), key,
                                                work / expected.name)
    bits = {k: p.boot for k, p in slot_partitions(read_gpt(disk)).items()}
    write_slot_attributes(disk, read_gpt(disk), disabled(bits, "b"))
    write_usr(node, files["usr"], manifest.files["usr"])
    write_slot_attributes(disk, read_gpt(disk), activated(disabled(bits, "b"), "b"))
    seconds = time.monotonic() - start
    for path in files.values():
        path.unlink()
    return seconds


def by_dd(usr: Path, node: str) -> float:
    start = time.monotonic()
    sh("dd", f"if={usr}", f"of={node}", "bs=1M", "conv=fsync", "status=none")
    return time.monotonic() - start


def main() -> dict:
    if os.geteuid() != 0:
        raise RuntimeError("the update benchmark needs root (loop devices)")
    manifest_path = CHANNEL / "current" / "update.json"
    if not manifest_path.exists():
        raise RuntimeError(f"{manifest_path} missing: run `make image` first")
    sys.path.insert(0, str(REPO))
    from provisioner.node.update.manifest import parse_manifest

    manifest = parse_manifest(manifest_path.read_bytes(), str(manifest_path))
    usr = CHANNEL / "current" / manifest.files["usr"].name
    key = (CHANNEL / "release-key.asc").read_bytes()
    samples: dict[str, list[float]] = {"ours": [], "dd": []}
    with tempfile.TemporaryDirectory(prefix="bench-update-", dir="/var/tmp") as tmp:
        directory = Path(tmp)
        disk, node = make_disk(directory)
        process, server = serve(CHANNEL.parent)
        try:
            for round_number in range(ROUNDS):
                order = ("ours", "dd") if round_number % 2 == 0 else ("dd", "ours")
                for who in order:
                    sh("blkdiscard", node, check=False)
                    seconds = ours(server, disk, node, key, directory / "work") if who == "ours" else by_dd(usr, node)
                    samples[who].append(round(seconds, 3))
        finally:
            process.terminate()
            process.wait()
            sh("losetup", "-d", node, check=False)
    med = {who: statistics.median(values) for who, values in samples.items()}
    payload_bytes = sum(f.size for f in manifest.files.values())
    return {
        "version": manifest.version,
        "payload_bytes": payload_bytes,
        "payload_mib": round(payload_bytes / (1 << 20), 1),
        "usr_bytes": manifest.files["usr"].size,
        "rounds": ROUNDS,
        "samples_seconds": samples,
        "median_seconds": {who: round(value, 3) for who, value in med.items()},
        "ratio_ours_vs_dd": round(med["ours"] / med["dd"], 2),
        "ours_mib_per_s": round(payload_bytes / (1 << 20) / med["ours"], 1),
        "dd_mib_per_s": round(manifest.files["usr"].size / (1 << 20) / med["dd"], 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))

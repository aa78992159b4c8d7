"""Benchmark: `provisioner disk shrink-root` and `disk grow` vs the same commands typed by hand.

A 20 GiB sparse CoreOS-layout image whose ROOT (partition 9, ext4, ~19.9 GiB) holds 2 GiB of
incompressible files placed high on the disk (a preallocated filler took the low part while
they were written), so the shrink to 6 GiB really moves data. Each round starts from a fresh
sparse copy and times, on the image file:

- ours (cli): `provisioner disk shrink-root IMG --size 6G --yes`, then `provisioner disk grow IMG`
  (Python start-up, loop attach, table reads, probes, GPT backup, journal fsyncs included);
- ours (lib): the same two calls of provisioner.disk.resize in a fresh `python -c` each, which
  leaves out the import time of the CLI's other command groups (aiohttp, paramiko, ...);
- by hand: the guide's sequence with the same tools: losetup -P, partx -a, e2fsck -f -p,
  resize2fs DEV 6G, sgdisk -e -d 9 -n 9:START:END -t -u -c -A (one call), partx, e2fsck -f -p,
  losetup -d; then the grow: losetup, sgdisk (end = 0, the disk end), partx, e2fsck -f -p,
  resize2fs DEV, e2fsck -f -p, losetup -d.

Rounds alternate the order (hand first, then ours first) so page-cache warmth favours neither.
Target: ours within 1.1x of by hand.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provisioner.disk import layout

GiB = 1 << 30
MiB = 1 << 20
DISK = 20 * GiB
DATA = 2 * GiB
SHRINK_TO = 6 * GiB
ROUNDS = 3
ROOT_START = 114688
ROOT_UUID = "5A0E8E3A-7F3C-4E39-9C7E-3E0C2E54A9C1"
PARTS = (  # number, label, type, start, sectors (the CoreOS table, small partitions)
    (1, "EFI-SYSTEM", layout.TYPE_EFI, 4096, 16384),
    (2, "BIOS-BOOT", layout.TYPE_BIOS_BOOT, 20480, 2048),
    (3, "USR-A", layout.TYPE_USR, 24576, 32768),
    (4, "USR-B", layout.TYPE_USR, 57344, 32768),
    (6, "OEM", layout.TYPE_LINUX_DATA, 90112, 16384),
    (7, "OEM-CONFIG", layout.TYPE_RESERVED, 106496, 8192),
)


def sh(*argv, check: bool = True, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def build_base(directory: Path) -> Path:
    image = directory / "base.img"
    with open(image, "wb") as handle:
        handle.truncate(DISK)
    argv = ["sgdisk", "-a", "1", "-U", layout.MAGIC_DISK_GUID]
    for number, label, type_guid, start, sectors in PARTS:
        argv += [f"-n={number}:{start}:{start + sectors - 1}", f"-t={number}:{type_guid}", f"-c={number}:{label}"]
    argv += ["-n=9:114688:0", f"-t=9:{layout.TYPE_RESIZE}", "-c=9:ROOT", f"-u=9:{ROOT_UUID}", "-A=9:set:60"]
    sh(*argv, image)
    loop = sh("losetup", "--find", "--show", "--partscan", image).stdout.strip()
    try:
        sh("partx", "-a", loop, check=False)
        part = f"{loop}p9"
        sh("mkfs.ext4", "-q", "-L", "ROOT", part)
        # Mount in a private mount namespace: nothing else on the machine can pin the mount.
        script = (
            "set -e; m=$(mktemp -d); mount \"$1\" \"$m\"; fallocate -l 12G \"$m/filler\"; "
            "for i in $(seq 1 32); do head -c 64M /dev/urandom > \"$m/data$i.bin\"; done; "
            "rm \"$m/filler\"; umount \"$m\"; rmdir \"$m\""
        )
        sh("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", part)
    finally:
        sh("partx", "-d", loop, check=False)
        sh("losetup", "-d", loop, check=False)
    with open(image, "rb") as handle:
        os.fsync(handle.fileno())
    return image


def fresh_copy(base: Path, target: Path) -> None:
    sh("cp", "--sparse=always", base, target)
    with open(target, "rb") as handle:
        os.fsync(handle.fileno())


def timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def ours_cli(image: Path, state: Path) -> tuple[float, float]:
    """The full command line, including the start-up of the whole `provisioner` CLI."""
    env = dict(os.environ, PROVISIONER_STATE_DIR=str(state))
    cli = [sys.executable, "-m", "provisioner.cli.main", "disk"]
    shrink = timed(lambda: sh(*cli, "shrink-root", image, "--size", "6G", "--yes", env=env))
    grow = timed(lambda: sh(*cli, "grow", image, env=env))
    return shrink, grow


def ours_lib(image: Path, state: Path) -> tuple[float, float]:
    """A fresh Python process calling provisioner.disk.resize (what `disk` runs, without the
    start-up cost of the other command groups the CLI imports)."""
    code = "import sys; from provisioner.disk import resize; resize.{call}"
    shrink_call = f"shrink_root({str(image)!r}, {SHRINK_TO}, state={str(state)!r})"
    grow_call = f"grow({str(image)!r}, state={str(state)!r})"
    shrink = timed(lambda: sh(sys.executable, "-c", code.format(call=shrink_call)))
    grow = timed(lambda: sh(sys.executable, "-c", code.format(call=grow_call)))
    return shrink, grow


def _hand_table(loop: str, end: str) -> None:
    sh("sgdisk", "-a", "1", "-e", "-d=9", f"-n=9:{ROOT_START}:{end}", f"-t=9:{layout.TYPE_RESIZE}",
       f"-u=9:{ROOT_UUID}", "-c=9:ROOT", "-A=9:=:1000000000000000", loop)


def by_hand(image: Path) -> tuple[float, float]:
    def attached(steps) -> None:
        loop = sh("losetup", "--find", "--show", "--partscan", image).stdout.strip()
        try:
            steps(loop, f"{loop}p9")
        finally:
            sh("partx", "-d", loop, check=False)
            sh("losetup", "-d", loop, check=False)

    def shrink(loop: str, part: str) -> None:
        sh("partx", "-a", loop, check=False)
        sh("e2fsck", "-f", "-p", part)
        sh("resize2fs", part, "6G")
        _hand_table(loop, str(ROOT_START + SHRINK_TO // 512 - 1))
        sh("partx", "-a", loop, check=False)
        sh("e2fsck", "-f", "-p", part)

    def grow(loop: str, part: str) -> None:
        _hand_table(loop, "0")
        sh("partx", "-a", loop, check=False)
        sh("e2fsck", "-f", "-p", part)
        sh("resize2fs", part)
        sh("e2fsck", "-f", "-p", part)

    return timed(lambda: attached(shrink)), timed(lambda: attached(grow))


def main() -> dict:
    if os.geteuid() != 0:
        raise RuntimeError("the resize benchmark needs root (loop devices)")
    with tempfile.TemporaryDirectory(prefix="bench-resize-", dir="/var/tmp") as tmp:
        directory = Path(tmp)
        build_start = time.monotonic()
        base = build_base(directory)
        build_seconds = time.monotonic() - build_start
        samples: dict[str, list[float]] = {
            f"{who}_{op}": [] for who in ("hand", "lib", "cli") for op in ("shrink", "grow")
        }
        for round_number in range(ROUNDS):
            order = ("hand", "lib", "cli") if round_number % 2 == 0 else ("cli", "lib", "hand")
            for who in order:
                image = directory / f"{who}.img"
                fresh_copy(base, image)
                state = directory / f"state-{who}-{round_number}"
                if who == "hand":
                    shrink, grow = by_hand(image)
                elif who == "lib":
                    shrink, grow = ours_lib(image, state)
                else:
                    shrink, grow = ours_cli(image, state)
                samples[f"{who}_shrink"].append(round(shrink, 3))
                samples[f"{who}_grow"].append(round(grow, 3))
                image.unlink()
    med = {key: statistics.median(values) for key, values in samples.items()}

    def ratio(who: str, op: str) -> float:
        if op == "total":
            return round((med[f"{who}_shrink"] + med[f"{who}_grow"]) / (med["hand_shrink"] + med["hand_grow"]), 3)
        return round(med[f"{who}_{op}"] / med[f"hand_{op}"], 3)

    return {
        "disk_bytes": DISK,
        "data_bytes": DATA,
        "shrink_to_bytes": SHRINK_TO,
        "rounds": ROUNDS,
        "build_seconds": round(build_seconds, 2),
        "samples_seconds": samples,
        "median_seconds": {k: round(v, 3) for k, v in med.items()},
        "ratio_lib": {op: ratio("lib", op) for op in ("shrink", "grow", "total")},
        "ratio_cli": {op: ratio("cli", op) for op in ("shrink", "grow", "total")},
        "target_ratio": 1.1,
        "peer": "the same losetup/partx/e2fsck/resize2fs/sgdisk commands run by hand (subprocess), same run",
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))

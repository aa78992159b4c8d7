"""Rescue install over loopback SSH vs the local install of the same image, in the same run.

Setup (root): a synthetic CoreOS-layout image (1.1 GiB, 900 MiB of ~2:1 compressible data in USR-A;
EFI-SYSTEM left unformatted because the fixture's mkfs.vfat step fails on images over ~512 MiB)
(tests/fixtures/coreos_image.py), a signed release dir served on 127.0.0.1, a real sshd on
127.0.0.1:<free port> (the rescue host is this machine), a loop device as its disk. The sshd runs with
root's ~/.bashrc emptied in its own mount namespace (start_sshd's plain_root_shell), as on a rescue
system: this machine's runs `pyenv init` for every SSH command (~0.2 s each) and puts a pyenv shim
first on PATH as `python3` (~0.1 s more per start), a cost of the build machine, not of the tool.

Measured after one untimed install (the page cache), each ROUNDS times, the order reversed every other
round, median reported (whole CLI commands, as an operator runs them):
- local:  `provisioner install -d LOOP -b URL -k KEY --yes --progress none`
- zipapp: `/usr/bin/python3 installer.pyz -d LOOP ...` locally: the interpreter and code the rescue host
          runs (no zstandard module there: the installer falls back to the zstd binary), so
          pull/zipapp isolates what SSH itself costs
- pull:   `provisioner rescue root@127.0.0.1 --disk LOOP -b URL -k KEY --yes --json`
          (connect, then one exec, one remote python3: the facts, our decision, the inputs written,
          the install pulling from the same URL, the verify; its step times are split at the facts,
          the installer's first event and the check)
- push:   `provisioner rescue ... --push -f IMAGE.zst` (the image streams through the SSH connection)
Target: pull <= 1.2x local (SSH may cost at most a fifth on top of the install itself).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 5
MiB = 1 << 20


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _fill(count: int) -> bytes:
    """OS-image-like data, fast: each 4 KiB block is 1800 random bytes and a run of text (about 2:1 with zstd)."""
    blocks = count // 4096
    noise = os.urandom(blocks * 1800)
    text = (b"usr lib systemd kernel module config ELF x86_64 " * 64)[: 4096 - 1800]
    out = bytearray(blocks * 4096)
    for i in range(blocks):
        out[i * 4096:i * 4096 + 1800] = noise[i * 1800:(i + 1) * 1800]
        out[i * 4096 + 1800:(i + 1) * 4096] = text
    return bytes(out)


def _cli(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "provisioner.cli.main", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=900)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"provisioner {' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr[-400:]}")
    return elapsed, proc


def main() -> dict:
    if os.geteuid() != 0:
        raise RuntimeError("bench rescue needs root (sshd as root, loop devices)")
    sys.path.insert(0, str(REPO))
    from provisioner.install.zipapp import build_zipapp
    from tests.fixtures.coreos_image import build_image, build_release, small_layout
    from tests.integration.remote.conftest import start_sshd

    with tempfile.TemporaryDirectory(prefix="bench-rescue-") as tmp_name:
        tmp = Path(tmp_name)
        parts = tuple(dataclasses.replace(p, fs=None) if p.fs == "vfat" else p
                      for p in small_layout(root_size=32 * MiB, usr_size=1024 * MiB))
        image = build_image(tmp / "work" / "provisioner_production_image.bin", partitions=parts,
                            usr_files={"lib/os-release": b"ID=bench\n", "fill.bin": _fill(900 * MiB)})
        release = build_release(tmp / "stable", image, formats=("zst",))
        key = str(release.base / "release-key.asc")
        handler = functools.partial(_Quiet, directory=str(release.base))
        http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        http.daemon_threads = True
        threading.Thread(target=http.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{http.server_address[1]}"
        backing = tmp / "disk.img"
        with open(backing, "wb") as handle:
            handle.truncate(image.size + 64 * MiB)
        disk = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True, capture_output=True,
                              text=True).stdout.strip()
        sshd = start_sshd(tmp / "sshd", plain_root_shell=True)
        try:
            ssh = ["root@127.0.0.1", "-p", str(sshd.port), "-i", str(sshd.client_key), "--known-hosts",
                   str(sshd.known_hosts), "--ssh-config", str(tmp / "sshd" / "ssh_config"),
                   "--remote-dir", str(tmp / "remote")]
            zipapp = build_zipapp(tmp / "installer.pyz")
            runs: dict[str, list[float]] = {"local": [], "zipapp": [], "pull": [], "push": []}
            steps: dict[str, list[dict]] = {"pull": [], "push": []}
            def local() -> None:
                runs["local"].append(_cli(["install", "-d", disk, "-b", url, "-k", key, "--yes", "--progress",
                                           "none"])[0])

            def zipapp_run() -> None:
                start = time.monotonic()
                subprocess.run(["/usr/bin/python3", str(zipapp), "-d", disk, "-b", url, "-k", key, "--yes",
                                "--progress", "json"], check=True, capture_output=True, timeout=900)
                runs["zipapp"].append(time.monotonic() - start)

            def pull() -> None:
                seconds, proc = _cli(["rescue", *ssh, "--disk", disk, "-b", url, "-k", key, "--yes", "--json"])
                runs["pull"].append(seconds)
                steps["pull"].append(json.loads(proc.stdout)["seconds"])

            def push() -> None:
                seconds, proc = _cli(["rescue", *ssh, "--disk", disk, "--push", "-f", str(release.files["zst"]),
                                      "--yes", "--json"])
                runs["push"].append(seconds)
                steps["push"].append(json.loads(proc.stdout)["seconds"])

            # One untimed install first: the first run of the day reads the 417 MB image from disk into the
            # page cache (a third of a second to two seconds more), and that must not land on one mode.
            local()
            runs["local"].clear()
            modes = [local, zipapp_run, pull, push]
            for round_number in range(ROUNDS):
                for mode in (modes if round_number % 2 == 0 else modes[::-1]):   # order alternates
                    mode()
        finally:
            sshd.stop()
            subprocess.run(["losetup", "-d", disk], capture_output=True)
            http.shutdown()
            http.server_close()
        median = {name: round(statistics.median(values), 3) for name, values in runs.items()}
        return {
            "image_bytes": image.size,
            "compressed_bytes": release.files["zst"].stat().st_size,
            "rounds": ROUNDS,
            "seconds": {name: [round(v, 3) for v in values] for name, values in runs.items()},
            "median_seconds": median,
            "step_seconds_median": {mode: {step: round(statistics.median(r[step] for r in rows), 3)
                                           for step in rows[0]} for mode, rows in steps.items()},
            "ratio_pull_vs_local": round(median["pull"] / median["local"], 3),
            "ratio_push_vs_local": round(median["push"] / median["local"], 3),
            "ratio_pull_vs_zipapp": round(median["pull"] / median["zipapp"], 3),
            # What SSH adds per command (connect, inspect, upload, verify, CLI start) vs per byte: the
            # remote install step against the same zipapp run locally.
            "fixed_overhead_seconds_pull": round(median["pull"] - median["zipapp"], 3),
            "ratio_install_step_pull_vs_zipapp": round(
                statistics.median(r["install"] for r in steps["pull"]) / median["zipapp"], 3),
            "target_ratio_pull": 1.2,
        }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))

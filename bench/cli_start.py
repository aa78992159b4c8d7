"""How long `provisioner --help` and `provisioner validate FILE` take to start and finish.

Each command runs RUNS times (after one warm-up, so the page cache holds the modules), alternating,
median wall time and the CPU time (user + sys) of the median run reported. Peer, in the same run: the
bare interpreter of the same venv (`python -c pass`), so the ratio is what the CLI adds on top of
Python's own start. CPU time is what bounds the wall time on a quiet machine; on a loaded one the
wall time is longer by the waiting for a core. Target: both commands under 0.3 s.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 20
TARGET_SECONDS = 0.3
CLOUD_CONFIG = "#cloud-config\nhostname: node1\nssh_authorized_keys:\n  - ssh-ed25519 AAAAC3Nza test@example\n"


def _timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> dict:
    cli = Path(sys.executable).with_name("provisioner")
    if not cli.exists():
        raise RuntimeError(f"{cli}: not installed (make venv)")
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        user_data = Path(tmp) / "user-data"
        user_data.write_text(CLOUD_CONFIG)
        commands = {
            "python": [sys.executable, "-c", "pass"],
            "help": [str(cli), "--help"],
            "validate": [str(cli), "validate", str(user_data)],
        }
        for argv in commands.values():
            _timed(argv)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(RUNS):
            for name, argv in commands.items():
                runs[name].append(_timed(argv))
    results = {}
    for name, values in runs.items():
        ordered = sorted(values)
        wall, cpu = ordered[len(ordered) // 2]
        results[name] = {"seconds_median": round(statistics.median(w for w, _ in values), 3),
                         "cpu_seconds_of_median_run": round(cpu, 3),
                         "seconds_min": round(ordered[0][0], 3), "seconds_max": round(ordered[-1][0], 3)}
    python = results["python"]["seconds_median"]
    return {
        "runs": RUNS,
        "results": results,
        "over_bare_python": {name: round(results[name]["seconds_median"] / python, 2) for name in ("help", "validate")},
        "targets_met": {f"{name} < {TARGET_SECONDS} s": results[name]["seconds_median"] < TARGET_SECONDS
                        for name in ("help", "validate")},
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))

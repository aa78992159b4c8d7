"""`python -m bench [NAME...]`: run the named benchmarks (default: all) and write bench/results/."""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import sys
import time

# One entry per benchmark module in bench/ (each has main() -> dict of results).
BENCHMARKS: list[str] = ["render", "cli_start", "rescue", "install", "resize", "pxe", "pxe_state", "image", "registry",
                         "scheduler", "ui", "boot", "update", "cluster_update"]

RESULTS = pathlib.Path(__file__).parent / "results"


def run(names: list[str]) -> int:
    RESULTS.mkdir(exist_ok=True)
    failed = 0
    for name in names:
        if name not in BENCHMARKS:
            print(f"bench: unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)})", file=sys.stderr)
            return 2
        module = importlib.import_module(f"bench.{name}")
        start = time.monotonic()
        load_before = [round(x, 2) for x in os.getloadavg()]
        try:
            result = module.main()
        except Exception as exc:  # one failing benchmark must not hide the others' numbers
            print(f"bench {name}: FAILED: {exc}", file=sys.stderr)
            failed += 1
            continue
        result.setdefault("benchmark", name)
        result.setdefault("wall_seconds", round(time.monotonic() - start, 2))
        # The 1/5/15-minute load averages around the run: a noisy machine shows in the numbers.
        result.setdefault("load_average", {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]})
        result.setdefault("recorded_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"bench {name}: written to bench/results/{name}.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:] or list(BENCHMARKS)))

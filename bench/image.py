"""Image build benchmark: the cached `provisioner image build` (no change) and what the release's
two compressions cost a reader: lbzip2 (flatcar-install's choice) vs zstd decompression of the
same disk image, plus the artefact sizes against the recipe's budgets."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from provisioner.image.build import BuildOptions, build_image

REPO = Path(__file__).resolve().parents[1]


def _time(argv: list[str], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.monotonic()
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.monotonic() - start)
    return best


def main() -> dict:
    options = BuildOptions(output=REPO / "build/release", work=REPO / "build/image")
    first = build_image(options)  # builds if needed, so the timed run below is the cached path
    start = time.monotonic()
    cached = build_image(options)
    cached_seconds = time.monotonic() - start
    image = first.release_dir / "provisioner_production_image.bin"
    bz2 = _time(["lbzip2", "-dc", f"{image}.bz2"])
    zst = _time(["zstd", "-dc", f"{image}.zst"])
    return {
        "cached_build_seconds": round(cached_seconds, 2),
        "cached": cached.cached,
        "sizes_mib": {k: round(v / (1 << 20), 1) for k, v in first.sizes.items()},
        "budgets": first.budgets,
        "decompress_seconds": {"lbzip2": round(bz2, 2), "zstd": round(zst, 2)},
        "ratio_zstd_vs_lbzip2": round(bz2 / zst, 2),
    }

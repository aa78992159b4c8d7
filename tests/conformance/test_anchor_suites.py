"""The anchors' conformance suites (../shared/conformance), run against our CLI exactly as documented.

Compatibility means passing them all: each test asserts the suite's own `P/T cases match` line
shows every case passing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "conformance"
PROVISIONER = str(Path(sys.executable).parent / "provisioner")


def run_suite(script: Path, *args: str) -> str:
    if not script.is_file():
        pytest.fail(f"conformance suite missing: {script} (CI clones main with shared/ beside it)", pytrace=False)
    result = subprocess.run([sys.executable, str(script), *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    match = re.search(r"(\d+)/(\d+) cases match", summary)
    assert match, f"no summary line from {script.name}: {result.stdout[-2000:]} {result.stderr[-2000:]}"
    passed, total = map(int, match.groups())
    assert total > 0, "the suite ran no case"
    assert passed == total and result.returncode == 0, result.stdout[-4000:]
    return summary


def test_cloudinit_validator_matches_coreos_cloudinit_v1_13_0():
    summary = run_suite(SHARED / "cloudinit-validate" / "run.py", f"{PROVISIONER} validate --json")
    assert summary.startswith("cloudinit-validate: 82/82")


def test_matchbox_data_dirs_select_the_same_profiles_as_matchbox():
    summary = run_suite(SHARED / "matchbox-select" / "run.py", PROVISIONER, "render", "ipxe")
    assert summary.startswith("matchbox-select: 27/27")

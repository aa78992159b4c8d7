"""Boot-chain acceptance: a blank VM PXE-boots the live image, installs itself unattended, reboots, and
its second boot (now `os=installed`: iPXE exits to the disk) is an installed, configured system
reachable by SSH from inside the lab namespace. BIOS (SeaBIOS + iPXE ROM): the same chain under UEFI (OVMF)
is the cluster test's node3 (tests/vm/cluster), and OVMF's own PXE and disk boots are in tests/vm/pxe and
tests/vm/image, so it is not run a second time here (the suite's time budget).

Real components throughout: `provisioner serve` (full DHCP, TFTP, HTTP) in a netns with no uplink,
QEMU (TCG), the release built by `provisioner image build` (cached under build/), ssh.
On failure the serial logs, the server log and its state are copied to build/test-logs/e2e-<firmware>/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.demo.boot_chain import BootChain, ChainConfig

REPO = Path(__file__).resolve().parents[3]
RELEASE = REPO / "build" / "release" / "stable" / "current"
MAC = "52:54:00:00:00:01"   # examples/cluster: node1
STAGES = ("DHCP", "iPXE", "kernel", "live system", "installing 100%", "reboot", "DHCP (2nd boot)",
          "iPXE (2nd boot)", "installed system up", "SSH ok")


@pytest.fixture(scope="module")
def release() -> Path:
    """The release `make image` publishes; built here when missing or stale (the build is cached)."""
    if os.geteuid() != 0:
        pytest.fail("the boot-chain test needs root (network namespace, tap devices)")
    done = subprocess.run([sys.executable, "-m", "provisioner.cli.main", "image", "build"], cwd=REPO,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"provisioner image build failed:\n{done.stderr[-3000:]}"
    assert (RELEASE / "version.txt").is_file(), f"{RELEASE}: no release after `provisioner image build`"
    return RELEASE


def _keep_logs(chain: BootChain, firmware: str) -> Path:
    target = REPO / "build" / "test-logs" / f"e2e-{firmware}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in [chain.server_log, *chain.serial_logs(), *chain.work.glob("*.qemu.stderr")]:
        if path.exists():
            shutil.copyfile(path, target / path.name)
    if chain.state_dir.exists():
        shutil.copytree(chain.state_dir, target / "state")
    return target


@pytest.mark.timeout(1800)   # the chain has its own per-stage bounds (ChainConfig)
@pytest.mark.parametrize("firmware", ["bios"])
def test_blank_vm_to_installed_system_over_ssh(firmware, release, tmp_path):
    config = ChainConfig(data_dir=REPO / "examples" / "cluster", release_dir=release, workdir=tmp_path / "chain",
                         mac=MAC, firmware=firmware, netns=f"e2e{firmware}{os.getpid() % 100000}", cidr="10.98.0.1/24",
                         dhcp_range="10.98.0.100,10.98.0.150", accel="tcg")
    chain = BootChain(config)
    try:
        result = chain.run()
        _check(chain, result)
    except BaseException:
        kept = _keep_logs(chain, firmware)
        print(f"boot chain logs kept in {kept}")
        raise


def _check(chain: BootChain, result) -> None:
    names = [s.stage for s in result.stages]
    for stage in STAGES:
        assert stage in names, (stage, names)
    positions = [names.index(stage) for stage in STAGES]
    assert positions == sorted(positions), names
    # Server's machine state: the first boot went through the install profile, then the mark.
    record = chain.machine()
    for stage in ("dhcp-ack", "ipxe-script", "kernel", "initrd", "cloud-config", "install", "install-done", "installed"):
        assert stage in record["stages"], (stage, record["stages"])
    assert MAC in chain.installed_marks()
    reports = [h for h in record["history"] if h["stage"] in ("install", "install-done")]
    assert reports[0]["event"] == "start" and reports[-1]["event"] == "done", reports   # the live system's reports
    assert " MiB written" in reports[-1]["message"], reports[-1]      # the installer's summary line
    history = record["history"]
    # Boot secrets: the installer's gated config fetch, every report and the installed mark carried this
    # boot's secret (nothing refused), and the mark spent it.
    assert not [h for h in history if h["stage"] == "refused"], history
    assert next(h for h in history if h["stage"] == "installed")["via"] == "POST /installed"
    assert not (chain.state_dir / "boot-secrets" / f"{MAC.replace(':', '-')}.json").exists()
    marked = next(h["at"] for h in history if h["stage"] == "installed")
    assert any(h["stage"] == "ipxe-script" and h["at"] > marked for h in history), history
    assert not any(h["stage"] in ("kernel", "initrd") and h["at"] > marked for h in history), \
        "the installed machine downloaded the live image again"
    # Serial consoles: the installer ran and finished; the second boot came from the disk.
    first, second = (path.read_text(errors="replace") for path in chain.serial_logs())
    assert "provisioner-hook: exit 0" in first
    for console in (first, second):   # the live system's tmpfs root and the installed ROOT got /etc etc.
        assert "first boot: seeded ROOT from /usr/share/factory" in console
        assert "WARNING: seeding" not in console
    assert re.search(r'"event": ?"done"', first), "no installer done event on the console"
    assert "provisioner.install" not in second, "the second boot ran the live image again"
    # SSH: what the demo prints, checked.
    report = result.remote_report
    sections = dict(re.findall(r"== ([^\n]+)\n(.*?)(?=\n== |\Z)", report, re.S))
    assert sections["hostname"].strip() == "node1", report
    assert re.search(r"^/usr\s", sections["findmnt /usr /"], re.M), report
    assert re.search(r"^/\s", sections["findmnt /usr /"], re.M), report
    assert "vda9" in sections["lsblk"] and "vda3" in sections["lsblk"], report
    # ROOT (vda9) grew from the image's 1 GiB to the rest of the 8 GiB disk on first boot.
    root_size = re.search(r"vda9\s+\S+\s+\S+\s+(\S+)G\s", sections["lsblk"])
    assert root_size and float(root_size.group(1)) > 5, report
    assert result.boot_slot == "USR-A", report     # a fresh install boots USR-A (CoreOS layout)
    # provisioner-boot-success marked the booted slot in the GPT and in GRUB's environment.
    assert "usr_a: priority=1 tries=0 successful=1" in sections["boot slot"], report
    assert '"usr_a_successful": "1"' in sections["boot slot"], report
    assert "unable to resolve host" not in sections["boot slot"], report

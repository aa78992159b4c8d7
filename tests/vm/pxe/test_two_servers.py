"""Several boot servers, one state, with a real machine: two `provisioner serve` in proxy-DHCP mode beside a
plain DHCP server (dnsmasq), sharing a real 3-member etcd (tests/fixtures/boot_site.py), and one blank QEMU
machine (BIOS, TCG) that PXE-boots the real live image and installs itself. Once its install has reported
progress through the server that booted it, that server is killed (SIGKILL): the installer resumes the image
download at the other server (`--mirror`, install/source.py), the live system's reports and /installed go
there (node/hook.py), the installed mark is set once, and the surviving server boots the machine from its disk.

The installed disk is not booted (tests/vm/e2e does that): the install profile powers the machine off.
Network safety: QEMU, the servers, etcd and dnsmasq live in namespaces on a bridge with no uplink."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.demo.boot_chain import lab_vm, make_ssh_key, prepare_data_dir, publish_release
from provisioner.lab.qemu import Firmware, QemuVM
from tests.fixtures.boot_site import URLS, Site, boot_site, wait_for

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "cluster"
MAC = "52:54:00:00:00:01"   # examples/cluster: node1, installs to /dev/vda
KILL_AT_PERCENT = 20
IMAGE = "provisioner_production_image.bin.zst"


def _data_dir(work: Path) -> Path:
    """examples/cluster with a throwaway SSH key for node1, and its install powering the machine off after."""
    data = work / "data"
    prepare_data_dir(EXAMPLES, data, MAC, make_ssh_key(work / "id_ed25519"))
    profile = data / "profiles" / "install.yaml"
    text = profile.read_text()
    assert "provisioner.after=reboot" in text, text
    profile.write_text(text.replace("provisioner.after=reboot", "provisioner.after=poweroff"))
    return data


def _dnsmasq(site: Site, work: Path) -> subprocess.Popen:
    """The site's own DHCP server (addresses only, no PXE), in the client namespace."""
    return subprocess.Popen(
        ["ip", "netns", "exec", site.client_ns, "dnsmasq", "--no-daemon", "--port=0", "--interface=eth0",
         "--bind-interfaces", "--dhcp-range=10.77.0.100,10.77.0.150,1h", "--no-resolv", "--no-hosts",
         f"--dhcp-leasefile={work / 'dnsmasq.leases'}", f"--pid-file={work / 'dnsmasq.pid'}", "--log-dhcp"],
        stdout=open(work / "dnsmasq.log", "wb"), stderr=subprocess.STDOUT)


def _reports(site: Site, server: str) -> list[dict]:
    """The MAC's install reports in etcd that `server` took."""
    return [event for mac, event in site.events() if mac == MAC and event["stage"].startswith("install")
            and event["detail"].get("server") == server]


def _wait_console(vm: QemuVM, pattern: str, timeout: float, site: Site) -> re.Match:
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, vm.serial_text())
        if found:
            return found
        if not vm.running() or time.monotonic() > deadline:
            pytest.fail(f"{pattern!r} not on the console ({'QEMU exited' if not vm.running() else 'timeout'}):\n"
                        f"{vm.serial_text()[-4000:]}\n{site.logs()}", pytrace=False)
        time.sleep(0.5)


@pytest.mark.timeout(900)
def test_a_server_killed_mid_install_the_machine_finishes_through_the_other(built_image, tmp_path):
    started = time.monotonic()
    timings: dict[str, float] = {}

    def mark(what: str) -> None:
        timings[what] = round(time.monotonic() - started, 1)

    data = _data_dir(tmp_path)
    assets = tmp_path / "assets"
    publish_release(built_image.release_dir, assets)
    disk = tmp_path / "disk.raw"
    subprocess.run(["truncate", "-s", "8G", str(disk)], check=True)
    serve = ("--assets-dir", str(assets))
    with boot_site(tmp_path, f"two{os.getpid() % 10000}", data, [serve, serve], taps=("tap0",)) as site:
        dnsmasq = _dnsmasq(site, tmp_path)
        vm = lab_vm("two-servers", tmp_path, Firmware.BIOS, disk, site.netns, "tap0", MAC, memory_mib=2048, cpus=2,
                    accel="tcg")
        try:
            wait_for("both servers listed in etcd", lambda: site.listed_servers() == sorted(URLS), site)
            mark("site up")
            vm.start()
            # The server whose script booted the machine is the one its kernel reports to.
            first = _wait_console(vm, r"provisioner\.report=(http://[0-9.]+:8080)/report", 300, site).group(1)
            second = next(url for url in URLS if url != first)
            mark("kernel")
            assert f"provisioner.servers={second}" in vm.serial_text(), vm.serial_text()[-3000:]
            wait_for(f"install progress >= {KILL_AT_PERCENT} % reported through {first}", lambda: any(
                (event["detail"].get("percent") or 0) >= KILL_AT_PERCENT for event in _reports(site, first)),
                site, timeout=400)
            mark(f"{KILL_AT_PERCENT} % reported")
            killed = site.servers.pop(URLS.index(first))
            killed.process.kill()
            killed.process.wait(timeout=10)
            _wait_console(vm, r"provisioner-hook: exit \d+", 400, site)
            mark("installer exit")
            deadline = time.monotonic() + 120
            while vm.running():   # provisioner.after=poweroff
                assert time.monotonic() < deadline, f"no poweroff:\n{vm.serial_text()[-3000:]}"
                time.sleep(0.5)
            mark("powered off")
            console = vm.serial_text()
        finally:
            vm.stop()
            dnsmasq.terminate()
            dnsmasq.wait(timeout=10)
        print(f"two servers, one machine: {timings} (s since start)")

        assert "provisioner-hook: exit 0" in console, console[-4000:]
        # The image download broke with the server and resumed at the other, from the byte it had.
        resumed = re.search(rf"{re.escape(first)}/\S*{IMAGE}: .* at byte (\d+); resuming from "
                            rf"{re.escape(second)}/\S*{IMAGE}", console)
        assert resumed and int(resumed.group(1)) > 0, console[-4000:]
        ranges = [event["detail"].get("range") for mac, event in site.events()
                  if event["detail"].get("server") == second and str(event["detail"].get("path", "")).endswith(IMAGE)]
        assert f"bytes={resumed.group(1)}-" in ranges, ranges
        size = (assets / "release" / "stable" / "current" / IMAGE).stat().st_size
        print(f"the download resumed at {second} at byte {resumed.group(1)} of {size}")
        # Reports: the early ones through the first server, the later ones and the end through the second.
        assert any(event["stage"] == "install" for event in _reports(site, first))
        late = _reports(site, second)
        assert [event["detail"]["event"] for event in late if event["stage"] == "install-done"] == ["done"], late
        stages = wait_for("the mark in etcd", lambda: (s := site.stages(MAC))["installed"] and s, site)
        assert stages["installed"] == 1 and stages["install-done"] == 1, stages
        marked = [event for mac, event in site.events() if mac == MAC and event["stage"] == "installed"]
        assert marked[0]["detail"]["server"] == second, marked
        assert not [event for mac, event in site.events() if mac == MAC and event["stage"] == "refused"]
        # The surviving server now boots the machine from its disk.
        status, script = site.get(f"{second}/ipxe?mac={MAC.replace(':', '-')}")
        assert status == 200 and "kernel " not in script and "boot_secret" not in script, script

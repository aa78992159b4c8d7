"""Real PXE boots: QEMU (SeaBIOS + iPXE ROM, and OVMF) on a tap in a lab namespace, booting the busybox
test kernel through our DHCP + TFTP + HTTP. The initrd prints the cloud-config URL it was given and
fetches it; we assert on its console and on the server's machine state.

Network safety: QEMU, the server and dnsmasq all live in namespaces on a bridge with no uplink."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from provisioner.lab.qemu import QemuVM, TapNic, VMConfig
from provisioner.lab.testkernel import ensure_test_kernel
from provisioner.pxe.boot_secrets import secret_digest
from tests.integration.pxe.conftest import DATA_DIR, start_server, wait_ready

BOOT_TIMEOUT = 180


@pytest.fixture(scope="module")
def test_kernel():
    return ensure_test_kernel()


def _assets(tmp_path, test_kernel):
    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copyfile(test_kernel.kernel, assets / "testkernel.vmlinuz")
    shutil.copyfile(test_kernel.initrd, assets / "initrd.cpio.gz")
    return assets


def _machine(state_dir, mac: str) -> dict:
    machines = json.loads((state_dir / "machines.json").read_text())["machines"]
    return next(m for m in machines if m["mac"] == mac)


def _boot(vm: QemuVM, server, timeout: float = BOOT_TIMEOUT) -> str:
    try:
        vm.start()
        vm.wait_for_serial(r"TESTKERNEL-DONE", timeout)
    except Exception:
        print(server.log()[-4000:])
        raise
    finally:
        vm.kill()
    return vm.serial_text()


def _assert_boot_secret(console: str, state_dir, mac: str) -> None:
    """iPXE set the script's boot_secret and expanded ${boot_secret} into the kernel's arguments: the kernel
    got the secret whose hash the server keeps for this MAC."""
    secret = re.search(r"TESTKERNEL-SECRET=(\S*)", console)
    assert secret is not None and re.fullmatch(r"[0-9a-f]{32}", secret.group(1)), console[-2000:]
    stored = json.loads((state_dir / "boot-secrets" / f"{mac.replace(':', '-')}.json").read_text())
    assert secret_digest(secret.group(1)) in [entry["sha256"] for entry in stored["secrets"]]


def test_bios_pxe_boot_over_full_dhcp_tftp_and_http(lab_net, tmp_path, test_kernel):
    lab_net.add_tap("tap0")
    assets = _assets(tmp_path, test_kernel)
    server = start_server(tmp_path, "--interface", "br0", "--http-addr", "10.77.0.1:8080",
                          "--dhcp-range", "10.77.0.100,10.77.0.150", "--assets-dir", str(assets),
                          "--chain-ipxe-roms", netns=lab_net.name)
    mac = "52:54:00:00:00:01"   # group node1 (static lease 10.77.0.21, hostname node1)
    vm = QemuVM(VMConfig(name="bios", workdir=tmp_path, firmware="bios",
                         nic=TapNic(netns=lab_net.name, tap="tap0", mac=mac), boot="n"))
    try:
        wait_ready(server)
        console = _boot(vm, server)
    finally:
        assert server.stop() == 0, server.log()
    assert "TESTKERNEL-URL=http://10.77.0.1:8080/cloud-config?mac=52-54-00-00-00-01" in console
    assert "TESTKERNEL-FETCHED bytes=" in console and "first=#cloud-config" in console
    assert "TESTKERNEL-IP=10.77.0.21" in console      # the kernel's own DHCP: static lease from the inventory
    _assert_boot_secret(console, server.state_dir, mac)
    record = _machine(server.state_dir, mac)
    for stage in ("dhcp-offer", "dhcp-ack", "tftp", "tftp-done", "boot-script", "ipxe-script", "kernel",
                  "initrd", "cloud-config"):
        assert stage in record["stages"], (stage, record)
    assert record["last_stage"] == "cloud-config"
    tftp = next(h for h in record["history"] if h["stage"] == "tftp-done")
    assert tftp["file"] == "undionly.kpxe" and tftp["bytes"] == (lab_ipxe_size := len(open(
        "/usr/lib/ipxe/undionly.kpxe", "rb").read())) and lab_ipxe_size > 0


def test_uefi_pxe_boot_via_proxy_dhcp_next_to_dnsmasq(lab_net, tmp_path, test_kernel):
    """OVMF's own PXE client (not iPXE): proxyDHCP + port 4011 + TFTP ipxe.efi, then iPXE over HTTP.
    Addresses come from a real dnsmasq in its own namespace: we coexist with the site's DHCP server."""
    lab_net.add_tap("tap0")
    dhcp_ns = lab_net.add_client_namespace(f"{lab_net.name}d")
    subprocess.run(["ip", "-n", dhcp_ns, "addr", "add", "10.77.0.2/24", "dev", "eth0"], check=True)
    dnsmasq = subprocess.Popen(
        ["ip", "netns", "exec", dhcp_ns, "dnsmasq", "--no-daemon", "--port=0", "--interface=eth0",
         "--bind-interfaces", "--dhcp-range=10.77.0.100,10.77.0.150,1h", "--no-resolv", "--no-hosts",
         f"--dhcp-leasefile={tmp_path / 'dnsmasq.leases'}", f"--pid-file={tmp_path / 'dnsmasq.pid'}",
         "--log-dhcp"], stdout=open(tmp_path / "dnsmasq.log", "wb"), stderr=subprocess.STDOUT)
    assets = _assets(tmp_path, test_kernel)
    server = start_server(tmp_path, "--interface", "br0", "--http-addr", "10.77.0.1:8080",
                          "--assets-dir", str(assets), netns=lab_net.name)
    mac = "52:54:00:00:00:77"   # default group
    # romfile="": no iPXE option ROM on the NIC, so OVMF's own PXE client (EDK2) boots.
    vm = QemuVM(VMConfig(name="uefi", workdir=tmp_path, firmware="uefi",
                         nic=TapNic(netns=lab_net.name, tap="tap0", mac=mac, romfile=""), boot="n"))
    try:
        wait_ready(server)
        console = _boot(vm, server)
    finally:
        dnsmasq.terminate()
        dnsmasq.wait(timeout=10)
        assert server.stop() == 0, server.log()
    assert "TESTKERNEL-URL=http://10.77.0.1:8080/cloud-config?mac=52-54-00-00-00-77" in console
    assert "first=#cloud-config" in console
    _assert_boot_secret(console, server.state_dir, mac)
    assert "TESTKERNEL-IP=10.77.0.1" in console     # 10.77.0.1xx from dnsmasq, never from us
    record = _machine(server.state_dir, mac)
    assert record["arch"] == "efi-x64"
    for stage in ("dhcp-offer", "dhcp-boot-server", "tftp", "tftp-done", "boot-script", "ipxe-script", "kernel", "initrd",
                  "cloud-config"):
        assert stage in record["stages"], (stage, record)
    assert not (server.state_dir / "leases.json").exists()   # proxy mode hands out no address


def test_uefi_http_boot_without_tftp(lab_net, tmp_path, test_kernel):
    """OVMF's own HTTP boot (no iPXE ROM, no TFTP at all), with a profile that lacks initrd=: with `--no-tftp` the server offers PXE clients no
    file, so the firmware's PXEv4 attempt ends and its HTTPv4 attempt asks with vendor class HTTPClient; it gets
    http://server/boot/ipxe.efi, which chains to the machine's script over HTTP."""
    lab_net.add_tap("tap0")
    assets = _assets(tmp_path, test_kernel)
    server = start_server(tmp_path, "--interface", "br0", "--http-addr", "10.77.0.1:8080", "--no-tftp",
                          "--dhcp-range", "10.77.0.100,10.77.0.150", "--assets-dir", str(assets),
                          netns=lab_net.name)
    mac = "52:54:00:00:00:78"   # group uefi-http: its profile has no initrd= argument, the server adds it
    # PXE over IPv6 off in the firmware's settings, as on an IPv4-only boot network: its attempt waits out
    # DHCPv6 solicits that nobody answers before HTTP boot gets its turn (the PXEv4 attempt stays).
    vm = QemuVM(VMConfig(name="uefi-http", workdir=tmp_path, firmware="uefi",
                         nic=TapNic(netns=lab_net.name, tap="tap0", mac=mac, romfile=""), boot="n",
                         extra_args=("-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no")))
    try:
        wait_ready(server)
        console = _boot(vm, server, timeout=2 * BOOT_TIMEOUT)   # after the firmware's PXEv4 attempt
    finally:
        assert server.stop() == 0, server.log()
    assert "Start HTTP Boot over IPv4" in console, console[-3000:]
    assert "TESTKERNEL-URL=http://10.77.0.1:8080/cloud-config?mac=52-54-00-00-00-78" in console
    assert "first=#cloud-config" in console
    _assert_boot_secret(console, server.state_dir, mac)
    record = _machine(server.state_dir, mac)
    # The EFI stub found the initrd (the test kernel's init is in it) through the initrd= the server added.
    profile = yaml.safe_load((DATA_DIR / "profiles" / "testkernel-no-initrd-arg.yaml").read_text())
    assert not [arg for arg in profile["boot"]["args"] if arg.startswith("initrd=")]
    assert re.search(r"Command line: .*initrd=initrd\.cpio\.gz", console), console[-3000:]
    http_boot = [h for h in record["history"] if h["stage"] == "http-boot"]
    assert http_boot and http_boot[0]["file"] == "ipxe.efi", record
    offers = [h for h in record["history"] if h["stage"] == "dhcp-offer"]
    assert any(h.get("file") == "http://10.77.0.1:8080/boot/ipxe.efi" for h in offers), offers
    assert "tftp" not in record["stages"] and "tftp-done" not in record["stages"]
    for stage in ("boot-script", "ipxe-script", "kernel", "initrd", "cloud-config"):
        assert stage in record["stages"], (stage, record)

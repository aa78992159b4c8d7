"""A small QEMU runner for tests and the demo: BIOS or UEFI, PXE over a tap in a lab netns, or a disk
with user networking and SSH forwarded to 127.0.0.1.

    vm = QemuVM(VMConfig(name="pxe-bios", workdir=tmp, firmware="bios",
                         nic=TapNic(netns="pxe", tap="tap0", mac="52:54:00:12:34:56"), boot="n"))
    vm.start()
    vm.wait_for_serial(r"CLOUD-CONFIG-OK", timeout=120)
    vm.stop()

    vm = QemuVM(VMConfig(name="disk", workdir=tmp, disk=image, firmware="uefi",
                         nic=UserNic(hostfwd={2222: 22})))

The argv is built by a pure function (`build_argv`), so it is tested without starting QEMU.
The serial console goes to `<workdir>/<name>.serial.log`; `wait_for_serial` polls that file.

KVM: `/dev/kvm` exists on these machines but a Linux guest under KVM hung right after
"Probing EDD" (nested virtualisation), so `accel="auto"` uses KVM only when a short probe boot
(`probe_kvm`) succeeded earlier and was cached, or when PROVISIONER_QEMU_ACCEL=kvm says so; otherwise TCG.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from provisioner.core.commands import require_tool
from provisioner.errors import CommandError, NetworkError, ProvisionerError

log = logging.getLogger("provisioner.lab.qemu")

QEMU = "qemu-system-x86_64"

# Debian's ovmf package (bookworm): 4 MiB flash layout; the VARS file is copied per VM (it is written to).
OVMF_CODE_CANDIDATES = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS_CANDIDATES = ("/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS.fd")
# Secure Boot: the code built with it (it needs SMM, so that only firmware writes the variables) and
# VARS with Microsoft's keys enrolled and Secure Boot enabled, as servers ship.
OVMF_SECURE_CODE_CANDIDATES = ("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",)
OVMF_SECURE_VARS_CANDIDATES = ("/usr/share/OVMF/OVMF_VARS_4M.ms.fd",)

ACCEL_ENV = "PROVISIONER_QEMU_ACCEL"
KVM_PROBE_CACHE = Path("build/lab/kvm-probe.json")


class VMError(ProvisionerError):
    """QEMU could not start, died, or its serial console never showed what we waited for."""


@dataclass(frozen=True)
class TapNic:
    """A NIC on a tap device inside a lab network namespace (QEMU itself runs in that namespace)."""

    netns: str
    tap: str
    mac: str = "52:54:00:12:34:56"
    model: str = "virtio-net-pci"
    # None: QEMU's default NIC option ROM (iPXE from ipxe-qemu). "": no ROM, so OVMF's own
    # PXE client (EDK2 PxeBcDxe over VirtioNetDxe) does the network boot instead of iPXE.
    romfile: str | None = None


@dataclass(frozen=True)
class UserNic:
    """QEMU user networking (slirp), restricted: no route out of the guest; hostfwd maps
    127.0.0.1:<host port> -> guest port (TCP), the only way in."""

    hostfwd: dict[int, int] = field(default_factory=dict)
    mac: str = "52:54:00:12:34:57"
    model: str = "virtio-net-pci"


class Firmware(StrEnum):
    """What the VM boots with: SeaBIOS (legacy BIOS) or OVMF (x64 UEFI)."""

    BIOS = "bios"
    UEFI = "uefi"


@dataclass(frozen=True)
class VMConfig:
    name: str
    workdir: Path
    firmware: Firmware = Firmware.BIOS
    memory_mib: int = 768
    cpus: int = 1
    disk: Path | None = None
    disk_format: str | None = None         # default: qcow2 for *.qcow2, else raw
    disk_snapshot: bool = False            # -snapshot: writes go to a temporary overlay
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    nic: TapNic | UserNic | None = None
    boot: str | None = None                # "n" network (PXE), "c" disk; None: firmware default
    accel: str = "auto"                    # "auto", "kvm" or "tcg"
    machine: str = "q35"
    secure_boot: bool = False              # UEFI only: OVMF with Secure Boot enforcing, Microsoft's keys
    extra_args: tuple[str, ...] = ()

    @property
    def serial_log(self) -> Path:
        return Path(self.workdir) / f"{self.name}.serial.log"

    @property
    def ovmf_vars(self) -> Path:
        return Path(self.workdir) / f"{self.name}.OVMF_VARS.fd"


def ovmf_candidates(config: VMConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(code, vars) candidate files for the VM's UEFI firmware (pure)."""
    if config.secure_boot:
        return OVMF_SECURE_CODE_CANDIDATES, OVMF_SECURE_VARS_CANDIDATES
    return OVMF_CODE_CANDIDATES, OVMF_VARS_CANDIDATES


def find_firmware_file(candidates: tuple[str, ...]) -> Path:
    """The first existing file among candidates; raises VMError naming the ovmf package."""
    for candidate in candidates:
        if os.path.exists(candidate):
            return Path(candidate)
    raise VMError(f"none of {', '.join(candidates)} exists: install the Debian package 'ovmf'")


def kvm_usable() -> bool:
    """/dev/kvm exists and can be opened read-write (not whether a guest really runs under it)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def choose_accel(requested: str, probe_cache: Path = KVM_PROBE_CACHE) -> str:
    """Resolve "auto" to "kvm" or "tcg" (see the module docstring); raises VMError for a bad value."""
    requested = os.environ.get(ACCEL_ENV, requested) if requested == "auto" else requested
    if requested in ("kvm", "tcg"):
        return requested
    if requested != "auto":
        raise VMError(f"accel: {requested!r} is not one of auto, kvm, tcg")
    if not kvm_usable():
        return "tcg"
    try:
        return "kvm" if json.loads(probe_cache.read_text()).get("kvm_boots") else "tcg"
    except (OSError, ValueError):
        return "tcg"


def build_argv(config: VMConfig, accel: str, ovmf_code: Path | None = None) -> list[str]:
    """The full QEMU argv for config (pure: paths are not checked here)."""
    if config.secure_boot and config.firmware != Firmware.UEFI:
        raise VMError("secure_boot: needs firmware uefi")
    smm = ",smm=on" if config.secure_boot else ""
    argv = [QEMU, "-name", config.name, "-machine", f"{config.machine}{smm},accel={accel}",
            "-m", str(config.memory_mib), "-smp", str(config.cpus),
            "-display", "none", "-vga", "none", "-monitor", "none",
            "-serial", f"file:{config.serial_log}", "-no-reboot"]
    if accel == "tcg":
        argv += ["-cpu", "max"]
    else:
        argv += ["-cpu", "host"]
    if config.firmware == Firmware.UEFI:
        code = ovmf_code or Path(ovmf_candidates(config)[0][0])
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={config.ovmf_vars}"]
        if config.secure_boot:
            argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    elif config.firmware != Firmware.BIOS:
        raise VMError(f"firmware: {config.firmware!r} is not one of {', '.join(Firmware)}")
    if config.disk is not None:
        fmt = config.disk_format or ("qcow2" if str(config.disk).endswith(".qcow2") else "raw")
        # discard + detect-zeroes=unmap: the guest's TRIM and all-zero writes punch holes in the image
        # file. (BLKZEROOUT asks for the blocks to stay allocated, so an install's zeroed holes still
        # take ~3.2 GiB of the host's disk: tests keep their temporary directories only on failure.)
        argv += ["-drive", f"file={config.disk},format={fmt},if=virtio,cache=unsafe,discard=unmap,detect-zeroes=unmap"]
        if config.disk_snapshot:
            argv.append("-snapshot")
    if config.kernel is not None:
        argv += ["-kernel", str(config.kernel)]
        if config.initrd is not None:
            argv += ["-initrd", str(config.initrd)]
        if config.append:
            argv += ["-append", config.append]
    nic = config.nic
    if isinstance(nic, TapNic):
        rom = "" if nic.romfile is None else f",romfile={nic.romfile}"
        argv += ["-netdev", f"tap,id=n0,ifname={nic.tap},script=no,downscript=no",
                 "-device", f"{nic.model},netdev=n0,mac={nic.mac}{rom}"]
    elif isinstance(nic, UserNic):
        fwd = "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}" for host, guest in sorted(nic.hostfwd.items()))
        # restrict=on: the guest reaches nothing but the forwarded ports (network-safety rule).
        argv += ["-netdev", f"user,id=n0,restrict=on{fwd}", "-device", f"{nic.model},netdev=n0,mac={nic.mac}"]
    else:
        argv += ["-nic", "none"]
    if config.boot:
        argv += ["-boot", config.boot]
    argv += list(config.extra_args)
    if isinstance(nic, TapNic):
        # The tap lives in the lab namespace, so QEMU must open it from there.
        argv = ["ip", "netns", "exec", nic.netns, *argv]
    return argv


class QemuVM:
    """One QEMU process. start() / wait_for_serial() / stop(); also a context manager."""

    def __init__(self, config: VMConfig):
        self.config = config
        self.process: subprocess.Popen | None = None
        self.accel: str | None = None
        self._stderr_path = Path(config.workdir) / f"{config.name}.qemu.stderr"

    @property
    def serial_log(self) -> Path:
        return self.config.serial_log

    def start(self) -> None:
        """Start QEMU; raises VMError when it is missing or exits at once (bad argv, busy tap)."""
        require_tool(QEMU)
        Path(self.config.workdir).mkdir(parents=True, exist_ok=True)
        self.accel = choose_accel(self.config.accel)
        ovmf_code = None
        if self.config.firmware == Firmware.UEFI:
            code_candidates, vars_candidates = ovmf_candidates(self.config)
            ovmf_code = find_firmware_file(code_candidates)
            shutil.copyfile(find_firmware_file(vars_candidates), self.config.ovmf_vars)
        self.serial_log.write_bytes(b"")
        argv = build_argv(self.config, self.accel, ovmf_code)
        log.info("qemu %s (%s, %s): %s", self.config.name, self.config.firmware, self.accel, " ".join(argv))
        with open(self._stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        time.sleep(0.3)
        if self.process.poll() is not None:
            raise VMError(f"qemu {self.config.name} exited at once (exit {self.process.returncode}): "
                          f"{self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        try:
            lines = self._stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def serial_text(self) -> str:
        try:
            return self.serial_log.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_for_serial(self, pattern: str, timeout: float) -> re.Match:
        """Wait until `pattern` (a regex) appears on the serial console; returns the match.

        Raises VMError when QEMU exits or the timeout passes, with the console's last lines."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.serial_text())
            if match:
                return match
            if self.process is not None and self.process.poll() is not None:
                raise VMError(f"qemu {self.config.name} exited (code {self.process.returncode}) before "
                              f"{pattern!r} appeared; {self._stderr_tail()}; console tail: {self._tail()}")
            if time.monotonic() > deadline:
                raise VMError(f"qemu {self.config.name}: {pattern!r} not seen on the serial console within "
                              f"{timeout:.0f} s; console tail: {self._tail()}")
            time.sleep(0.2)

    def _tail(self, lines: int = 8) -> str:
        text = self.serial_text().replace("\r", "")
        return " | ".join(line for line in text.splitlines()[-lines:] if line.strip())

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10) -> None:
        """Terminate QEMU (SIGTERM, then SIGKILL after `timeout`); idempotent."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> QemuVM:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def probe_kvm(kernel: Path, initrd: Path | None, workdir: Path, timeout: float = 25,
              cache: Path = KVM_PROBE_CACHE) -> bool:
    """Boot `kernel` under KVM and report whether it reached userspace; caches the answer in `cache`.

    Returns False when /dev/kvm is unusable. Raises VMError only when QEMU itself is missing."""
    if not kvm_usable():
        return False
    config = VMConfig(name="kvm-probe", workdir=workdir, kernel=kernel, initrd=initrd,
                      append="console=ttyS0 panic=-1", accel="kvm", machine="pc", memory_mib=256)
    vm = QemuVM(config)
    ok = False
    try:
        vm.start()
        vm.wait_for_serial(r"Run /init|Freeing unused kernel", timeout)
        ok = True
    except (VMError, CommandError, NetworkError) as exc:
        log.info("kvm probe failed, using TCG: %s", exc)
    finally:
        vm.kill()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"kvm_boots": ok, "kernel": str(kernel), "at": time.time()}) + "\n")
    return ok

"""The boot chain end to end: a blank VM PXE-boots the live image, installs itself, reboots from disk.

    chain = BootChain(ChainConfig(data_dir=Path("examples/cluster"), release_dir=..., workdir=...))
    result = chain.run(on_stage=print)      # StageEvent per stage; raises ChainError with the stage

What it does: copies the data dir to `<workdir>/data` with a throwaway SSH key in the
machine's groups; publishes the release dir under `<workdir>/assets/release/stable` (hard links);
creates a lab namespace (bridge, no uplink) and runs `provisioner serve` in it with full DHCP;
boots QEMU (TCG unless KVM is known to work) on a blank sparse disk with the machine's MAC.
QEMU runs with -no-reboot, so the live system's reboot ends the first QEMU process; the second
start is the same machine (same disk, MAC, firmware) booting again: its PXE request now gets the
`installed` profile (provisioner/pxe/installed.py), whose iPXE script exits to the disk.

Stage times come from the server's machine state (DHCP, iPXE script, initrd download, and the
install progress the live system reports to `/report`) and from the serial console (kernel start,
live system, installer exit, installed system).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from provisioner.core.commands import require_tool, run, terminate
from provisioner.errors import CommandError, ProvisionerError
from provisioner.lab.netns import LabNetwork, netns_exec_argv
from provisioner.lab.qemu import Firmware, QemuVM, TapNic, VMConfig
from provisioner.node.kernel_cmdline import KernelCmdline
from provisioner.node.slots import booted_partuuid, slot_by_partuuid

RELEASE_FILES = ("version.txt", "provisioner_production_image.bin.zst", "provisioner_production_image.bin.zst.sig",
                 "provisioner_production_image.bin.zst.DIGESTS", "provisioner_production_image.bin.bmap",
                 "provisioner_production_pxe.vmlinuz", "provisioner_production_pxe_image.cpio.gz")
SSH_USER = "core"
# OVMF adds its own PXE IPv4/IPv6 boot options for the NIC after the iPXE ROM's; once iPXE hands the
# installed machine back (`exit 1`) they would each time out (~100 s under TCG) before the disk is
# tried. iPXE does the network boot, so OVMF's own PXE is switched off (OVMF's fw_cfg knobs).
UEFI_ARGS = ("-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
             "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n")
# SeaBIOS prints only to VGA, which this VM lacks; its serial console ("sercon", fw_cfg
# etc/sercon-port = the I/O port as a little-endian integer) puts SeaBIOS's and the iPXE ROM's
# messages (DHCP, downloads, errors) into the serial log as well. OVMF mirrors its console there.
SERCON_PORT = (0x3F8).to_bytes(2, "little")
# What the demo prints from the installed machine (one ssh session, sections split by markers).
REMOTE_REPORT = ("echo '== lsblk'; lsblk; echo '== findmnt /usr /'; findmnt /usr; findmnt /; "
                 "echo '== hostname'; hostname; echo '== boot slot'; "
                 "cat /proc/cmdline; sudo python3 -m provisioner.node.slots show 2>&1; echo '== end'")

# Serial console markers (images/provisioner: the hook unit prints "provisioner-hook: ...").
KERNEL_RE = r"Linux version \d"
LIVE_RE = r"provisioner-hook: running"
INSTALL_DONE_RE = r"provisioner-hook: exit 0"
UP_RE = r"(login: |Reached target .{0,40}Multi-User System)"


class ChainError(ProvisionerError):
    """A stage of the boot chain failed or timed out; the message names the stage."""


@dataclass(frozen=True)
class ChainConfig:
    data_dir: Path
    release_dir: Path                 # <base>/stable/<version> or <base>/stable/current (make image)
    workdir: Path                     # build/demo: data copy, assets, disk, logs, key
    mac: str = "52:54:00:00:00:01"    # examples/cluster: node1
    firmware: Firmware = Firmware.BIOS
    netns: str = "provdemo"
    cidr: str = "10.99.0.1/24"
    dhcp_range: str = "10.99.0.100,10.99.0.150"
    http_port: int = 8080
    disk_size: str = "8G"
    memory_mib: int = 2048
    cpus: int = 2
    accel: str = "auto"
    # Stage timeouts (seconds), generous for TCG on a busy 2-core machine.
    pxe_timeout: float = 240          # power on -> kernel running (includes the ~140 MB initrd)
    live_timeout: float = 240         # kernel -> installer started
    install_timeout: float = 600      # installer start -> exit 0 and reboot
    installed_timeout: float = 480    # second power on -> SSH answers

    @property
    def server_ip(self) -> str:
        return self.cidr.split("/")[0]

    @property
    def server_url(self) -> str:
        return f"http://{self.server_ip}:{self.http_port}"


@dataclass(frozen=True)
class StageEvent:
    stage: str
    at: float          # seconds since the first power on
    detail: str = ""


@dataclass
class ChainResult:
    stages: list[StageEvent] = field(default_factory=list)
    ip: str | None = None
    remote_report: str = ""
    boot_slot: str | None = None
    total: float = 0.0

    def seconds(self, stage: str) -> float | None:
        return next((s.at for s in self.stages if s.stage == stage), None)


def prepare_data_dir(source: Path, target: Path, mac: str, public_key: str) -> None:
    """Copy the data dir and give every group selecting `mac` the key as its only SSH key; raises ChainError."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("state"))
    found = False
    for path in sorted((target / "groups").glob("*.y*ml")):
        doc = yaml.safe_load(path.read_text())
        if str((doc.get("selector") or {}).get("mac", "")).lower() != mac.lower():
            continue
        doc.setdefault("metadata", {})["ssh_authorized_keys"] = [public_key]
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        found = True
    if not found:
        raise ChainError(f"{source}/groups: no group selects mac {mac}")


def publish_release(release_dir: Path, assets: Path) -> Path:
    """Hard-link (or copy) the release files to <assets>/release/stable/{<version>,current}; raises ChainError."""
    release_dir = Path(os.path.realpath(release_dir))
    missing = [name for name in RELEASE_FILES if not (release_dir / name).is_file()]
    if missing:
        raise ChainError(f"{release_dir}: missing {', '.join(missing)} (run `make image`)")
    stable = assets / "release" / "stable"
    if stable.exists():
        shutil.rmtree(stable)
    version_dir = stable / release_dir.name
    version_dir.mkdir(parents=True)
    for name in RELEASE_FILES:
        try:
            os.link(release_dir / name, version_dir / name)
        except OSError:
            shutil.copyfile(release_dir / name, version_dir / name)
    (stable / "current").symlink_to(release_dir.name)
    key = release_dir.parent / "release-key.asc"
    if key.is_file():
        shutil.copyfile(key, stable / "release-key.asc")
    return stable


def make_ssh_key(path: Path) -> str:
    """A throwaway ed25519 key pair at path (+ .pub); returns the public key line. Raises CommandError."""
    for stale in (path, path.with_suffix(".pub")):
        stale.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "provisioner-demo", "-f", str(path)])
    return path.with_suffix(".pub").read_text().strip()


def ssh_argv(netns: str, key: Path, ip: str, command: str, user: str = SSH_USER) -> list[str]:
    """ssh into the machine from inside the lab namespace (pure)."""
    return netns_exec_argv(netns, ["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no",
                                   "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                                   "-o", "ConnectTimeout=5", "-o", "BatchMode=yes", f"{user}@{ip}", command])


def lab_vm(name: str, workdir: Path, firmware: Firmware, disk: Path, netns: str, tap: str, mac: str, *,
           memory_mib: int, cpus: int, accel: str) -> QemuVM:
    """A machine on the lab bridge that boots from the network first, then its disk, on every boot
    (SeaBIOS and OVMF both read QEMU's bootindex list): the server decides, as with a real PXE-first
    server. Firmware messages go to the serial log too."""
    if firmware == Firmware.UEFI:
        firmware_args: tuple[str, ...] = UEFI_ARGS
    else:
        sercon = Path(workdir) / "sercon-port.bin"
        sercon.write_bytes(SERCON_PORT)
        firmware_args = ("-fw_cfg", f"name=etc/sercon-port,file={sercon}")
    return QemuVM(VMConfig(name=name, workdir=workdir, firmware=firmware, memory_mib=memory_mib, cpus=cpus,
                           disk=disk, accel=accel, nic=TapNic(netns=netns, tap=tap, mac=mac),
                           extra_args=("-global", "virtio-net-pci.bootindex=1",
                                       "-global", "virtio-blk-pci.bootindex=2", *firmware_args)))


def start_lab_server(net: LabNetwork, log_path: Path, serve_args: list[str], timeout: float = 30) -> subprocess.Popen:
    """`provisioner -v serve <serve_args>` inside the lab namespace, logging to log_path, once it says
    ready; raises ChainError with the log's last lines when it exits or stays silent."""
    argv = [sys.executable, "-m", "provisioner.cli.main", "-v", "serve", *serve_args]
    with open(log_path, "wb") as log:
        server = net.popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while "serve: ready" not in log_path.read_text(errors="replace"):
        if server.poll() is not None or time.monotonic() > deadline:
            tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-5:])
            raise ChainError(f"provisioner serve did not start: {tail}")
        time.sleep(0.2)
    return server


def boot_slot(text: str) -> str | None:
    """USR-A or USR-B from a kernel command line's mount.usr=PARTUUID=... (the node's own parser,
    provisioner.node.slots), or None (pure)."""
    partuuid = booted_partuuid(KernelCmdline.parse(text))
    slot = slot_by_partuuid(partuuid) if partuuid else None
    return slot.label if slot else None


def machine_records(state_dir: Path) -> dict[str, dict]:
    """The server's machines.json by MAC ({} before the first event or while it is being replaced)."""
    try:
        machines = json.loads((state_dir / "machines.json").read_text())["machines"]
    except (OSError, ValueError, KeyError):
        return {}
    return {m.get("mac"): m for m in machines}


def installed_marks(state_dir: Path) -> dict:
    """The server's installed marks ({mac: unix time}); {} when there are none yet."""
    try:
        return json.loads((state_dir / "installed.json").read_text()).get("installed", {})
    except (OSError, ValueError):
        return {}


def stop_lab(vms: list[QemuVM], server: subprocess.Popen | None, net: LabNetwork | None) -> None:
    """Stop the VMs and the server, delete the namespace (each may be missing or already gone)."""
    for vm in vms:
        vm.stop()
    if server is not None:
        terminate(server, timeout=15)
    if net is not None:
        net.destroy()


def state_stage(entry: dict) -> tuple[str, str] | None:
    """(stage line, detail) for one entry of the server's machine history, or None when the demo
    does not print it (pure). Install progress comes from the live system's reports (pxe/reports.py)."""
    stage = entry.get("stage")
    if stage == "dhcp-ack":
        return "DHCP", entry.get("ip", "")
    if stage == "ipxe-script":
        return "iPXE", ""
    if stage == "initrd":
        return "initrd sent", ""
    if stage == "install" and entry.get("event") == "progress" and entry.get("percent") is not None:
        return f"installing {entry['percent']}%", ""
    if stage == "install-done":
        return "installing 100%", ""
    if stage == "install-error":
        return "install error", entry.get("message") or entry.get("step") or ""
    return None


class LabPaths:
    """Where a demo keeps its files under its work directory: the SSH key, the server's log and state."""

    def __init__(self, workdir: Path):
        self.work = Path(workdir)

    @property
    def key(self) -> Path:
        return self.work / "id_ed25519"

    @property
    def server_log(self) -> Path:
        return self.work / "serve.log"

    @property
    def state_dir(self) -> Path:
        return self.work / "state"


class BootChain(LabPaths):
    """Runs the chain once; `keep=True` leaves the server and the VM running (stop() ends them)."""

    def __init__(self, config: ChainConfig, keep: bool = False):
        super().__init__(config.workdir)
        self.config = config
        self.keep = keep
        self.net: LabNetwork | None = None
        self.server: subprocess.Popen | None = None
        self.vm: QemuVM | None = None
        self.start_time = 0.0
        self.result = ChainResult()
        self._on_stage: Callable[[StageEvent], None] = lambda event: None
        self._seen_state: set[str] = set()

    @property
    def disk(self) -> Path:
        return self.work / "disk.raw"

    def serial_logs(self) -> list[Path]:
        return sorted(self.work.glob("*.serial.log"))

    # ---------------------------------------------------------------- stages

    def _stage(self, stage: str, detail: str = "") -> None:
        event = StageEvent(stage, round(time.monotonic() - self.start_time, 1), detail)
        self.result.stages.append(event)
        self._on_stage(event)

    def prepare(self) -> None:
        """Workdir, key, data dir copy, assets, blank disk; raises ChainError/CommandError."""
        for tool in ("ssh", "ssh-keygen", "qemu-system-x86_64", "ip"):
            require_tool(tool)
        self.work.mkdir(parents=True, exist_ok=True)
        for old in ("state",):
            shutil.rmtree(self.work / old, ignore_errors=True)
        for log in self.serial_logs():
            log.unlink()
        public = make_ssh_key(self.key)
        prepare_data_dir(self.config.data_dir, self.work / "data", self.config.mac, public)
        publish_release(self.config.release_dir, self.work / "assets")
        self.disk.unlink(missing_ok=True)
        run(["truncate", "-s", self.config.disk_size, str(self.disk)])

    def start_server(self) -> None:
        c = self.config
        self.net = LabNetwork.create(c.netns, c.cidr)
        self.net.add_tap("tap0")
        self.server = start_lab_server(self.net, self.server_log, [
            "--data-dir", str(self.work / "data"), "--state-dir", str(self.state_dir),
            "--assets-dir", str(self.work / "assets"), "--interface", "br0",
            "--http-addr", f"{c.server_ip}:{c.http_port}", "--dhcp-range", c.dhcp_range])

    def _vm(self, name: str) -> QemuVM:
        c = self.config
        return lab_vm(name, self.work, c.firmware, self.disk, c.netns, "tap0", c.mac, memory_mib=c.memory_mib,
                      cpus=c.cpus, accel=c.accel)

    def machine(self) -> dict:
        """This MAC's record in the server's machines.json ({} before the first event)."""
        return machine_records(self.state_dir).get(self.config.mac, {})

    def installed_marks(self) -> dict:
        return installed_marks(self.state_dir)

    def _watch_state(self, boot: str, since: float) -> None:
        """Stage lines for server-side events of this boot (history entries newer than `since`);
        raises ChainError when the live system reported an install error."""
        for entry in self.machine().get("history", []):
            found = state_stage(entry)
            if found is None or entry.get("at", 0) < since:
                continue
            label, detail = found
            label += " (2nd boot)" if boot == "second" else ""
            if label in self._seen_state:
                continue
            self._seen_state.add(label)
            self._stage(label, detail)
            if label == "install error":
                raise ChainError(f"installing: the live system reported: {detail}")

    def _wait(self, vm: QemuVM, pattern: str, timeout: float, stage: str, boot: str, since: float) -> None:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            self._watch_state(boot, since)
            text = vm.serial_text()
            if regex.search(text):
                return
            if not vm.running():
                raise ChainError(f"{stage}: QEMU ({vm.config.name}) exited before {pattern!r}; console: {vm._tail()}")
            if time.monotonic() > deadline:
                raise ChainError(f"{stage}: {pattern!r} not seen on the console within {timeout:.0f} s; "
                                 f"console: {vm._tail()}")
            time.sleep(0.5)

    def first_boot(self) -> None:
        c = self.config
        since = time.time()
        self.vm = self._vm(f"{c.firmware}-1-pxe")
        self.vm.start()
        self._wait(self.vm, KERNEL_RE, c.pxe_timeout, "PXE", "first", since)
        self._stage("kernel")
        self._wait(self.vm, LIVE_RE, c.live_timeout, "live system", "first", since)
        self._stage("live system")
        self._wait(self.vm, INSTALL_DONE_RE, c.install_timeout, "installing", "first", since)
        deadline = time.monotonic() + 120
        while self.vm.running():   # -no-reboot: the guest's reboot ends QEMU
            if time.monotonic() > deadline:
                raise ChainError(f"reboot: the live system did not reboot within 120 s; console: {self.vm._tail()}")
            time.sleep(0.5)
        self._watch_state("first", since)
        if "installing 100%" not in self._seen_state:
            raise ChainError(f"installing: the live system never reported its install done to the server "
                             f"({self.state_dir}/machines.json)")
        if c.mac not in self.installed_marks():
            raise ChainError(f"reboot: the server did not mark {c.mac} installed ({self.state_dir}/installed.json)")
        self._stage("reboot")

    def second_boot(self) -> None:
        c = self.config
        since = time.time()
        self.vm = self._vm(f"{c.firmware}-2-disk")
        self.vm.start()
        self._wait(self.vm, UP_RE, c.installed_timeout, "installed system up", "second", since)
        self._stage("installed system up")
        self.result.ip = self.machine().get("ip")
        if not self.result.ip:
            raise ChainError("SSH: the server's machine state has no IP address for the machine")
        # SSH ok when a login first works; the report is read afterwards and is not part of that time.
        self.ssh_until_done("echo ssh-ok", "ssh-ok", c.installed_timeout)
        self._stage("SSH ok", f"{SSH_USER}@{self.result.ip}")
        out = self.ssh_until_done(REMOTE_REPORT, "== end", c.installed_timeout)
        self.result.remote_report = out.split("== end")[0]
        self.result.boot_slot = boot_slot(out)

    def ssh_until_done(self, command: str, marker: str, timeout: float) -> str:
        """Run `command` on the machine over SSH, every second until its output holds `marker`; its stdout.
        check=False: the command's own parts may fail (e.g. `slots show`); the session counts as
        working when the output reached the marker. Raises ChainError after `timeout` or when QEMU exits."""
        assert self.vm is not None and self.result.ip is not None
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                out = run(ssh_argv(self.config.netns, self.key, self.result.ip, command), timeout=60, check=False)
                if marker in out.stdout:
                    return out.stdout
                last = f"exit {out.returncode}: {(out.stderr or '').strip()[-300:]}"
            except CommandError as exc:
                last = str(exc)
            if time.monotonic() > deadline or not self.vm.running():
                raise ChainError(f"SSH to {SSH_USER}@{self.result.ip}: {last}; console: {self.vm._tail()}")
            time.sleep(1)

    def run(self, on_stage: Callable[[StageEvent], None] | None = None) -> ChainResult:
        """The whole chain; raises ChainError naming the failed stage (everything is torn down unless keep)."""
        if on_stage is not None:
            self._on_stage = on_stage
        ok = False
        try:
            self.prepare()
            self.start_server()
            self.start_time = time.monotonic()
            self.first_boot()
            self.second_boot()
            self.result.total = round(time.monotonic() - self.start_time, 1)
            ok = True
            return self.result
        finally:
            if not (self.keep and ok):
                self.stop()

    def stop(self) -> None:
        """Stop QEMU and the server, delete the namespace (idempotent)."""
        stop_lab([self.vm] if self.vm is not None else [], self.server, self.net)
        self.net = None

    def how_to_reach(self) -> str:
        """What --keep prints."""
        argv = ssh_argv(self.config.netns, self.key, self.result.ip or "<ip>", "")[:-1]
        return (f"ssh: {shlex.join(argv)}\nserver log: {self.server_log}\n"
                f"machine state: {self.state_dir}/machines.json\n"
                f"QEMU pid {self.vm.process.pid if self.vm and self.vm.process else '-'}, server pid "
                f"{self.server.pid if self.server else '-'}; "
                f"stop: kill both, then `ip netns delete {self.config.netns}`")

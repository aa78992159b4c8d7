"""Three bare VMs to a working cluster: what `make demo` runs and the cluster acceptance test checks.

    demo = ClusterDemo(ClusterConfig(data_dir=Path("examples/cluster"), release_dir=..., workdir=...))
    result = demo.run(on_event=print)   # ClusterEvent per node stage and cluster step; raises ChainError

One lab namespace (bridge, no uplink) holds `provisioner serve` (full DHCP, the discovery service, the
registry with busybox built offline) and three QEMU machines with blank disks: node1 (BIOS) and node3
(UEFI) PXE-boot the live image and install unattended; node2 (BIOS) PXE-boots a rescue system and is
installed through `provisioner rescue` over SSH, then marked installed through the admin API. Each
reboots from its disk, applies its cloud-config; etcd forms its 3-member cluster through the server's
discovery service (a token made for this run), and fleetd joins on each. Then the guides' units go
through fleetctl: hello.service (docker pull busybox + run, unchanged) and web@1/web@2 (Conflicts); the
machine running web@1 is powered off and web@1 must move.

Node stages come from the server's machine state (DHCP, iPXE, installing N%) and from each machine's
serial console (kernel, live system, cloud-config applied); cluster steps from etcd and fleet themselves.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from provisioner.core.commands import require_tool, run
from provisioner.core.polling import poll
from provisioner.demo.boot_chain import (
    INSTALL_DONE_RE,
    KERNEL_RE,
    LIVE_RE,
    SSH_USER,
    ChainError,
    LabPaths,
    installed_marks,
    lab_vm,
    machine_records,
    make_ssh_key,
    publish_release,
    ssh_argv,
    start_lab_server,
    state_stage,
    stop_lab,
)
from provisioner.errors import CommandError
from provisioner.lab.netns import LabNetwork, netns_exec_argv
from provisioner.lab.qemu import Firmware, QemuVM

REPO = Path(__file__).resolve().parents[2]
UNITS_DIR = REPO / "examples" / "units"
APPLIED_RE = r"applied /var/lib/coreos-install/user_data: \d+ module\(s\) ok"
LIVE_APPLIED_RE = r"applied cloud-config-url=\S+: \d+ module\(s\) ok"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    mac: str
    firmware: Firmware = Firmware.BIOS
    via_rescue: bool = False       # installed with `provisioner rescue` from a rescue system, not by the live hook


NODES = (NodeSpec("node1", "52:54:00:00:00:01"),
         NodeSpec("node2", "52:54:00:00:00:02", via_rescue=True),
         NodeSpec("node3", "52:54:00:00:00:03", Firmware.UEFI))


@dataclass(frozen=True)
class ClusterConfig:
    data_dir: Path
    release_dir: Path
    workdir: Path
    nodes: tuple[NodeSpec, ...] = NODES
    netns: str = "provcluster"
    cidr: str = "10.99.0.1/24"
    dhcp_range: str = "10.99.0.100,10.99.0.150"
    http_port: int = 8080
    registry_port: int = 5000
    disk_size: str = "8G"
    memory_mib: int = 2048
    cpus: int = 1
    accel: str = "auto"
    # Three TCG machines on two cores answer etcd requests in seconds under load: with fleet's 1 s request
    # timeout and our 5 s lease, leases expired and units moved while nothing had failed. Real hardware
    # keeps the defaults; this is the lab's setting (coreos.fleet agent-ttl / etcd-request-timeout).
    fleet_agent_ttl: str = "20s"
    fleet_etcd_request_timeout: float = 5.0
    # Bounds (seconds) for three TCG machines sharing this 2-core host.
    install_timeout: float = 1200      # power on -> installed system applied its cloud-config
    cluster_timeout: float = 420       # all nodes up -> etcd healthy with 3 members and 3 fleet machines
    units_timeout: float = 420         # fleetctl start -> units active, Hello World in the journal
    failover_timeout: float = 120      # power off -> web@1 active elsewhere

    @property
    def server_ip(self) -> str:
        return self.cidr.split("/")[0]

    @property
    def server_url(self) -> str:
        return f"http://{self.server_ip}:{self.http_port}"

    @property
    def registry_url(self) -> str:
        return f"http://{self.server_ip}:{self.registry_port}"


@dataclass(frozen=True)
class ClusterEvent:
    at: float            # seconds since the first power on
    node: str            # a node's name, or "cluster"
    stage: str
    detail: str = ""


@dataclass
class ClusterResult:
    events: list[ClusterEvent] = field(default_factory=list)
    ips: dict[str, str] = field(default_factory=dict)          # node -> IP
    etcd_health: str = ""
    machines: str = ""
    units: str = ""
    journal: str = ""
    placement: dict[str, str] = field(default_factory=dict)    # unit -> node, before the failover
    powered_off: str = ""
    moved_to: str = ""
    failover_seconds: float = 0.0
    health_after: str = ""
    total: float = 0.0

    def at(self, node: str, stage: str) -> float | None:
        return next((e.at for e in self.events if e.node == node and e.stage == stage), None)


class NodeRun:
    """One machine's way from blank disk to an installed, configured system (runs in its own thread)."""

    def __init__(self, demo: ClusterDemo, spec: NodeSpec, ip: str):
        self.demo = demo
        self.spec = spec
        self.ip = ip
        self.vm: QemuVM | None = None
        self.stage = "powered on"
        self.error: BaseException | None = None
        self.done = False
        self.disk = demo.work / f"{spec.name}.disk.raw"

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name=self.spec.name, daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        try:
            self.install()
            self.boot_from_disk()
            self.done = True
        except BaseException as exc:  # reported by the main thread, which names the node and its stage
            self.error = exc

    def _vm(self, boot: str) -> QemuVM:
        c = self.demo.config
        return lab_vm(f"{self.spec.name}-{boot}", self.demo.work, self.spec.firmware, self.disk, c.netns,
                      f"tap-{self.spec.name}", self.spec.mac, memory_mib=c.memory_mib, cpus=c.cpus, accel=c.accel)

    def _wait(self, pattern: str, timeout: float, stage: str) -> None:
        assert self.vm is not None
        try:
            self.vm.wait_for_serial(pattern, timeout)
        except Exception as exc:
            raise ChainError(f"{self.spec.name}: {stage}: {exc}") from None

    def install(self) -> None:
        self.demo.start_vm(self, self._vm("1-pxe"))
        assert self.vm is not None
        self._wait(KERNEL_RE, 600, "PXE")
        self.demo.event(self.spec.name, "kernel")
        # The rescue system runs no install hook: it is up once it applied its cloud-config (root's keys).
        self._wait(LIVE_APPLIED_RE if self.spec.via_rescue else LIVE_RE, 600, "live system")
        self.demo.event(self.spec.name, "live system")
        if self.spec.via_rescue:
            self.demo.rescue_install(self)
        else:
            self._wait(INSTALL_DONE_RE, self.demo.config.install_timeout, "installing")
        deadline = time.monotonic() + 180
        while self.vm.running():   # -no-reboot: the guest's reboot ends QEMU
            if time.monotonic() > deadline:
                raise ChainError(f"{self.spec.name}: reboot: the live system did not reboot within 180 s")
            time.sleep(0.5)
        if self.spec.mac not in self.demo.installed_marks():
            raise ChainError(f"{self.spec.name}: the server did not mark {self.spec.mac} installed")
        self.demo.event(self.spec.name, "rebooting")

    def boot_from_disk(self, boot: str = "2-disk") -> None:
        """Start the machine from its disk (`boot` names its logs) and wait until SSH answers."""
        self.demo.start_vm(self, self._vm(boot))
        self._wait(APPLIED_RE, self.demo.config.install_timeout, "installed system applying its cloud-config")
        self.demo.event(self.spec.name, "cloud-config applied")
        self.demo.wait_ssh(self.spec.name, SSH_USER, self.ip, 300)
        self.demo.event(self.spec.name, "SSH ok", f"{SSH_USER}@{self.ip}")


class ClusterDemo(LabPaths):
    """Runs the cluster once; `keep=True` leaves everything running (stop() ends it)."""

    def __init__(self, config: ClusterConfig, keep: bool = False):
        super().__init__(config.workdir)
        self.config = config
        self.keep = keep
        self.net: LabNetwork | None = None
        self.server: subprocess.Popen | None = None
        self.nodes: list[NodeRun] = []
        self.result = ClusterResult()
        self.start_time = time.monotonic()
        self.wall_start = time.time()
        self._on_event: Callable[[ClusterEvent], None] = lambda event: None
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()
        # Node threads start VMs under this lock and only while not stopped, so a VM a node thread
        # was about to start when another node failed is not left running after stop().
        self._vm_lock = threading.Lock()
        self._stopped = False

    # ------------------------------------------------------------------ paths and small helpers

    @property
    def data(self) -> Path:
        return self.work / "data"

    def logs(self) -> list[Path]:
        return [p for p in (self.server_log, *sorted(self.work.glob("*.serial.log")),
                            *sorted(self.work.glob("*.qemu.stderr")), self.work / "rescue.log") if p.exists()]

    def event(self, node: str, stage: str, detail: str = "") -> None:
        with self._lock:
            if (node, stage) in self._seen:
                return
            self._seen.add((node, stage))
            event = ClusterEvent(round(time.monotonic() - self.start_time, 1), node, stage, detail)
            self.result.events.append(event)
            for run_ in self.nodes:
                if run_.spec.name == node:
                    run_.stage = stage
        self._on_event(event)

    def lab(self, argv: list[str], timeout: float = 120, check: bool = True,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run argv inside the lab namespace (text output); raises CommandError when check and it fails."""
        return run(netns_exec_argv(self.config.netns, argv), timeout=timeout, check=check,
                   cwd=str(cwd) if cwd else None)

    def provisioner(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return self.lab([sys.executable, "-m", "provisioner.cli.main", *args], timeout=timeout, check=check)

    def fleetctl(self, *args: str, timeout: float = 120, check: bool = True,
                 cwd: Path | None = None) -> subprocess.CompletedProcess:
        endpoints = ",".join(f"http://{ip}:2379" for ip in self.result.ips.values())
        # HOME holds the demo's key as ~/.ssh/id_ed25519: fleetctl journal/status reach machines over SSH.
        argv = ["env", f"HOME={self.work / 'home'}", sys.executable, "-m", "provisioner.cli.main", "fleet",
                "--endpoint", endpoints, "--strict-host-key-checking=false", *args]
        return self.lab(argv, timeout=timeout, check=check, cwd=cwd)

    def machines_state(self) -> dict[str, dict]:
        return machine_records(self.state_dir)

    def installed_marks(self) -> dict:
        return installed_marks(self.state_dir)

    def wait_ssh(self, node: str, user: str, ip: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                done = run(ssh_argv(self.config.netns, self.key, ip, "true", user=user), timeout=30, check=False)
                if done.returncode == 0:
                    return
                last = (done.stderr or "").strip()[-200:]
            except CommandError as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise ChainError(f"{node}: SSH to {user}@{ip} did not answer within {timeout:.0f} s: {last}")
            time.sleep(3)

    # ------------------------------------------------------------------ stages

    def prepare(self) -> None:
        """Workdir, key, data dir copy with the key and the rescue profile for rescue nodes, registry
        images, release assets, blank disks; raises ChainError/CommandError."""
        for tool in ("ssh", "ssh-keygen", "qemu-system-x86_64", "ip", "curl"):
            require_tool(tool)
        if self.work.exists():
            shutil.rmtree(self.work)
        (self.work / "home" / ".ssh").mkdir(parents=True)
        public = make_ssh_key(self.key)
        shutil.copyfile(self.key, self.work / "home" / ".ssh" / "id_ed25519")
        (self.work / "home" / ".ssh" / "id_ed25519").chmod(0o600)
        shutil.copytree(self.config.data_dir, self.data, ignore=shutil.ignore_patterns("state"))
        rescue_macs = {n.mac for n in self.config.nodes if n.via_rescue}
        found = set()
        for path in sorted((self.data / "groups").glob("*.y*ml")):
            doc = yaml.safe_load(path.read_text())
            mac = str((doc.get("selector") or {}).get("mac", "")).lower()
            if mac not in {n.mac for n in self.config.nodes}:
                continue
            found.add(mac)
            doc.setdefault("metadata", {})["ssh_authorized_keys"] = [public]
            if mac in rescue_macs and doc.get("profile") == "install":
                doc["profile"] = "rescue"
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
        missing = {n.mac for n in self.config.nodes} - found
        if missing:
            raise ChainError(f"{self.config.data_dir}/groups: no group selects mac {', '.join(sorted(missing))}")
        for image in ("busybox",):
            self.provisioner_local("registry", "build", image, "-D", str(self.data))
        publish_release(self.config.release_dir, self.work / "assets")
        for node in self.config.nodes:
            run(["truncate", "-s", self.config.disk_size, str(self.work / f"{node.name}.disk.raw")])

    def provisioner_local(self, *args: str) -> subprocess.CompletedProcess:
        return run([sys.executable, "-m", "provisioner.cli.main", *args], timeout=300)

    def start_server(self) -> None:
        c = self.config
        self.net = LabNetwork.create(c.netns, c.cidr)
        for node in c.nodes:
            self.net.add_tap(f"tap-{node.name}")
        self.server = start_lab_server(self.net, self.server_log, [
            "--data-dir", str(self.data), "--state-dir", str(self.state_dir), "--assets-dir", str(self.work / "assets"),
            "--interface", "br0", "--http-addr", f"{c.server_ip}:{c.http_port}", "--dhcp-range", c.dhcp_range,
            "--registry-addr", f"{c.server_ip}:{c.registry_port}"])

    def configure_installed_groups(self) -> str:
        """A discovery token for 3 members from the server, written with the lab's fleet timing into each
        node's installed group (the server re-reads the data dir); returns the token URL."""
        url = self.lab(["curl", "-sf", f"{self.config.server_url}/discovery/new?size={len(self.config.nodes)}"]
                       ).stdout.strip()
        if not url.startswith("http://"):
            raise ChainError(f"discovery: the server answered {url!r} to /discovery/new")
        macs = {n.mac for n in self.config.nodes}
        for path in sorted((self.data / "groups").glob("*.y*ml")):
            doc = yaml.safe_load(path.read_text())
            selector = doc.get("selector") or {}
            if str(selector.get("mac", "")).lower() in macs and selector.get("os") == "installed":
                doc.setdefault("metadata", {}).update(
                    etcd_discovery=url, fleet_agent_ttl=self.config.fleet_agent_ttl,
                    fleet_etcd_request_timeout=self.config.fleet_etcd_request_timeout)
                path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return url

    def node_ips(self) -> dict[str, str]:
        """Each node's reserved address (its installed group's `ip`, the static DHCP lease)."""
        ips: dict[str, str] = {}
        for path in sorted((self.data / "groups").glob("*.y*ml")):
            doc = yaml.safe_load(path.read_text())
            mac = str((doc.get("selector") or {}).get("mac", "")).lower()
            ip = (doc.get("metadata") or {}).get("ip")
            for node in self.config.nodes:
                if node.mac == mac and ip:
                    ips[node.name] = str(ip)
        missing = [n.name for n in self.config.nodes if n.name not in ips]
        if missing:
            raise ChainError(f"{self.config.data_dir}/groups: no `ip` for {', '.join(missing)}")
        return ips

    def rescue_install(self, node: NodeRun) -> None:
        """What an operator does with a rescue system: install over SSH, mark the machine installed
        through the admin API, reboot it."""
        c = self.config
        self.wait_ssh(node.spec.name, "root", node.ip, 300)
        self.event(node.spec.name, "rescue: SSH ok", f"root@{node.ip}")
        cloud_config = self.work / f"{node.spec.name}.installed.yaml"
        rendered = self.provisioner_local("render", "cloud-config", "-D", str(self.data), "--server-url", c.server_url,
                                          "--registry-url", c.registry_url, "--mac", node.spec.mac,
                                          "-l", "os=installed")
        cloud_config.write_text(rendered.stdout)
        argv = ["rescue", f"root@{node.ip}", "-i", str(self.key), "--accept-new",
                "--known-hosts", str(self.work / "known_hosts"), "--disk", "/dev/vda",
                "-b", f"{c.server_url}/assets/release/stable", "-k",
                str(self.work / "assets" / "release" / "stable" / "release-key.asc"), "-c", str(cloud_config), "--yes"]
        self.event(node.spec.name, "rescue: installing")
        done = self.provisioner(*argv, timeout=c.install_timeout, check=False)
        (self.work / "rescue.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            last = ((done.stderr or done.stdout).strip().splitlines() or ["no output"])[-1]
            raise ChainError(f"{node.spec.name}: provisioner rescue failed (exit {done.returncode}): {last} "
                             f"(log: {self.work / 'rescue.log'})")
        self.event(node.spec.name, "rescue: installed")
        self.provisioner("machines", "mark-installed", node.spec.mac, "--state-dir", str(self.state_dir))
        run(ssh_argv(c.netns, self.key, node.ip, "systemctl reboot", user="root"), timeout=60, check=False)

    def _poll_server_stages(self) -> None:
        state = self.machines_state()
        for node in self.nodes:
            for entry in state.get(node.spec.mac, {}).get("history", []):
                found = state_stage(entry)
                if found is None or entry.get("at", 0) < self.wall_start:
                    continue
                label, detail = found
                self.event(node.spec.name, label, detail)   # once per (node, stage): later boots' DHCP repeat
                if label == "install error":
                    raise ChainError(f"{node.spec.name}: installing: the live system reported: {detail}")

    def bring_up_nodes(self) -> None:
        ips = self.node_ips()
        self.result.ips = ips
        self.nodes = [NodeRun(self, spec, ips[spec.name]) for spec in self.config.nodes]
        threads = [node.start() for node in self.nodes]
        while any(t.is_alive() for t in threads):
            self._poll_server_stages()
            failed = next((n for n in self.nodes if n.error is not None), None)
            if failed is not None:
                raise ChainError(f"{failed.spec.name} (stage {failed.stage}): {failed.error}")
            time.sleep(0.5)
        failed = next((n for n in self.nodes if n.error is not None or not n.done), None)
        if failed is not None:
            raise ChainError(f"{failed.spec.name} (stage {failed.stage}): {failed.error}")

    def _until(self, what: str, check: Callable[[], object], timeout: float, interval: float = 3.0) -> object:
        value = poll(check, timeout, interval)
        if not value:
            raise ChainError(f"cluster: {what}: not within {timeout:.0f} s")
        return value

    def etcd_health(self, ips: list[str]) -> subprocess.CompletedProcess:
        return self.provisioner("node", "etcd-health", "--endpoints", ",".join(f"http://{ip}:2379" for ip in ips),
                                check=False)

    def cluster_up(self) -> None:
        c = self.config
        ips = list(self.result.ips.values())
        health = self._until("etcd healthy with every member", lambda: (
            lambda done: done.stdout if done.returncode == 0 and done.stdout.count(" is healthy: ") == len(ips)
            else "")(self.etcd_health(ips)), c.cluster_timeout)
        self.result.etcd_health = str(health)
        self.event("cluster", "etcd healthy", f"{len(ips)} members")
        machines = self._until("every machine in fleet", lambda: (
            lambda out: out if len(out.splitlines()) == len(ips) else "")(
            self.fleetctl("list-machines", "--no-legend", check=False).stdout), c.cluster_timeout)
        self.result.machines = self.fleetctl("list-machines").stdout
        self.event("cluster", "fleet machines", f"{len(str(machines).splitlines())}")

    def run_units(self) -> None:
        c = self.config
        units = self.work / "units"
        units.mkdir(exist_ok=True)
        for name in ("hello.service", "web@.service"):
            shutil.copyfile(UNITS_DIR / name, units / name)
        self.fleetctl("submit", "hello.service", "web@.service", cwd=units)   # fleetctl reads the files from cwd
        self.fleetctl("start", "--no-block", "hello.service", timeout=c.units_timeout)
        self.fleetctl("start", "--no-block", "web@1.service", "web@2.service", timeout=c.units_timeout)
        self.event("cluster", "units started", "hello.service web@1 web@2")
        wanted = ("hello.service", "web@1.service", "web@2.service")
        self.result.placement = self._until("hello, web@1 and web@2 active", lambda: (
            lambda placement: placement if all(u in placement for u in wanted) else {})(self.placement()),
            c.units_timeout)  # type: ignore[assignment]
        self.result.journal = str(self._until("Hello World in hello.service's journal", lambda: (
            lambda out: out if "Hello World" in out else "")(
            self.fleetctl("journal", "--sudo", "--lines", "5", "hello.service", check=False, timeout=60).stdout),
            c.units_timeout, 5))
        self.result.units = self.fleetctl("list-units").stdout
        self.event("cluster", "Hello World", f"hello.service on {self.result.placement['hello.service']}")

    def placement(self, without: str = "") -> dict[str, str]:
        """{unit: node} of the active units (leaving out node `without`), from fleetctl list-units."""
        out = self.fleetctl("list-units", "--no-legend", "--full", "--fields", "unit,machine,active",
                            check=False, timeout=30).stdout
        by_ip = {ip: name for name, ip in self.result.ips.items()}
        placement = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2] == "active":
                node = by_ip.get(parts[1].split("/")[-1], parts[1])
                if node != without:
                    placement[parts[0]] = node
        return placement

    def failover(self) -> None:
        c = self.config
        victim_name = self.result.placement["web@1.service"]
        victim = next(n for n in self.nodes if n.spec.name == victim_name)
        self.result.powered_off = victim_name
        assert victim.vm is not None
        started = time.monotonic()
        victim.vm.kill()
        self.event("cluster", "powered off", f"{victim_name} (ran web@1)")
        survivors = {name: ip for name, ip in self.result.ips.items() if name != victim_name}
        moved = self._until("web@1 active on a survivor", lambda: (
            lambda placement: placement.get("web@1.service") if placement.get("web@1.service") in survivors else "")(
            self.placement(without=victim_name)), c.failover_timeout, 1.0)
        self.result.moved_to = str(moved)
        self.result.failover_seconds = round(time.monotonic() - started, 1)
        self.event("cluster", "web@1 moved", f"to {moved} after {self.result.failover_seconds} s")
        health = self.etcd_health(list(self.result.ips.values()))
        self.result.health_after = health.stdout
        if health.returncode != 3 or health.stdout.count(" is healthy: ") != len(survivors):
            raise ChainError(f"cluster: after the power-off etcd-health should say degraded with {len(survivors)} "
                             f"healthy members (exit 3), got exit {health.returncode}:\n{health.stdout}")
        self.event("cluster", "etcd degraded, serving", f"{len(survivors)} of {len(self.result.ips)} members")

    def run(self, on_event: Callable[[ClusterEvent], None] | None = None) -> ClusterResult:
        """The whole cluster; raises ChainError naming the node and stage. Torn down at the end unless
        keep, even after a failure (to look at it: how_to_reach(), then stop())."""
        if on_event is not None:
            self._on_event = on_event
        try:
            self.prepare()
            self.start_server()
            self.configure_installed_groups()
            self.start_time = time.monotonic()
            self.wall_start = time.time()
            self.bring_up_nodes()
            self.cluster_up()
            self.run_units()
            self.failover()
            self.result.total = round(time.monotonic() - self.start_time, 1)
            return self.result
        finally:
            if not self.keep:
                self.stop()

    def start_vm(self, node: NodeRun, vm: QemuVM) -> None:
        """Start a node's VM unless the demo was stopped (raises ChainError then)."""
        with self._vm_lock:
            if self._stopped:
                raise ChainError(f"{node.spec.name}: not started: the demo was stopped")
            node.vm = vm
            vm.start()

    def stop(self) -> None:
        """Stop the VMs and the server, delete the namespace (idempotent)."""
        with self._vm_lock:
            self._stopped = True
        stop_lab([node.vm for node in self.nodes if node.vm is not None], self.server, self.net)
        self.net = None

    def how_to_reach(self) -> str:
        """What --keep prints."""
        lines = [f"{name}: {' '.join(ssh_argv(self.config.netns, self.key, ip, '')[:-1])}"
                 for name, ip in self.result.ips.items()]
        return "\n".join([*lines, f"server log: {self.server_log}",
                          f"stop: kill the QEMU processes and the server, then `ip netns delete {self.config.netns}`"])


def stage_table(result: ClusterResult, nodes: tuple[NodeSpec, ...]) -> list[tuple[str, ...]]:
    """Per node: when each milestone was reached (s since the first power on) (pure)."""
    milestones = ("DHCP", "kernel", "live system", "rebooting", "cloud-config applied", "SSH ok")
    rows = []
    for node in nodes:
        rows.append((node.name, str(node.firmware), "rescue" if node.via_rescue else "PXE install",
                     *(f"{t:.0f}" if (t := result.at(node.name, m)) is not None else "-" for m in milestones)))
    return rows


STAGE_COLUMNS = ("NODE", "FIRMWARE", "INSTALL", "DHCP", "KERNEL", "LIVE", "REBOOT", "APPLIED", "SSH")

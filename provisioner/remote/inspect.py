"""What a rescue host has: disks, what holds them, memory, python3; and which disk to install to.

`gather(session)` runs facts_script.py on the host (one round trip) and parses it into `HostFacts`.
Everything after that is pure: `choose_disk` (flatcar-install `-s`), `stop_plan` (`--stop-raid`),
`format_report` (`--inspect`), each judging a disk busy by the one policy, blockdev.busy_reasons.

Why holders matter: rescue systems often auto-assemble the old RAID or activate the old LVM at boot
(coreos/bugs#664 on OVH, #152 and flatcar/init#134 for LVM); the disk is then busy, BLKRRPART fails and
the install ends half done. We detect it before touching the disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.core.sizes import format_size
from provisioner.disk.blockdev import HOLDER_TYPES, DiskUse, busy_reasons, node_from_json
from provisioner.disk.blockdev import BlockNode as Block
from provisioner.errors import DiskError, RemoteError
from provisioner.remote.session import Result, Session

FACTS_SCRIPT = Path(__file__).with_name("facts_script.py")
MIN_PYTHON = (3, 9)
# flatcar-install -s: "larger than 10 GB" means 10,000,000,000 bytes.
AUTO_MIN_SIZE = 10_000_000_000


@dataclass(frozen=True)
class HostFacts:
    """The rescue host as seen by facts_script.py."""

    hostname: str
    kernel: str
    python: tuple[int, ...]
    python_path: str
    is_root: bool
    disks: tuple[Block, ...]
    mounts: tuple[tuple[str, str], ...]
    swaps: tuple[str, ...]
    holders: dict[str, list[str]] = field(default_factory=dict)
    memory_total: int = 0
    memory_available: int = 0
    tools: dict[str, str | None] = field(default_factory=dict)
    mdstat: str = ""
    orphan_stopped: int | None = None  # pid of an installer a dropped session left running, now stopped
    states: dict[str, dict] = field(default_factory=dict)  # disk -> the rescue mode's recorded state

    def disk(self, path: str) -> Block | None:
        for block in self.disks:
            if path in (block.path, block.name, f"/dev/{block.name}"):
                return block
        return None

    @property
    def disk_use(self) -> DiskUse:
        """The mounts, swaps and holders the busy-disk policy (blockdev.busy_reasons) weighs."""
        return DiskUse(dict(self.mounts), frozenset(self.swaps), self.holders)

    @property
    def python_ok(self) -> bool:
        return tuple(self.python[:2]) >= MIN_PYTHON


def parse_facts(data: dict) -> HostFacts:
    """Turn facts_script.py's JSON into HostFacts. Raises RemoteError when lsblk failed on the host."""
    if not data.get("lsblk"):
        raise RemoteError(f"lsblk failed on the rescue host: {data.get('lsblk_error') or 'no output'}")
    memory = data.get("memory") or {}
    return HostFacts(
        hostname=data.get("hostname", ""),
        kernel=data.get("kernel", ""),
        python=tuple(data.get("python") or (0, 0, 0)),
        python_path=data.get("python_path", ""),
        is_root=data.get("euid") == 0,
        disks=tuple(node_from_json(row) for row in data["lsblk"].get("blockdevices", [])),
        mounts=tuple((m[0], m[1]) for m in data.get("mounts", []) if len(m) >= 2),
        swaps=tuple(data.get("swaps", [])),
        holders=dict(data.get("holders") or {}),
        memory_total=int(memory.get("MemTotal", 0)),
        memory_available=int(memory.get("MemAvailable", 0)),
        tools=dict(data.get("tools") or {}),
        mdstat=data.get("mdstat", ""),
        orphan_stopped=data.get("orphan_stopped"),
        states=dict(data.get("states") or {}),
    )


def gather(session: Session) -> HostFacts:
    """Run facts_script.py with the host's python3 (`--inspect`: a rescue install gathers the facts in its
    host process, host_script.py). Raises RemoteError (python3 missing, lsblk failing)."""
    result = session.run(["python3", "-"], input=FACTS_SCRIPT.read_bytes(), check=False, timeout=60)
    if result.exit_status != 0:
        raise inspection_failure(session.target.endpoint, result)
    try:
        data = json.loads(result.stdout)
    except ValueError as exc:
        raise RemoteError(f"{session.target.endpoint}: unreadable inspection output: {exc}") from None
    return parse_output(session.target.endpoint, data)


def parse_output(host: object, data: dict) -> HostFacts:
    """parse_facts, with a malformed object reported as one line naming `host`. Raises RemoteError."""
    try:
        return parse_facts(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RemoteError(f"{host}: unreadable inspection output: {exc}") from None


def inspection_failure(host: object, result: Result) -> RemoteError:
    """The error for an inspection that ended without facts (exit status 127: no python3 there)."""
    if result.exit_status == 127:
        return RemoteError(f"{host}: python3 not found on the rescue host; the installer needs python3 >= "
                           f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} (standard library only)")
    last = result.stderr.strip().splitlines()[-1:] or ["no output"]
    return RemoteError(f"{host}: inspecting the host failed (exit {result.exit_status}): {last[0]}")


@dataclass(frozen=True)
class DiskChoice:
    disk: Block
    rejected: tuple[str, ...]  # one line per disk passed over, with the reason


def choose_disk(facts: HostFacts, min_size: int = AUTO_MIN_SIZE, types: tuple[str, ...] = ("disk",)) -> DiskChoice:
    """`--disk auto`, as flatcar-install -s: the smallest unused disk larger than `min_size` bytes;
    ties go to the alphabetically first name. Unused = no mounts, swap or md/dm holders; also skipped:
    read-only devices and types not in `types`.

    Raises DiskError listing every disk and why it was passed over when none qualifies.
    """
    rejected: list[str] = []
    candidates: list[Block] = []
    for disk in facts.disks:
        if disk.type not in types:
            continue
        if disk.read_only:
            rejected.append(f"{disk.path}: read-only")
        elif disk.size <= min_size:
            rejected.append(f"{disk.path}: {format_size(disk.size)} is not larger than {format_size(min_size)}")
        elif reasons := busy_reasons(disk, facts.disk_use):
            rejected.append(f"{disk.path}: busy ({reasons[0]})")
        else:
            candidates.append(disk)
    if not candidates:
        detail = "; ".join(rejected) if rejected else f"no device of type {'/'.join(types)}"
        raise DiskError(f"--disk auto: no unused disk larger than {format_size(min_size)} ({detail})")
    chosen = min(candidates, key=lambda d: (d.size, d.name))
    return DiskChoice(chosen, tuple(rejected))


def stop_plan(facts: HostFacts, disk: Block) -> list[list[str]]:
    """Commands that release `disk` from auto-assembled RAID/LVM (`--stop-raid`), topmost holder first.

    Raises DiskError when something on the disk is mounted or swapped on: stopping an array under a
    mounted filesystem is the operator's call, not ours.
    """
    blocking = [r for r in busy_reasons(disk, facts.disk_use) if " is mounted on " in r or " as swap" in r]
    if blocking:
        raise DiskError(f"{disk.path}: cannot stop RAID/LVM while in use: {blocking[0]}; unmount it first")
    commands: list[list[str]] = []
    members: list[str] = []

    def visit(node: Block, parent: Block | None) -> None:
        for child in node.children:
            visit(child, node)
        if node is disk or node.type not in HOLDER_TYPES:
            return
        if node.type in ("lvm", "dm", "crypt", "mpath"):
            command = ["dmsetup", "remove", node.name]
        else:
            command = ["mdadm", "--stop", node.path]
            if parent is not None and parent.path not in members:
                members.append(parent.path)
        if command not in commands:
            commands.append(command)

    visit(disk, None)
    # A stopped array comes back on the next udev event while its superblock survives in a part of the
    # disk the image does not overwrite; clear the members on this disk (the other mirror half is untouched).
    commands += [["mdadm", "--zero-superblock", member] for member in members]
    return commands


def format_report(facts: HostFacts, min_size: int = AUTO_MIN_SIZE, types: tuple[str, ...] = ("disk",)) -> str:
    """The `--inspect` text: host, python3, memory, then each disk with size, use and holders."""
    python = ".".join(str(p) for p in facts.python)
    lines = [
        f"host: {facts.hostname} (kernel {facts.kernel}){'' if facts.is_root else ' - NOT logged in as root'}",
        f"python3: {python} at {facts.python_path}" + ("" if facts.python_ok else
                                                       " - too old, the installer needs >= 3.9"),
        f"memory: {format_size(facts.memory_total)} total, {format_size(facts.memory_available)} available",
    ]
    missing = sorted(tool for tool, path in facts.tools.items() if path is None)
    if missing:
        lines.append(f"tools missing: {', '.join(missing)}")
    lines.append("disks:")
    for disk in facts.disks:
        if disk.type not in types and disk.type != "disk":
            continue
        reasons = busy_reasons(disk, facts.disk_use)
        state = "busy: " + "; ".join(reasons) if reasons else "unused"
        lines.append(f"  {disk.path}  {disk.type}  {format_size(disk.size)}  {state}")
        for node in disk.walk():
            if node is disk:
                continue
            extra = " ".join(x for x in (node.fstype, node.label and f"label={node.label}",
                                         *(f"on {m}" for m in node.mountpoints)) if x)
            lines.append(f"    {node.path}  {node.type}  {format_size(node.size)}  {extra}".rstrip())
    try:
        choice = choose_disk(facts, min_size, types)
        lines.append(f"--disk auto would choose {choice.disk.path} ({format_size(choice.disk.size)})")
    except DiskError as exc:
        lines.append(str(exc))
    if facts.mdstat.count("active"):
        lines.append("md arrays are active (/proc/mdstat); --stop-raid stops those on the target disk")
    return "\n".join(lines)

"""The I/O shell of `provisioner disk`: read the disk, plan, then apply the plan under a journal.

Every command follows the same path (`_execute`): resolve the argument (a whole disk or an
image file, attached with `losetup --partscan` for the duration), wait until no other process
holds the disk (a killed run's e2fsck or resize2fs goes on without its parent), read the table,
look for an unfinished journal of this disk, and then either resume that job or plan a new one.
Applying takes an exclusive flock on the disk (systemd's BLOCK_DEVICE_LOCKING convention, which
udev honours, as growpart does), runs each step, records it, and at the end checks that the table
on disk is exactly the planned one and that both GPT headers are valid. docs/resize.md says what
each step leaves behind when the process is killed in the middle of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from provisioner.core.commands import run
from provisioner.core.files import fsync_path
from provisioner.core.logs import step as timed_step
from provisioner.core.sizes import format_size
from provisioner.disk import blockdev, e2undo, filesystems, layout
from provisioner.disk import plan as planner
from provisioner.disk.gpt import Partition, partition_layout, read_gpt
from provisioner.disk.journal import Journal, fault_point, state_dir
from provisioner.disk.plan import Plan
from provisioner.disk.table import DiskTable
from provisioner.errors import DiskError, ProvisionerError

log = logging.getLogger("provisioner.disk")

TYPE_NAMES = {guid: name for name, guid in layout.TYPE_BY_NAME.items()}
# How long a command waits for another program to let go of the disk (e2fsck of a 2 TB ROOT takes
# minutes, so this only bounds the wait; --wait changes it).
DEFAULT_WAIT = 60.0


@dataclass(frozen=True)
class Outcome:
    """What a command did: the plan, whether it was applied, and from where it resumed."""

    plan: Plan
    applied: bool
    resumed_after: tuple[str, ...] = ()  # steps a previous, interrupted run had finished
    history: str = ""
    resumed: bool = False  # an interrupted run of the same command was found and finished

    def summary(self) -> str:
        if self.plan.nothing_to_do:
            return f"nothing to do: {self.plan.nothing_to_do}"
        if not self.applied:
            return self.plan.render()
        finished = ", ".join(self.resumed_after) or "no step"
        resumed = f" (resumed an interrupted run that had finished: {finished})" if self.resumed else ""
        return f"done: {self.plan.key}{resumed}; GPT backup and journal in {self.history}"


# ------------------------------------------------------------------------------ device access


def _is_image_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def attached(path: str, *, read_only: bool = False, wait: float | None = None) -> Iterator[str]:
    """Yield a whole-disk block device for `path`: the disk itself, or a loop device for an image file.

    `wait`: first wait up to that many seconds until no other process holds the disk (see
    wait_until_free). Raises DiskError for a missing path or a partition (the operator must name
    the whole disk), and when the disk stays held.
    """
    blockdev.resolve_disk_argument(path)
    image = _is_image_file(path)
    if not image and not blockdev.is_block_device(path):
        raise DiskError(f"{path}: not a block device or an image file")
    if wait is not None:
        wait_until_free(path, wait)
    if not image:
        yield path
        return
    if blockdev.loops_backed_by(path):
        # A killed run's loop device may still hold what its tools wrote in its own page cache;
        # a new loop device reads the file underneath: write that back first (sync covers the
        # loop's partitions too, whose nodes may not even exist).
        log.info("%s: flushing the loop devices a previous run left attached", path)
        os.sync()
    argv = ["losetup", "--find", "--show", "--partscan"] + (["--read-only"] if read_only else []) + [path]
    loop = run(argv).stdout.strip()
    try:
        yield loop
    finally:
        blockdev.forget_partitions(loop)
        run(["losetup", "-d", loop], check=False)
        if not read_only:
            fsync_path(path)  # what the loop device wrote is durable (and seen by hole-aware copies)


@contextlib.contextmanager
def disk_lock(device: str, timeout: float = 10.0) -> Iterator[None]:
    """Exclusive flock on the whole disk while we change it (udev skips locked disks)."""
    fd = os.open(device, os.O_RDONLY)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DiskError(f"{device}: another program holds a lock on the disk") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def _openers(path: str) -> list[blockdev.Opener]:
    if _is_image_file(path):  # through the file, or a loop device a killed run left on it
        return blockdev.openers(blockdev.loops_backed_by(path), (path,))
    return blockdev.openers([path])


def wait_until_free(path: str, timeout: float) -> None:
    """Wait up to `timeout` s until no other process has the disk (or image file) `path` open.

    A run killed by itself (not with its process group) leaves its e2fsck or resize2fs running on
    the disk; starting another one under it would corrupt the filesystem. Raises DiskError naming
    each such process when they are still there after `timeout`.
    """
    deadline = time.monotonic() + timeout
    held = _openers(path)
    if held:
        log.warning("%s; waiting up to %g s for it to finish", "; ".join(o.describe() for o in held), timeout)
    while held:
        if time.monotonic() >= deadline:
            running = "; ".join(o.describe() for o in held)
            raise DiskError(
                f"{running} after {timeout:g} s: let it finish (or kill it), then run the same command again"
            )
        time.sleep(0.2)
        held = _openers(path)


def _read_table(device: str) -> DiskTable:
    """The planner's view of `device`'s GPT. Raises DiskError (unreadable, no valid header)."""
    return DiskTable.from_gpt(read_gpt(device, require_valid=False), device)


def ensure_partition_nodes(device: str, table: DiskTable) -> None:
    """Make /dev nodes exist for the table's partitions (partx on kernels without a table parser)."""
    expected = partition_layout(table.partitions)
    if blockdev.kernel_partitions(device) == expected and all(
        blockdev.is_block_device(blockdev.partition_path(device, n)) for n in expected
    ):
        return
    blockdev.reread_partitions(device, expected, attempts=1 if _busy(device) else 5)


def _busy(device: str) -> bool:
    return bool(blockdev.local_busy_reasons(device))


def root_fs(device: str, table: DiskTable, *, minimum: bool = False) -> planner.FsInfo:
    if table.partition(planner.ROOT) is None:
        return planner.FsInfo(fstype=None)
    return filesystems.probe(blockdev.partition_path(device, planner.ROOT), minimum=minimum)


# ------------------------------------------------------------------------------ applying steps


def _sgdisk_write(device: str, part: Partition, *, replace: bool, relocate: bool) -> None:
    # -a 1: never let sgdisk move a start to its own 2048-sector grid ("Moved requested sector").
    # One invocation, as growpart does, so there is no moment with partition N missing on disk.
    n = part.number
    argv = ["sgdisk", "-a", "1"]
    if relocate:
        argv.append("-e")
    if replace:
        argv.append(f"-d={n}")
    argv += [
        f"-n={n}:{part.start}:{part.end}",
        f"-t={n}:{part.type_guid}",
        f"-u={n}:{part.partuuid}",
        f"-c={n}:{part.name}",
        f"-A={n}:=:{part.attributes:016x}",
        device,
    ]
    run(argv)


def _same(a: Partition | None, b: Partition) -> bool:
    return a is not None and dataclasses.asdict(a) == dataclasses.asdict(b)


def _resize_ext4_offline(
    partition: str, step: planner.ResizeFilesystem, journal: Journal, *, check_first: bool,
) -> None:
    """resize2fs with its undo file in the journal; a previous, interrupted resize2fs is undone first.

    After e2undo the filesystem is the one from before that resize2fs, which wants a fresh
    e2fsck -f before it resizes again (resize/main.c refuses otherwise), so it is checked first.
    """
    undo = journal.undo_path(step.name)
    record = e2undo.replay(undo, partition)
    if record.state is e2undo.UndoState.INTERRUPTED:
        log.warning("%s: resize2fs was interrupted; replayed its undo file (%d records) to put the "
                    "filesystem back as it was before, then resizing again", partition, record.keys)
    e2undo.discard(undo)
    if check_first or record.state is not e2undo.UndoState.EMPTY:
        filesystems.check_ext4(partition)
    filesystems.resize(partition, step.fstype, step.size_bytes, None, undo=undo)
    e2undo.discard(undo)


def apply_step(device: str, step: planner.Step, journal: Journal, *, interrupted: bool = False) -> None:
    """Apply one step. Every step is idempotent: a re-run after a crash may repeat the last one.

    `interrupted`: a previous run may have been killed inside this step (the first step left in a
    resumed job), so a filesystem step checks the filesystem before it changes it again.
    Raises DiskError and CommandError."""
    if isinstance(step, planner.BackupTable):
        # Taken once: a repeat after a crash must not replace the copy of the untouched table.
        if not journal.backup_path.exists():
            partial = journal.backup_path.with_name(journal.backup_path.name + ".tmp")
            run(["sgdisk", f"--backup={partial}", device])
            fsync_path(str(partial))
            os.replace(partial, journal.backup_path)
            fsync_path(journal.directory)  # durable before any change, even if later marks are lost
    elif isinstance(step, planner.CheckFilesystem):
        filesystems.check_ext4(blockdev.partition_path(device, step.number))
    elif isinstance(step, planner.ResizeFilesystem):
        partition = blockdev.partition_path(device, step.number)
        mountpoint = filesystems.mountpoint_of(partition)
        if step.size_bytes is not None and mountpoint:
            raise DiskError(f"{partition} is mounted on {mountpoint}: ext4 cannot shrink online; unmount it")
        if step.fstype == "ext4" and not mountpoint:
            # Planned online but resumed offline: resize2fs wants a fresh e2fsck -f first too.
            _resize_ext4_offline(partition, step, journal, check_first=interrupted or bool(step.mountpoint))
        else:
            # Online growth is the kernel's, journaled by the filesystem itself: a kill leaves it
            # consistent at some size in between, and running the tool again finishes it.
            filesystems.resize(partition, step.fstype, step.size_bytes, mountpoint)
    elif isinstance(step, planner.WritePartition):
        table = _read_table(device)
        current = table.partition(step.partition.number)
        # sgdisk writes the backup table first and the primary last: a kill in between leaves one
        # copy new and the other stale or torn (table.problems), and the write is simply repeated.
        if _same(current, step.partition) and not table.problems and (table.backup_at_end or not step.relocate_backup):
            log.info("partition %d is already as planned", step.partition.number)
            return
        if step.replace and (current is None or current.start != step.partition.start):
            raise DiskError(f"{device}: partition {step.partition.number} is not where the plan expects it; stopping")
        replace = step.replace or current is not None
        if current is not None and not step.replace and current.partuuid != step.partition.partuuid:
            raise DiskError(f"{device}: partition {step.partition.number} appeared since the plan was made; stopping")
        _sgdisk_write(device, step.partition, replace=replace, relocate=step.relocate_backup)
    elif isinstance(step, planner.RelocateBackup):
        run(["sgdisk", "-e", device])
    elif isinstance(step, planner.RereadTable):
        blockdev.reread_partitions(device, step.expected(), attempts=1 if _busy(device) else 5)
    elif isinstance(step, planner.MakeFilesystem):
        filesystems.make(blockdev.partition_path(device, step.number), step.fstype, step.label)
    else:
        raise DiskError(f"unknown step {step.name}")


def verify_result(device: str, plan: Plan) -> DiskTable:
    """Raise DiskError unless the table is exactly `plan.expected` and both headers are valid."""
    table = _read_table(device)
    if table.problems:
        raise DiskError(f"{device}: GPT problems after {plan.command}: {'; '.join(table.problems)}")
    got = {p.number: p for p in table.partitions}
    want = {p.number: p for p in plan.expected}
    if got != want:
        diff = sorted(n for n in set(got) | set(want) if got.get(n) != want.get(n))
        raise DiskError(f"{device}: after {plan.command} partitions {diff} differ from the plan")
    return table


def _check_journal_matches(device: str, table: DiskTable, journal: Journal) -> None:
    # The CoreOS image's magic disk GUID is shared by every fresh install, so the GUID alone may
    # point at another disk's journal: the PARTUUIDs of the partitions it had must match too.
    for before in journal.table_before:
        current = table.partition(before.number)
        if current is None or current.partuuid != before.partuuid:
            raise DiskError(
                f"{device}: the unfinished journal in {journal.directory} was written for another disk "
                f"with the same disk GUID (partition {before.number} differs); move it away to continue"
            )


def _check_room_for_undo(root: Path, plan: Plan) -> None:
    """Refuse before any change when the state dir cannot hold the plan's resize2fs undo files."""
    need = plan.undo_bytes
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if need > free:
        raise DiskError(
            f"{root}: {format_size(free)} free, but resize2fs's undo file may need up to {format_size(need)} "
            "(the old contents of every block it moves); free space there or pass --state-dir on a larger filesystem"
        )


def _restore_outlook(device: str, journal: Journal) -> str:
    """What `disk restore` would do now: the end of the error line of a job that stopped."""
    if not journal.backup_path.exists():
        return f"'disk restore --yes' would drop the job ('{journal.plan.key}' changed nothing yet)"
    try:
        refusal = _restore_refusal(device, _read_table(device), journal)
    except ProvisionerError as exc:
        refusal = str(exc)
    if refusal:
        return f"'disk restore' would refuse ({refusal})"
    undo = " after replaying resize2fs's undo file" if _interrupted_undo_steps(journal) else ""
    return f"'disk restore --yes' would put back the partition table from before '{journal.plan.key}'{undo}"


def _finished_already(root: Path, table: DiskTable, key: str) -> Plan | None:
    """An empty plan when the disk's last job was this same command and the table is still what it
    made: a run killed after its journal moved to history (it had finished) is then run again."""
    last = Journal.last_finished(root, table.disk_guid)
    if last is None or last.plan.key != key or last.plan.expected != table.partitions:
        return None
    done = f"'{key}' already finished (journal in {last.directory})"
    return dataclasses.replace(last.plan, steps=(), nothing_to_do=done)


def _execute(
    path: str,
    key: str,
    make_plan: Callable[[str, DiskTable], Plan],
    *,
    state: str | None,
    dry_run: bool,
    wait: float,
) -> Outcome:
    with attached(path, read_only=dry_run, wait=None if dry_run else wait) as device:
        table = _read_table(device)
        root = state_dir(state)
        journal = Journal.load(root, table.disk_guid)
        if journal is not None:
            saved = journal.plan
            _check_journal_matches(device, table, journal)
            if saved.key != key:
                raise DiskError(
                    f"{path}: an interrupted '{saved.key}' is unfinished (journal {journal.path}); "
                    "run that command again to finish it first"
                )
            plan, done = saved, journal.done
            log.warning("%s: resuming '%s' after steps: %s", path, key, ", ".join(done) or "none")
        else:
            ensure_partition_nodes(device, table)
            plan, done = _finished_already(root, table, key) or make_plan(device, table), []
        if dry_run or plan.nothing_to_do:
            if done:
                remaining = [s for s in plan.steps if s.name not in done]
                plan = dataclasses.replace(plan, steps=tuple(remaining), notes=plan.notes + (
                    f"an interrupted run finished: {', '.join(done)}; the steps above are what is left",))
            return Outcome(plan, applied=False, resumed_after=tuple(done), resumed=journal is not None)
        resumed = journal is not None
        if journal is None:
            _check_room_for_undo(root, plan)
            journal = Journal.start(root, table, plan, path)
        else:
            ensure_partition_nodes(device, table)
        for note in plan.notes:
            log.warning("%s", note)
        pending = [step for step in plan.steps if step.name not in done]
        with disk_lock(device):
            for step in pending:
                fault_point("before", step.name)
                with timed_step(f"{plan.command}: {step.name}", log):
                    try:
                        apply_step(device, step, journal, interrupted=resumed and step is pending[0])
                    except ProvisionerError as exc:
                        raise DiskError(
                            f"{exc}; the job is kept in {journal.directory}: run the same command again once "
                            f"that is fixed, or {_restore_outlook(device, journal)}"
                        ) from None
                fault_point("after", step.name)
                journal.mark_done(step.name)
            verify_result(device, plan)
        history = journal.finish()
        return Outcome(plan, applied=True, resumed_after=tuple(done), history=str(history), resumed=resumed)


# ------------------------------------------------------------------------------ commands


def grow(path: str, *, state: str | None = None, dry_run: bool = False, wait: float = DEFAULT_WAIT) -> Outcome:
    """Grow ROOT to the next partition or the disk end, and its filesystem (online or offline).

    Raises DiskError (refusals, failed steps) and CommandError (a tool failed).
    """
    def make_plan(device: str, table: DiskTable) -> Plan:
        return planner.plan_grow(table, root_fs(device, table))

    return _execute(path, planner.grow_key(), make_plan, state=state, dry_run=dry_run, wait=wait)


def shrink_root(
    path: str, size: int, *, state: str | None = None, dry_run: bool = False, wait: float = DEFAULT_WAIT,
) -> Outcome:
    """Shrink ROOT's ext4 and partition 9 to `size` bytes (offline only).

    Raises DiskError (mounted, not ext4, below used space, failed steps), UsageError (not smaller).
    """
    def make_plan(device: str, table: DiskTable) -> Plan:
        return planner.plan_shrink_root(table, root_fs(device, table, minimum=True), size)

    return _execute(path, planner.shrink_key(size), make_plan, state=state, dry_run=dry_run, wait=wait)


def add(
    path: str,
    *,
    label: str,
    size: int,
    fstype: str,
    type_name: str | None = None,
    number: int | None = None,
    state: str | None = None,
    dry_run: bool = False,
    wait: float = DEFAULT_WAIT,
) -> Outcome:
    """Add a partition after ROOT, optionally with a filesystem.

    Raises UsageError (bad label/type/fs/number), DiskError (no room, failed steps).
    """
    planner.check_filesystem_name(fstype)
    planner.resolve_type(type_name, fstype)
    new_partuuid = str(uuid.uuid4()).upper()

    def make_plan(device: str, table: DiskTable) -> Plan:
        return planner.plan_add(
            table, label=label, size=size, fstype=fstype, new_partuuid=new_partuuid,
            type_name=type_name, number=number,
        )

    key = planner.add_key(label=label, size=size, fstype=fstype, type_name=type_name, number=number)
    return _execute(path, key, make_plan, state=state, dry_run=dry_run, wait=wait)


def _interrupted_undo_steps(journal: Journal) -> list[planner.ResizeFilesystem]:
    """The plan's offline resizes whose resize2fs was killed before it finished (its undo file says so)."""
    return [
        step for step in journal.plan.steps
        if isinstance(step, planner.ResizeFilesystem)
        and e2undo.read_record(journal.undo_path(step.name)).state is e2undo.UndoState.INTERRUPTED
    ]


def _restore_refusal(device: str, table: DiskTable, journal: Journal) -> str:
    """Why the table from before the job cannot be put back ('' when it can): a filesystem that
    already outgrew its old partition would be cut. A filesystem whose resize2fs was interrupted is
    measured as its undo file will leave it (as it was before)."""
    undone = {step.number for step in _interrupted_undo_steps(journal)}
    ss = table.sector_size
    for old in journal.table_before:
        current = table.partition(old.number)
        if current is None or current.end <= old.end or old.number in undone:
            continue
        fs = filesystems.probe(blockdev.partition_path(device, old.number))
        if fs.size_bytes > old.sectors * ss:
            return (
                f"partition {old.number}'s {fs.fstype} is already {format_size(fs.size_bytes)}, larger than the "
                f"partition was ({format_size(old.sectors * ss)}): the old table would cut it"
            )
    return ""


def restore(path: str, *, state: str | None = None, wait: float = DEFAULT_WAIT) -> str:
    """Roll back the unfinished job of a disk: load the GPT saved before it and drop the job.

    A resize2fs the job was running when it was killed is undone first (e2undo with its undo file).
    Safe only while every filesystem still fits in its old partition (a shrink, an add, a grow
    whose filesystem step has not run); otherwise refuses and says to finish the job instead.
    Returns a one-line summary. Raises DiskError (no job, unsafe, failed).
    """
    with attached(path, wait=wait) as device:
        table = _read_table(device)
        journal = Journal.load(state_dir(state), table.disk_guid)
        if journal is None:
            raise DiskError(f"{path}: no unfinished job to roll back (state dir {state_dir(state)})")
        _check_journal_matches(device, table, journal)
        key = journal.plan.key
        if not journal.backup_path.exists():  # the first step never finished: nothing was changed
            history = journal.finish("dropped")
            return f"dropped '{key}': it had changed nothing; journal in {history}"
        ensure_partition_nodes(device, table)
        refusal = _restore_refusal(device, table, journal)
        if refusal:
            raise DiskError(f"{path}: {refusal}; run '{key}' again to finish instead")
        before = {p.number: (p.start, p.sectors) for p in journal.table_before}
        with disk_lock(device):
            replayed = _interrupted_undo_steps(journal)
            for step in replayed:
                undo = journal.undo_path(step.name)
                e2undo.replay(undo, blockdev.partition_path(device, step.number))
                e2undo.discard(undo)
            run(["sgdisk", f"--load-backup={journal.backup_path}", device])
            blockdev.reread_partitions(device, before, attempts=1 if _busy(device) else 5)
        restored = _read_table(device)
        if restored.partitions != journal.table_before:
            raise DiskError(f"{path}: the table after --load-backup differs from the saved one; journal kept")
        history = journal.finish("restored")
        undone = " and undid its interrupted resize2fs (e2undo)" if replayed else ""
        return f"restored the table from before '{key}'{undone}; journal and backup in {history}"


def show(path: str, *, state: str | None = None) -> dict:
    """The disk's layout as data: partitions with type names, sizes, filesystems, used space,
    and the unfinished job of the disk if a journal holds one.

    Raises DiskError when the path is not a disk/image or has no valid GPT.
    """
    with attached(path, read_only=True) as device:
        table = _read_table(device)
        journal = Journal.load(state_dir(state), table.disk_guid)
        ensure_partition_nodes(device, table)
        ss = table.sector_size
        rows = []
        for part in table.partitions:
            fs = filesystems.probe(blockdev.partition_path(device, part.number))
            rows.append({
                "number": part.number,
                "name": part.name,
                "type": TYPE_NAMES.get(part.type_guid.upper(), part.type_guid),
                "type_guid": part.type_guid,
                "partuuid": part.partuuid,
                "start": part.start,
                "end": part.end,
                "size": part.sectors * ss,
                "attributes": f"{part.attributes:016x}",
                "fs": fs.fstype,
                "fs_label": fs.label,
                "fs_size": fs.size_bytes or None,
                "used": fs.used_bytes or None,
                "mountpoint": fs.mountpoint,
            })
        return {
            "device": path,
            "size": table.total_sectors * ss,
            "sector_size": ss,
            "disk_guid": table.disk_guid,
            "backup_gpt_at_end": table.backup_at_end,
            "problems": list(table.problems),
            "unfinished_job": journal.plan.key if journal is not None else None,
            "partitions": rows,
            "free": [
                {"start": a, "end": b, "size": (b - a + 1) * ss}
                for a, b in table.free_extents(table.max_last_usable) if (b - a + 1) * ss >= 1 << 20
            ],
        }


def format_show(data: dict) -> str:
    """Human table for `disk show`."""
    lines = [
        f"{data['device']}: {format_size(data['size'])}, disk GUID {data['disk_guid']}, "
        f"backup GPT {'at the end' if data['backup_gpt_at_end'] else 'NOT at the end (run disk grow)'}",
        f"{'#':>3} {'name':<12} {'type':<15} {'start':>10} {'end':>10} {'size':>10} {'fs':<6} {'used':>10}  mount",
    ]
    for row in data["partitions"]:
        used = format_size(row["used"]) if row["used"] else "-"
        lines.append(
            f"{row['number']:>3} {row['name']:<12} {row['type'][:15]:<15} {row['start']:>10} {row['end']:>10} "
            f"{format_size(row['size']):>10} {(row['fs'] or '-'):<6} {used:>10}  {row['mountpoint'] or ''}"
        )
    for free in data["free"]:
        size = format_size(free["size"])
        lines.append(f"    {'(free)':<12} {'':<15} {free['start']:>10} {free['end']:>10} {size:>10}")
    if data.get("unfinished_job"):
        lines.append(f"unfinished: '{data['unfinished_job']}' was interrupted; run it again to finish")
    return "\n".join(lines)

"""`provisioner disk show|grow|shrink-root|add|plan`: resize and repartition an installed disk.

Parse options, call one function of provisioner.disk.resize, print the result: data to stdout,
logs and warnings to stderr. `disk plan <command> ...` is the same command with --dry-run.
Changing commands that can lose data if misused (shrink-root, add, restore) need --yes or an
interactive confirmation; grow only ever adds space, as first boot does, and needs neither.
`--yes` has no short form here: `-y` is flatcar-install's dry run in `provisioner install`.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import typer

from provisioner.cli.output import confirm, emit, emit_json, require_terminal
from provisioner.core.sizes import parse_size
from provisioner.disk import resize
from provisioner.errors import UsageError

disk_app = typer.Typer(help="Show, grow, shrink and repartition an installed CoreOS-layout disk.", no_args_is_help=True)
plan_app = typer.Typer(help="Print what grow/shrink-root/add would do, step by step; change nothing.",
                       no_args_is_help=True)

DISK_HELP = "The whole disk (/dev/sda, /dev/nvme0n1, /dev/loop0) or a disk image file."
STATE_HELP = "Journal directory (default $PROVISIONER_STATE_DIR or /var/lib/provisioner/disk-journal)."
WAIT_HELP = "Seconds to wait for a program still using the disk (an interrupted run's e2fsck or resize2fs)."


def _size(text: str, option: str, *, allow_rest: bool = False) -> int:
    try:
        return parse_size(text, allow_rest=allow_rest)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


class Filesystem(StrEnum):
    """What `disk add --fs` puts on the new partition."""

    EXT4 = "ext4"
    XFS = "xfs"
    BTRFS = "btrfs"
    SWAP = "swap"
    NONE = "none"


def _print(outcome: resize.Outcome, as_json: bool) -> None:
    if as_json:
        data = outcome.plan.to_dict()
        data.update(
            applied=outcome.applied, resumed=outcome.resumed, resumed_after=list(outcome.resumed_after),
            history=outcome.history,
        )
        emit_json(data)
        return
    if not outcome.applied and not outcome.plan.nothing_to_do:
        emit(outcome.plan.render())
    else:
        emit(outcome.summary())


def _confirm(command: str, yes: bool, dry_run: bool, preview: Callable[[], resize.Outcome]) -> bool:
    """Destructive commands need --yes, or a 'y' typed at a terminal after seeing the plan.

    Returns False when the plan turns out to be empty (the preview said so; nothing to apply)."""
    if yes or dry_run:
        return True
    refusal = f"{command} changes the partition table: pass --yes (or --dry-run to see the plan)"
    require_terminal(refusal)
    outcome = preview()
    if outcome.plan.nothing_to_do:
        emit(outcome.summary())
        return False
    emit(outcome.plan.render())
    confirm("apply this plan?", yes=False, refusal=refusal)
    return True


def show_cmd(
    disk: str = typer.Argument(..., help=DISK_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    state_dir: str | None = typer.Option(None, "--state-dir", help=STATE_HELP),
) -> None:
    """Numbers, labels, types, sizes, filesystems and used space of each partition."""
    data = resize.show(disk, state=state_dir)
    if as_json:
        emit_json(data)
    else:
        emit(resize.format_show(data))


def restore_cmd(
    disk: str = typer.Argument(..., help=DISK_HELP),
    yes: bool = typer.Option(False, "--yes", help="Apply without asking."),
    state_dir: str | None = typer.Option(None, "--state-dir", help=STATE_HELP),
    wait: float = typer.Option(resize.DEFAULT_WAIT, "--wait", min=0, help=WAIT_HELP),
) -> None:
    """Roll back an interrupted grow/shrink-root/add: put back the table saved before it (when safe)."""
    confirm("put back the partition table saved before the unfinished job?", yes=yes,
            refusal="restore rewrites the partition table: pass --yes")
    emit(resize.restore(disk, state=state_dir, wait=wait))


def _grow(disk: str, state_dir: str | None, dry_run: bool, as_json: bool, wait: float) -> None:
    _print(resize.grow(disk, state=state_dir, dry_run=dry_run, wait=wait), as_json)


def _shrink(disk: str, size: str, state_dir: str | None, dry_run: bool, yes: bool, as_json: bool,
            wait: float) -> None:
    nbytes = _size(size, "--size")
    if _confirm("shrink-root", yes, dry_run,
                lambda: resize.shrink_root(disk, nbytes, state=state_dir, dry_run=True)):
        _print(resize.shrink_root(disk, nbytes, state=state_dir, dry_run=dry_run, wait=wait), as_json)


def _add(disk: str, label: str, size: str, fs: Filesystem, type_name: str | None, number: int | None,
         state_dir: str | None, dry_run: bool, yes: bool, as_json: bool, wait: float) -> None:
    nbytes = _size(size, "--size", allow_rest=True)

    def call(dry: bool) -> resize.Outcome:
        return resize.add(
            disk, label=label, size=nbytes, fstype=fs.value, type_name=type_name, number=number,
            state=state_dir, dry_run=dry, wait=wait,
        )

    if _confirm("add", yes, dry_run, lambda: call(True)):
        _print(call(dry_run), as_json)


def _make_commands(dry_run_only: bool):
    """The grow/shrink-root/add commands; `disk plan` gets them without --dry-run and --yes."""

    def grow_cmd(
        disk: str = typer.Argument(..., help=DISK_HELP),
        dry_run: bool = typer.Option(dry_run_only, "--dry-run", "-n", help="Print the plan; change nothing.",
                                     hidden=dry_run_only),
        state_dir: str | None = typer.Option(None, "--state-dir", help=STATE_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the plan/result as JSON."),
        wait: float = typer.Option(resize.DEFAULT_WAIT, "--wait", min=0, help=WAIT_HELP, hidden=dry_run_only),
    ) -> None:
        """Grow ROOT (9) up to the next partition or the disk end, then its filesystem (online or offline)."""
        _grow(disk, state_dir, dry_run or dry_run_only, as_json, wait)

    def shrink_cmd(
        disk: str = typer.Argument(..., help=DISK_HELP),
        size: str = typer.Option(..., "--size", help="New ROOT size (100G, 512MiB, ...), rounded up to 1 MiB."),
        dry_run: bool = typer.Option(dry_run_only, "--dry-run", "-n", help="Print the plan; change nothing.",
                                     hidden=dry_run_only),
        yes: bool = typer.Option(False, "--yes", help="Apply without asking.", hidden=dry_run_only),
        state_dir: str | None = typer.Option(None, "--state-dir", help=STATE_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the plan/result as JSON."),
        wait: float = typer.Option(resize.DEFAULT_WAIT, "--wait", min=0, help=WAIT_HELP, hidden=dry_run_only),
    ) -> None:
        """Shrink ROOT's ext4 and partition 9 (offline only), keeping start, type, PARTUUID, label, attributes."""
        _shrink(disk, size, state_dir, dry_run or dry_run_only, yes, as_json, wait)

    def add_cmd(
        disk: str = typer.Argument(..., help=DISK_HELP),
        label: str = typer.Option(..., "--label", help="GPT partition name (also the filesystem label)."),
        size: str = typer.Option(..., "--size", help="Size (500G, 1TiB, ...) or 'rest'."),
        fs: Filesystem = typer.Option(Filesystem.NONE, "--fs", help="Filesystem on the new partition."),
        type_name: str | None = typer.Option(
            None, "--type", help="linux-data (default), linux-swap, raid, lvm, or a type GUID."),
        number: int | None = typer.Option(None, "--number", help="Partition number (default: first free from 10)."),
        dry_run: bool = typer.Option(dry_run_only, "--dry-run", "-n", help="Print the plan; change nothing.",
                                     hidden=dry_run_only),
        yes: bool = typer.Option(False, "--yes", help="Apply without asking.", hidden=dry_run_only),
        state_dir: str | None = typer.Option(None, "--state-dir", help=STATE_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the plan/result as JSON."),
        wait: float = typer.Option(resize.DEFAULT_WAIT, "--wait", min=0, help=WAIT_HELP, hidden=dry_run_only),
    ) -> None:
        """Add a partition in the free space right after ROOT, optionally with a filesystem."""
        _add(disk, label, size, fs, type_name, number, state_dir, dry_run or dry_run_only, yes, as_json, wait)

    return grow_cmd, shrink_cmd, add_cmd


def register(app: typer.Typer) -> None:
    grow_cmd, shrink_cmd, add_cmd = _make_commands(dry_run_only=False)
    disk_app.command("show")(show_cmd)
    disk_app.command("grow")(grow_cmd)
    disk_app.command("shrink-root")(shrink_cmd)
    disk_app.command("add")(add_cmd)
    disk_app.command("restore")(restore_cmd)
    plan_grow, plan_shrink, plan_add = _make_commands(dry_run_only=True)
    plan_app.command("grow")(plan_grow)
    plan_app.command("shrink-root")(plan_shrink)
    plan_app.command("add")(plan_add)
    disk_app.add_typer(plan_app, name="plan")
    app.add_typer(disk_app, name="disk")

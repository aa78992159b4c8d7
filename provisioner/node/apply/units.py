"""`coreos.units` (plus the units generated from coreos.etcd/etcd2/fleet/locksmith/update) -> systemd.

coreos-cloudinit's processUnits (initialize/config.go), per unit in order: a unit without a name is
skipped; `content` is written to /etc/systemd/<group>/<name> (/run/... when `runtime`; group `network`
for .network/.netdev/.link, else `system`); each drop-in with a name and content goes to
<dir>/<name>.d/<drop-in>; `mask` replaces whatever is at the unit's path with a link to /dev/null (on
purpose destructive, unlike `systemctl mask`, which refuses when a file is there), otherwise a runtime
unit is unmasked (a /dev/null link or empty file at its path removed); `enable` runs
`systemctl enable [--runtime] --force` (not for network units); network units restart systemd-networkd
instead of taking a command. After the loop: one daemon-reload, then the commands in file order.

Differences, both so that the apply can run on every boot: the daemon-reload happens only when a file
really changed (coreos-cloudinit reloaded whenever a unit had content), and the commands are queued
without waiting (`--no-block`, as coreos-cloudinit's D-Bus StartUnit returned once the job was queued),
so a unit ordered after multi-user.target cannot deadlock the boot. A failing command does not stop the
ones after it.
"""

from __future__ import annotations

import os
import stat

from provisioner.cloudconfig.model import CloudConfig, Unit
from provisioner.node.apply.coreos import generated_units, prepare_etcd_dirs
from provisioner.node.apply.target import ApplyError, Target
from provisioner.node.systemd import SystemdError, UnitCommand


def apply(config: CloudConfig, target: Target) -> None:
    """Raises ApplyError naming every unit whose file or command failed."""
    prepare_etcd_dirs(config, target)
    process(list(config.coreos.units) + generated_units(config), target)


def unit_dir(unit: Unit) -> str:
    return f"/{'run' if unit.runtime else 'etc'}/systemd/{unit.group}"


def process(units: list[Unit], target: Target) -> None:
    """Place, mask/unmask and enable `units`, reload once, then run their commands. Raises ApplyError."""
    failures: list[str] = []
    commands: list[tuple[UnitCommand, str]] = []
    reload = restart_networkd = False
    for unit in units:
        if not unit.name:
            target.record("skip a unit without a name")
            continue
        directory = unit_dir(unit)
        try:
            if unit.content:
                reload |= target.write_file(f"{directory}/{unit.name}", unit.content.encode())
            for drop_in in unit.drop_ins:
                if drop_in.name and drop_in.content:
                    reload |= target.write_file(f"{directory}/{unit.name}.d/{drop_in.name}", drop_in.content.encode())
            if unit.mask:
                reload |= target.symlink(f"{directory}/{unit.name}", "/dev/null")
            elif unit.runtime and _is_masked(target, f"{directory}/{unit.name}"):
                reload |= target.remove(f"{directory}/{unit.name}")
            if unit.enable and unit.group != "network":
                target.systemd.enable([unit.name], runtime=unit.runtime, force=True)
        except (ApplyError, SystemdError) as exc:
            failures.append(f"{unit.name}: {exc}")
            continue
        if unit.group == "network":
            restart_networkd = True
        elif unit.command is not None:
            commands.append((unit.command, unit.name))
    try:
        if reload:
            target.systemd.daemon_reload()
        if restart_networkd:
            target.systemd.command(UnitCommand.RESTART, "systemd-networkd.service", no_block=True)
    except SystemdError as exc:
        raise ApplyError(f"systemd: {exc}") from None
    for command, name in commands:
        try:
            target.systemd.command(command, name, no_block=True)
        except SystemdError as exc:
            failures.append(f"{command.value} {name}: {exc}")
    if failures:
        raise ApplyError("; ".join(failures))


def _is_masked(target: Target, path: str) -> bool:
    """coreos-cloudinit's nullOrEmpty: an empty regular file or a character device (/dev/null) at `path`."""
    try:
        info = os.stat(target.host_path(path))
    except OSError:
        return False
    return (stat.S_ISREG(info.st_mode) and info.st_size == 0) or stat.S_ISCHR(info.st_mode)

"""`provisioner node ...`: what runs on a node (the image ships this module, see images/provisioner/recipe.yaml).

    provisioner node cloudinit [--from-file F | --from-url U | --from-proc-cmdline] [--root DIR] [--dry-run]
    provisioner node status [--json]
    provisioner node etcd-health [--endpoints URL,...]
    provisioner node update status [--json] | check | apply [--now]
    provisioner node reboot-lock status|lock [ID]|unlock [ID]|set-max N [--endpoint URL,...] [--group G]
    provisioner node locksmithd

The image has Debian's typer 0.7, so options here use plain defaults ("" for "not given") rather than
`X | None` annotations, which typer 0.7 cannot read. Heavy imports stay inside the commands.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from provisioner.cli.output import emit, emit_json, finish

node_app = typer.Typer(help="On a node: apply the cloud-config, show what was applied, check etcd.",
                       no_args_is_help=True)
log = logging.getLogger("provisioner.node")


@node_app.command("cloudinit")
def cloudinit_command(
    from_file: str = typer.Option("", "--from-file", help="Apply this user-data file (a path on this machine)."),
    from_url: str = typer.Option("", "--from-url", help="Fetch the user data from this URL (retried until --timeout)."),
    from_proc_cmdline: bool = typer.Option(False, "--from-proc-cmdline",
                                           help="Fetch the URL given as cloud-config-url= on the kernel command line."),
    root: str = typer.Option("", "--root", help="Write files under DIR and record the unit commands (not run)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Change nothing; print what would change."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to keep retrying a URL."),
    metadata_url: str = typer.Option("", "--metadata-url",
                                     help="The server's /metadata URL (mac= is added): addresses from there."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """Apply the cloud-config as coreos-cloudinit did. Without --from-*: every source the image knows.

    Exit 0 all applied, 3 a module failed (the others were applied), 1 invalid or unreachable user data."""
    from provisioner.node.apply.runner import apply_sources
    from provisioner.node.apply.sources import Source, SourceKind, default_sources
    from provisioner.node.apply.status import write_status
    from provisioner.node.apply.target import Target

    sources = []
    if from_file:
        sources.append(Source(SourceKind.FILE, str(Path(from_file).absolute()), in_root=False))
    if from_url:
        sources.append(Source(SourceKind.URL, from_url))
    if from_proc_cmdline:
        sources.append(Source(SourceKind.PROC_CMDLINE))
    root_path = Path(root).absolute() if root else Path("/")
    target = Target(root=root_path, dry_run=dry_run)
    addresses, notes = _addresses(metadata_url)
    status = apply_sources(sources or default_sources(), target, addresses, timeout=timeout, notes=notes)
    if not dry_run:
        write_status(root_path, status)
    _print_status(status, as_json)
    finish(status.exit_code, "the cloud-config was not applied in full (see the report)")


def _addresses(metadata_url: str):
    """The node's addresses and notes about where they came from (never raises: a config that needs a
    missing address fails on its own, naming the variable)."""
    from provisioner.errors import ProvisionerError
    from provisioner.node.apply.addresses import NodeAddresses, detect, fetch_metadata, metadata_url_for, with_metadata

    notes = []
    try:
        addresses = detect()
    except ProvisionerError as exc:
        addresses = NodeAddresses()
        notes.append(f"addresses: {exc}")
    if metadata_url:
        url = metadata_url_for(metadata_url, addresses.mac)
        try:
            addresses = with_metadata(addresses, fetch_metadata(url))
        except ProvisionerError as exc:
            notes.append(f"metadata: {exc} (using the machine's own addresses)")
    return addresses, tuple(notes)


@node_app.command("status")
def status_command(
    root: str = typer.Option("", "--root", help="Read the status of an apply under DIR."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """What the last apply of this boot did, from where, and what failed. Exit 0 / 3 partial / 1 error."""
    from provisioner.errors import ProvisionerError
    from provisioner.node.apply.status import STATUS_PATH, read_status

    status = read_status(Path(root).absolute() if root else Path("/"))
    if status is None:
        raise ProvisionerError(f"no apply status in {STATUS_PATH}: `provisioner node cloudinit` has not run since boot")
    _print_status(status, as_json)
    finish(status.exit_code, "the last apply did not apply everything (see the report)")


def _print_status(status, as_json: bool) -> None:
    from provisioner.node.apply.status import summary_lines

    if as_json:
        emit_json(status.to_json())
    else:
        for line in summary_lines(status):
            emit(line)


@node_app.command("etcd-health")
def etcd_health_command(
    endpoints: str = typer.Option("http://127.0.0.1:2379", "--endpoints", help="Comma-separated client URLs."),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds per request."),
    as_json: bool = typer.Option(False, "--json", help="Print the members' health as JSON."),
) -> None:
    """Like `etcdctl cluster-health`: each member, then the cluster. Exit 0 healthy, 3 degraded, 1 unavailable."""
    from provisioner.node.etcd_health import cluster_health, report_lines, verdict

    healths = cluster_health(tuple(e.strip() for e in endpoints.split(",") if e.strip()), timeout)
    result = verdict(healths)
    if as_json:
        emit_json({"cluster": result.value[0], "members": [
            {"id": h.member.id, "name": h.member.name, "state": h.state.value, "url": h.url,
             "client_urls": list(h.member.client_urls)} for h in healths]})
    else:
        for line in report_lines(healths):
            emit(line)
    finish(result.exit_code, f"cluster is {result.value[0]}")


update_app = typer.Typer(help="OS updates through the A/B USR slots (update_engine's job on CoreOS).",
                         no_args_is_help=True)
node_app.add_typer(update_app, name="update")


@update_app.command("status")
def update_status_command(as_json: bool = typer.Option(False, "--json", help="Print the status as JSON.")) -> None:
    """Channel, booted and passive slot with their versions, last check, state, failed versions."""
    from provisioner.node.update.agent import UpdateAgent, status_lines

    doc = UpdateAgent().status()
    if as_json:
        emit_json(doc)
    else:
        for line in status_lines(doc):
            emit(line)


@update_app.command("check")
def update_check_command() -> None:
    """Ask the channel for its current version (verified); exit 0 either way, 1 on an error or a downgrade."""
    from provisioner.node.update.agent import UpdateAgent

    emit(UpdateAgent().check().message)


@update_app.command("apply")
def update_apply_command(
    now: bool = typer.Option(False, "--now", help="Reboot right away once the update is written."),
) -> None:
    """Check, then download, verify and write the new version to the passive slot; the reboot is
    locksmithd's (per REBOOT_STRATEGY), or at once with --now."""
    from provisioner.node.update.agent import UpdateAgent
    from provisioner.node.update.reboot import reboot_now

    agent = UpdateAgent()
    emit(agent.apply().message)
    if now and agent.store.need_reboot():
        reboot_now()


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")


# ---------------------------------------------------------------- coordinated reboots (locksmith)

reboot_lock_app = typer.Typer(help="The cluster's reboot lock in etcd, as locksmithctl: status, lock, unlock, "
                                   "set-max.", no_args_is_help=True)
node_app.add_typer(reboot_lock_app, name="reboot-lock")
# The same two options on every reboot-lock command, as locksmithctl's global flags.
_ENDPOINT_OPTION = typer.Option("", "--endpoint", envvar="LOCKSMITHCTL_ENDPOINT",
                                help="etcd client URLs, comma-separated (locksmithctl's -endpoint).")
_GROUP_OPTION = typer.Option("", "--group", envvar="LOCKSMITHCTL_GROUP", help="The lock's group.")


def _reboot_lock(endpoint: str, group: str):
    from provisioner.node.update.rebootlock import RebootLock
    from provisioner.node.update.strategy import DEFAULT_ENDPOINTS
    from provisioner.scheduler.etcd import EtcdClient, parse_endpoints

    return RebootLock(EtcdClient(parse_endpoints(endpoint or ",".join(DEFAULT_ENDPOINTS)), timeout=5.0), group)


def _holder(machine_id: str) -> str:
    from provisioner.scheduler.config import read_machine_id

    return machine_id or read_machine_id("/etc/machine-id")


@reboot_lock_app.command("status")
def reboot_lock_status(
    endpoint: str = _ENDPOINT_OPTION,
    group: str = _GROUP_OPTION,
) -> None:
    """Free slots, the maximum and the holders (locksmithctl status)."""
    semaphore = _reboot_lock(endpoint, group).status()
    emit(f"Available: {semaphore.semaphore}\nMax: {semaphore.max}\n\nMACHINE ID")
    for holder in semaphore.holders:
        emit(holder)


@reboot_lock_app.command("lock")
def reboot_lock_lock(
    machine_id: str = typer.Argument("", help="The holder (default: this machine's /etc/machine-id)."),
    endpoint: str = _ENDPOINT_OPTION,
    group: str = _GROUP_OPTION,
) -> None:
    """Take a slot for MACHINE_ID. Exit 1 when none is free or it already holds one."""
    _reboot_lock(endpoint, group).lock(_holder(machine_id))


@reboot_lock_app.command("unlock")
def reboot_lock_unlock(
    machine_id: str = typer.Argument("", help="The holder (default: this machine's /etc/machine-id); name a "
                                              "machine that never came back to free its slot."),
    endpoint: str = _ENDPOINT_OPTION,
    group: str = _GROUP_OPTION,
) -> None:
    """Give MACHINE_ID's slot back. Exit 1 when it holds none."""
    _reboot_lock(endpoint, group).unlock(_holder(machine_id))


@reboot_lock_app.command("set-max")
def reboot_lock_set_max(
    maximum: int = typer.Argument(..., help="How many machines may reboot at once."),
    endpoint: str = _ENDPOINT_OPTION,
    group: str = _GROUP_OPTION,
) -> None:
    """Set the number of slots; the free count moves by the difference (holders stay)."""
    from provisioner.errors import UsageError

    if maximum < 0:
        raise UsageError(f"set-max: {maximum} is negative")
    old, new = _reboot_lock(endpoint, group).set_max(maximum)
    emit(f"Old-Max: {old.max}\nMax: {new.max}")


@node_app.command("locksmithd")
def locksmithd_command(
    machine_id_file: str = typer.Option("/etc/machine-id", "--machine-id-file", envvar="LOCKSMITHD_MACHINE_ID_FILE",
                                        help="The file holding this machine's lock holder ID."),
    marker: str = typer.Option("/run/update_engine_autoupdate_completed", "--marker", envvar="LOCKSMITHD_MARKER",
                               help="The update agent's 'reboot needed' file."),
    reboot_command: str = typer.Option("systemctl reboot", "--reboot-command", envvar="LOCKSMITHD_REBOOT_COMMAND",
                                       help="What reboots the machine (split like a shell would; no shell runs it)."),
    coordinator_conf: str = typer.Option("/run/update-engine/coordinator.conf", "--coordinator-conf",
                                         envvar="LOCKSMITHD_COORDINATOR_CONF", help="Where the state is written."),
    success_file: str = typer.Option("", "--success-file", envvar="LOCKSMITHD_SUCCESS_FILE",
                                     help="Count the booted slot successful once this file exists (tests; default: "
                                          "the slot's GPT bit)."),
    retry: float = typer.Option(5.0, "--retry", envvar="LOCKSMITHD_RETRY", help="First lock retry delay (s)."),
    retry_max: float = typer.Option(300.0, "--retry-max", envvar="LOCKSMITHD_RETRY_MAX",
                                    help="Longest lock retry delay (s)."),
    poll: float = typer.Option(2.0, "--poll", envvar="LOCKSMITHD_POLL",
                               help="Seconds between looks at the marker and the slot."),
) -> None:
    """Reboot after an update per REBOOT_STRATEGY (update.conf) and LOCKSMITHD_* (locksmithd.service)."""
    import os
    import signal

    from provisioner.node.kernel_cmdline import read_kernel_cmdline
    from provisioner.node.slots import booted_slot_successful
    from provisioner.node.systemd import Systemctl
    from provisioner.node.update.locksmithd import DaemonOptions, Locksmithd, parse_command
    from provisioner.node.update.strategy import load_reboot_settings

    options = DaemonOptions(machine_id_file, marker, tuple(parse_command(reboot_command, "--reboot-command")),
                            coordinator_conf, retry, retry_max, poll)

    def slot_successful() -> bool:
        if success_file:
            return Path(success_file).exists()
        return booted_slot_successful(read_kernel_cmdline())

    def etcd_active() -> bool:
        return Systemctl().is_active("etcd.service")

    daemon = Locksmithd(load_reboot_settings(os.environ), options, slot_successful, etcd_active)
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: daemon.stop.set())
    raise typer.Exit(daemon.run())

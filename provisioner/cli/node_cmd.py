"""`provisioner node ...`: what runs on a node (the image ships this module, see images/provisioner/recipe.yaml).

    provisioner node cloudinit [--from-file F | --from-url U | --from-proc-cmdline] [--root DIR] [--dry-run]
    provisioner node status [--json]
    provisioner node etcd-health [--endpoints URL,...]
    provisioner node update status [--json] | check | apply [--now]

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

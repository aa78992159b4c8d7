"""`provisioner inventory check|match|push`."""

from __future__ import annotations

from pathlib import Path

import typer

from provisioner.cli.machine_options import ARCH, DATA_DIR, HOSTNAME, LABEL, MAC, SERIAL, UUID, build_query
from provisioner.cli.output import CheckFailed, emit, emit_json
from provisioner.errors import ConfigError
from provisioner.inventory import load_inventory
from provisioner.render.check import check_inventory

app = typer.Typer(help="Inspect a data dir: check it, or see which group/profile a machine gets.", no_args_is_help=True)


@app.command("check")
def check_command(
    data_dir: Path = DATA_DIR,
    as_json: bool = typer.Option(False, "--json", help="Print problems as JSON."),
) -> None:
    """Report ambiguous groups, missing profiles/templates and templates that fail to render. Exit 1 on errors."""
    inventory = load_inventory(data_dir)
    problems = check_inventory(inventory)
    errors = [p for p in problems if p.severity == "error"]
    if as_json:
        emit_json({"ok": not errors, "problems": [p.as_json() for p in problems]})
    else:
        for problem in problems:
            emit(str(problem))
        emit(f"{data_dir}: {len(inventory.groups)} groups, {len(inventory.profiles)} profiles, "
             f"{len(errors)} errors, {len(problems) - len(errors)} warnings")
    if errors:
        raise CheckFailed(f"{data_dir}: {len(errors)} errors (see the report)")


@app.command("match")
def match_command(
    data_dir: Path = DATA_DIR,
    mac: str = MAC, uuid: str = UUID, hostname: str = HOSTNAME, serial: str = SERIAL, arch: str = ARCH,
    label: list[str] = LABEL,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show the group and profile a machine would get."""
    inventory = load_inventory(data_dir)
    query = build_query(mac, uuid, hostname, serial, arch, label)
    match = inventory.match(query)
    if match is None:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(query.as_labels().items()))
        raise ConfigError(f"{data_dir}: no group matches {labels}")
    result = {
        "group": match.group.id, "group_file": match.group.source, "selector": dict(match.group.selector),
        "profile": match.group.profile, "profile_file": match.profile.source if match.profile else None,
    }
    if as_json:
        emit_json(result)
    else:
        selector = match.group.selector_text or "none: default"
        emit(f"group   {result['group']}  ({result['group_file']}; selector {selector})")
        emit(f"profile {result['profile']}  ({result['profile_file'] or 'MISSING'})")


@app.command("push")
def push_command(
    data_dir: Path = DATA_DIR,
    state_etcd: str = typer.Option(..., "--state-etcd", help="http://a:2379,...: the servers' --state-etcd."),
    state_site: str = typer.Option("default", "--state-site", help="The site's name (the servers' --state-site)."),
) -> None:
    """Write the data dir's inventory to etcd in one write; servers run with --inventory-etcd reload it."""
    import socket

    from provisioner.pxe.inventory_etcd import inventory_document
    from provisioner.pxe.state_etcd import SiteKeys
    from provisioner.scheduler.etcd import EtcdClient, parse_endpoints

    document = inventory_document(data_dir, socket.gethostname())
    client = EtcdClient(parse_endpoints(state_etcd), timeout=5.0)
    try:
        revision = client.put(SiteKeys(state_site).inventory, document)
    finally:
        client.close()
    emit(f"{data_dir}: pushed to site {state_site} (etcd revision {revision})")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="inventory")

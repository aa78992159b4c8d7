"""The applier: user data -> validated, substituted, parsed -> the modules, in coreos-cloudinit's order.

    status = apply_sources([Source(SourceKind.FILE, "/var/lib/coreos-install/user_data")], target, addresses)

Per document (initialize/config.go Apply, reference/runtime.md §1.1, §1.3):
1. the kind: `#cloud-config`, an Ignition config (keys and hostname only, see ignition.py), empty (nothing
   to do), a `#!` script (not run: this OS has no script datasource) or anything else (an error);
2. validation of the raw text with coreos-cloudinit's rules (provisioner.cloudconfig.validate): a document
   with errors is reported with the validator's lines and nothing of it is applied (coreos-cloudinit only
   logged them);
3. `$private_ipv4`-style substitution on the whole text; a variable that no source could fill fails every
   module whose part of the config uses it, and nothing of those modules is written;
4. parsing into cloudconfig.model, then the modules in order: hostname, users, ssh_authorized_keys,
   write_files, coreos.oem, coreos.update, manage_etc_hosts, coreos.flannel, /etc/environment,
   coreos.units (with the etcd/etcd2/fleet/locksmith/update units). A module that fails is recorded and
   the others still run (coreos-cloudinit stopped at the first error).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from provisioner.cloudconfig import substitute, validate
from provisioner.cloudconfig.model import CloudConfig, parse
from provisioner.cloudconfig.substitute import VARIABLES
from provisioner.cloudconfig.validator import is_cloud_config, is_ignition, is_script
from provisioner.errors import ProvisionerError
from provisioner.node.apply import (
    coreos,
    environment,
    hostname,
    ignition,
    manage_etc_hosts,
    ssh_authorized_keys,
    units,
    users,
    write_files,
)
from provisioner.node.apply.addresses import NodeAddresses
from provisioner.node.apply.sources import Source, read_source
from provisioner.node.apply.status import ApplyStatus, ModuleResult, ModuleState, SourceResult, SourceState
from provisioner.node.apply.target import Target

log = logging.getLogger("provisioner.node.apply")

# Stands in for a variable no source could fill: a plain YAML word, so parsing still works, and easy to
# find afterwards in the parts of the config that use it.
_UNFILLED = "PROVISIONER-UNFILLED-{}"


@dataclass(frozen=True)
class Module:
    name: str
    apply: Callable[[CloudConfig, Target], None]
    reads: Callable[[CloudConfig], object]     # the part of the config the module uses


def ignition_modules() -> tuple[Module, ...]:
    """What an Ignition config contributes (ignition.py): the hostname and users with their keys."""
    return (Module("hostname", hostname.apply, lambda c: c.hostname),
            Module("users", partial(users.apply, key_set=users.IGNITION_KEY_SET), lambda c: c.users))


def modules(values: dict[str, str]) -> tuple[Module, ...]:
    """The modules in coreos-cloudinit's apply order."""
    return (
        Module("hostname", hostname.apply, lambda c: (c.hostname, c.manage_etc_hosts)),
        Module("users", users.apply, lambda c: c.users),
        Module("ssh_authorized_keys", ssh_authorized_keys.apply, lambda c: c.ssh_authorized_keys),
        Module("write_files", write_files.apply, lambda c: c.write_files),
        Module("coreos.oem", coreos.apply_oem, lambda c: c.coreos.oem),
        Module("coreos.update", coreos.apply_update, lambda c: c.coreos.update),
        Module("manage_etc_hosts", manage_etc_hosts.apply, lambda c: (c.manage_etc_hosts, c.hostname)),
        Module("coreos.flannel", coreos.apply_flannel, lambda c: c.coreos.flannel),
        Module("environment", partial(environment.apply, values=values), lambda c: c.write_files),
        # Units read the whole coreos section: a unit started without its drop-in would run unconfigured.
        Module("coreos.units", units.apply, lambda c: c.coreos),
    )


def apply_sources(sources: list[Source], target: Target, addresses: NodeAddresses, *,
                  timeout: float = 60.0, notes: tuple[str, ...] = ()) -> ApplyStatus:
    """Read and apply each source in order (absent ones are skipped); never raises for bad input."""
    status = ApplyStatus(started=time.time(), root=str(target.root), dry_run=target.dry_run,
                         addresses=dataclasses.asdict(addresses), notes=list(notes))
    for source in sources:
        try:
            user_data = read_source(source, target.root, timeout)
        except ProvisionerError as exc:
            status.sources.append(SourceResult(source.describe(), SourceState.UNREACHABLE, error=str(exc)))
            log.error("%s", exc)
            continue
        if user_data is None:
            continue
        status.sources.append(apply_user_data(user_data.data, user_data.source, target, addresses))
    status.finished = time.time()
    return status


def apply_user_data(data: bytes, source: str, target: Target, addresses: NodeAddresses) -> SourceResult:
    """Apply one document; the result says what happened (never raises for bad input)."""
    text = data.decode("utf-8", "surrogateescape")
    if not text.strip():
        return SourceResult(source, SourceState.EMPTY)
    if is_script(text):
        return SourceResult(source, SourceState.IGNORED, error="a #! script: this OS does not run user-data scripts")
    if is_ignition(text):
        try:
            config = ignition.parse(text, source)
        except ProvisionerError as exc:
            return SourceResult(source, SourceState.INVALID, error=str(exc))
        return _run_modules(config, source, target, ignition_modules(), unfilled=(), kind="ignition")
    report = validate(text)
    messages = [str(entry) for entry in report.sorted()]
    if not is_cloud_config(text) or report.has_errors:
        for message in messages:
            log.error("%s: %s", source, message)
        return SourceResult(source, SourceState.INVALID, messages=messages,
                            error=f"{source}: the validator found errors; nothing of it was applied")
    values = addresses.values()
    unfilled = tuple(v for v in VARIABLES if not values.get(v) and _uses(text, v))
    filled = dict(values, **{v: _UNFILLED.format(v[1:]) for v in unfilled})
    try:
        config = parse(substitute(text, filled), source)
    except ProvisionerError as exc:
        return SourceResult(source, SourceState.INVALID, messages=messages, error=str(exc))
    result = _run_modules(config, source, target, modules(values), unfilled, kind="cloud-config")
    result.messages = messages
    return result


def _run_modules(config: CloudConfig, source: str, target: Target, to_run: tuple[Module, ...],
                 unfilled: tuple[str, ...], kind: str) -> SourceResult:
    result = SourceResult(source, SourceState.APPLIED, kind=kind)
    for module in to_run:
        missing = [v for v in unfilled if _UNFILLED.format(v[1:]) in repr(module.reads(config))]
        if missing:
            result.modules.append(ModuleResult(module.name, ModuleState.FAILED, error=(
                f"uses {', '.join(missing)}, which no source could fill (no address on this machine, "
                "no value from the server's metadata): nothing of it was written")))
            continue
        before_changes, before_commands = len(target.changes), len(target.commands)
        try:
            module.apply(config, target)
            state, error = ModuleState.OK, ""
        except ProvisionerError as exc:
            state, error = ModuleState.FAILED, str(exc)
            log.error("%s: %s: %s", source, module.name, exc)
        result.modules.append(ModuleResult(module.name, state, changes=target.changes[before_changes:],
                                           commands=target.commands[before_commands:], error=error))
    if any(m.state is ModuleState.FAILED for m in result.modules):
        result.state = SourceState.PARTIAL
    return result


def _uses(text: str, variable: str) -> bool:
    """Whether `text` has an unescaped `variable` (the substitution's own pattern)."""
    return re.search(r"(?:[^\\]|^)" + re.escape(variable), text) is not None

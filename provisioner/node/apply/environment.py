"""/etc/environment: the node's addresses as COREOS_*_IPV4/IPV6, and ETCDCTL_API for etcd v2-era configs.

coreos-cloudinit (initialize/env.go DefaultEnvironmentFile, system/env_file.go) merges the non-empty
substitution values into /etc/environment unless a write_files entry wrote that file: existing lines
and their order are kept, a known key's line is replaced, new keys are appended sorted, and an unchanged
file is not touched. Login shells read the file through pam_env, so a config with an etcd or etcd2
section also sets `ETCDCTL_API=2` there: the guides' `etcdctl set/get/cluster-health` are v2 commands,
while etcdctl 3.4 defaults to v3.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from provisioner.cloudconfig.model import CloudConfig
from provisioner.cloudconfig.substitute import ENVIRONMENT_NAMES
from provisioner.node.apply.coreos import uses_etcd_v2
from provisioner.node.apply.target import ApplyError, Target

PATH = "/etc/environment"
_VALID_KEY = re.compile(r"^[a-zA-Z0-9_]+$")
_LINE = re.compile(rb"(?m)^((?:([a-zA-Z0-9_]+)=)?.*?)\r?\n")


def apply(config: CloudConfig, target: Target, values: Mapping[str, str]) -> None:
    """Merge the variables into /etc/environment. Raises ApplyError."""
    if any(entry.path == PATH for entry in config.write_files):
        return
    variables = {ENVIRONMENT_NAMES[name]: value for name, value in values.items()
                 if name in ENVIRONMENT_NAMES and value}
    if uses_etcd_v2(config):
        variables["ETCDCTL_API"] = "2"
    if not variables:
        return
    for key in variables:
        if not _VALID_KEY.match(key):
            raise ApplyError(f"{PATH}: invalid name {key!r}")
    old = target.read(PATH) or b""
    new = merge_env(old, variables)
    if new != old:
        target.write_file(PATH, new)


def merge_env(old: bytes, pending: Mapping[str, str]) -> bytes:
    """coreos-cloudinit's mergeEnvContents (pure): replace known keys in place, keep every other line,
    append the rest sorted by key; CRLF lines come out as LF."""
    pending = dict(pending)
    if old and not old.endswith(b"\n"):
        old += b"\n"
    out = []
    for match in _LINE.finditer(old):
        key = (match.group(2) or b"").decode()
        if key in pending:
            out.append(f"{key}={pending.pop(key)}\n".encode())
        else:
            out.append(match.group(1) + b"\n")
    out += [f"{key}={pending[key]}\n".encode() for key in sorted(pending)]
    return b"".join(out)

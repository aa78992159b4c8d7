"""Host-key policy for the rescue session: known_hosts, a pinned fingerprint, or trust on first use.

Why not paramiko's AutoAddPolicy: a rescue system gets new host keys on every boot, so the operator is
tempted to accept anything, and a silent accept is exactly the hole a man in the middle needs. The three
explicit choices follow OpenSSH:
- known_hosts (the default): the key must already be recorded for `host` / `[host]:port`;
- `--host-key SHA256:...`: the key must have this fingerprint (the provider's console shows it);
  `ssh-keygen -lf` prints fingerprints in this form (base64 of SHA-256 of the key blob, no padding);
- `--accept-new` (OpenSSH `StrictHostKeyChecking=accept-new`): an unknown host is trusted and recorded,
  a *changed* key is still refused.

The decision is a pure function (`decide`); recording the key is a one-line append to known_hosts, the
way ssh does it (rewriting the file would drop comments and reorder hashed entries).
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import RemoteError, UsageError
from provisioner.remote.paramiko_lib import paramiko

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


def fingerprint(key_blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob: 'SHA256:' + unpadded base64."""
    digest = hashlib.sha256(key_blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def normalize_pin(pin: str) -> str:
    """Check a `--host-key` value and return it as 'SHA256:<43 base64 chars>'.

    Raises UsageError for anything else (MD5 fingerprints are refused: OpenSSH dropped them as default).
    """
    value = pin.strip()
    if not value.startswith("SHA256:"):
        raise UsageError(f"--host-key {pin!r}: expected an OpenSSH fingerprint like SHA256:AbC... (ssh-keygen -lf)")
    body = value[len("SHA256:"):].rstrip("=")
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise UsageError(f"--host-key {pin!r}: not a SHA256 fingerprint (43 base64 characters after 'SHA256:')")
    return "SHA256:" + body


def known_hosts_name(host: str, port: int) -> str:
    """The name ssh records: 'host' on port 22, '[host]:port' otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


@dataclass(frozen=True)
class HostKeyPolicy:
    """Which host keys the operator trusts. `pin` (normalized) wins over known_hosts."""

    known_hosts: str = DEFAULT_KNOWN_HOSTS
    pin: str | None = None
    accept_new: bool = False

    @property
    def known_hosts_path(self) -> Path:
        return Path(os.path.expanduser(self.known_hosts))


@dataclass(frozen=True)
class Decision:
    """Outcome of checking one presented key: accept, and whether to record it in known_hosts."""

    accept: bool
    record: bool
    reason: str


def decide(policy: HostKeyPolicy, name: str, key_type: str, presented: str, recorded: dict[str, str]) -> Decision:
    """Decide on a presented host key (pure).

    `presented` is the key's fingerprint, `recorded` maps key type -> fingerprint from known_hosts for `name`.
    """
    if policy.pin is not None:
        if presented == policy.pin:
            return Decision(True, False, f"{key_type} key {presented} matches --host-key")
        return Decision(
            False, False,
            f"host key of {name} is {key_type} {presented}, not the pinned {policy.pin}: refusing to connect "
            f"(a wrong or intercepted host; check the fingerprint on the provider's console)",
        )
    if key_type in recorded:
        if recorded[key_type] == presented:
            return Decision(True, False, f"{key_type} key {presented} is in known_hosts")
        return Decision(
            False, False,
            f"host key of {name} CHANGED: known_hosts has {key_type} {recorded[key_type]}, the host presents "
            f"{presented}; refusing to connect (a rescue boot makes new keys: pass --host-key with the new "
            f"fingerprint from the provider's console, or remove the old entry with ssh-keygen -R '{name}')",
        )
    if recorded:
        # Known host, but we negotiated a type we have no record of; ssh treats that as unknown too.
        pass
    if policy.accept_new:
        return Decision(True, True, f"{name} is new: trusting {key_type} {presented} (--accept-new) and recording it")
    return Decision(
        False, False,
        f"host key of {name} is unknown ({key_type} {presented}); verify it and pass --host-key {presented}, "
        f"or --accept-new to trust it on first use",
    )


def load_known_hosts(path: Path) -> paramiko.HostKeys:
    """Read known_hosts (hashed entries included); a missing file is an empty one.

    Raises RemoteError when the file exists but cannot be read.
    """
    keys = paramiko.HostKeys()
    if path.exists():
        try:
            keys.load(str(path))
        except (OSError, paramiko.SSHException) as exc:
            raise RemoteError(f"{path}: cannot read known_hosts: {exc}") from None
    return keys


def recorded_fingerprints(keys: paramiko.HostKeys, name: str) -> dict[str, str]:
    """Key type -> fingerprint of the entries recorded for `name`."""
    entry = keys.lookup(name)
    if entry is None:
        return {}
    return {key_type: fingerprint(key.asbytes()) for key_type, key in entry.items()}


def record_host_key(path: Path, name: str, key: paramiko.PKey) -> None:
    """Append `name type base64` to known_hosts (creating ~/.ssh 0700 and the file 0600 as ssh does).

    Raises RemoteError when the file cannot be written.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        existing = path.read_bytes() if path.exists() else b""
        prefix = "" if not existing or existing.endswith(b"\n") else "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(f"{prefix}{name} {key.get_name()} {key.get_base64()}\n")
    except OSError as exc:
        raise RemoteError(f"{path}: cannot record the host key of {name}: {exc}") from None

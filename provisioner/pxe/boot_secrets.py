"""Per-boot secrets: proof that a write about a machine comes from the boot the server sent it.

The firmware cannot authenticate itself, but the live system it boots can carry what the server
gave it. When the server sends a MAC an iPXE script that boots a kernel, it issues a random secret
for that MAC and that boot and puts it in the kernel arguments (`provisioner.boot_secret=`,
ipxe.with_secret_setting). The live image's hook sends it back with every `/report` and with
`POST /installed`; a secret-gated config (`require_boot_secret`) needs it too. A write with no
secret, a wrong one (another machine's, made up) or an expired one is refused (403) and changes
nothing. `POST /installed` revokes the MAC's secrets: one secret, one install.

Storage: one file per MAC, `<state dir>/boot-secrets/<mac>.json` (0600), holding the SHA-256 of at
most PER_MAC live secrets with their expiry and the address that fetched the script; the plain
text is never stored. Files are replaced atomically under an flock of the directory, so HTTP
worker processes issue and check against the same files and a restart loses nothing. A file whose
newest secret is past the TTL is deleted by the periodic prune, and at most `max_macs` files are
kept (the oldest go first).

An iPXE script fetched again by the same address within REUSE_SECONDS is the same boot (iPXE
retrying its chain): it gets the secret issued a moment ago instead of a new file write.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from provisioner.core.files import write_atomic
from provisioner.pxe.events import Counters, count
from provisioner.pxe.limits import MAX_MACHINES, RecentMap
from provisioner.pxe.state import SecretCheck

log = logging.getLogger("provisioner.pxe.boot_secrets")

DEFAULT_TTL = 7200.0       # seconds: a slow install over a busy network still finishes
PER_MAC = 4                # live secrets per MAC: iPXE retries, a reboot mid-install
REUSE_SECONDS = 10.0
PRUNE_INTERVAL = 60.0
MAX_PRESENTED = 128        # longer is not one of ours: not even hashed
SECRET_BYTES = 16          # 128 random bits, 32 hex digits on the kernel command line


def secret_digest(secret: str) -> str:
    """The stored form of a secret (pure). A fast hash is enough: the secret is 128 random bits."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedSecret:
    sha256: str
    issued: float
    expires: float
    ip: str | None

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "issued": self.issued, "expires": self.expires,
                "ip": self.ip}

    @classmethod
    def from_json(cls, raw: dict) -> IssuedSecret:
        """Raises KeyError, TypeError or ValueError for anything but a to_json() object."""
        return cls(str(raw["sha256"]), float(raw["issued"]), float(raw["expires"]),
                   None if raw.get("ip") is None else str(raw["ip"]))


def check_secret(issued: list[IssuedSecret], presented: str | None, now: float) -> SecretCheck:
    """What `presented` proves against a MAC's live secrets (pure)."""
    if not presented:
        return SecretCheck.MISSING
    if not issued:
        return SecretCheck.NONE_ISSUED
    if len(presented) > MAX_PRESENTED:
        return SecretCheck.WRONG
    digest = secret_digest(presented)
    for entry in issued:
        if hmac.compare_digest(entry.sha256, digest):
            return SecretCheck.OK if now < entry.expires else SecretCheck.EXPIRED
    return SecretCheck.WRONG


RecentSecrets = RecentMap[str, tuple[str, str | None, float]]   # mac -> (secret, ip, issued at)


def reused_secret(recent: RecentSecrets, mac: str, ip: str | None, now: float) -> str | None:
    """The secret this address got for `mac` within REUSE_SECONDS (iPXE retrying its chain: the same boot)."""
    found = recent.get(mac)
    if found is not None and found[1] == ip and now - found[2] < REUSE_SECONDS:
        return found[0]
    return None


def new_secret(ip: str | None, now: float, ttl: float) -> tuple[str, IssuedSecret]:
    """A new random secret and what is stored of it."""
    secret = secrets.token_hex(SECRET_BYTES)
    return secret, IssuedSecret(secret_digest(secret), now, now + ttl, ip)


def _file_name(mac: str) -> str:
    return mac.replace(":", "-") + ".json"


class BootSecretFiles:
    """The BootSecrets interface (state.py) on one file per MAC under `folder`."""

    def __init__(self, folder: Path, ttl: float = DEFAULT_TTL, max_macs: int = MAX_MACHINES,
                 counters: Counters | None = None):
        self.folder = Path(folder)
        self.ttl = ttl
        self.max_macs = max_macs
        self.counters: Counters = {} if counters is None else counters   # boot_secrets_issued, _dropped
        self._recent: RecentSecrets = RecentMap(1024)
        self._pruned_at = float("-inf")
        self._count: int | None = None   # files, as of the last prune plus the ones created since

    def _path(self, mac: str) -> Path:
        return self.folder / _file_name(mac)

    def _read(self, mac: str) -> list[IssuedSecret]:
        try:
            raw = json.loads(self._path(mac).read_text())
            return [IssuedSecret.from_json(entry) for entry in raw["secrets"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A damaged file proves nothing: its secrets are dead, the next install boot replaces it.
            log.warning("boot secrets: ignoring unreadable %s: %s", self._path(mac), exc)
            return []

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write with the other HTTP processes (flock of a lock file)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def issue(self, mac: str, ip: str | None, now: float) -> str:
        """A fresh secret for this boot of `mac` (or the one this address got a moment ago); raises OSError."""
        reused = reused_secret(self._recent, mac, ip, now)
        if reused is not None:
            return reused
        secret, entry = new_secret(ip, now, self.ttl)
        with self._locked():
            live = [e for e in self._read(mac) if e.expires > now]
            if not live and self._count is not None:
                self._count += 1
            write_atomic(self._path(mac), json.dumps({"mac": mac, "secrets": [
                e.to_json() for e in [*live[-(PER_MAC - 1):], entry]]}) + "\n", mode=0o600)
        self._recent[mac] = (secret, ip, now)
        count(self.counters, "boot_secrets_issued")
        if now - self._pruned_at >= PRUNE_INTERVAL or (self._count or 0) > self.max_macs:
            self.prune(now)
        return secret

    def check(self, mac: str, presented: str | None, now: float) -> SecretCheck:
        return check_secret(self._read(mac), presented, now)

    def check_held(self, mac: str, presented: str | None, now: float) -> SecretCheck | None:
        """The files are held here: the whole check (one small file read)."""
        return self.check(mac, presented, now)

    def revoke(self, mac: str) -> None:
        with self._locked(), contextlib.suppress(FileNotFoundError):
            self._path(mac).unlink()
        self._recent.pop(mac, None)

    def prune(self, now: float) -> None:
        """Delete the files whose newest secret has expired, then the oldest beyond `max_macs`."""
        self._pruned_at = now
        with self._locked():
            files = []
            for path in self.folder.glob("*.json"):
                try:
                    mtime = path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if mtime + self.ttl <= now:
                    path.unlink(missing_ok=True)
                else:
                    files.append((mtime, path))
            files.sort()
            excess = max(0, len(files) - self.max_macs)
            for _, path in files[:excess]:
                path.unlink(missing_ok=True)
            if excess:
                count(self.counters, "boot_secrets_dropped", excess)
            self._count = len(files) - excess


QUERY_PARAMETER = "boot_secret"   # for clients that only take a URL (the installer's -c, cloud-config-url=)


def presented_secret(authorization: str | None, query_value: str | None) -> str | None:
    """The secret a request carries (pure): `Authorization: Bearer <secret>` (the hook's way: headers
    stay out of URLs and logs), else the `boot_secret` query parameter."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_value or None

"""How the operator reaches the admin API (admin.py): its token, its address, who may call it, a client.

Both live in the server's state dir, so whoever can read that directory (root, or the server's own
user) can act, and nobody else:
- `admin-token`: the bearer token, mode 0600, generated at the server's first start and replaced by
  `provisioner machines rotate-token` (the running server picks the new one up at its next request);
- `admin.json`: `{"url": "http://127.0.0.1:8081"}`, written at every start with the port actually
  bound, so `provisioner machines reinstall MAC --state-dir DIR` finds the server.

The server checks both the caller's address (loopback, plus `serve --admin-allow` networks) and the
token (`token_matches`, constant time). Standard library only: the CLI imports it at every start.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from provisioner.core.files import write_atomic
from provisioner.errors import ConfigError, NetworkError, ProvisionerError, UsageError

TOKEN_FILE = "admin-token"
ADDRESS_FILE = "admin.json"
TOKEN_BYTES = 32
TIMEOUT = 15.0

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[IpNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class AdminRefused(ProvisionerError):
    """The admin API answered with an error (wrong token, address not allowed, unknown machine)."""


def new_token(state_dir: Path) -> Path:
    """Write a fresh random token to STATE_DIR/admin-token (0600); the old one stops working. Raises OSError."""
    path = Path(state_dir) / TOKEN_FILE
    write_atomic(path, secrets.token_urlsafe(TOKEN_BYTES) + "\n", mode=0o600)
    return path


def read_token(path: Path) -> str:
    """The token in `path`. Raises ConfigError when it is missing, empty, or readable by others
    (a token anyone on the host can read proves nothing)."""
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the admin token: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigError(f"{path}: mode {mode & 0o777:04o} lets others read the admin token; chmod 600 it "
                          f"(or rotate it: provisioner machines rotate-token)")
    if not token:
        raise ConfigError(f"{path}: empty admin token (rotate it: provisioner machines rotate-token)")
    return token


def address_allowed(remote: str | None, allowed: Sequence[IpNetwork]) -> bool:
    """Is a request from `remote` one the operator allowed? (pure; IPv4-mapped IPv6 counts as IPv4)"""
    try:
        address = ipaddress.ip_address((remote or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in allowed)


def token_matches(expected: str, authorization: str | None) -> bool:
    """Does an `Authorization: Bearer <token>` header carry `expected`? (pure, constant time)"""
    scheme, _, given = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


class TokenFile:
    """The server's view of admin-token: re-read when the file changes (a rotation), no restart needed."""

    def __init__(self, path: Path):
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._token = ""

    def current(self) -> str:
        """The token now in the file; the last good one when the file is unreadable (logged by the caller)."""
        try:
            stat = self.path.stat()
        except OSError:
            return self._token
        stamp = (stat.st_ino, stat.st_mtime_ns)
        if stamp != self._stamp:
            self._token = read_token(self.path)
            self._stamp = stamp
        return self._token


def ensure_token(state_dir: Path) -> TokenFile:
    """The server's token file, created at the first start; raises ConfigError (see read_token) or OSError."""
    path = Path(state_dir) / TOKEN_FILE
    if not path.exists():
        new_token(state_dir)
    tokens = TokenFile(path)
    tokens.current()
    return tokens


def write_address(state_dir: Path, url: str) -> None:
    write_atomic(Path(state_dir) / ADDRESS_FILE, json.dumps({"url": url, "pid": os.getpid()}) + "\n", mode=0o600)


def admin_request(state_dir: Path, method: str, path: str) -> Any:
    """Call the admin API of the server that uses `state_dir`; its JSON answer.

    Raises UsageError (no server has used this state dir), ConfigError (token unreadable),
    NetworkError (the server does not answer), AdminRefused (the server said no)."""
    address_file = Path(state_dir) / ADDRESS_FILE
    try:
        url = json.loads(address_file.read_text())["url"]
    except FileNotFoundError:
        raise UsageError(f"{address_file}: missing: no `provisioner serve` has run with --state-dir "
                         f"{state_dir}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{address_file}: cannot read the admin address: {exc}") from None
    token = read_token(Path(state_dir) / TOKEN_FILE)
    request = urllib.request.Request(f"{url}{path}", method=method, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            reason = exc.reason
        raise AdminRefused(f"admin API {method} {url}{path}: {exc.code}: {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NetworkError(f"admin API at {url}: {reason} (is `provisioner serve` running?)") from None
    except ValueError as exc:
        raise NetworkError(f"admin API at {url}: not a JSON answer: {exc}") from None

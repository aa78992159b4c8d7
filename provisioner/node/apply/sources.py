"""Where user data comes from, in the order a node looks (coreos-cloudinit's datasources, for bare metal).

    cloud-config-url=<url> on the kernel command line      (PXE boots; --from-proc-cmdline)
    /var/lib/flatcar-install/user_data                     (flatcar-install -c)
    /var/lib/coreos-install/user_data                      (coreos-install -c, `provisioner install -c`)
    /oem/cloud-config.yml, /usr/share/oem/cloud-config.yml (the OEM partition)
    /oem/config.ign, /usr/share/oem/config.ign             (`provisioner install -i`: keys and hostname only)

With no --from-* option every one that exists is applied, in this order. A URL is retried with a
growing pause (1, 2, 4, then 8 s) until `timeout` has passed: the network may still be coming up.
Gzipped user data is decompressed (coreos-cloudinit's decompressIfGzip).
"""

from __future__ import annotations

import enum
import gzip
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import ConfigError, NetworkError
from provisioner.node.kernel_cmdline import KernelCmdline

FILE_SOURCES = (
    "/var/lib/flatcar-install/user_data",
    "/var/lib/coreos-install/user_data",
    "/oem/cloud-config.yml",
    "/usr/share/oem/cloud-config.yml",
    "/oem/config.ign",
    "/usr/share/oem/config.ign",
)
CMDLINE_KEY = "cloud-config-url"
MAX_PAUSE = 8.0
ATTEMPT_TIMEOUT = 10.0


class SourceKind(enum.Enum):
    FILE = "file"
    URL = "url"
    PROC_CMDLINE = "proc-cmdline"


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    location: str = ""      # the file or URL; "" for the kernel command line
    in_root: bool = True    # a file of the node (under --root), not one named on the command line

    def describe(self) -> str:
        return f"{CMDLINE_KEY} on /proc/cmdline" if self.kind is SourceKind.PROC_CMDLINE else self.location


@dataclass(frozen=True)
class UserData:
    source: str      # where it came from, for messages and the status
    data: bytes


def default_sources() -> list[Source]:
    return [Source(SourceKind.PROC_CMDLINE)] + [Source(SourceKind.FILE, path) for path in FILE_SOURCES]


def read_source(source: Source, root: Path, timeout: float) -> UserData | None:
    """The user data of `source` (files and /proc/cmdline under `root`), None when it is not there.

    Raises ConfigError (unreadable file, bad gzip) or NetworkError (URL unreachable within `timeout`)."""
    if source.kind is SourceKind.URL:
        return UserData(source.location, decompress(fetch(source.location, timeout), source.location))
    if source.kind is SourceKind.PROC_CMDLINE:
        cmdline = _read(root / "proc/cmdline", "/proc/cmdline")
        url = KernelCmdline.parse(cmdline.decode("utf-8", "replace")).get(CMDLINE_KEY) if cmdline is not None else None
        if not url:
            return None
        return UserData(f"{CMDLINE_KEY}={url}", decompress(fetch(url, timeout), url))
    path = root / source.location.lstrip("/") if source.in_root else Path(source.location)
    data = _read(path, source.location)
    return None if data is None else UserData(source.location, decompress(data, source.location))


def _read(path: Path, name: str) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror}") from None


def decompress(data: bytes, name: str) -> bytes:
    """Gzipped user data, decompressed; anything else as it is. Raises ConfigError."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ConfigError(f"{name}: gzipped user data does not decompress: {exc}") from None


def fetch(url: str, timeout: float) -> bytes:
    """GET url, retrying with growing pauses (1, 2, 4, 8, 8 ... s) until `timeout` s have passed; the last
    attempt is made at the deadline. Raises NetworkError with the last reason."""
    deadline = time.monotonic() + timeout
    attempts, pause = 0, 1.0
    while True:
        attempts += 1
        try:
            remaining = max(deadline - time.monotonic(), 1.0)
            with urllib.request.urlopen(url, timeout=min(ATTEMPT_TIMEOUT, remaining)) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = str(getattr(exc, "reason", exc))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NetworkError(f"{url}: {reason} (gave up after {attempts} attempt(s) in {timeout:g} s)")
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, MAX_PAUSE)

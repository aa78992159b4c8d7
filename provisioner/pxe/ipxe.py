"""iPXE: the binaries we serve by name, the chain script every machine loads first, and the
"not yet" script (pure, apart from finding Debian's binaries).

The per-host script itself comes from provisioner.render (the profile's boot block).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

# iPXE binaries from Debian's `ipxe` package, offered under their plain names (and dnsmasq-style
# ".0" aliases over TFTP, as matchbox's docs expect undionly.kpxe.0).
IPXE_DIRS = ("/usr/lib/ipxe", "/usr/share/ipxe")
IPXE_FILES = ("undionly.kpxe", "ipxe.efi", "snponly.efi", "ipxe.pxe", "undionly.kkpxe")

# matchbox's /boot.ipxe (matchbox/http/ipxe.go) gathers these attributes; `arch` is in the code
# though not in matchbox's docs. ${mac:hexhyp} keeps the URL free of ':'.
CHAIN_QUERY = ("uuid=${uuid}&mac=${mac:hexhyp}&domain=${domain}&hostname=${hostname}"
               "&serial=${serial}&arch=${buildarch:uristring}")

RETRY_SECONDS = 30


def find_ipxe_dir() -> Path | None:
    """Where Debian's ipxe package put its binaries (checked at run time), or None."""
    for candidate in IPXE_DIRS:
        if os.path.isfile(os.path.join(candidate, "undionly.kpxe")):
            return Path(candidate)
    return None


def ipxe_binary_name(requested: str) -> str | None:
    """The iPXE binary a TFTP file name asks for ("/undionly.kpxe.0" -> "undionly.kpxe"), or None."""
    name = requested.lstrip("/").removesuffix(".0")
    return name if name in IPXE_FILES else None


def boot_script(server_url: str) -> str:
    """/boot.ipxe: chain to this machine's own script; if that fails (server restarting), retry."""
    return (
        "#!ipxe\n"
        "# provisioner: ask for this machine's own boot script\n"
        ":retry\n"
        f"chain --replace --autofree {server_url}/ipxe?{CHAIN_QUERY} && goto done ||\n"
        f"echo provisioner: fetching the boot script failed, retrying in {RETRY_SECONDS} s\n"
        f"sleep {RETRY_SECONDS}\n"
        "goto retry\n"
        ":done\n"
    )


_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:;=/@+()'-]")


def retry_script(reason: str, retry_url: str, seconds: int = RETRY_SECONDS) -> str:
    """An iPXE script for a machine we cannot boot yet: print why, wait, ask again.

    The reason is printed with `echo`; characters iPXE would expand (`$`, `{`) are replaced."""
    safe = _UNSAFE.sub("?", reason)[:200]
    return (
        "#!ipxe\n"
        f"echo provisioner: {safe}\n"
        f"echo provisioner: asking again in {seconds} s\n"
        f"sleep {seconds}\n"
        f"chain --replace --autofree {retry_url}\n"
    )


# The per-boot secret (boot_secrets.py) travels as an iPXE setting: the cached script names it,
# `${boot_secret}`, and only the `set` line differs per request. A profile can put it into a URL
# of its own kernel arguments too (the installer's `-c .../cloud-config?...&boot_secret=${boot_secret}`).
SECRET_SETTING = "boot_secret"
SECRET_ARGUMENT = "provisioner.boot_secret"


def boots_kernel(script: str) -> bool:
    """Does this iPXE script start a kernel (and so a system that may write back to us)? (pure)"""
    return any(line.split(maxsplit=1)[:1] == ["kernel"] for line in script.splitlines())


def with_secret_argument(script: str) -> str:
    """`script` with `provisioner.boot_secret=${boot_secret}` added to its kernel line, unless the
    profile already passes it (pure)."""
    lines = script.splitlines()
    for index, line in enumerate(lines):
        if line.split(maxsplit=1)[:1] == ["kernel"] and f"{SECRET_ARGUMENT}=" not in line:
            lines[index] = f"{line} {SECRET_ARGUMENT}=${{{SECRET_SETTING}}}"
    return "\n".join(lines) + "\n"


def with_secret_setting(script: str, secret: str, more: str = "") -> str:
    """`script` with `set boot_secret <secret>` (and the `more` lines: servers_setting) right after its
    `#!ipxe` line (pure).

    Raises ValueError for a secret iPXE would expand or split (only [0-9a-f] is issued)."""
    if not secret or not secret.isalnum():
        raise ValueError("a boot secret is letters and digits only")
    first, _, rest = script.partition("\n")
    return f"{first}\nset {SECRET_SETTING} {secret}\n{more}{rest}"


# Several servers, one state (--state-etcd): the live image's hook learns the site's other live servers from
# `provisioner.servers=`, to report there (and download from there) when its own server is gone
# (node/hook.py). Like the secret it is an iPXE setting: the list changes while the script stays cached.
SERVERS_SETTING = "site_servers"
SERVERS_ARGUMENT = "provisioner.servers"
REPORT_ARGUMENT = "provisioner.report="


def with_servers_argument(script: str) -> str:
    """`script` with `provisioner.servers=${site_servers}` added to a kernel line that reports to us
    (`provisioner.report=`) and does not name servers itself (pure)."""
    lines = script.splitlines()
    for index, line in enumerate(lines):
        if (line.split(maxsplit=1)[:1] == ["kernel"] and REPORT_ARGUMENT in line
                and f"{SERVERS_ARGUMENT}=" not in line):
            lines[index] = f"{line} {SERVERS_ARGUMENT}=${{{SERVERS_SETTING}}}"
    return "\n".join(lines) + "\n"


def servers_setting(servers: Sequence[str]) -> str:
    """The `set site_servers ...` line for these base URLs, "" for none (pure). A URL iPXE would expand or
    the kernel would split (`$`, `{`, a space, a comma) is left out."""
    plain = [url for url in servers if not _UNSAFE.search(url) and " " not in url and "," not in url]
    return f"set {SERVERS_SETTING} {','.join(plain)}\n" if plain else ""

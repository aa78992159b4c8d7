"""The installer's command line: flatcar-install's option letters, plus long forms and our extras.

One argparse parser serves `provisioner install`, `python3 installer.pyz` and
`python3 -m provisioner.install`. Letters follow flatcar/init bin/flatcar-install
(getopts "V:B:C:DI:d:o:c:e:i:t:b:k:f:nusyvh", shared/reference/installer.md §1.1).

The one clash: flatcar's `-y` is a DRY RUN (print the settings and exit). We keep that meaning
for `-y` (scripts written for flatcar-install must never write a disk by surprise);
`--yes` (long form only) means "do not ask for confirmation".
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from provisioner.errors import UsageError
from provisioner.install.source import is_url

DEFAULT_IMAGE_NAME = "provisioner_production_image.bin"
CHANNELS = ("alpha", "beta", "stable", "edge", "lts")
FORMATS = ("auto", "zst", "bz2", "xz", "gz", "raw")
UNMAPPED_POLICIES = ("zero", "discard", "skip")
PROGRESS_MODES = ("auto", "bar", "json", "none")


@dataclass(frozen=True)
class InstallOptions:
    device: str | None
    version: str = "current"
    channel: str | None = None
    board: str | None = None
    oem: str | None = None
    cloud_config: str | None = None
    ignition: str | None = None
    base_url: str | None = None
    mirrors: tuple[str, ...] = ()
    keyfile: str | None = None
    image_file: str | None = None
    copy_network: bool = False
    network_dir: str = "/run/systemd/network"
    uefi_entry: bool = False
    download_only: bool = False
    dry_run: bool = False
    yes: bool = False
    force: bool = False
    verbose: bool = False
    progress: str = "auto"
    image_name: str = DEFAULT_IMAGE_NAME
    format: str = "auto"
    bmap: str | None = None
    use_bmap: bool = True
    verify_signature: bool = True
    unmapped: str = "zero"
    direct_io: bool = True
    retries: int = 10
    timeout: float = 20.0


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of exiting by itself."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"install: {message} (see --help)")


def build_parser(prog: str = "provisioner install") -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog,
        description="Write a CoreOS-style disk image to a disk, verified, fast and safely "
        "(flatcar-install compatible options).",
        epilog="Note: -y is flatcar-install's DRY RUN; --yes skips the confirmation prompt.",
    )
    add = p.add_argument
    add("-d", "--device", metavar="DEVICE",
        help="target disk (whole disk: /dev/sda, /dev/nvme0n1, /dev/loop0, or an image file)")
    add("-V", "--version", dest="version", metavar="VERSION", default=None,
        help="version to install, or 'current' (default); alpha/beta/stable set the channel")
    add("-B", "--board", metavar="BOARD", help="board (amd64-usr/arm64-usr); only part of flatcar's default URL")
    add("-C", "--channel", metavar="CHANNEL", help="release channel; without -V installs 'current'")
    add("-o", "--oem", metavar="OEM", help="OEM image: NAME_PREFIX_OEM_image.bin ('' for none)")
    add("-c", "--cloud-config", metavar="FILE_OR_URL",
        help="cloud-config copied to ROOT:/var/lib/coreos-install/user_data")
    add("-i", "--ignition", metavar="FILE_OR_URL", help="Ignition config copied to OEM:/config.ign")
    add("-b", "--base-url", metavar="URL", help="release base URL (BASE/current/version.txt, BASE/X.Y.Z/IMAGE)")
    add("--mirror", dest="mirrors", action="append", default=[], metavar="URL",
        help="another base URL serving the same release as -b (repeatable): a download that breaks "
        "resumes there from the same byte; the checks still cover every byte")
    add("-k", "--key", dest="keyfile", metavar="KEYFILE", help="OpenPGP public key (armoured or binary) to verify with")
    add("-f", "--image-file", metavar="IMAGE", help="install a local image file (any supported compression)")
    add("-n", "--copy-network", action="store_true", help="copy /run/systemd/network/* to ROOT:/etc/systemd/network")
    add("-u", "--uefi-entry", action="store_true", help="add a UEFI boot entry with efibootmgr")
    add("-D", "--download-only", action="store_true",
        help="download and verify the image into the current directory; install nothing")
    add("-y", "--dry-run", action="store_true",
        help="(flatcar-install's -y) check and print what would be written, write nothing")
    add("-v", "--verbose", action="store_true", help="log each step to stderr")
    add("-t", dest="tmpdir_ignored", action="store_true", help=argparse.SUPPRESS)  # flatcar: no-op
    add("-s", dest="smallest", action="store_true", help=argparse.SUPPRESS)
    add("-I", dest="include_majors", metavar="M,..", help=argparse.SUPPRESS)
    add("-e", dest="exclude_majors", metavar="M,..", help=argparse.SUPPRESS)
    add("--yes", action="store_true", help="do not ask for confirmation")
    add("--force", action="store_true", help="write even if the disk is mounted/in swap/held by md-dm-LVM or too small")
    add("--progress", choices=PROGRESS_MODES, default="auto",
        help="bar (terminal), json (one JSON event per line on stdout), none; auto = bar on a terminal")
    add("--image-name", default=None, metavar="NAME",
        help=f"image base name in the release dir (default {DEFAULT_IMAGE_NAME}; e.g. flatcar_production_image.bin)")
    add("--format", choices=FORMATS, default="auto",
        help="which compressed file to fetch from -b (auto: .zst, else .bz2)")
    add("--bmap", metavar="FILE_OR_URL", help="block map to use (default: IMAGE.bmap beside the image when present)")
    add("--no-bmap", action="store_true", help="ignore any .bmap: write every block")
    add("--no-sig-verify", action="store_true",
        help="install without checking the OpenPGP signature (required for an unsigned -f image)")
    add("--unmapped", choices=UNMAPPED_POLICIES, default="zero",
        help="what to do with blocks the bmap leaves out: zero (default; old signatures cannot survive), "
        "discard, skip (bmaptool's behaviour)")
    add("--no-direct-io", action="store_true", help="buffered writes with periodic fdatasync instead of O_DIRECT")
    add("--retries", type=int, default=10, metavar="N", help="download attempts (resumed with HTTP Range)")
    add("--timeout", type=float, default=20.0, metavar="SECONDS", help="network timeout per attempt")
    add("--network-dir", default="/run/systemd/network", help=argparse.SUPPRESS)
    return p


def parse_install_args(argv: list[str], prog: str = "provisioner install") -> InstallOptions:
    """Parse argv into InstallOptions. Raises UsageError on bad or conflicting options."""
    ns = build_parser(prog).parse_args(argv)
    if ns.smallest or ns.include_majors or ns.exclude_majors:
        raise UsageError("install: -s/-I/-e (pick the smallest disk) is not supported: name the disk with -d")
    version, channel = resolve_version_and_channel(ns.version, ns.channel)
    if not ns.device and not ns.download_only:
        raise UsageError("install: -d DEVICE is required")
    if not ns.base_url and not ns.image_file:
        raise UsageError("install: give a release base URL (-b URL) or a local image (-f FILE)")
    if ns.base_url and ns.image_file:
        raise UsageError("install: -b and -f exclude each other")
    if ns.download_only and ns.image_file:
        raise UsageError("install: -D downloads from -b; it does not apply to -f")
    if ns.mirrors and not ns.base_url:
        raise UsageError("install: --mirror needs -b (a mirror serves the same release as the base URL)")
    for mirror in ns.mirrors:
        if not is_url(mirror):
            raise UsageError(f"install: --mirror {mirror!r}: not an http(s) URL")
    if ns.retries < 1:
        raise UsageError("install: --retries must be at least 1")
    image_name = ns.image_name or DEFAULT_IMAGE_NAME
    if ns.oem:
        image_name = oem_image_name(image_name, ns.oem)
    return InstallOptions(
        device=ns.device,
        version=version,
        channel=channel,
        board=ns.board,
        oem=ns.oem or None,
        cloud_config=ns.cloud_config,
        ignition=ns.ignition,
        base_url=ns.base_url.rstrip("/") if ns.base_url else None,
        mirrors=tuple(mirror.rstrip("/") for mirror in ns.mirrors),
        keyfile=ns.keyfile,
        image_file=ns.image_file,
        copy_network=ns.copy_network,
        network_dir=ns.network_dir,
        uefi_entry=ns.uefi_entry,
        download_only=ns.download_only,
        dry_run=ns.dry_run,
        yes=ns.yes,
        force=ns.force,
        verbose=ns.verbose,
        progress=ns.progress,
        image_name=image_name,
        format=ns.format,
        bmap=ns.bmap,
        use_bmap=not ns.no_bmap,
        verify_signature=not ns.no_sig_verify,
        unmapped=ns.unmapped,
        direct_io=not ns.no_direct_io,
        retries=ns.retries,
        timeout=ns.timeout,
    )


def resolve_version_and_channel(version: str | None, channel: str | None) -> tuple[str, str | None]:
    """flatcar-install rules: `-V stable` is a channel (version current); `-C` alone means current."""
    if version in CHANNELS:
        return "current", version
    if channel and channel not in CHANNELS:
        raise UsageError(f"install: -C {channel!r}: not a channel ({', '.join(CHANNELS)})")
    return (version or "current"), channel


def oem_image_name(image_name: str, oem: str) -> str:
    """provisioner_production_image.bin + oem 'packet' -> provisioner_production_packet_image.bin."""
    if oem in ("qemu", "qemu_uefi"):  # flatcar-install ignores these: the plain image is the qemu one
        return image_name
    if image_name.endswith("_image.bin"):
        return f"{image_name[: -len('_image.bin')]}_{oem}_image.bin"
    raise UsageError(f"install: -o {oem!r} needs an image name ending in _image.bin (got {image_name!r})")

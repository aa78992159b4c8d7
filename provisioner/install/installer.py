"""`provisioner install`: plan (resolve version and files, check the disk), then apply.

Steps, following flatcar-install (shared/reference/installer.md §1.2) with its pitfalls fixed:
1. plan: version.txt for `current`; pick `IMAGE.bin.zst`, else `.bz2` (HEAD requests); its
   `.sig`, `.DIGESTS`, the `.bmap`; check the target (partition path, 4Kn, mounted/swap/holders
   unless --force, size); read and sanity-check the configs. `-y`/`--dry-run` stops here.
2. stream: download -> sha512 + gpgv taps -> decompressor -> bmap ranges -> O_DIRECT writes,
   GPT areas held back (writer.py). The first write zeroes the old GPTs (both ends).
3. after the stream: decompressor exit, stream length, sha512, signature. Only then commit the
   GPT areas. Any failure once writing began wipes both GPTs again and says so in one line.
4. re-read the table, compare it with the image's, check the CoreOS layout, place configs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

from provisioner.core.commands import run
from provisioner.core.sizes import format_size
from provisioner.disk import blockdev
from provisioner.disk.gpt import parse_table
from provisioner.errors import ConfigError, DiskError, InstallError, ProvisionerError, UsageError, VerifyError
from provisioner.install import writer
from provisioner.install.bmap import Bmap, parse_bmap
from provisioner.install.decompress import DecompressStream
from provisioner.install.options import InstallOptions
from provisioner.install.postinstall import place_configs, refuse_4kn, verify_disk
from provisioner.install.progress import EventKind, Progress
from provisioner.install.source import Fetcher, NotFound, is_url
from provisioner.install.verify import DigestCheck, SignatureCheck, digest_from_digests

log = logging.getLogger("provisioner.install")

COMPRESSED_SUFFIXES = (".zst", ".bz2", ".xz", ".gz")


@dataclass(frozen=True)
class Plan:
    device: str | None
    version: str | None
    image: str  # URL or path of the (compressed) image
    signature: str | None
    digests: str | None
    bmap: str | None
    key: str | None
    key_from_server: bool
    cloud_config: str | None
    ignition: str | None
    network_dir: str | None
    cloud_config_data: bytes | None
    ignition_data: bytes | None
    disk_size: int | None
    warnings: list[str] = field(default_factory=list)


@dataclass
class Summary:
    device: str
    image: str
    version: str | None
    format: str = ""
    decompressor: str = ""
    image_size: int = 0
    written: int = 0
    zeroed: int = 0
    skipped: int = 0
    compressed_bytes: int = 0
    seconds: float = 0.0
    signer: str | None = None
    placed: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"installed {os.path.basename(self.image)} ({self.version or 'local'}) on {self.device}: "
                f"{format_size(self.written)} written, {format_size(self.zeroed)} zeroed, "
                f"{format_size(self.skipped)} skipped of {format_size(self.image_size)} in {self.seconds:.1f} s"
                + (f"; placed {', '.join(self.placed)}" if self.placed else ""))

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# ---- planning -------------------------------------------------------------------------------------

def parse_version_txt(text: str, image_name: str, source: str) -> str:
    """The version from version.txt: PROVISIONER_VERSION=, or FLATCAR_VERSION= (COREOS_VERSION=
    for coreos images). Raises ConfigError."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            values[key] = value.strip().strip('"')
    order = ["PROVISIONER_VERSION", "FLATCAR_VERSION", "COREOS_VERSION"]
    if image_name.startswith("flatcar_"):
        order = ["FLATCAR_VERSION", "PROVISIONER_VERSION"]
    elif image_name.startswith("coreos_"):
        order = ["COREOS_VERSION", "PROVISIONER_VERSION"]
    for key in order:
        if values.get(key):
            return values[key]
    raise ConfigError(f"{source}: no {' or '.join(order)}= line")


def make_plan(opts: InstallOptions, fetcher: Fetcher) -> Plan:
    """Resolve every input and check the target; touches nothing. Raises ProvisionerError."""
    warnings: list[str] = []
    disk_size = check_target(opts.device, opts.force, warnings) if opts.device and not opts.download_only else None
    cloud_config_data, ignition_data = load_configs(opts, fetcher)
    version: str | None = None
    if opts.base_url:
        version = opts.version
        if version == "current":
            location = f"{opts.base_url}/current/version.txt"
            version = parse_version_txt(fetcher.read_text(location), opts.image_name, location)
        directory = f"{opts.base_url}/{version}"
        formats = ["zst", "bz2"] if opts.format == "auto" else [opts.format]
        image = None
        for fmt in formats:
            candidate = f"{directory}/{opts.image_name}" + ("" if fmt == "raw" else f".{fmt}")
            if fetcher.exists(candidate):
                image = candidate
                break
        if image is None:
            tried = ", ".join(f"{opts.image_name}.{f}" for f in formats)
            raise NotFound(f"{directory}/: no image ({tried}); check -b, -V and --image-name")
        bmap_default = f"{directory}/{opts.image_name}.bmap"
    else:
        image = os.path.abspath(opts.image_file)  # type: ignore[arg-type]
        if not os.path.isfile(image):
            raise UsageError(f"install: -f {opts.image_file}: no such file")
        stem = image
        for suffix in COMPRESSED_SUFFIXES:
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
        bmap_default = stem + ".bmap"

    signature = image + ".sig" if fetcher.exists(image + ".sig") else None
    digests = image + ".DIGESTS" if fetcher.exists(image + ".DIGESTS") else None
    key, key_from_server = None, False
    if opts.verify_signature:
        if signature is None:
            hint = "; an unsigned local image needs --no-sig-verify" if not opts.base_url else ""
            raise VerifyError(f"{image}.sig: not found: cannot verify the image{hint}")
        if opts.keyfile:
            if not os.path.isfile(opts.keyfile):
                raise UsageError(f"install: -k {opts.keyfile}: no such file")
            key = os.path.abspath(opts.keyfile)
        else:
            key, key_from_server = _find_release_key(opts, image, fetcher)
            if key_from_server:
                warnings.append(f"verifying with {key} from the release server itself; pass -k to pin a key")
    else:
        warnings.append("signature check disabled (--no-sig-verify)")
    if digests is None:
        warnings.append(f"{os.path.basename(image)}.DIGESTS not found: no sha512 check")

    bmap = None
    if opts.use_bmap:
        if opts.bmap:
            bmap = opts.bmap if is_url(opts.bmap) else os.path.abspath(opts.bmap)
        elif fetcher.exists(bmap_default):
            bmap = bmap_default
    return Plan(
        device=opts.device, version=version, image=image, signature=signature, digests=digests,
        bmap=bmap, key=key, key_from_server=key_from_server, cloud_config=opts.cloud_config,
        ignition=opts.ignition, network_dir=opts.network_dir if opts.copy_network else None,
        cloud_config_data=cloud_config_data, ignition_data=ignition_data,
        disk_size=disk_size, warnings=warnings,
    )


def _find_release_key(opts: InstallOptions, image: str, fetcher: Fetcher):
    candidates = []
    if opts.base_url:
        candidates.append(f"{opts.base_url}/release-key.asc")
    else:
        here = os.path.dirname(image)
        candidates += [os.path.join(here, "release-key.asc"), os.path.join(os.path.dirname(here), "release-key.asc")]
    for candidate in candidates:
        if fetcher.exists(candidate):
            return candidate, bool(opts.base_url)
    raise VerifyError(f"no public key to verify {os.path.basename(image)}: pass -k KEYFILE "
                      f"(looked for {', '.join(candidates)})")


def check_target(device: str, force: bool, warnings: list[str]) -> int:
    """Refuse what must never be written, and what is in use unless --force. Returns its size.

    Raises DiskError (one line, says nothing was written)."""
    blockdev.resolve_disk_argument(device)  # missing path, partition path
    if blockdev.is_block_device(device):
        refuse_4kn(device)
        reasons = blockdev.local_busy_reasons(device)
        if reasons:
            more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
            if not force:
                raise DiskError(f"{device}: {reasons[0]}{more}; refusing to write (--force overrides); nothing written")
            warnings.append(f"--force: {reasons[0]}{more}")
    elif not os.path.isfile(device):
        raise DiskError(f"{device}: neither a block device nor an image file; nothing written")
    return blockdev.device_size(device)


def load_configs(opts: InstallOptions, fetcher: Fetcher):
    """Read (file or URL) and sanity-check -c and -i; returns (cloud_config, ignition) bytes.
    Raises ConfigError (bad content), UsageError (missing file), NetworkError."""
    cloud = ignition = None
    if opts.cloud_config:
        cloud = _read_config(opts.cloud_config, "-c", fetcher)
        first = cloud.lstrip().split(b"\n", 1)[0].strip()
        if not (first.startswith(b"#cloud-config") or first.startswith(b"#!")):
            raise ConfigError(f"{opts.cloud_config}: not a cloud-config (the first line must be #cloud-config "
                              "or a #! script)")
    if opts.ignition:
        ignition = _read_config(opts.ignition, "-i", fetcher)
        try:
            json.loads(ignition.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{opts.ignition}: not valid JSON ({exc})") from None
    if opts.copy_network and not os.path.isdir(opts.network_dir):
        raise UsageError(f"install: -n: {opts.network_dir} does not exist (no network units to copy)")
    return cloud, ignition


def _read_config(path: str, flag: str, fetcher: Fetcher) -> bytes:
    if is_url(path):
        return fetcher.read_bytes(path)
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"install: {flag} {path}: {exc.strerror}") from None


def describe(plan: Plan, opts: InstallOptions) -> str:
    """The human summary shown before asking, and by --dry-run. Pure."""
    lines = [
        f"target:       {plan.device}" + (f" ({format_size(plan.disk_size)})" if plan.disk_size else ""),
        f"image:        {plan.image}",
        f"version:      {plan.version or '(local file)'}",
        f"signature:    {plan.signature or 'NOT CHECKED'}" + (f" with key {plan.key}" if plan.key else ""),
        f"sha512:       {plan.digests or 'NOT CHECKED'}",
        f"block map:    {plan.bmap or 'none (every block written; zero chunks zeroed)'}",
        f"holes:        {opts.unmapped}",
        f"cloud-config: {plan.cloud_config or '-'}",
        f"ignition:     {plan.ignition or '-'}",
        f"network:      {plan.network_dir or '-'}",
    ]
    lines += [f"warning:      {w}" for w in plan.warnings]
    return "\n".join(lines)


# ---- applying -------------------------------------------------------------------------------------

def install(plan: Plan, opts: InstallOptions, progress: Progress, fetcher: Fetcher) -> Summary:
    """Write the image and place the configs. Raises ProvisionerError; after writing began,
    the disk is wiped before the error propagates (the message says so)."""
    assert plan.device is not None
    started = time.monotonic()
    summary = Summary(device=plan.device, image=plan.image, version=plan.version)
    label = os.path.basename(plan.image)
    workdir = tempfile.mkdtemp(prefix="provisioner-install-")
    try:
        bmap = _load_bmap(plan, fetcher)
        checks = _verification_checks(plan, fetcher, workdir, label)
        chunks = iter(fetcher.stream(plan.image))
        first = next(chunks, b"")
        if not first:
            raise VerifyError(f"{label}: empty file")
        progress.mapped = bmap.mapped_bytes if bmap else None
        progress.event(EventKind.START, "write", 0, bmap.image_size if bmap else 0,
                       device=plan.device, image=plan.image)
        stream = DecompressStream(first, chunks, [c.update for c in checks], label,
                                  skippable=writer.hole_checker(bmap) if bmap is not None else None)
        summary.format, summary.decompressor = stream.format, stream.tool
        target = writer.Target(plan.device, direct=opts.direct_io, exclusive=not opts.force)
        state = {"began": False, "image_size": None}
        try:
            def on_start(image_size: int) -> None:
                state["began"], state["image_size"] = True, image_size
                target.wipe_gpt(image_size)

            result = writer.copy_stream(stream.read_piece, target, bmap, policy=opts.unmapped, label=label,
                                        on_start=on_start, on_progress=progress.update)
            stream.finish()
            progress.event(EventKind.VERIFY, "verify", result.image_size, result.image_size)
            for check in checks:
                signer = check.finish()
                if isinstance(check, SignatureCheck):
                    summary.signer = signer
            writer.commit(target, result)
            target.close()
            image_table = parse_table(_held_reader(result.held), result.image_size)
            verify_disk(plan.device, image_table)
            summary.placed = place_configs(
                plan.device, image_table,
                cloud_config=plan.cloud_config_data, ignition=plan.ignition_data,
                network_dir=plan.network_dir, workdir=workdir)
            if opts.uefi_entry:
                _uefi_entry(plan.device)
        except BaseException as exc:
            stream.abort()
            for check in checks:
                if isinstance(check, SignatureCheck):
                    check.abort()
            if not state["began"]:
                target.close()
                raise
            _wipe_after_failure(target, plan.device, state["image_size"])
            if not isinstance(exc, ProvisionerError):
                raise
            cls = VerifyError if isinstance(exc, VerifyError) else InstallError
            raise cls(f"{exc}; {plan.device} wiped: no valid GPT left (fix the cause and re-run)") from None
        summary.image_size, summary.written = result.image_size, result.written
        summary.zeroed, summary.skipped = result.zeroed, result.skipped
        summary.compressed_bytes = stream.compressed_bytes
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary.seconds = round(time.monotonic() - started, 2)
    return summary


def _wipe_after_failure(target: writer.Target, device: str, image_size: int | None) -> None:
    try:
        if target.closed:
            raise OSError("closed")
        target.wipe_gpt(image_size)
    except (OSError, ProvisionerError):
        again = writer.Target(device, direct=False, exclusive=False)
        again.wipe_gpt(image_size)
        again.close()
    target.close()


def _held_reader(held: dict) -> Callable[[int, int], bytes]:
    def read_at(offset: int, length: int) -> bytes:
        for start, data in held.items():
            if start <= offset and offset + length <= start + len(data):
                return data[offset - start: offset - start + length]
        return bytes(length)
    return read_at


def _load_bmap(plan: Plan, fetcher: Fetcher) -> Bmap | None:
    if plan.bmap is None:
        return None
    return parse_bmap(fetcher.read_bytes(plan.bmap), os.path.basename(plan.bmap))


def _verification_checks(plan: Plan, fetcher: Fetcher, workdir: str, label: str):
    checks: list = []
    if plan.digests is not None:
        text = fetcher.read_text(plan.digests)
        checks.append(DigestCheck(digest_from_digests(text, os.path.basename(plan.image), plan.digests), label))
    if plan.signature is not None and plan.key is not None:
        checks.append(SignatureCheck(fetcher.read_bytes(plan.signature), fetcher.read_bytes(plan.key), workdir, label))
    return checks


def _uefi_entry(device: str) -> None:
    """flatcar-install -u: a UEFI boot entry for the ESP (partition 1)."""
    run(["efibootmgr", "-c", "-d", device, "-p", "1", "-l", "\\efi\\boot\\bootx64.efi", "-L", "Provisioner"])


def download_only(plan: Plan, fetcher: Fetcher, directory: str = ".") -> list[str]:
    """flatcar-install -D: fetch and verify the image (+ .sig) into `directory`. Raises VerifyError."""
    workdir = tempfile.mkdtemp(prefix="provisioner-download-")
    label = os.path.basename(plan.image)
    target = os.path.join(directory, label)
    try:
        checks = _verification_checks(plan, fetcher, workdir, label)
        try:
            with open(target + ".part", "wb") as handle:
                for chunk in fetcher.stream(plan.image):
                    for check in checks:
                        check.update(chunk)
                    handle.write(chunk)
            for check in checks:
                check.finish()
        except BaseException:
            for check in checks:
                if isinstance(check, SignatureCheck):
                    check.abort()
            if os.path.exists(target + ".part"):
                os.unlink(target + ".part")
            raise
        os.replace(target + ".part", target)
        saved = [target]
        for extra in (plan.signature, plan.digests, plan.bmap):
            if extra:
                path = os.path.join(directory, os.path.basename(extra))
                with open(path, "wb") as handle:
                    handle.write(fetcher.read_bytes(extra))
                saved.append(path)
        return saved
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_install(opts: InstallOptions, progress: Progress, confirm: Callable[[str], bool],
                fetcher: Fetcher | None = None) -> Summary | None:
    """Plan, show, confirm and install. Returns None for --dry-run/-D/declined. Raises ProvisionerError."""
    fetcher = fetcher or Fetcher(retries=opts.retries, timeout=opts.timeout)
    plan = make_plan(opts, fetcher)
    text = describe(plan, opts)
    if opts.dry_run:
        print(text)
        return None
    if opts.download_only:
        for path in download_only(plan, fetcher):
            print(path)
        return None
    for warning in plan.warnings:
        log.warning("warning: %s", warning)
    if not opts.yes and not confirm(text):
        raise UsageError(f"install: not confirmed; {plan.device} untouched")
    try:
        summary = install(plan, opts, progress, fetcher)
    except ProvisionerError as exc:
        progress.event(EventKind.ERROR, "install", message=str(exc))
        raise
    progress.event(EventKind.DONE, "install", summary.written, summary.image_size, message=summary.line(),
                   summary=summary.as_dict())
    return summary


__all__ = ["Plan", "Summary", "make_plan", "describe", "install", "run_install", "check_target",
           "parse_version_txt", "DiskError"]

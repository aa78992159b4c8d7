"""`provisioner install`: resolve every input and check the disk, then write.

Steps, following flatcar-install (shared/reference/installer.md §1.2) with its pitfalls fixed:
1. resolve: version.txt for `current`; pick `IMAGE.bin.zst`, else `.bz2` (HEAD requests); its
   `.DIGESTS` with `.DIGESTS.sig` (a signed manifest, verify.py), else its `.sig`; the `.bmap`;
   check the target (partition path, 4Kn, mounted/swap/holders unless --force, size); read and
   sanity-check the configs. `-y`/`--dry-run` stops here.
2. stream: first a signed manifest is checked (and the bmap against it), before anything is
   written; then download -> sha512 (+ gpgv for a whole-image signature) taps -> decompressor ->
   bmap ranges -> O_DIRECT writes, GPT areas held back (writer.py). The first write zeroes the
   old GPTs (both ends).
3. after the stream: decompressor exit, stream length, sha512, signature. Only then commit the
   GPT areas. Any failure once writing began wipes both GPTs again and says so in one line.
4. re-read the table, compare it with the image's, check the CoreOS layout, place configs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Union

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
from provisioner.install.verify import DigestCheck, SignatureCheck, digest_from_digests, parse_digests, verify_detached

log = logging.getLogger("provisioner.install")

COMPRESSED_SUFFIXES = (".zst", ".bz2", ".xz", ".gz")
Check = Union[DigestCheck, SignatureCheck]  # the taps on the download stream


@dataclass(frozen=True)
class ResolvedInstall:
    """Every input of one install, resolved (URLs and files found, configs read) and the target checked."""

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
    # True: `signature` signs the DIGESTS manifest, whose sha512 then vouches for the image;
    # False: it signs the compressed image itself (Flatcar's .sig).
    signed_manifest: bool = False


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


# ---- resolving ------------------------------------------------------------------------------------

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


def resolve_install(opts: InstallOptions, fetcher: Fetcher) -> ResolvedInstall:
    """Resolve every input and check the target; touches nothing. Raises ProvisionerError."""
    warnings: list[str] = []
    disk_size = check_target(opts.device, opts.force, warnings) if opts.device and not opts.download_only else None
    cloud_config_data, ignition_data = load_configs(opts, fetcher)
    version: str | None = None
    if opts.base_url:
        version, image, bmap_default = _release_image(opts.base_url, opts, fetcher)
    else:
        assert opts.image_file is not None  # options.parse_install_args: -b or -f
        image, bmap_default = _local_image(opts.image_file)

    digests = image + ".DIGESTS" if fetcher.exists(image + ".DIGESTS") else None
    signed_manifest = digests is not None and opts.verify_signature and fetcher.exists(digests + ".sig")
    if signed_manifest:
        assert digests is not None
        signature: str | None = digests + ".sig"
    else:
        signature = image + ".sig" if fetcher.exists(image + ".sig") else None
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
    return ResolvedInstall(
        device=opts.device, version=version, image=image, signature=signature, digests=digests,
        bmap=bmap, key=key, key_from_server=key_from_server, cloud_config=opts.cloud_config,
        ignition=opts.ignition, network_dir=opts.network_dir if opts.copy_network else None,
        cloud_config_data=cloud_config_data, ignition_data=ignition_data,
        disk_size=disk_size, warnings=warnings, signed_manifest=signed_manifest,
    )


def _release_image(base_url: str, opts: InstallOptions, fetcher: Fetcher) -> tuple[str, str, str]:
    """(version, image URL, default bmap URL) in the release directory of -b: version.txt for
    `current`, then the first compressed image that exists (HEAD). Raises NotFound, ConfigError."""
    version = opts.version
    if version == "current":
        location = f"{base_url}/current/version.txt"
        version = parse_version_txt(fetcher.read_text(location), opts.image_name, location)
    directory = f"{base_url}/{version}"
    formats = ["zst", "bz2"] if opts.format == "auto" else [opts.format]
    for fmt in formats:
        candidate = f"{directory}/{opts.image_name}" + ("" if fmt == "raw" else f".{fmt}")
        if fetcher.exists(candidate):
            return version, candidate, f"{directory}/{opts.image_name}.bmap"
    tried = ", ".join(f"{opts.image_name}.{f}" for f in formats)
    raise NotFound(f"{directory}/: no image ({tried}); check -b, -V and --image-name")


def _local_image(image_file: str) -> tuple[str, str]:
    """(absolute path, default bmap path: the name without its compression suffix + .bmap) of -f.
    Raises UsageError for a missing file."""
    image = os.path.abspath(image_file)
    if not os.path.isfile(image):
        raise UsageError(f"install: -f {image_file}: no such file")
    stem = image
    for suffix in COMPRESSED_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return image, stem + ".bmap"


def _find_release_key(opts: InstallOptions, image: str, fetcher: Fetcher) -> tuple[str, bool]:
    """(the release key beside the image, whether it came from the release server). Raises VerifyError."""
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


def describe(resolved: ResolvedInstall, opts: InstallOptions) -> str:
    """The human summary shown before asking, and by --dry-run. Pure."""
    lines = [
        f"target:       {resolved.device}" + (f" ({format_size(resolved.disk_size)})" if resolved.disk_size else ""),
        f"image:        {resolved.image}",
        f"version:      {resolved.version or '(local file)'}",
        f"signature:    {resolved.signature or 'NOT CHECKED'}"
        + (" (signed sha512 manifest)" if resolved.signed_manifest else "")
        + (f" with key {resolved.key}" if resolved.key else ""),
        f"sha512:       {resolved.digests or 'NOT CHECKED'}",
        f"block map:    {resolved.bmap or 'none (every block written; zero chunks zeroed)'}",
        f"holes:        {opts.unmapped}",
        f"cloud-config: {resolved.cloud_config or '-'}",
        f"ignition:     {resolved.ignition or '-'}",
        f"network:      {resolved.network_dir or '-'}",
    ]
    lines += [f"warning:      {w}" for w in resolved.warnings]
    return "\n".join(lines)


# ---- applying -------------------------------------------------------------------------------------

def install(resolved: ResolvedInstall, opts: InstallOptions, progress: Progress, fetcher: Fetcher) -> Summary:
    """Write the image and place the configs. Raises ProvisionerError; after writing began,
    the disk is wiped before the error propagates (the message says so)."""
    assert resolved.device is not None
    started = time.monotonic()
    summary = Summary(device=resolved.device, image=resolved.image, version=resolved.version)
    workdir = tempfile.mkdtemp(prefix="provisioner-install-")
    try:
        _write_and_place(resolved, opts, progress, fetcher, summary, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary.seconds = round(time.monotonic() - started, 2)
    return summary


class _WipeOnFailure:
    """The target disk's guard: once writing begins (the old GPTs zeroed), any failure must wipe the
    GPTs again before it propagates, so a half-written disk never looks installed."""

    def __init__(self, target: writer.Target, device: str) -> None:
        self.target = target
        self.device = device
        self.began = False
        self.image_size: int | None = None

    def begin(self, image_size: int) -> None:
        """writer.copy_stream's on_start: zero the old GPTs (both ends) right before the first write."""
        self.began, self.image_size = True, image_size
        self.target.wipe_gpt(image_size)

    def wipe(self) -> None:
        """Zero both GPTs again, through a fresh descriptor when the target's is closed or broken."""
        try:
            if self.target.closed:
                raise OSError("closed")
            self.target.wipe_gpt(self.image_size)
        except (OSError, ProvisionerError):
            again = writer.Target(self.device, direct=False, exclusive=False)
            again.wipe_gpt(self.image_size)
            again.close()
        self.target.close()


def _write_and_place(resolved: ResolvedInstall, opts: InstallOptions, progress: Progress, fetcher: Fetcher,
                     summary: Summary, workdir: str) -> None:
    """Stream the image onto the disk, verify it, commit its GPT, then place the configs; fills `summary`."""
    assert resolved.device is not None
    label = os.path.basename(resolved.image)
    manifest = _Manifest()
    checks = _verification_checks(resolved, fetcher, workdir, label, manifest)
    summary.signer = manifest.signer
    try:
        bmap = _load_bmap(resolved, fetcher, manifest)
    except BaseException:
        _abort_checks(checks)
        raise
    chunks = iter(fetcher.stream(resolved.image))
    first = next(chunks, b"")
    if not first:
        raise VerifyError(f"{label}: empty file")
    progress.mapped = bmap.mapped_bytes if bmap else None
    progress.event(EventKind.START, "write", 0, bmap.image_size if bmap else 0,
                   device=resolved.device, image=resolved.image)
    stream = DecompressStream(first, chunks, [c.update for c in checks], label,
                              skippable=writer.hole_checker(bmap) if bmap is not None else None)
    summary.format, summary.decompressor = stream.format, stream.tool
    target = writer.Target(resolved.device, direct=opts.direct_io, exclusive=not opts.force)
    guard = _WipeOnFailure(target, resolved.device)
    try:
        result = writer.copy_stream(stream.read_piece, target, bmap, policy=opts.unmapped, label=label,
                                    on_start=guard.begin, on_progress=progress.update)
        stream.finish()
        progress.event(EventKind.VERIFY, "verify", result.image_size, result.image_size)
        summary.signer = _finish_checks(checks) or summary.signer
        writer.commit(target, result)
        target.close()
        image_table = parse_table(_held_reader(result.held), result.image_size)
        verify_disk(resolved.device, image_table)
        summary.placed = place_configs(
            resolved.device, image_table,
            cloud_config=resolved.cloud_config_data, ignition=resolved.ignition_data,
            network_dir=resolved.network_dir, workdir=workdir)
        if opts.uefi_entry:
            _uefi_entry(resolved.device)
    except BaseException as exc:
        stream.abort()
        _abort_checks(checks)
        if not guard.began:
            target.close()
            raise
        guard.wipe()
        if not isinstance(exc, ProvisionerError):
            raise
        cls = VerifyError if isinstance(exc, VerifyError) else InstallError
        raise cls(f"{exc}; {resolved.device} wiped: no valid GPT left (fix the cause and re-run)") from None
    summary.image_size, summary.written = result.image_size, result.written
    summary.zeroed, summary.skipped = result.zeroed, result.skipped
    summary.compressed_bytes = stream.compressed_bytes


def _finish_checks(checks: list[Check]) -> str | None:
    """Finish every check (raises VerifyError on a mismatch); returns the signer, if a signature was checked."""
    signer = None
    for check in checks:
        result = check.finish()
        if isinstance(check, SignatureCheck):
            signer = result
    return signer


def _abort_checks(checks: list[Check]) -> None:
    for check in checks:
        if isinstance(check, SignatureCheck):
            check.abort()


def _held_reader(held: dict[int, bytes]) -> Callable[[int, int], bytes]:
    def read_at(offset: int, length: int) -> bytes:
        for start, data in held.items():
            if start <= offset and offset + length <= start + len(data):
                return data[offset - start: offset - start + length]
        return bytes(length)
    return read_at


@dataclass
class _Manifest:
    """What a verified signed manifest vouches for: sha512 by file name, and who signed it."""

    digests: dict[str, str] = field(default_factory=dict)
    signer: str | None = None


def _load_bmap(resolved: ResolvedInstall, fetcher: Fetcher, manifest: _Manifest | None = None) -> Bmap | None:
    """The parsed bmap; checked against the signed manifest when that names it. Raises VerifyError."""
    if resolved.bmap is None:
        return None
    name = os.path.basename(resolved.bmap)
    data = fetcher.read_bytes(resolved.bmap)
    expected = manifest.digests.get(name) if manifest is not None else None
    if expected is not None and hashlib.sha512(data).hexdigest() != expected:
        raise VerifyError(f"{resolved.bmap}: sha512 differs from the signed manifest {resolved.digests}")
    return parse_bmap(data, name)


def _verification_checks(resolved: ResolvedInstall, fetcher: Fetcher, workdir: str, label: str,
                         manifest: _Manifest | None = None) -> list[Check]:
    """The taps for the image stream. A signed manifest is verified here, at once (filling
    `manifest`); a whole-image signature becomes a gpgv tap. Raises VerifyError."""
    checks: list[Check] = []
    key = fetcher.read_bytes(resolved.key) if resolved.signature is not None and resolved.key is not None else None
    if resolved.digests is not None:
        data = fetcher.read_bytes(resolved.digests)
        if resolved.signed_manifest and key is not None:
            assert resolved.signature is not None
            signer = verify_detached(data, fetcher.read_bytes(resolved.signature), key, workdir,
                                     os.path.basename(resolved.digests))
            if manifest is not None:
                manifest.digests, manifest.signer = parse_digests(data.decode("utf-8", "replace")), signer
        text = data.decode("utf-8", "replace")
        digest = digest_from_digests(text, os.path.basename(resolved.image), resolved.digests)
        checks.append(DigestCheck(digest, label))
    if not resolved.signed_manifest and resolved.signature is not None and key is not None:
        checks.append(SignatureCheck(fetcher.read_bytes(resolved.signature), key, workdir, label))
    return checks


def _uefi_entry(device: str) -> None:
    """flatcar-install -u: a UEFI boot entry for the ESP (partition 1)."""
    run(["efibootmgr", "-c", "-d", device, "-p", "1", "-l", "\\efi\\boot\\bootx64.efi", "-L", "Provisioner"])


def download_only(resolved: ResolvedInstall, fetcher: Fetcher, directory: str = ".") -> list[str]:
    """flatcar-install -D: fetch and verify the image (+ .sig) into `directory`. Raises VerifyError."""
    workdir = tempfile.mkdtemp(prefix="provisioner-download-")
    label = os.path.basename(resolved.image)
    target = os.path.join(directory, label)
    try:
        checks = _verification_checks(resolved, fetcher, workdir, label)
        try:
            with open(target + ".part", "wb") as handle:
                for chunk in fetcher.stream(resolved.image):
                    for check in checks:
                        check.update(chunk)
                    handle.write(chunk)
            _finish_checks(checks)
        except BaseException:
            _abort_checks(checks)
            if os.path.exists(target + ".part"):
                os.unlink(target + ".part")
            raise
        os.replace(target + ".part", target)
        saved = [target]
        # The whole-image .sig too, for flatcar-install, which checks only that one.
        whole_image_sig: str | None = resolved.image + ".sig" if resolved.signed_manifest else None
        if whole_image_sig is not None and not fetcher.exists(whole_image_sig):
            whole_image_sig = None
        for extra in (resolved.signature, whole_image_sig, resolved.digests, resolved.bmap):
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
    """Resolve, show, confirm and install. Returns None for --dry-run/-D/declined. Raises ProvisionerError."""
    fetcher = fetcher or Fetcher(retries=opts.retries, timeout=opts.timeout, base_url=opts.base_url,
                                 mirrors=opts.mirrors)
    resolved = resolve_install(opts, fetcher)
    text = describe(resolved, opts)
    if opts.dry_run:
        print(text)
        return None
    if opts.download_only:
        for path in download_only(resolved, fetcher):
            print(path)
        return None
    for warning in resolved.warnings:
        log.warning("warning: %s", warning)
    if not opts.yes and not confirm(text):
        raise UsageError(f"install: not confirmed; {resolved.device} untouched")
    try:
        summary = install(resolved, opts, progress, fetcher)
    except ProvisionerError as exc:
        progress.event(EventKind.ERROR, "install", message=str(exc))
        raise
    progress.event(EventKind.DONE, "install", summary.written, summary.image_size, message=summary.line(),
                   summary=summary.as_dict())
    return summary


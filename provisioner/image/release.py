"""The release directory, compatible with flatcar-install's `-b` base URL:

    <base>/release-key.asc                     public half of the signing key
    <base>/current -> <version>                symlink, replaced atomically, only after a complete build
    <base>/<version>/version.txt               PROVISIONER_VERSION=..., FLATCAR_VERSION=...
    <base>/<version>/<name>_image.bin.bz2      (+ .zst) the raw GPT disk image, compressed
    <base>/<version>/<name>_image.bin.bz2.sig  detached binary OpenPGP signature (and .DIGESTS: sha512)
    <base>/<version>/<name>_image.bin.bz2.DIGESTS.sig   signature of the DIGESTS manifest, which also
                                               names the .bmap: installers check these few hundred
                                               bytes instead of gpgv over the whole image
    <base>/<version>/<name>_image.bin.bmap     bmaptool's map of the raw image
    <base>/<version>/<name>_pxe.vmlinuz, <name>_pxe_image.cpio.gz   (+ .sig, .DIGESTS)

Everything is written into a hidden staging directory first and renamed into place, so a failed
build never leaves a half-written <version>/ behind `current`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from provisioner.core.commands import require_tool, run
from provisioner.errors import ImageBuildError
from provisioner.install.zstdframes import compress_framed

log = logging.getLogger("provisioner.image.release")

KEY_UID = "Provisioner image signing key (made by the build) <release@provisioner.invalid>"


def version_txt(version: str, build_id: str) -> str:
    return (f"PROVISIONER_VERSION={version}\nFLATCAR_VERSION={version}\nFLATCAR_VERSION_ID={version}\n"
            f"PROVISIONER_BUILD_ID={build_id}\n")


def parse_version_txt(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def sha512_file(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def digests_text(path: Path, *also: Path) -> str:
    """Flatcar-style .DIGESTS: a '# SHA512 HASH' comment, then sha512sum's '<hex>  <name>' line,
    first for `path`, then for each file in `also` (the image's .bmap: signing the manifest then
    vouches for it too)."""
    return "# SHA512 HASH\n" + "".join(f"{sha512_file(p)}  {p.name}\n" for p in (path, *also))


# -- signing ----------------------------------------------------------------------------------------

class Signer:
    """gpg with its own home; the key is made once per home when none is given."""

    def __init__(self, home: Path, key_id: str | None = None):
        self.home = home
        self.key_id = key_id

    def _gpg(self, *args: str, **kwargs):
        return run(["gpg", "--homedir", str(self.home), "--batch", "--yes", "--no-tty", *args], **kwargs)

    def ensure_key(self) -> str:
        """The fingerprint of the signing key, made (ed25519, no passphrase) if the home has none."""
        require_tool("gpg")
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        if self.key_id is None:
            listing = self._gpg("--with-colons", "--list-secret-keys", check=False).stdout
            if "\nfpr:" not in "\n" + listing and not listing.startswith("fpr:"):
                self._gpg("--passphrase", "", "--quick-gen-key", KEY_UID, "ed25519", "sign", "never")
                listing = self._gpg("--with-colons", "--list-secret-keys").stdout
        else:
            listing = self._gpg("--with-colons", "--list-secret-keys", self.key_id).stdout
        for line in listing.splitlines():
            if line.startswith("fpr:"):
                self.key_id = line.split(":")[9]
                return self.key_id
        raise ImageBuildError(f"signing: no secret key {self.key_id or ''} in {self.home}")

    def public_key(self) -> bytes:
        return self._gpg("--armor", "--export", self.ensure_key(), input=b"").stdout

    def sign(self, path: Path) -> Path:
        signature = path.with_name(path.name + ".sig")
        self._gpg("--local-user", self.ensure_key(), "--detach-sign", "--output", str(signature), str(path))
        return signature

    def close(self) -> None:
        """Stop the gpg-agent this home started (no background process outlives the build)."""
        run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], check=False)


# -- compressing and publishing ----------------------------------------------------------------------

def compress(raw: Path, directory: Path) -> tuple[Path, Path]:
    """(<raw>.bz2, <raw>.zst) in directory; the raw file is kept. The .bz2 (lbzip2, all cores) is
    what flatcar-install expects; the .zst is framed (install/zstdframes.py: one independent 4 MiB
    frame after another), so an installer skips the frames that lie in the image's holes."""
    require_tool("lbzip2")
    bz2 = directory / (raw.name + ".bz2")
    zst = directory / (raw.name + ".zst")
    run(["lbzip2", "-k", "-f", "-9", str(raw)])
    os.replace(str(raw) + ".bz2", bz2)
    compress_framed(str(raw), str(zst))
    return bz2, zst


def make_bmap(raw: Path, output: Path) -> Path:
    require_tool("bmaptool")
    run(["bmaptool", "create", "-o", str(output), str(raw)])
    return output


def publish(base: Path, staging: Path, version: str, public_key: bytes) -> Path:
    """Move the complete staging dir to <base>/<version> and point `current` at it (both atomic renames)."""
    final = base / version
    old = None
    if final.exists():
        old = base / f".old-{version}-{os.getpid()}"
        os.rename(final, old)
    os.rename(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    key_tmp = base / f".release-key.asc.{os.getpid()}"
    key_tmp.write_bytes(public_key)
    os.replace(key_tmp, base / "release-key.asc")
    publish_link(base, version)
    return final


def publish_link(base: Path, version: str) -> None:
    """Point <base>/current at <version> (a new symlink renamed over the old one)."""
    link_tmp = base / f".current.{os.getpid()}"
    if link_tmp.is_symlink():
        link_tmp.unlink()
    link_tmp.symlink_to(version)
    os.replace(link_tmp, base / "current")


def staging_dir(base: Path, version: str) -> Path:
    staging = base / f".staging-{version}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging

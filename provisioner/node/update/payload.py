"""Fetching and verifying the update: nothing unverified reaches a partition.

The manifest is checked against its detached signature with the release key the image carries
(/usr/share/provisioner/release-key.asc; gpgv through install/verify.py). Each payload file is then
streamed to a temporary file on ROOT while its SHA-256 and its own signature are computed; more bytes
than the manifest's size stop the download at once. Only a file whose size, SHA-256 and signature all
match is renamed into place: the slot writer (slot_writer.py) reads from there. Unlike update_engine,
a missing release key is an error, never a warning (reference/updates.md §2.5).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from provisioner.errors import ProvisionerError, VerifyError
from provisioner.install.verify import SignatureCheck
from provisioner.node.update.manifest import MAX_MANIFEST, PayloadFile

RELEASE_KEY = Path("/usr/share/provisioner/release-key.asc")
CHUNK = 1 << 20
TIMEOUT = 60.0


class DownloadError(ProvisionerError):
    """A URL of the release server could not be read."""


def _open(url: str):
    try:
        return urllib.request.urlopen(url, timeout=TIMEOUT)   # noqa: S310 (http(s) and file: URLs by design)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: {reason}") from None


def fetch_small(url: str, limit: int = MAX_MANIFEST) -> bytes:
    """The whole body of a small file (manifest, signature); raises DownloadError."""
    with _open(url) as response:
        try:
            data = response.read(limit + 1)
        except OSError as exc:
            raise DownloadError(f"{url}: {exc}") from None
    if len(data) > limit:
        raise DownloadError(f"{url}: more than {limit} bytes")
    return data


def read_release_key(path: Path = RELEASE_KEY) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise VerifyError(f"{path}: cannot read the release key ({exc.strerror}): updates cannot be verified") from None


def verify_signed(data: bytes, signature: bytes, public_key: bytes, workdir: Path, label: str) -> str:
    """The signer's key id when `signature` is a good signature of `data`; raises VerifyError."""
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".verify-", dir=workdir) as scratch:
        check = SignatureCheck(signature, public_key, scratch, label)
        try:
            check.update(data)
        except BaseException:
            check.abort()
            raise
        return check.finish()


def download_verified(url: str, expected: PayloadFile, signature: bytes, public_key: bytes, target: Path,
                      progress: Callable[[int], None] | None = None) -> Path:
    """Download `url` to `target` (same directory: a temporary name first), verified against `expected`
    and `signature`; returns `target`. Raises DownloadError or VerifyError and leaves no file behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    label = expected.name
    with tempfile.TemporaryDirectory(prefix=".verify-", dir=target.parent) as scratch:
        _download(url, expected, SignatureCheck(signature, public_key, scratch, label), partial, progress)
    os.replace(partial, target)
    return target


def _download(url: str, expected: PayloadFile, check: SignatureCheck, partial: Path,
              progress: Callable[[int], None] | None) -> None:
    label = expected.name
    digest = hashlib.sha256()
    done = 0
    try:
        with _open(url) as response, open(partial, "wb") as out:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except OSError as exc:
                    raise DownloadError(f"{url}: {exc}") from None
                if not chunk:
                    break
                done += len(chunk)
                if done > expected.size:
                    raise VerifyError(f"{label}: more than the manifest's {expected.size} bytes")
                digest.update(chunk)
                check.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress(done)
            out.flush()
            os.fsync(out.fileno())
        if done != expected.size:
            raise VerifyError(f"{label}: {done} bytes, the manifest says {expected.size}")
        if digest.hexdigest() != expected.sha256:
            raise VerifyError(f"{label}: sha256 mismatch (manifest {expected.sha256[:16]}..., "
                              f"download {digest.hexdigest()[:16]}...)")
        check.finish()
    except BaseException:
        check.abort()
        partial.unlink(missing_ok=True)
        raise


def sha256_of(path: Path, length: int | None = None) -> str:
    """SHA-256 of the first `length` bytes of `path` (all of it when None): a written slot is read back."""
    digest = hashlib.sha256()
    left = length
    with open(path, "rb") as handle:
        while left is None or left > 0:
            chunk = handle.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)
    return digest.hexdigest()

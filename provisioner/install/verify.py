"""Verification of the compressed image: sha512 from `.DIGESTS` and a detached OpenPGP signature.

Two ways to sign a release, both accepted:
- a signed manifest (`IMAGE.DIGESTS.sig` over `IMAGE.DIGESTS`, as apt signs its Release files):
  gpgv checks a few hundred bytes before anything is written, and the sha512 the manifest
  names (computed by us while the image streams) then carries the signature to every byte. Our
  own releases publish it; the manifest may also name the `.bmap`, which is then checked too.
- a whole-image signature (`IMAGE.sig` over the compressed file, as Flatcar publishes it): the
  compressed bytes are fed to `gpgv` on its stdin while the image streams.
The installer commits the GPT headers only after every check passed, so a failed check leaves
a disk with no valid partition table (see writer.py).

- `.DIGESTS`: sha512sum lines `<hex>  <name>`; Flatcar's files also carry `# SHA512 HASH`
  comments and MD5/SHA1 lines, so we pick the 128-hex-digit line naming our file.
- gpgv (gnupg's verify-only tool, trusts every key in its keyring) needs a binary keyring; an
  ASCII-armoured key (RFC 4880 §6.2) is de-armoured here with base64, no gpg needed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import re
import subprocess
import tempfile
import threading

from provisioner.core.commands import require_tool
from provisioner.errors import VerifyError

_HEX512 = re.compile(r"^([0-9a-fA-F]{128})\s+\*?(\S.*)$")


def parse_digests(text: str) -> dict[str, str]:
    """File name -> sha512 hex of every sha512 line in a DIGESTS/sha512sum text (first one wins)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _HEX512.match(line.strip())
        if match:
            found.setdefault(os.path.basename(match.group(2).strip()), match.group(1).lower())
    return found


def digest_from_digests(text: str, filename: str, source: str = "DIGESTS") -> str:
    """The sha512 hex for `filename` in a DIGESTS/sha512sum text. Raises VerifyError if absent."""
    found = parse_digests(text)
    if filename in found:
        return found[filename]
    listed = ", ".join(found) or "no sha512 lines"
    raise VerifyError(f"{source}: no sha512 digest for {filename} (found: {listed})")


def verify_detached(data: bytes, signature: bytes, public_key: bytes, workdir: str, label: str) -> str:
    """gpgv over a small file held in memory (the signed manifest); returns the signer's key id.
    Raises VerifyError."""
    check = SignatureCheck(signature, public_key, workdir, label)
    try:
        check.update(data)
        return check.finish()
    except BaseException:
        check.abort()
        raise


def dearmor(data: bytes) -> bytes:
    """Binary OpenPGP packets from an ASCII-armoured block (or `data` itself if already binary).

    Raises VerifyError on a malformed armour.
    """
    text = data.decode("ascii", "replace")
    if "-----BEGIN PGP" not in text:
        return data
    lines = text.splitlines()
    try:
        begin = next(i for i, line in enumerate(lines) if line.startswith("-----BEGIN PGP"))
        end = next(i for i, line in enumerate(lines) if line.startswith("-----END PGP") and i > begin)
    except StopIteration:
        raise VerifyError("public key: unterminated ASCII armour") from None
    body = lines[begin + 1: end]
    while body and body[0].strip():  # armour headers ("Comment: ...") end at the first blank line
        if ":" not in body[0]:
            break
        body = body[1:]
    payload = "".join(line.strip() for line in body if line.strip() and not line.startswith("="))
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        raise VerifyError("public key: invalid base64 in the ASCII armour") from None


class SignatureCheck:
    """Feed the signed bytes with `update`, then `finish()` raises VerifyError unless gpgv says GOOD.

    Runs `gpgv --keyring K --status-fd 1 SIG -` with the data on stdin.
    """

    def __init__(self, signature: bytes, public_key: bytes, workdir: str, label: str):
        self.label = label
        gpgv = require_tool("gpgv")
        self._dir = tempfile.mkdtemp(prefix="gpgv-", dir=workdir)
        keyring = os.path.join(self._dir, "keyring.gpg")
        sig = os.path.join(self._dir, "image.sig")
        with open(keyring, "wb") as handle:
            handle.write(dearmor(public_key))
        with open(sig, "wb") as handle:
            handle.write(dearmor(signature))
        self._status = open(os.path.join(self._dir, "status"), "w+b")
        self._proc = subprocess.Popen(
            [gpgv, "--homedir", self._dir, "--keyring", keyring, "--status-fd", "1", sig, "-"],
            stdin=subprocess.PIPE, stdout=self._status, stderr=subprocess.STDOUT,
        )
        self._broken = False
        # gpgv hashes with libgcrypt (here ~240 MB/s for SHA-256, no SHA-NI): feeding it from its
        # own thread through a bounded queue lets it lag behind the install by up to 32 MiB
        # instead of stalling the decompressor on every chunk.
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=32)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            data = self._chunks.get()
            if data is None:
                break
            if self._broken:
                continue
            try:
                self._proc.stdin.write(data)  # type: ignore[union-attr]
            except (BrokenPipeError, ValueError):
                self._broken = True  # gpgv gave up early (bad key/signature): finish() reports why
        try:
            self._proc.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass

    def update(self, data: bytes) -> None:
        self._chunks.put(data)

    def finish(self) -> str:
        """Returns the signer's key id. Raises VerifyError."""
        self._chunks.put(None)
        self._thread.join()
        code = self._proc.wait(timeout=120)
        self._status.seek(0)
        status = self._status.read().decode("utf-8", "replace")
        self._status.close()
        good = re.search(r"^\[GNUPG:\] GOODSIG (\S+)", status, re.M)
        if code != 0 or not good:
            reason = _gpg_reason(status)
            raise VerifyError(f"{self.label}: OpenPGP signature verification failed ({reason})")
        return good.group(1)

    def abort(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._broken = True
        while True:  # unblock and stop the pump thread
            try:
                self._chunks.get_nowait()
            except queue.Empty:
                break
        self._chunks.put(None)
        self._thread.join(timeout=10)
        if not self._status.closed:
            self._status.close()


def _gpg_reason(status: str) -> str:
    for code, text in (("BADSIG", "BAD signature"), ("NO_PUBKEY", "signed by a key not in the keyring"),
                       ("EXPKEYSIG", "key expired"), ("REVKEYSIG", "key revoked"),
                       ("NODATA", "no signature data"), ("ERRSIG", "cannot check the signature")):
        if f"[GNUPG:] {code}" in status:
            return text
    last = [line for line in status.splitlines() if line.strip() and not line.startswith("[GNUPG:]")]
    return last[-1].strip() if last else "gpgv failed"


class DigestCheck:
    """sha512 of the bytes fed with `update`; `finish()` raises VerifyError on a mismatch."""

    def __init__(self, expected_hex: str, label: str):
        self.expected = expected_hex.lower()
        self.label = label
        self._hash = hashlib.sha512()

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def finish(self) -> str:
        actual = self._hash.hexdigest()
        if actual != self.expected:
            raise VerifyError(f"{self.label}: sha512 mismatch (DIGESTS says {self.expected[:16]}..., "
                              f"the download is {actual[:16]}...)")
        return actual


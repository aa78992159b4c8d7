"""Digests and OpenPGP armour (pure)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from provisioner.errors import VerifyError
from provisioner.install import verify


def test_digests_pick_the_sha512_line_for_our_file():
    sha1 = "a" * 40
    sha512 = "B" * 128
    text = f"# MD5 HASH\n{'c' * 32}  img.bin.bz2\n# SHA1 HASH\n{sha1}  img.bin.bz2\n# SHA512 HASH\n{sha512}  img.bin.bz2\n"
    assert verify.digest_from_digests(text, "img.bin.bz2") == sha512.lower()
    with pytest.raises(VerifyError, match="no sha512 digest for other.bin"):
        verify.digest_from_digests(text, "other.bin")


def test_dearmor_round_trip():
    payload = bytes(range(200))
    armoured = ("-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: test\n\n"
                + base64.b64encode(payload).decode() + "\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n")
    assert verify.dearmor(armoured.encode()) == payload
    assert verify.dearmor(payload) == payload
    with pytest.raises(VerifyError, match="unterminated"):
        verify.dearmor(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\nabc\n")


def test_digest_check_reports_a_mismatch():
    good = verify.DigestCheck(hashlib.sha512(b"data").hexdigest(), "img")
    good.update(b"da")
    good.update(b"ta")
    good.finish()
    bad = verify.DigestCheck("00" * 64, "img")
    bad.update(b"data")
    with pytest.raises(VerifyError, match="img: sha512 mismatch"):
        bad.finish()


def test_a_manifest_names_every_file_it_vouches_for():
    image, bmap = "A" * 128, "b" * 128
    text = f"# SHA512 HASH\n{image}  img.bin.zst\n{bmap}  img.bin.bmap\n{'c' * 128}  img.bin.zst\n"
    assert verify.parse_digests(text) == {"img.bin.zst": image.lower(), "img.bin.bmap": bmap}
    assert verify.parse_digests("# SHA512 HASH\n") == {}

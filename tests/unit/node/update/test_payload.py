"""Payload verification with real gpg/gpgv: nothing unverified is left where the slot writer reads."""

import hashlib

import pytest

from provisioner.errors import VerifyError
from provisioner.image.release import Signer
from provisioner.image.update_release import write_update_payload
from provisioner.node.update.manifest import ManifestError, PayloadFile, parse_manifest
from provisioner.node.update.payload import download_verified, fetch_small, verify_signed


@pytest.fixture(scope="module")
def signers(tmp_path_factory):
    """The release key and another one, each in its own gpg home."""
    made = [Signer(tmp_path_factory.mktemp(name)) for name in ("gnupg", "gnupg-other")]
    for signer in made:
        signer.ensure_key()
    yield made
    for signer in made:
        signer.close()


@pytest.fixture(scope="module")
def signer(signers):
    return signers[0]


@pytest.fixture(scope="module")
def other_signer(signers):
    return signers[1]


@pytest.fixture(scope="module")
def release(tmp_path_factory, signer):
    """A version directory as `image build` writes it: usr, kernel, initrd, update.json, all signed."""
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("stable") / "0.2.0"
    out.mkdir()
    sources = {}
    for part, size in (("usr", 3 << 20), ("kernel", 4000), ("initrd", 5000)):
        sources[part] = src / part
        sources[part].write_bytes(hashlib.sha256(part.encode()).digest() * (size // 32))
    (out / "k.vmlinuz").write_bytes(sources["kernel"].read_bytes())
    signer.sign(out / "k.vmlinuz")
    names = {"usr": "x_usr.squashfs", "kernel": "k.vmlinuz", "initrd": "x_initrd.gz"}
    manifest = write_update_payload(out, "0.2.0", "stable", "b1", names,
                                    {"usr": sources["usr"], "initrd": sources["initrd"]}, signer)
    return out, manifest, sources


def test_manifest_round_trip_and_signature(release, signer, tmp_path):
    out, manifest, sources = release
    data = fetch_small((out / "update.json").as_uri())
    assert parse_manifest(data) == manifest
    assert manifest.files["usr"] == PayloadFile("x_usr.squashfs", 3 << 20,
                                                hashlib.sha256(sources["usr"].read_bytes()).hexdigest())
    assert manifest.file_url("http://s/release/", "usr") == "http://s/release/stable/0.2.0/x_usr.squashfs"
    verify_signed(data, (out / "update.json.sig").read_bytes(), signer.public_key(), tmp_path, "update.json")
    with pytest.raises(VerifyError, match="signature verification failed"):
        verify_signed(data.replace(b"0.2.0", b"0.2.1"), (out / "update.json.sig").read_bytes(),
                      signer.public_key(), tmp_path, "update.json")


def test_manifest_signed_by_another_key_is_refused(release, other_signer, tmp_path):
    out, _, _ = release
    with pytest.raises(VerifyError, match="not in the keyring"):
        verify_signed((out / "update.json").read_bytes(), (out / "update.json.sig").read_bytes(),
                      other_signer.public_key(), tmp_path, "update.json")


def test_good_payload_lands(release, signer, tmp_path):
    out, manifest, sources = release
    target = download_verified((out / "x_usr.squashfs").as_uri(), manifest.files["usr"],
                               (out / "x_usr.squashfs.sig").read_bytes(), signer.public_key(), tmp_path / "usr")
    assert target.read_bytes() == sources["usr"].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["usr"]   # no scratch or partial file left


def _tampered(out, tmp_path, data):
    bad = tmp_path / "bad.squashfs"
    bad.write_bytes(data)
    return bad.as_uri()


@pytest.mark.parametrize(("change", "message"), [
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "sha256 mismatch"),
    (lambda b: b + b"x", "more than the manifest's"),
    (lambda b: b[:-10], "bytes, the manifest says"),
])
def test_bad_payload_leaves_nothing(release, signer, tmp_path, change, message):
    out, manifest, _ = release
    url = _tampered(out, tmp_path, change((out / "x_usr.squashfs").read_bytes()))
    dest = tmp_path / "dest"
    with pytest.raises(VerifyError, match=message):
        download_verified(url, manifest.files["usr"], (out / "x_usr.squashfs.sig").read_bytes(),
                          signer.public_key(), dest / "usr")
    assert list(dest.iterdir()) == []


def test_payload_with_a_foreign_signature_is_refused(release, signer, other_signer, tmp_path):
    out, manifest, _ = release
    copy = tmp_path / "copy.squashfs"
    copy.write_bytes((out / "x_usr.squashfs").read_bytes())
    foreign = other_signer.sign(copy).read_bytes()
    with pytest.raises(VerifyError, match="signature"):
        download_verified((out / "x_usr.squashfs").as_uri(), manifest.files["usr"], foreign,
                          signer.public_key(), tmp_path / "dest" / "usr")
    assert not (tmp_path / "dest" / "usr").exists()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(format=2), "format: 2 is not 1"),
    (lambda d: d.update(version="latest"), "'latest' is not a release version"),
    (lambda d: d["files"]["usr"].update(name="../etc/passwd"), "files.usr.name"),
    (lambda d: d["files"]["kernel"].update(size=0), "files.kernel.size"),
    (lambda d: d["files"].pop("initrd"), "files.initrd: missing"),
    (lambda d: d["files"]["usr"].update(sha256="ABC"), "files.usr.sha256"),
])
def test_bad_manifest_names_the_field(release, edit, message):
    import json

    out, _, _ = release
    doc = json.loads((out / "update.json").read_bytes())
    edit(doc)
    with pytest.raises(ManifestError, match=message) as info:
        parse_manifest(json.dumps(doc).encode(), "http://s/stable/current/update.json")
    assert str(info.value).startswith("http://s/stable/current/update.json: ")

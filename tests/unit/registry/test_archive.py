"""Archives are read and verified before anything is imported: every damage is one line naming it."""

import gzip
import hashlib
import io
import json
import tarfile

import pytest
import zstandard

from provisioner.errors import RegistryError
from provisioner.registry.archive import ArchiveFormat, decompress_to, read_archive
from provisioner.registry.names import ImageName
from provisioner.registry.offline_images import layer_tar, pack_layout, write_oci_layout


def _sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _layer(text: str) -> bytes:
    return layer_tar({"etc": 0o755}, {"etc/id": (0o644, text.encode())}, {})


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def docker_archive(images: list[tuple[list[str], list[bytes]]], diff_ids=None) -> dict[str, bytes]:
    """The members of a `docker save` archive (old layout: <id>.json, <dir>/layer.tar)."""
    members, manifest = {}, []
    for tags, layers in images:
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": diff_ids or [_sha(layer) for layer in layers]}}).encode()
        config_name = f"{_sha(config)[7:]}.json"
        members[config_name] = config
        names = []
        for layer in layers:
            names.append(f"{_sha(layer)[7:]}/layer.tar")
            members[names[-1]] = layer
        manifest.append({"Config": config_name, "RepoTags": tags, "Layers": names})
    members["manifest.json"] = json.dumps(manifest).encode()
    return members


def oci_layout(tmp_path, name="library/busybox:latest", layers=("a",)):
    tars = [_layer(text) for text in layers]
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [_sha(tar) for tar in tars]}}
    directory = tmp_path / "layout"
    digest = write_oci_layout(directory, ImageName(*name.split(":")), config, tars)
    return directory, digest


def test_a_docker_save_archive_is_read_with_its_names_and_config_digest(tmp_path):
    members = docker_archive([(["busybox:latest", "busybox:1.35"], [_layer("a"), _layer("b")]),
                              (["docker.io/osones/nginx:latest"], [_layer("c")])])
    path = tmp_path / "images.tar"
    path.write_bytes(_tar(members))
    archive = read_archive(path)
    assert archive.format is ArchiveFormat.DOCKER_ARCHIVE and not archive.compressed
    assert [image.names for image in archive.images] == [("busybox:latest", "busybox:1.35"),
                                                        ("docker.io/osones/nginx:latest",)]
    config_name = json.loads(members["manifest.json"])[0]["Config"]
    assert archive.images[0].digest == f"sha256:{config_name[:-5]}"
    assert archive.skopeo_source(archive.images[1]) == f"docker-archive:{path}:@1"


def test_an_oci_layout_and_its_archive_are_read_with_names_and_manifest_digest(tmp_path):
    directory, digest = oci_layout(tmp_path)
    layout = read_archive(directory)
    assert layout.format is ArchiveFormat.OCI_LAYOUT
    assert layout.images[0].digest == digest and layout.images[0].ref == "latest"
    assert layout.images[0].names == ("docker.io/library/busybox:latest",)
    pack_layout(directory, tmp_path / "oci.tar")
    packed = read_archive(tmp_path / "oci.tar")
    assert packed.format is ArchiveFormat.OCI_ARCHIVE
    assert packed.skopeo_source(packed.images[0]) == f"oci-archive:{tmp_path / 'oci.tar'}:latest"


def test_a_compressed_archive_is_verified_and_decompressed_for_skopeo(tmp_path):
    plain = _tar(docker_archive([(["x:1"], [_layer("a")])]))
    (tmp_path / "x.tar.gz").write_bytes(gzip.compress(plain))
    archive = read_archive(tmp_path / "x.tar.gz")
    assert archive.compressed
    copy = decompress_to(archive, tmp_path / "x.tar")
    assert copy.path == tmp_path / "x.tar" and copy.path.read_bytes() == plain


def test_zstd_and_gzip_layers_are_checked_against_the_uncompressed_diff_id(tmp_path):
    directory, _ = oci_layout(tmp_path)
    manifest_digest = json.loads((directory / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((directory / "blobs/sha256" / manifest_digest[7:]).read_text())
    layer = gzip.decompress((directory / "blobs/sha256" / manifest["layers"][0]["digest"][7:]).read_bytes())
    zstd = zstandard.ZstdCompressor().compress(layer)
    (directory / "blobs/sha256" / _sha(zstd)[7:]).write_bytes(zstd)
    manifest["layers"][0].update(digest=_sha(zstd), size=len(zstd),
                                 mediaType="application/vnd.oci.image.layer.v1.tar+zstd")
    body = json.dumps(manifest).encode()
    (directory / "blobs/sha256" / _sha(body)[7:]).write_bytes(body)
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": manifest["mediaType"], "digest": _sha(body), "size": len(body),
         "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    assert read_archive(directory).images[0].digest == _sha(body)


def _flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))


def _refused(path, *fragments: str) -> str:
    with pytest.raises(RegistryError) as info:
        read_archive(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_changed_layer_byte_in_a_docker_archive_is_named(tmp_path):
    layer = _layer("a")
    members = docker_archive([(["x:1"], [layer])])
    data = bytearray(layer)
    data[600] ^= 1
    members[f"{_sha(layer)[7:]}/layer.tar"] = bytes(data)
    (tmp_path / "x.tar").write_bytes(_tar(members))
    _refused(tmp_path / "x.tar", "layer.tar holds sha256:", "rootfs.diff_ids[0] says", "nothing was imported")


def test_a_changed_blob_in_an_oci_layout_is_named(tmp_path):
    directory, _ = oci_layout(tmp_path)
    blob = max((directory / "blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    _flip(blob, 40)
    _refused(directory, f"blobs/sha256/{blob.name}")


def test_a_missing_blob_is_named(tmp_path):
    directory, digest = oci_layout(tmp_path)
    manifest = json.loads((directory / "blobs/sha256" / digest[7:]).read_text())
    (directory / "blobs/sha256" / manifest["config"]["digest"][7:]).unlink()
    _refused(directory, "index.json.manifests[0].config", "No such file")


@pytest.mark.parametrize(("members", "fragment"), [
    ({"manifest.json": b"{}"}, "manifest.json: not a list of images"),
    ({"manifest.json": b"[{]"}, "manifest.json: not valid JSON"),
    ({"manifest.json": b'[{"Config": "c.json", "Layers": []}]'}, "c.json is not in the archive"),
    ({"hello.txt": b"hi"}, "neither a docker-archive (manifest.json) nor an OCI archive"),
    ({"manifest.json": b'[{"Config": 1, "Layers": []}]'}, "manifest.json[0].Config: missing or not a str"),
])
def test_malformed_archives_are_refused_with_the_member(tmp_path, members, fragment):
    (tmp_path / "bad.tar").write_bytes(_tar(members))
    _refused(tmp_path / "bad.tar", fragment)


def test_layer_count_must_match_the_configs_diff_ids(tmp_path):
    members = docker_archive([(["x:1"], [_layer("a")])], diff_ids=[_sha(b"1"), _sha(b"2")])
    (tmp_path / "x.tar").write_bytes(_tar(members))
    _refused(tmp_path / "x.tar", "rootfs.diff_ids lists 2 layers, the manifest 1")


def test_truncated_and_non_tar_files_are_refused_in_one_line(tmp_path):
    whole = _tar(docker_archive([(["x:1"], [_layer("a")])]))
    (tmp_path / "cut.tar").write_bytes(whole[:len(whole) // 2])
    _refused(tmp_path / "cut.tar", "nothing was imported")
    (tmp_path / "junk.tar").write_bytes(b"junk\n" * 100)
    _refused(tmp_path / "junk.tar", "not a readable tar archive (neither a tar nor a gzip, bzip2 or xz")
    _refused(tmp_path / "missing.tar", "no such file")


def test_several_oci_images_need_ref_names_to_be_told_apart(tmp_path):
    directory, _ = oci_layout(tmp_path)
    index = json.loads((directory / "index.json").read_text())
    entry = dict(index["manifests"][0], annotations={})
    index["manifests"] = [entry, entry]
    (directory / "index.json").write_text(json.dumps(index))
    _refused(directory, "index.json.manifests[0] has no org.opencontainers.image.ref.name annotation")

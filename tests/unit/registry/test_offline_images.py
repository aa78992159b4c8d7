"""The offline images: byte-for-byte reproducible layers and layouts, a static busybox only."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from provisioner.registry.names import ImageName
from provisioner.registry.offline_images import (
    OfflineImage,
    build_offline_image,
    busybox_layer,
    is_static_elf,
    layer_tar,
    pack_layout,
    write_oci_layout,
)


def test_static_elf_check_tells_busybox_static_from_a_dynamic_binary():
    assert is_static_elf(Path("/bin/busybox").read_bytes()[:65536])
    assert not is_static_elf(Path("/bin/ls").read_bytes()[:65536])
    assert not is_static_elf(b"#!/bin/sh\necho hi\n")


def test_layer_tar_headers_are_fixed_and_entries_sorted():
    tar = layer_tar({"b": 0o755, "a": 0o700}, {"b/file": (0o644, b"data")}, {"a/link": "/b/file"})
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == ["a", "a/link", "b", "b/file"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert members[1].issym() and members[1].linkname == "/b/file"
    assert members[3].mode == 0o644 and members[0].mode == 0o700


def test_busybox_layer_has_applet_links_dirs_and_users():
    tar = busybox_layer(b"\x7fELF fake", ["bin/sh", "usr/bin/wget", "sbin/deep/x", "bin/busybox"])
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        names = {m.name: m for m in archive.getmembers()}
        passwd = archive.extractfile("etc/passwd").read().decode()
    assert names["bin/sh"].linkname == "/bin/busybox" and names["usr/bin/wget"].issym()
    assert names["sbin/deep"].isdir() and names["tmp"].mode == 0o1777
    assert names["bin/busybox"].isfile() and names["bin/busybox"].mode == 0o755
    assert passwd.startswith("root:x:0:0:")
    assert tar == busybox_layer(b"\x7fELF fake", ["bin/busybox", "sbin/deep/x", "usr/bin/wget", "bin/sh"])


def test_oci_layout_digests_are_reproducible_and_consistent(tmp_path):
    name = ImageName("library/test", "1")
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    tar = layer_tar({"etc": 0o755}, {"etc/x": (0o644, b"x")}, {})
    config["rootfs"]["diff_ids"] = [f"sha256:{hashlib.sha256(tar).hexdigest()}"]
    first = write_oci_layout(tmp_path / "a", name, config, [tar])
    second = write_oci_layout(tmp_path / "b", name, config, [tar])
    assert first == second
    index = json.loads((tmp_path / "a/index.json").read_text())
    entry = index["manifests"][0]
    assert entry["digest"] == first
    assert entry["annotations"] == {"io.containerd.image.name": "docker.io/library/test:1",
                                    "org.opencontainers.image.ref.name": "1"}
    for blob in (tmp_path / "a/blobs/sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


@pytest.mark.parametrize("target", list(OfflineImage))
def test_building_twice_from_the_host_busybox_gives_the_same_archive(target, tmp_path):
    name = ImageName(*target.default_name.split(":"))
    digests = [build_offline_image(target, name, tmp_path / f"layout{i}") for i in range(2)]
    assert digests[0] == digests[1]
    pack_layout(tmp_path / "layout0", tmp_path / "one.tar")
    pack_layout(tmp_path / "layout1", tmp_path / "two.tar")
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    manifest = json.loads((tmp_path / "layout0/blobs/sha256" / digests[0].removeprefix("sha256:")).read_text())
    config = json.loads((tmp_path / "layout0/blobs/sha256" / manifest["config"]["digest"][7:]).read_text())
    assert len(manifest["layers"]) == len(config["rootfs"]["diff_ids"]) == len(config["history"])
    if target is OfflineImage.NGINX:
        assert config["config"]["Cmd"][:5] == ["httpd", "-f", "-v", "-p", "80"]
        assert config["config"]["ExposedPorts"] == {"80/tcp": {}}
    else:
        assert config["config"]["Cmd"] == ["sh"] and len(manifest["layers"]) == 1

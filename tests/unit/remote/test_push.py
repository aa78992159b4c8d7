"""--push: the release files served through the forwarded port."""

from __future__ import annotations

from provisioner.remote.push import installer_args, release_files


def test_release_files_for_push(tmp_path):
    image = tmp_path / "provisioner_production_image.bin.zst"
    image.write_bytes(b"x")
    (tmp_path / "provisioner_production_image.bin.zst.sig").write_bytes(b"s")
    (tmp_path / "provisioner_production_image.bin.zst.DIGESTS.sig").write_bytes(b"m")
    (tmp_path / "provisioner_production_image.bin.bmap").write_text("<bmap/>")
    name, fmt, files = release_files(image)
    assert (name, fmt) == ("provisioner_production_image.bin", "zst")
    assert sorted(files) == ["/pushed/provisioner_production_image.bin.bmap",
                             "/pushed/provisioner_production_image.bin.zst",
                             "/pushed/provisioner_production_image.bin.zst.DIGESTS.sig",
                             "/pushed/provisioner_production_image.bin.zst.sig"]
    raw = tmp_path / "disk.bin"
    raw.write_bytes(b"r")
    assert release_files(raw)[:2] == ("disk.bin", "raw")
    assert installer_args("http://127.0.0.1:5", name, fmt) == [
        "-b", "http://127.0.0.1:5", "-V", "pushed", "--image-name", name, "--format", "zst"]

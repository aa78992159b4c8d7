"""Tags put back after a failed import: new tags and repositories removed, moved tags restored."""

from provisioner.registry.names import ImageName
from provisioner.registry.storage import RegistryStorage


def _tag(storage: RegistryStorage, image: ImageName, digest: str) -> None:
    link = storage.tag_dir(image) / "current" / "link"
    link.parent.mkdir(parents=True)
    link.write_text(digest)


def test_restore_undoes_new_tags_new_repositories_and_moved_tags(tmp_path):
    storage = RegistryStorage(tmp_path)
    kept, moved = ImageName("library/busybox", "latest"), ImageName("library/busybox", "1.35")
    _tag(storage, kept, "sha256:old")
    _tag(storage, moved, "sha256:old")
    new_tag, new_repo = ImageName("library/busybox", "new"), ImageName("osones/nginx", "latest")
    before = storage.snapshot([moved, new_tag, new_repo])
    assert [(s.repository_existed, s.link) for s in before] == [(True, "sha256:old"), (True, None), (False, None)]
    (storage.tag_dir(moved) / "current" / "link").write_text("sha256:new")
    _tag(storage, new_tag, "sha256:new")
    _tag(storage, new_repo, "sha256:new")
    storage.restore(before)
    assert (storage.tag_dir(moved) / "current" / "link").read_text() == "sha256:old"
    assert (storage.tag_dir(kept) / "current" / "link").read_text() == "sha256:old"
    assert not storage.tag_dir(new_tag).exists()
    assert not storage.repository_dir("osones/nginx").exists()
    assert storage.tag_dir(kept) == tmp_path / "docker/registry/v2/repositories/library/busybox/_manifests/tags/latest"
